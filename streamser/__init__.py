"""streamser: real-time speech emotion recognition from live audio.

Audio is cut into utterances by voice activity detection; each goes through Whisper
ASR (faster-whisper) and ONNX emotion models; the results are events (PROTOCOL.md).

Importing the package is light: the recognizer (and with it numpy and the models'
runtimes) is imported on first use of ``Recognizer``, ``RecognizerOptions``,
``Recognition`` or ``EmotionScores``, so that ``streamser send`` starts fast.
"""

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

from streamser.errors import (
    AudioSourceError,
    ConfigError,
    ModelError,
    ProtocolError,
    StreamserError,
)
from streamser.labels import CANONICAL_LABELS

if TYPE_CHECKING:
    from streamser.recognition.emotion import EmotionScores
    from streamser.recognition.recognizer import (
        Recognition,
        Recognizer,
        RecognizerOptions,
    )

try:
    __version__ = metadata.version("streamser")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

_LAZY = {
    "EmotionScores": "streamser.recognition.emotion",
    "Recognition": "streamser.recognition.recognizer",
    "Recognizer": "streamser.recognition.recognizer",
    "RecognizerOptions": "streamser.recognition.recognizer",
}
"""Public names imported on first use, with their modules."""


def __getattr__(name: str) -> Any:
    """The lazily imported public names (PEP 562)."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamser' has no attribute {name!r}")


__all__ = [
    "CANONICAL_LABELS",
    "AudioSourceError",
    "ConfigError",
    "EmotionScores",
    "ModelError",
    "ProtocolError",
    "Recognition",
    "Recognizer",
    "RecognizerOptions",
    "StreamserError",
    "__version__",
]
