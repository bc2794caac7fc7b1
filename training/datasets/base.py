"""The utterance record every corpus loader returns, and audio loading for training."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import AudioSourceError
from streamser.labels import canonical_label

_LOGGER = logging.getLogger(__name__)

AUDIO_SUFFIXES: Final[tuple[str, ...]] = (".wav", ".flac")


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance of a corpus."""

    utt_id: str
    """Corpus-prefixed id, unique across corpora, e.g. ``"emodb:03a01Fa"``."""
    path: Path | None
    """Audio file, or None for transcript-only corpora (``shemo-text``)."""
    label: str
    """Canonical emotion label (see ``streamser.labels.CANONICAL_LABELS``)."""
    speaker: str
    """Corpus-prefixed speaker id, e.g. ``"emodb:03"``, ``"ravdess:01"``."""
    corpus: str
    """Corpus name, e.g. ``"emodb"``, ``"ravdess"``, ``"shemo"``."""
    text: str | None = None
    """Orthographic transcript of what was said, when known."""
    language: str | None = None
    """ISO 639-1 code of the spoken language (``"de"``, ``"en"``, ``"fa"``...)."""
    sentiment: str | None = None
    """Sentiment label (negative, neutral, positive), for corpora that carry one (MELD)."""


FOLD_TO_NEUTRAL: Final = {"calm": "neutral", "boredom": "neutral"}
"""Labels that each come from one acted corpus (RAVDESS's and Rakshak's calm, EMO-DB's
boredom) and are read as neutral when labels are folded (``--labels fold``, LOCO, the
reports' "folded" figures)."""


def fold_to_neutral(utterances: Sequence[Utterance]) -> list[Utterance]:
    """The utterances with calm and boredom read as neutral (``FOLD_TO_NEUTRAL``)."""
    return [replace(u, label=FOLD_TO_NEUTRAL.get(u.label, u.label)) for u in utterances]


def load_audio(path: str | Path) -> npt.NDArray[np.float32]:
    """Read an audio file as 16 kHz mono float32 for training.

    Channels are averaged; other sample rates are resampled with soxr.

    Args:
        path: a file soundfile can read (WAV, FLAC, OGG, ...).

    Returns:
        The samples, float32 in [-1, 1], at ``SAMPLE_RATE_HZ``.

    Raises:
        AudioSourceError: the file is missing, unreadable or holds no samples.
    """
    try:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as err:
        # soundfile.LibsndfileError subclasses RuntimeError.
        raise AudioSourceError(f"cannot read audio file {path}: {err}") from err
    if audio.shape[0] == 0:
        raise AudioSourceError(f"audio file {path} holds no samples")
    mono = audio.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ)
    return np.ascontiguousarray(mono, dtype=np.float32)


def label_for(name: str, where: str) -> str:
    """Return the canonical label of a corpus label, naming ``where`` if unknown.

    Raises:
        ValueError: the label does not map onto the canonical set.
    """
    try:
        return canonical_label(name)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def code_label(code: str, codes: dict[str, str], where: str) -> str:
    """Look up an emotion code of a file-naming scheme.

    Raises:
        ValueError: the code is not one of ``codes``, naming ``where``.
    """
    try:
        return codes[code]
    except KeyError:
        known = ", ".join(f"{key}={value}" for key, value in codes.items())
        raise ValueError(
            f"{where}: unknown emotion code {code!r} (known: {known})"
        ) from None


def audio_files(root: Path) -> list[Path]:
    """All audio files under ``root`` (recursive), sorted, hidden files skipped."""
    found = (
        path
        for path in root.rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    return sorted(found)


def require_dir(root: Path, kind: str) -> Path:
    """Check that ``root`` is a folder.

    Raises:
        ValueError: it is not.
    """
    if not root.is_dir():
        raise ValueError(f"{kind}: {root} is not a folder")
    return root


def log_loaded(kind: str, root: Path, utterances: Iterable[Utterance]) -> None:
    """Log a one-line summary of a loaded dataset at DEBUG."""
    if _LOGGER.isEnabledFor(logging.DEBUG):
        items = list(utterances)
        speakers = {utt.speaker for utt in items}
        _LOGGER.debug(
            "%s:%s: %d utterances, %d speakers", kind, root, len(items), len(speakers)
        )
