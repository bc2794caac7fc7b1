"""Corpus loaders: ``KIND:PATH`` -> labelled utterances, audio and speaker folds.

Every loader returns :class:`Utterance` records with canonical labels and
corpus-prefixed speaker ids, so corpora can be combined. Kinds:

- ``emodb``: EMO-DB manifest or original-named files (``03a01Fa.wav``).
- ``ravdess``: ``Actor_NN/03-01-EE-II-SS-RR-NN.(wav|flac)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from training.datasets.acted import load_emodb, load_ravdess
from training.datasets.base import Utterance, load_audio, log_loaded

__all__ = ["KINDS", "Utterance", "load_audio", "load_dataset"]

KINDS: Final[dict[str, Callable[[Path], list[Utterance]]]] = {
    "emodb": load_emodb,
    "ravdess": load_ravdess,
}
"""Dataset kind -> loader taking the path of ``KIND:PATH``."""


def load_dataset(spec: str) -> list[Utterance]:
    """Load a dataset named ``KIND:PATH`` (e.g. ``emodb:../shared/datasets/emodb``).

    Args:
        spec: the kind, a colon, and the corpus folder or file.

    Returns:
        The utterances, in a deterministic (sorted file) order.

    Raises:
        ValueError: the kind is unknown, the path does not exist, the dataset is
            empty, or a row or file name carries an unknown label.
    """
    kind, sep, raw_path = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not raw_path:
        raise ValueError(
            f"dataset {spec!r} must be KIND:PATH; kinds: {', '.join(KINDS)}"
        )
    loader = KINDS.get(kind)
    if loader is None:
        raise ValueError(
            f"unknown dataset kind {kind!r} in {spec!r}; known: {', '.join(KINDS)}"
        )
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise ValueError(f"dataset {spec!r}: {path} does not exist")
    utterances = loader(path)
    if not utterances:
        raise ValueError(f"dataset {spec!r}: no utterances found in {path}")
    log_loaded(kind, path, utterances)
    return utterances
