"""Voice activity detection behind one protocol: webrtcvad (default) or Silero ONNX.

A ``Vad`` scores fixed frames of 16 kHz mono float32 audio; the segmenter turns the
scores into utterances. Each stream needs its own ``Vad`` (they keep state); the Silero
ONNX session itself is loaded once per process and shared.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt
import webrtcvad

if TYPE_CHECKING:
    import onnxruntime

from streamser.audio import SAMPLE_RATE_HZ

_LOGGER = logging.getLogger(__name__)

VAD_KINDS: Final = ("webrtc", "silero")
WEBRTC_FRAME_MS: Final = (10, 20, 30)
"""Frame durations webrtcvad accepts."""
SILERO_WINDOW_SAMPLES: Final = 512
"""Silero v6 scores 512-sample (32 ms) windows at 16 kHz."""
SILERO_CONTEXT_SAMPLES: Final = 64
"""Silero v6 sees the previous window's last 64 samples in front of each window."""
SILERO_MODEL: Final = "silero_vad_v6.onnx"
"""The Silero model faster-whisper ships in ``faster_whisper/assets``."""
WEBRTC_THRESHOLD: Final = 0.5
"""webrtcvad answers 0 or 1; anything between works as its threshold."""


@dataclass(frozen=True)
class VadOptions:
    """Which VAD to run and how.

    Raises:
        ValueError: on construction, for an unknown kind or an out-of-range value.
    """

    kind: str = "webrtc"
    """ "webrtc" (fast, the default) or "silero" (ONNX, more robust to noise)."""
    aggressiveness: int = 2
    """webrtcvad's mode, 0 (keeps most audio as speech) to 3 (most eager to drop)."""
    frame_ms: int = 30
    """webrtcvad frame, 10, 20 or 30 ms (Silero always uses 512 samples, 32 ms)."""
    threshold: float = 0.5
    """Silero speech probability above which a window counts as speech."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks every field.

        Raises:
            ValueError: naming the field and the accepted values.
        """
        if self.kind not in VAD_KINDS:
            raise ValueError(f"vad kind must be one of {VAD_KINDS}, not {self.kind!r}")
        if type(self.aggressiveness) is not int or not 0 <= self.aggressiveness <= 3:
            raise ValueError(
                f"vad aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness!r}"
            )
        if type(self.frame_ms) is not int or self.frame_ms not in WEBRTC_FRAME_MS:
            raise ValueError(
                f"vad frame_ms must be 10, 20 or 30, not {self.frame_ms!r}"
            )
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float)
            or not 0 < self.threshold < 1
        ):
            raise ValueError(
                f"vad threshold must be between 0 and 1, not {self.threshold!r}"
            )


class Vad(Protocol):
    """Scores fixed frames of one stream's audio; stateful, one per stream."""

    frame_samples: int
    """Samples at 16 kHz in every frame ``speech_probability`` takes."""
    threshold: float
    """Probability at or above which a frame counts as speech."""

    def speech_probability(self, frame: npt.NDArray[np.float32]) -> float:
        """Returns the probability (0 to 1) that ``frame`` is speech.

        Args:
            frame: exactly ``frame_samples`` samples, 16 kHz mono float32.

        Raises:
            ValueError: the frame has another length.
        """
        ...

    def reset(self) -> None:
        """Forgets the stream's state, as before the first frame."""
        ...


def _check_frame(frame: npt.NDArray[np.float32], frame_samples: int) -> None:
    if frame.shape != (frame_samples,):
        raise ValueError(
            f"a VAD frame must have {frame_samples} samples, got shape {frame.shape}"
        )


class WebRtcVad:
    """webrtcvad (Google's WebRTC GMM VAD) on 10, 20 or 30 ms frames.

    One per stream; not thread-safe.
    """

    def __init__(self, options: VadOptions) -> None:
        """Creates the detector.

        Args:
            options: uses ``aggressiveness`` and ``frame_ms``.
        """
        self.options = options
        self.frame_samples = SAMPLE_RATE_HZ * options.frame_ms // 1000
        self.threshold = WEBRTC_THRESHOLD
        self._vad = webrtcvad.Vad(options.aggressiveness)

    def speech_probability(self, frame: npt.NDArray[np.float32]) -> float:
        """Returns 1.0 when webrtcvad calls the frame speech, else 0.0."""
        _check_frame(frame, self.frame_samples)
        pcm = np.clip(np.round(frame * 32768.0), -32768, 32767).astype("<i2")
        return 1.0 if self._vad.is_speech(pcm.tobytes(), SAMPLE_RATE_HZ) else 0.0

    def reset(self) -> None:
        """Starts a fresh detector (webrtcvad adapts its noise model over time)."""
        self._vad = webrtcvad.Vad(self.options.aggressiveness)


@functools.cache
def silero_session() -> onnxruntime.InferenceSession:
    """Loads faster-whisper's Silero v6 model once per process.

    The session runs on one CPU thread (a 32 ms window takes well under a
    millisecond) and may be shared by every stream: onnxruntime sessions are safe for
    concurrent ``run`` calls, and the recurrent state lives in each ``SileroVad``.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    model = importlib.resources.files("faster_whisper") / "assets" / SILERO_MODEL
    with importlib.resources.as_file(model) as path:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    _LOGGER.debug("Loaded Silero VAD %s", SILERO_MODEL)
    return session


class SileroVad:
    """Silero VAD v6 (ONNX) on 512-sample windows, stateful across windows.

    Each window is fed with the previous window's last 64 samples in front of it and
    the LSTM state of the previous call, exactly as faster-whisper's batched
    ``SileroVADModel`` does, so streaming gives the same probabilities. One per stream
    (not thread-safe); the session may be shared.
    """

    def __init__(
        self,
        options: VadOptions,
        session: onnxruntime.InferenceSession | None = None,
    ) -> None:
        """Creates the detector.

        Args:
            options: uses ``threshold``.
            session: a loaded Silero session; ``silero_session()`` when None.
        """
        self.options = options
        self.frame_samples = SILERO_WINDOW_SAMPLES
        self.threshold = float(options.threshold)
        self._session = session if session is not None else silero_session()
        self.reset()

    def reset(self) -> None:
        """Zeroes the LSTM state and the context samples."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT_SAMPLES, dtype=np.float32)

    def speech_probability(self, frame: npt.NDArray[np.float32]) -> float:
        """Returns Silero's speech probability of the window."""
        _check_frame(frame, self.frame_samples)
        window = np.concatenate([self._context, frame.astype(np.float32, copy=False)])
        probability, self._h, self._c = self._session.run(
            None, {"input": window[np.newaxis, :], "h": self._h, "c": self._c}
        )
        self._context = window[-SILERO_CONTEXT_SAMPLES:].copy()
        return float(np.asarray(probability).reshape(-1)[0])


def make_vad(options: VadOptions) -> Vad:
    """Creates the VAD ``options`` asks for (one per stream)."""
    if options.kind == "silero":
        return SileroVad(options)
    return WebRtcVad(options)
