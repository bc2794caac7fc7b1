"""Speech recognition with faster-whisper; the only module that loads a Whisper model.

One ``WhisperAsr`` is shared by every stream: CTranslate2 runs concurrent calls from
several threads (``num_workers``). Its encoder also serves the acoustic emotion model
(``streamser.features.encoder_states``), so one copy of Whisper is loaded in all.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, ModelError
from .whisper_model import cache_dir, default_whisper_dir

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
        no_speech_threshold: a segment whose no-speech probability is above this and
            whose average log-probability is below -1 is dropped as non-speech.
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
    no_speech_threshold: float = 0.6
    language_confidence: float = 0.8

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"asr.device must be auto, cpu or cuda, not {self.device!r}"
            )
        if self.beam_size < 1 or self.num_workers < 1 or self.num_threads < 0:
            raise ConfigError("asr.beam_size and asr.num_workers must be >= 1")
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
    import ctranslate2

    try:
        return bool(ctranslate2.get_cuda_device_count() > 0)
    except Exception:  # a broken driver raises from deep inside CTranslate2
        return False


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
        """Transcribe one utterance (16 kHz mono float32).

        Args:
            audio: the utterance.
            language: ISO 639-1 code, or None to detect it.

        Returns:
            The transcript; empty text when Whisper judges it non-speech.
        """
        segments, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.options.beam_size,
            best_of=self.options.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
            no_speech_threshold=self.options.no_speech_threshold,
        )
        words = []
        for segment in segments:
            # faster-whisper keeps segments whose no-speech probability is high when
            # their log-probability is good; we drop both signs of a hallucination.
            if (
                segment.no_speech_prob > self.options.no_speech_threshold
                and segment.avg_logprob < -1.0
            ):
                continue
            if segment.compression_ratio > 2.4:
                continue
            words.append(segment.text.strip())
        text = " ".join(w for w in words if w)
        if _NO_WORDS.match(text):
            text = ""
        return Transcript(
            text=text,
            language=info.language,
            language_probability=float(info.language_probability),
        )
