"""Loading Whisper once for a benchmark, and timing its encoder and decoder calls.

``TimedWhisper`` wraps the CTranslate2 model inside a faster-whisper ``WhisperModel``
(or streamser's ``WhisperAsr``), so the same encoder/decoder split is measured for
streamser's own decoding and for faster-whisper's ``transcribe`` without copying
either's code.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamser.recognition.asr import Transcript, WhisperAsr
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.features import log_mel


class TimedWhisper:
    """A proxy of ``ctranslate2.models.Whisper`` adding up time per call kind."""

    def __init__(self, model: Any) -> None:
        """Wrap ``model`` (a ``ctranslate2.models.Whisper``)."""
        self._model = model
        self.seconds: dict[str, float] = {}

    def reset(self) -> dict[str, float]:
        """Return the times so far and start again from zero."""
        seconds, self.seconds = self.seconds, {}
        return seconds

    def _timed(self, kind: str, method: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return getattr(self._model, method)(*args, **kwargs)
        finally:
            self.seconds[kind] = (
                self.seconds.get(kind, 0.0) + time.perf_counter() - started
            )

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        """Timed as "encoder"."""
        return self._timed("encoder", "encode", *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Timed as "decoder"."""
        return self._timed("decoder", "generate", *args, **kwargs)

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        """Timed as "language"."""
        return self._timed("language", "detect_language", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def load_asr(options: AsrOptions | None = None) -> tuple[WhisperAsr, TimedWhisper]:
    """streamser's Whisper (bundled base, int8 on CPU) with its model timed."""
    asr = WhisperAsr(options or AsrOptions())
    timed = TimedWhisper(asr.model.model)
    asr.model.model = timed
    return asr, timed


def with_context(asr: WhisperAsr, audio_context_s: float) -> None:
    """Set the window the next ``transcribe_batch`` pads to (1.0 = unpadded for
    utterances of at least 1 s)."""
    asr.options = dataclasses.replace(asr.options, audio_context_s=audio_context_s)


def streamser_transcribe(
    asr: WhisperAsr, audios: Sequence[npt.NDArray[np.float32]], language: str
) -> list[Transcript]:
    """streamser's batched decoding, as the recogniser calls it."""
    return asr.transcribe_batch([log_mel(a) for a in audios], [language] * len(audios))


def faster_whisper_transcribe(
    asr: WhisperAsr,
    audio: npt.NDArray[np.float32],
    language: str,
    chunk_length_s: int = 30,
) -> str:
    """Plain faster-whisper on the same loaded model: int8, beam 1, language given,
    VAD off, no timestamps (as streamser decodes), in a ``chunk_length_s`` window
    (30 s is faster-whisper's default). Always passed explicitly: faster-whisper's
    feature extractor keeps the last chunk_length it was given."""
    segments, _ = asr.model.transcribe(
        audio,
        language=language,
        beam_size=1,
        vad_filter=False,
        without_timestamps=True,
        chunk_length=chunk_length_s,
    )
    return " ".join(s.text.strip() for s in segments).strip()
