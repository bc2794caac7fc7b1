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
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.errors import ConfigError, ModelError
from streamser.recognition.cuda import cuda_device_count, preload_cuda_libraries
from streamser.recognition.features import MAX_MEL_FRAMES, N_MELS, log_mel
from streamser.recognition.whisper_model import cache_dir, default_whisper_dir

_LOGGER = logging.getLogger(__name__)

_NO_WORDS: Final = re.compile(r"^[\W_]*$")


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
        no_speech_threshold: text whose no-speech probability is above this is dropped
            as non-speech.
        log_prob_threshold: text whose average token log-probability is below this is
            dropped as a hallucination (on noise Whisper-base scored -2 to -3.3, on
            RAVDESS and EMO-DB speech above -0.3).
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


@dataclass(frozen=True)
class Transcript:
    """The words of one utterance.

    Attributes:
        text: the transcript; "" when nothing was said (or it was judged non-speech).
        language: ISO 639-1 code used or detected.
        language_probability: detection confidence (1.0 when the language was given).
    """

    text: str
    language: str
    language_probability: float


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
            raise ModelError(
                f"cannot load Whisper model {self.model_path}: {last_error}"
            )
        from faster_whisper.tokenizer import Tokenizer
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

        Each utterance's log-mel (``features.log_mel``) is zero-padded, as faster-whisper
        pads its segments, to ``audio_context_s`` (or to the longest utterance of the
        batch), so one batch shares one window length.

        Args:
            mels: log-mel arrays (n_frames, 80), one per utterance.
            languages: ISO 639-1 code per utterance, or None to detect it.

        Returns:
            One transcript per utterance; empty text where Whisper judges it non-speech.
        """
        import ctranslate2

        if not mels:
            return []
        context = int(self.options.audio_context_s * 100)
        width = min(MAX_MEL_FRAMES, max(context, *(m.shape[0] for m in mels)))
        batch = np.zeros((len(mels), N_MELS, width), dtype=np.float32)
        for i, mel in enumerate(mels):
            frames = mel[-width:]
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
        results = whisper.generate(
            encoded,
            prompts,
            beam_size=self.options.beam_size,
            max_length=min(448, 16 + int(12 * longest_s)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress_tokens,
        )
        return [
            Transcript(
                text=self._text(result), language=code, language_probability=prob
            )
            for result, (code, prob) in zip(results, resolved, strict=True)
        ]

    def _language_token(self, code: str) -> int:
        token = self._tokenizer.tokenizer.token_to_id(f"<|{code}|>")
        if token is None:
            raise ValueError(f"Whisper has no language {code!r}")
        return int(token)

    def _text(self, result: Any) -> str:
        """The text of one result, or "" when it looks like non-speech or a loop."""
        ids = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(ids).strip()
        length = len(ids)
        avg_logprob = result.scores[0] * length / (length + 1) if length else -10.0
        # Whisper hallucinates on noise and silence: drop text that Whisper itself
        # thinks is non-speech or is unsure of, and repetition loops.
        if result.no_speech_prob > self.options.no_speech_threshold:
            return ""
        if avg_logprob < self.options.log_prob_threshold:
            return ""
        if text and len(text) > 20 and _compression_ratio(text) > 2.4:
            return ""
        return "" if _NO_WORDS.match(text) else text


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
