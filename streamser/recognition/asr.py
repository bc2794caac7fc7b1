"""Speech recognition with faster-whisper; the only module that loads a Whisper model.

One ``WhisperAsr`` is shared by every stream: CTranslate2 runs concurrent calls from
several threads (``num_workers``). Its encoder also serves the acoustic emotion model
(``streamser.recognition.features.encoder_states``), so one copy of Whisper is loaded in all.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.errors import ConfigError, ModelError
from streamser.recognition.cuda import cuda_device_count, preload_cuda_libraries
from streamser.recognition.features import MAX_MEL_FRAMES, N_MELS, log_mel
from streamser.recognition.whisper_model import (
    cache_dir,
    default_whisper_dir,
    load_error,
)

_LOGGER = logging.getLogger(__name__)

_NO_WORDS: Final = re.compile(r"^[\W_]*$")
_PUNCTUATION: Final = re.compile(r"[^\w']+")
_CHARACTER_LOOP: Final = re.compile(r"(\S{2,6}?)\1{3,}|(\S)\2{7,}")
"""A unit of 2-6 characters 4 or more times in a row with no space ("1,5,5,5,5,",
"4.5x4.5x4.5x4.5x"), or one character 8 or more times: a loop that neither the
word n-grams nor, in a short text, compression reveal ("10000" is not one)."""
_FLOOR_BELOW_PEAK: Final = 2.0
"""Whisper's log-mel floor under an utterance's peak (8 log10 units, scaled by 1/4)."""
_LOOP_REPEATS: Final = 3
"""An n-gram this many times in a row is a repetition loop."""
_MAX_NGRAM: Final = 8
"""The longest n-gram ``cut_repeated_ngrams`` looks for, in words."""


@dataclass(frozen=True)
class AsrOptions:
    """Speech recognition settings.

    Attributes:
        enabled: transcribe utterances (and run the text model); when off, Whisper is
            still loaded if the acoustic model reads its encoder states.
        model: "" for the bundled multilingual Whisper base, else a faster-whisper
            model folder or a size name (a size name downloads, so needs internet).
        device: "auto", "cpu" or "cuda".
        compute_type: "auto" (int8 on CPU, float16 on CUDA) or a CTranslate2 type.
        num_threads: CPU threads per call; 0 for one per core.
        num_workers: calls that may run at once (streams transcribed in parallel).
        beam_size: decoding beam; 1 is greedy and fastest.
        audio_context_s: the Whisper window an utterance is padded to. Whisper was
            trained on 30 s windows; on 60 RAVDESS sentences 15 s gave a WER of 1.1%
            (30 s: 0.8%, 10 s: 6.1%, 8 s: 24%) at a quarter of the 30 s encoder cost,
            while no padding made the decoder fail (benchmarks/asr_context.py).
        no_speech_threshold: an utterance whose no-speech probability is above this
            and whose text scores below ``log_prob_threshold`` is non-speech: rejected
            without a second decoding (as faster-whisper's ``transcribe``).
        log_prob_threshold: text whose average token log-probability is below this is
            decoded again (temperature fallback) and rejected if no decoding passes
            (on noise Whisper-base scored -2 to -3.3, on RAVDESS and EMO-DB speech
            above -0.3).
        log_prob_low_threshold: when no decoding passes, the most probable one that
            is not a bare loop is kept if it scores at least this (faster-whisper's
            option of that name): on utterances cut off mid-word, whose words Whisper
            is less sure of, right partial sentences scored -1.0 to -1.2, invented
            ones -1.2 to -1.7.
        compression_ratio_threshold: text that zlib compresses more than this (a
            repetition loop) is decoded again, as is text with an n-gram three or more
            times in a row.
        temperature_step: the fallback decodes the utterances that fail the checks
            again, sampling at this temperature, then twice it, and so on up to
            ``max_temperature`` (faster-whisper: 0.2 to 1.0), until they pass.
        max_temperature: the last fallback temperature; 0 turns the fallback off.
        best_of: hypotheses sampled per utterance at each fallback temperature; the
            most probable one is judged.
        language_confidence: probability at which a detected language is kept for the
            rest of a stream.
    """

    enabled: bool = True
    model: str = ""
    device: str = "auto"
    compute_type: str = "auto"
    num_threads: int = 0
    num_workers: int = 2
    beam_size: int = 1
    audio_context_s: float = 15.0
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    log_prob_low_threshold: float = -1.25
    compression_ratio_threshold: float = 2.4
    temperature_step: float = 0.2
    max_temperature: float = 1.0
    best_of: int = 5
    language_confidence: float = 0.8

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"asr.device must be auto, cpu or cuda, not {self.device!r}"
            )
        if self.beam_size < 1 or self.num_workers < 1 or self.num_threads < 0:
            raise ConfigError("asr.beam_size and asr.num_workers must be >= 1")
        if not 1.0 <= self.audio_context_s <= 30.0:
            raise ConfigError("asr.audio_context_s must be between 1 and 30 seconds")
        if not 0.0 <= self.no_speech_threshold <= 1.0:
            raise ConfigError("asr.no_speech_threshold must be in [0, 1]")
        if not 0.0 <= self.language_confidence <= 1.0:
            raise ConfigError("asr.language_confidence must be in [0, 1]")
        if not 0.0 < self.temperature_step <= 1.0 or self.max_temperature < 0.0:
            raise ConfigError(
                "asr.temperature_step must be in (0, 1], asr.max_temperature >= 0"
            )
        if self.log_prob_low_threshold > self.log_prob_threshold:
            raise ConfigError(
                "asr.log_prob_low_threshold must be <= asr.log_prob_threshold"
            )
        if self.best_of < 1 or self.compression_ratio_threshold <= 1.0:
            raise ConfigError(
                "asr.best_of must be >= 1, asr.compression_ratio_threshold > 1"
            )

    @property
    def temperatures(self) -> list[float]:
        """The fallback's sampling temperatures, in order (none when it is off)."""
        steps = int(self.max_temperature / self.temperature_step + 1e-6)
        return [round((i + 1) * self.temperature_step, 6) for i in range(steps)]


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

        Returns:
            One transcript per utterance; ``rejected`` (and empty) where no decoding
            passed: non-speech, noise, or a loop.
        """
        import ctranslate2

        if not mels:
            return []
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
        whisper = self.model.model
        encoded = whisper.encode(
            ctranslate2.StorageView.from_array(batch), to_cpu=False
        )
        resolved: list[tuple[str, float]] = []
        detect = whisper.is_multilingual and not all(languages)
        detected = whisper.detect_language(encoded) if detect else []
        for i, language in enumerate(languages):
            if language or not whisper.is_multilingual:
                resolved.append((language or "en", 1.0))
            else:
                token, probability = detected[i][0]
                resolved.append((token[2:-2], float(probability)))
        tokenizer = self._tokenizer
        multilingual = whisper.is_multilingual
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
        longest_s = max(m.shape[0] for m in mels) / 100
        generate = partial(
            whisper.generate,
            max_length=min(448, 16 + int(12 * longest_s)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress_tokens,
        )
        first = generate(encoded, prompts, beam_size=self.options.beam_size)
        tries = [[self._judge(result)] for result in first]
        # Temperature fallback (as faster-whisper's transcribe): only the utterances
        # whose greedy text failed a check are decoded again, by sampling.
        failing = [i for i, t in enumerate(tries) if t[-1].needs_fallback]
        for temperature in self.options.temperatures:
            if not failing:
                break
            _LOGGER.debug(
                "Whisper fallback at temperature %.1f for %d of %d utterances",
                temperature,
                len(failing),
                len(mels),
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
                tries[i].append(self._judge(result))
            failing = [i for i in failing if tries[i][-1].needs_fallback]
        transcripts = []
        for attempts, (code, prob) in zip(tries, resolved, strict=True):
            text = _choose(
                attempts,
                self.options.compression_ratio_threshold,
                self.options.log_prob_low_threshold,
            )
            transcripts.append(
                Transcript(
                    text=text or "",
                    language=code,
                    language_probability=prob,
                    rejected=text is None,
                )
            )
        return transcripts

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

    def _judge(self, result: Any) -> _Decoding:
        """One decoding's text and checks."""
        ids = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(ids).strip()
        length = len(ids)
        avg_logprob = result.scores[0] * length / (length + 1) if length else -10.0
        options = self.options
        return _Decoding(
            text=text,
            avg_logprob=avg_logprob,
            # Whisper hallucinates on noise and silence: text that Whisper itself
            # thinks is non-speech and is unsure of is not decoded again.
            silent=result.no_speech_prob > options.no_speech_threshold
            and avg_logprob < options.log_prob_threshold,
            looping=compression_ratio(text) > options.compression_ratio_threshold
            or cut_repeated_ngrams(text) != text
            or _CHARACTER_LOOP.search(text) is not None,
            confident=avg_logprob >= options.log_prob_threshold,
        )


@dataclass(frozen=True)
class _Decoding:
    """One decoding of one utterance, judged by faster-whisper's checks."""

    text: str
    avg_logprob: float
    silent: bool
    """Whisper judged the audio non-speech and is unsure of the text."""
    looping: bool
    """The text repeats itself (compression ratio, or an n-gram 3+ times in a row)."""
    confident: bool
    """The average token log-probability is at least ``log_prob_threshold``."""

    @property
    def passed(self) -> bool:
        """Words, confident, not looping, not silence."""
        return (
            self.confident
            and not self.looping
            and not self.silent
            and not _NO_WORDS.match(self.text)
        )

    @property
    def needs_fallback(self) -> bool:
        """Decode again at the next temperature."""
        return not self.passed and not self.silent


def _choose(
    attempts: Sequence[_Decoding], max_compression: float, min_log_prob: float
) -> str | None:
    """The transcript of an utterance's decodings, or None to reject it.

    The first that passed every check wins. Failing that, the most probable of those
    that are not silence and score at least ``min_log_prob``, its loop cut
    (``cut_repeated_ngrams``) if the cut leaves most of its words: "by the door door
    door door" becomes "by the door", while a bare loop ("door door door ...") is
    rejected, as is anything wordless.
    """
    for attempt in attempts:
        if attempt.passed:
            return attempt.text
    kept: list[tuple[float, str]] = []
    for attempt in attempts:
        if attempt.silent or attempt.avg_logprob < min_log_prob:
            continue
        cut = cut_repeated_ngrams(attempt.text)
        if _NO_WORDS.match(cut) or 2 * len(cut.split()) < len(attempt.text.split()):
            continue
        if compression_ratio(cut) > max_compression or _CHARACTER_LOOP.search(cut):
            continue
        kept.append((attempt.avg_logprob, cut))
    return max(kept)[1] if kept else None


def compression_ratio(text: str) -> float:
    """How much zlib compresses ``text``: above 2.4, Whisper's text is likely a loop
    (the threshold of Whisper and faster-whisper)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _word_key(word: str) -> str:
    return _PUNCTUATION.sub("", word.casefold()) or word


def cut_repeated_ngrams(text: str, max_ngram: int = _MAX_NGRAM) -> str:
    """``text`` with every run of an n-gram (up to ``max_ngram`` words) said three or
    more times in a row cut to its first occurrence; words compare without case and
    punctuation. Twice in a row is kept ("very very").
    """
    words = text.split()
    keys = [_word_key(w) for w in words]
    kept: list[str] = []
    i = 0
    while i < len(words):
        best_n, best_count = 1, 1
        for n in range(1, min(max_ngram, (len(words) - i) // _LOOP_REPEATS) + 1):
            count = 1
            while keys[i + count * n : i + (count + 1) * n] == keys[i : i + n]:
                count += 1
            if count >= _LOOP_REPEATS and n * count > best_n * best_count:
                best_n, best_count = n, count
        kept += words[i : i + best_n]
        i += best_n * best_count
    return " ".join(kept) if kept != words else text
