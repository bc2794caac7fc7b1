"""Speech recognition with faster-whisper; the only module that loads a Whisper model.

One ``WhisperAsr`` is shared by every stream: CTranslate2 runs concurrent calls from
several threads (``num_workers``). Its encoder also serves the acoustic emotion model
(``streamser.recognition.features.encoder_states``), so one copy of Whisper is loaded in all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.cuda import cuda_device_count, preload_cuda_libraries
from streamser.recognition.features import MAX_MEL_FRAMES, N_MELS, log_mel
from streamser.recognition.transcript_checks import Decoding, choose_transcript, judge
from streamser.recognition.user_cache import cache_dir
from streamser.recognition.whisper_model import default_whisper_dir, load_error

_LOGGER = logging.getLogger(__name__)

_TOKENS_PER_SECOND: Final = 50
"""Whisper encoder frames per second of audio (what alignment times count in)."""
_FLOOR_BELOW_PEAK: Final = 2.0
"""Whisper's log-mel floor under an utterance's peak (8 log10 units, scaled by 1/4)."""


@dataclass(frozen=True)
class Transcript:
    """The words of one utterance.

    Attributes:
        text: the transcript; "" when rejected.
        language: ISO 639-1 code used or detected.
        language_probability: detection confidence (1.0 when the language was given).
        rejected: no decoding gave words that passed the checks (non-speech, noise,
            a repetition loop), so ``text`` is "".
    """

    text: str
    language: str
    language_probability: float
    rejected: bool = False
    words: tuple[Word, ...] | None = None
    """Each word with its time in the utterance (``word_timestamps``), else None."""


@dataclass(frozen=True)
class Word:
    """A word of a transcript and where it was said, in seconds of the utterance."""

    word: str
    start: float
    end: float
    probability: float


_OPENING: Final = frozenset("\"'“¿([{-")
"""Punctuation that belongs to the word after it (faster-whisper's prepend set)."""


def _merge_punctuation(words: list[Word]) -> list[Word]:
    """Punctuation aligned as words of its own joined to its word: closing marks
    ("!", ".", ",") to the word before, opening ones ("¿", "(") to the word after
    (as faster-whisper's ``merge_punctuations``), so the words are the transcript's."""
    merged: list[Word] = []
    carry = ""
    for word in words:
        if not any(ch.isalnum() for ch in word.word):
            if all(ch in _OPENING for ch in word.word):
                carry += word.word
                continue
            if merged:
                last = merged[-1]
                merged[-1] = replace(last, word=last.word + word.word, end=word.end)
                continue
        merged.append(replace(word, word=carry + word.word) if carry else word)
        carry = ""
    return merged


def cuda_available() -> bool:
    """Whether CTranslate2 sees a CUDA device."""
    return cuda_device_count() > 0


class WhisperAsr:
    """A loaded faster-whisper model: transcription and encoder access."""

    def __init__(self, options: AsrOptions) -> None:
        """Load the model.

        Raises:
            ModelError: the model folder is missing or unreadable.
        """
        from faster_whisper import WhisperModel

        self.options = options
        self.model_path = self._resolve(options.model)
        threads = options.num_threads or (os.cpu_count() or 1)
        device = options.device
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        attempts = [device] if device == "cpu" else [device, "cpu"]
        last_error: Exception | None = None
        for attempt in attempts:
            compute = options.compute_type
            if compute == "auto":
                compute = "float16" if attempt == "cuda" else "int8"
            if attempt == "cuda":
                preload_cuda_libraries()
            try:
                self.model = WhisperModel(
                    self.model_path,
                    device=attempt,
                    compute_type=compute,
                    cpu_threads=threads,
                    num_workers=options.num_workers,
                    download_root=str(cache_dir() / "huggingface"),
                )
            except (
                Exception
            ) as err:  # CTranslate2 raises RuntimeError/ValueError/OSError
                last_error = err
                if attempt == "cuda":
                    _LOGGER.warning(
                        "Whisper on CUDA failed (%s); falling back to CPU", err
                    )
                continue
            self.device = attempt
            self.compute_type = compute
            break
        else:
            raise ModelError(load_error(self.model_path, last_error))
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        # The fallback samples: a fixed seed makes a run repeatable (CTranslate2 seeds
        # each decoding thread's generator from it once).
        ctranslate2.set_random_seed(0)
        from faster_whisper.transcribe import get_suppressed_tokens

        self._tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language="en" if self.model.model.is_multilingual else None,
        )
        self._suppress_tokens = list(
            get_suppressed_tokens(self._tokenizer, (-1,)) or []
        )
        _LOGGER.info(
            "Whisper model %s loaded on %s (%s, %d threads)",
            Path(self.model_path).name,
            self.device,
            self.compute_type,
            threads,
        )

    @staticmethod
    def _resolve(model: str) -> str:
        if not model:
            return str(default_whisper_dir())
        path = Path(model).expanduser()
        if path.exists():
            if not (path / "model.bin").is_file():
                raise ModelError(
                    f"{path}: not a faster-whisper model folder (no model.bin)"
                )
            return str(path)
        if "/" in model or os.sep in model:
            raise ModelError(f"Whisper model folder not found: {model}")
        return model  # a size name or hub id: faster-whisper downloads it

    @property
    def encoder(self) -> Any:
        """The CTranslate2 Whisper model, for ``features.encoder_states``."""
        return self.model.model

    @property
    def name(self) -> str:
        """A short name for events and logs."""
        return "whisper-base" if not self.options.model else Path(self.model_path).name

    def transcribe(
        self, audio: npt.NDArray[np.float32], language: str | None
    ) -> Transcript:
        """Transcribe one utterance (16 kHz mono float32); see ``transcribe_batch``."""
        return self.transcribe_batch([log_mel(audio)], [language])[0]

    def transcribe_batch(
        self,
        mels: Sequence[npt.NDArray[np.float32]],
        languages: Sequence[str | None],
        *,
        fallback: bool | Callable[[], bool] = True,
    ) -> list[Transcript]:
        """Transcribe several utterances in one encoder and one decoder call.

        Each utterance's log-mel (``features.log_mel``) is padded with silence to
        ``audio_context_s`` (or to the longest utterance of the batch), so one batch
        shares one window length. The first decoding is ``beam_size`` (greedy by
        default); utterances whose text fails a check (``AsrOptions``) are decoded
        again by sampling at rising temperatures; any repetition loop left is cut.

        Args:
            mels: log-mel arrays (n_frames, 80), one per utterance.
            languages: ISO 639-1 code per utterance, or None to detect it.
            fallback: decode again at rising temperatures where the first decoding
                fails a check (False: one decoding only, as a partial transcript
                wants: the next one tries again; a callable: only while it returns
                True, asked before each temperature, so that a run of fallbacks
                yields to utterances that wait for the worker).

        Returns:
            One transcript per utterance; ``rejected`` (and empty) where no decoding
            passed: non-speech, noise, or a loop.
        """
        if not mels:
            return []
        batch = self._pad(mels)
        encoded = self._encode(batch)
        resolved = self._languages(encoded, languages)
        tries = self._decode(
            encoded, batch, resolved, [m.shape[0] for m in mels], fallback=fallback
        )
        options = self.options
        transcripts = []
        for i, (attempts, (code, prob)) in enumerate(zip(tries, resolved, strict=True)):
            text = choose_transcript(
                attempts,
                options.compression_ratio_threshold,
                options.log_prob_low_threshold,
            )
            words = None
            if options.word_timestamps and text:
                words = self._align(
                    self._subset(encoded, batch, [i]), code, text, mels[i].shape[0]
                )
            transcripts.append(
                Transcript(
                    text=text or "",
                    language=code,
                    language_probability=prob,
                    rejected=text is None,
                    words=words,
                )
            )
        return transcripts

    def _align(
        self, encoded: Any, code: str, text: str, frames: int
    ) -> tuple[Word, ...]:
        """The words of ``text`` with their times, from the cross-attention of the
        decoder reading it (faster-whisper's ``find_alignment``)."""
        tokenizer = self._tokenizer
        start = [tokenizer.sot]
        if self.model.model.is_multilingual:
            start += [self._language_token(code), tokenizer.transcribe]
        tokens = tokenizer.encode(" " + text.strip())
        result = self.model.model.align(
            encoded, start, [tokens], frames, median_filter_width=7
        )[0]
        words, word_tokens = tokenizer.split_to_word_tokens(tokens + [tokenizer.eot])
        if len(word_tokens) <= 1:
            return ()
        boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
        text_indices = np.array([pair[0] for pair in result.alignments])
        time_indices = np.array([pair[1] for pair in result.alignments])
        jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
        jump_times = time_indices[jumps] / _TOKENS_PER_SECOND
        probs = result.text_token_probs
        timed = [
            Word(
                word=word.strip(),
                start=round(float(jump_times[a]), 3),
                end=round(float(jump_times[b]), 3),
                probability=round(float(np.mean(probs[a:b])), 4),
            )
            for word, a, b in zip(
                words[:-1], boundaries[:-1], boundaries[1:], strict=True
            )
            if word.strip()
        ]
        return tuple(_merge_punctuation(timed))

    def _pad(self, mels: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """The batch of log-mels (utterance, mel, frame), each padded to one width."""
        context = int(self.options.audio_context_s * 100)
        width = min(MAX_MEL_FRAMES, max(context, *(m.shape[0] for m in mels)))
        batch = np.empty((len(mels), N_MELS, width), dtype=np.float32)
        for i, mel in enumerate(mels):
            frames = mel[-width:]
            # Pad with silence (Whisper's log-mel floor, 8 log10 units under the
            # peak, as OpenAI Whisper pads with silent audio), not with zeros: on
            # utterances cut tight at the end of speech, zeros made Whisper loop or
            # stop early (benchmarks/asr_guards.py).
            batch[i] = float(frames.max()) - _FLOOR_BELOW_PEAK
            batch[i, :, : frames.shape[0]] = frames.T
        return batch

    def _encode(self, batch: npt.NDArray[np.float32]) -> Any:
        """Whisper's encoder output for ``batch`` (left on the device)."""
        import ctranslate2  # installed with faster-whisper, loaded with the model

        features = ctranslate2.StorageView.from_array(batch)
        return self.model.model.encode(features, to_cpu=False)

    def _languages(
        self, encoded: Any, languages: Sequence[str | None]
    ) -> list[tuple[str, float]]:
        """(code, probability) per utterance: as given, or detected."""
        whisper = self.model.model
        detect = whisper.is_multilingual and not all(languages)
        detected = whisper.detect_language(encoded) if detect else []
        resolved: list[tuple[str, float]] = []
        for i, language in enumerate(languages):
            if language or not whisper.is_multilingual:
                resolved.append((language or "en", 1.0))
            else:
                token, probability = detected[i][0]
                resolved.append((token[2:-2], float(probability)))
        return resolved

    def _decode(
        self,
        encoded: Any,
        batch: npt.NDArray[np.float32],
        resolved: Sequence[tuple[str, float]],
        frames: Sequence[int],
        *,
        fallback: bool | Callable[[], bool],
    ) -> list[list[Decoding]]:
        """Every decoding of each utterance (``frames``: its log-mel frames): the
        first (``beam_size``), then, for those whose text fails a check, sampling
        at rising temperatures (as faster-whisper's transcribe) until it passes."""
        tokenizer = self._tokenizer
        multilingual = self.model.model.is_multilingual
        prompts = [
            [tokenizer.sot]
            + (
                [self._language_token(code), tokenizer.transcribe]
                if multilingual
                else []
            )
            + [tokenizer.no_timestamps]
            for code, _ in resolved
        ]
        generate = partial(
            self.model.model.generate,
            max_length=min(448, 16 + int(12 * (max(frames) / 100))),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress_tokens,
        )
        first = generate(encoded, prompts, beam_size=self.options.beam_size)
        seconds = [n / 100 for n in frames]
        tries = [[self._judge(r, seconds[i])] for i, r in enumerate(first)]
        failing = [i for i, t in enumerate(tries) if t[-1].needs_fallback]
        for temperature in self.options.temperatures if fallback else []:
            if not failing or (callable(fallback) and not fallback()):
                break
            _LOGGER.debug(
                "Whisper fallback at temperature %.1f for %d of %d utterances",
                temperature,
                len(failing),
                len(tries),
            )
            results = generate(
                self._subset(encoded, batch, failing),
                [prompts[i] for i in failing],
                beam_size=1,
                num_hypotheses=self.options.best_of,
                sampling_topk=0,
                sampling_temperature=temperature,
            )
            for i, result in zip(failing, results, strict=True):
                tries[i].append(self._judge(result, seconds[i]))
            failing = [i for i in failing if tries[i][-1].needs_fallback]
        return tries

    def _subset(
        self, encoded: Any, batch: npt.NDArray[np.float32], rows: list[int]
    ) -> Any:
        """The encoder output of the batch's ``rows``: sliced on the CPU, encoded
        again on a GPU (where the encoder is cheap and the output not a numpy array)."""
        import ctranslate2

        if len(rows) == batch.shape[0]:
            return encoded
        if encoded.device == "cpu":
            states = np.ascontiguousarray(np.asarray(encoded)[rows])
            return ctranslate2.StorageView.from_array(states)
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(batch[rows]))
        return self.model.model.encode(features, to_cpu=False)

    def _language_token(self, code: str) -> int:
        token = self._tokenizer.tokenizer.token_to_id(f"<|{code}|>")
        if token is None:
            raise ValueError(f"Whisper has no language {code!r}")
        return int(token)

    def _judge(self, result: Any, seconds: float) -> Decoding:
        """One decoding's text and checks."""
        ids = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        length = len(ids)
        avg_logprob = result.scores[0] * length / (length + 1) if length else -10.0
        text = self._tokenizer.decode(ids).strip()
        return judge(text, avg_logprob, result.no_speech_prob, self.options, seconds)
