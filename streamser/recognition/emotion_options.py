"""``EmotionOptions``: which emotion graphs to load, where they run and how their
scores are read; defined apart from the models so that reading a configuration loads
none."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

DEVICES: Final = ("auto", "cpu", "cuda")
"""Where the emotion graphs may run."""
LANGUAGE_CODE: Final = re.compile(r"^[a-z]{2}$")
"""An ISO 639-1 code, the key of a text model in ``[emotion.text]``."""


@dataclass(frozen=True)
class EmotionOptions:
    """Emotion model settings (``[emotion]``).

    Attributes:
        model_dir: folder of ``emotion-*.onnx`` graphs; "" for the bundled models.
        acoustic: name of the acoustic graph to load (``emotion-acoustic-v4``, the
            file without ``.onnx``); "" for the newest in ``model_dir``.
        text: text graph per language (``[emotion.text]``, ISO 639-1 code to name,
            ``en = "emotion-text-en-v2"``); a language not named gets the newest
            graph that reads it.
        device: "auto", "cpu" or "cuda" for onnxruntime; Whisper follows it when
            ``[asr] device`` is "auto".
        num_threads: onnxruntime threads per call.
        speaker_adaptation: an acoustic model that adapts to each stream's speaker
            does so (``streamser.recognition.adaptation``); switch off for streams
            that mix speakers.
        min_confidence: an utterance whose top (calibrated) probability is below
            this gets the label "uncertain", its scores unchanged; 0 (default) is off.
    """

    model_dir: str = ""
    acoustic: str = ""
    text: Mapping[str, str] = field(default_factory=dict)
    device: str = "auto"
    num_threads: int = 1
    speaker_adaptation: bool = True
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(
                f"min_confidence must be in [0, 1], not {self.min_confidence}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, not {self.num_threads}")
        for language, name in self.text.items():
            if not LANGUAGE_CODE.match(language):
                raise ValueError(
                    f"text: {language!r} is not an ISO 639-1 code (two lowercase "
                    "letters)"
                )
            if not isinstance(name, str) or not name:
                raise ValueError(f"text.{language}: a model name, not {name!r}")
