"""The one definition of the acoustic front end, shared by training and serving.

Audio (16 kHz mono float32) becomes Whisper's log-mel spectrogram here; training
computes its inputs through this module, so serving cannot drift from training. The
shipped acoustic graph reads these frames and runs Whisper base's first encoder layers
itself (``WHISPER_LAYERS``); a graph may instead read the whole encoder's final states
(type "whisper-encoder"), which the runtime takes from the ASR model's encoder on the
unpadded utterance (about 1/20 of the cost of faster-whisper's 30 s window).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

HOP_SAMPLES: Final = 160
N_MELS: Final = 80
MAX_MEL_FRAMES: Final = 3000
"""Whisper's encoder has 1500 positions: 30 s of audio at most."""


@dataclass(frozen=True)
class FrontEnd:
    """Feature settings an acoustic model was trained with (stored in its metadata).

    Attributes:
        type: what the graph reads: "log-mel" frames, or "whisper-encoder" (the
            final states of the Whisper encoder named by ``whisper``, dim 512 for base).
        n_mels: mel bands of the spectrogram.
        hop_samples: samples per mel frame at 16 kHz.
        dim: size of one input frame of the model.
        whisper: the Whisper model whose encoder weights the model uses ("" for none).
        encoder_layers: for "log-mel": the encoder depths whose states (each through
            the encoder's final layer norm) the graph itself computes from the
            log-mel frames with ``whisper``'s encoder weights and reads side by side;
            None when the graph holds no Whisper layers.
        mel_level: for "log-mel": when set, each utterance's log-mel frames are
            shifted by one constant (a gain change: 0.1 is 4 dB) so that the mean of
            its louder half of frames is this value (``level_mel``), so a model hears
            speech at one level whatever the microphone, codec or corpus gain; None:
            frames as Whisper computes them.
    """

    type: str
    n_mels: int = N_MELS
    hop_samples: int = HOP_SAMPLES
    dim: int = 512
    whisper: str = "whisper-base"
    encoder_layers: tuple[int, ...] | None = None
    mel_level: float | None = None

    def __post_init__(self) -> None:
        if self.encoder_layers is not None:  # JSON metadata gives a list
            object.__setattr__(self, "encoder_layers", tuple(self.encoder_layers))

    @property
    def runs_whisper_layers(self) -> bool:
        """Whether the graph runs Whisper encoder layers itself (int8, dynamically
        quantised: their activation scale comes from the whole input, so such a graph
        gets one utterance per call, as training computed it)."""
        return self.type == "log-mel" and bool(self.encoder_layers)

    def levelled(self, mel: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``mel`` as this front end's graph reads it: at ``mel_level`` when set."""
        if self.type != "log-mel" or self.mel_level is None:
            return mel
        return level_mel(mel, self.mel_level)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (without ``mel_level`` when unset, as
        graphs made before it was added describe themselves)."""
        data = asdict(self)
        if self.mel_level is None:
            del data["mel_level"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontEnd:
        """Build settings from metadata; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown feature settings: {sorted(extra)}")
        return cls(**data)


WHISPER_LAYERS: Final = FrontEnd(
    type="log-mel", dim=N_MELS, whisper="whisper-base", encoder_layers=(2, 3)
)
"""The shipped front end: log-mel frames in; the graph runs Whisper base's first three
encoder layers (int8, ``training.whisper_prefix``) and reads the states after layers 2
and 3 (measured best for emotion on held-out speakers; see MODEL_CARD.md)."""
WHISPER_ENCODER_TOP: Final = FrontEnd(type="whisper-encoder", dim=512)
"""The whole encoder's final states, computed by the runtime's Whisper (CTranslate2)."""
LOG_MEL: Final = FrontEnd(type="log-mel", dim=N_MELS, whisper="")

_EXTRACTOR_LOCK = threading.Lock()


@functools.cache
def _extractor() -> Callable[..., npt.NDArray[np.float32]]:
    """faster-whisper's mel extractor, made on first use."""
    # imported here: faster-whisper (and CTranslate2) load only with a model, so
    # that ``streamser send`` and ``import streamser.cli`` stay light (issue 26)
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor: Callable[..., npt.NDArray[np.float32]] = FeatureExtractor(
        feature_size=N_MELS
    )
    return extractor


def log_mel(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper's log-mel spectrogram of one utterance, without padding.

    Args:
        audio: 16 kHz mono float32 samples in [-1, 1].

    Returns:
        Array of shape (n_frames, 80), n_frames = len(audio) // 160, at most 3000,
        and at least 2 (the encoder halves the frame count).
    """
    samples = np.asarray(audio, dtype=np.float32)
    max_samples = MAX_MEL_FRAMES * HOP_SAMPLES
    if samples.shape[0] > max_samples:
        samples = samples[-max_samples:]
    if samples.shape[0] < 2 * HOP_SAMPLES:
        samples = np.pad(samples, (0, 2 * HOP_SAMPLES - samples.shape[0]))
    with _EXTRACTOR_LOCK:  # the extractor caches arrays; keep calls serial
        mel = _extractor()(samples, padding=0)
    frames = samples.shape[0] // HOP_SAMPLES
    frames -= frames % 2
    return np.ascontiguousarray(mel[:, :frames].T, dtype=np.float32)


def level_mel(mel: npt.NDArray[np.float32], level: float) -> npt.NDArray[np.float32]:
    """Shift Whisper log-mel frames (n_frames, n_mels) so that the mean of the louder
    half of its frames (by mean over bands) is ``level``.

    Whisper's log-mel is log10 power scaled by 1/4, with a floor 8 below the
    utterance's loudest value, so adding a constant to every value is exactly a gain
    change of 40 dB per unit, floor included: the result is the spectrogram of the
    same utterance recorded at another gain.
    """
    if mel.shape[0] == 0:
        return mel
    frame_levels = mel.mean(axis=1)
    louder = frame_levels[frame_levels >= np.median(frame_levels)]
    return (mel + np.float32(level - float(louder.mean()))).astype(np.float32)


def encoder_states(
    whisper: Any, mels: list[npt.NDArray[np.float32]]
) -> list[npt.NDArray[np.float32]]:
    """Run the Whisper encoder on unpadded utterances.

    Args:
        whisper: a ``ctranslate2.models.Whisper`` (faster-whisper's ``model.model``).
        mels: log-mel arrays from ``log_mel``, each (n_frames, 80).

    Returns:
        One float32 array of shape (n_frames // 2, dim) per input. Inputs of different
        lengths are encoded one by one (padding would change the states).
    """
    import ctranslate2  # the runtime dependency of faster-whisper

    states = []
    for mel in mels:
        batch = np.ascontiguousarray(mel.T[np.newaxis], dtype=np.float32)
        output = whisper.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)
        states.append(np.asarray(output, dtype=np.float32)[0])
    return states


def pad_batch(
    rows: Sequence[npt.NDArray[Any]], dtype: npt.DTypeLike, *, min_width: int = 1
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Zero-pad variable-length rows into one batch, as every graph reads them.

    Args:
        rows: arrays of shape (length, ...), the trailing shape equal across rows
            (feature frames, or token ids); at least one.
        dtype: dtype of the batch.
        min_width: the least padded length. The default 1 keeps a batch of empty
            rows (an empty transcript) one column wide; 0 gives shape (n, 0), as
            ``export.parity_inputs`` feeds a graph to check it copes with that too.

    Returns:
        The batch, shape (len(rows), max(min_width, longest), ...), and the rows'
        lengths (int64).
    """
    lengths = np.asarray([row.shape[0] for row in rows], dtype=np.int64)
    width = max(min_width, int(lengths.max(initial=0)))
    batch = np.zeros((len(rows), width, *rows[0].shape[1:]), dtype=dtype)
    for index, row in enumerate(rows):
        batch[index, : row.shape[0]] = row
    return batch, lengths


MAX_TEXT_TOKENS: Final = 128


class TextTokenizer:
    """The text front end: Whisper's multilingual BPE tokenizer, as faster-whisper uses.

    Training and serving both turn a transcript into token ids here. Safe to share
    across threads.
    """

    def __init__(self, tokenizer_json: str) -> None:
        """Load ``tokenizer.json`` from a Whisper model folder."""
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(tokenizer_json)

    def encode(self, text: str) -> npt.NDArray[np.int64]:
        """Token ids of ``text`` (leading space as Whisper emits it), at most 128."""
        text = " ".join(text.split())
        if not text:
            return np.zeros(0, dtype=np.int64)
        ids = self._tokenizer.encode(" " + text, add_special_tokens=False).ids
        return np.asarray(ids[:MAX_TEXT_TOKENS], dtype=np.int64)
