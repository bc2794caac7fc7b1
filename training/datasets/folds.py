"""Speaker-independent cross-validation folds (leave one speaker or corpus out, grouped
k-fold) and the order in which a held-out speaker's utterances form one stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from training.datasets.base import Utterance


class Fold(NamedTuple):
    """One train/test split; unpacks as ``train, test``."""

    train: npt.NDArray[np.int64]
    """Indices into the utterance list used for training, ascending."""
    test: npt.NDArray[np.int64]
    """Indices of the held-out utterances, ascending; no speaker shared with train."""


def speaker_folds(
    utterances: Sequence[Utterance],
    kind: Literal["loso", "kfold", "loco"] = "loso",
    k: int = 5,
    seed: int = 0,
) -> list[Fold]:
    """Split utterances into folds whose test speakers never appear in training.

    ``loso`` holds out one speaker per fold, speakers in sorted order (``k`` and
    ``seed`` unused). ``loco`` holds out one corpus per fold (corpora sorted), training
    on the others. ``kfold`` groups speakers into ``k`` folds with scikit-learn's
    ``StratifiedGroupKFold`` (shuffled with ``seed``), keeping label proportions
    close to the whole; the same seed always gives the same folds.

    Args:
        utterances: the dataset, e.g. from ``load_dataset``.
        kind: ``"loso"`` or ``"kfold"``.
        k: number of folds for ``kfold``; at most the number of speakers.
        seed: shuffling seed for ``kfold``.

    Returns:
        The folds, as (train indices, test indices).

    Raises:
        ValueError: unknown kind, fewer than 2 speakers, or ``k`` out of range.
    """
    speakers = np.array([utt.speaker for utt in utterances])
    unique = sorted(set(speakers.tolist()))
    if len(unique) < 2:
        raise ValueError(f"speaker folds need at least 2 speakers, got {len(unique)}")
    indices = np.arange(len(utterances), dtype=np.int64)
    if kind == "loco":
        corpora = np.array([utt.corpus for utt in utterances])
        names = sorted(set(corpora.tolist()))
        if len(names) < 2:
            raise ValueError(f"loco needs at least 2 corpora, got {len(names)}")
        return [Fold(indices[corpora != c], indices[corpora == c]) for c in names]
    if kind == "loso":
        return [
            Fold(indices[speakers != speaker], indices[speakers == speaker])
            for speaker in unique
        ]
    if kind != "kfold":
        raise ValueError(f"unknown fold kind {kind!r}; known: loso, kfold, loco")
    if not 2 <= k <= len(unique):
        raise ValueError(f"k must be between 2 and {len(unique)} speakers, got {k}")
    # Imported here: scikit-learn is a training extra, not needed to load data.
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([utt.label for utt in utterances])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        Fold(np.sort(train).astype(np.int64), np.sort(test).astype(np.int64))
        for train, test in splitter.split(indices, labels, groups=speakers)
    ]


def speaker_streams(utterances: Sequence[Utterance], seed: int = 0) -> list[list[int]]:
    """Utterance indices as one stream per speaker (speakers sorted), each in a seeded
    random order: how held-out speakers are scored in training and evaluation."""
    by_speaker: dict[tuple[str, str], list[int]] = {}
    for i, u in enumerate(utterances):
        by_speaker.setdefault((u.corpus, u.speaker), []).append(i)
    rng = np.random.default_rng(seed)
    return [
        [int(i) for i in rng.permutation(by_speaker[key])] for key in sorted(by_speaker)
    ]
