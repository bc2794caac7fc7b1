"""streamser: real-time speech emotion recognition from live audio.

Audio is cut into utterances by voice activity detection; each goes through Whisper
ASR (faster-whisper) and ONNX emotion models; the results are events (PROTOCOL.md).
"""

from importlib import metadata

from streamser.errors import (
    AudioSourceError,
    ConfigError,
    ModelError,
    ProtocolError,
    StreamserError,
)
from streamser.labels import CANONICAL_LABELS
from streamser.recognition.emotion import EmotionScores
from streamser.recognition.recognizer import Recognition, Recognizer, RecognizerOptions

try:
    __version__ = metadata.version("streamser")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

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
