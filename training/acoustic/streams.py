"""Speaker baselines of utterances heard as streams, for heads that adapt to the speaker.

A held-out speaker's utterances form one stream in a seeded order
(``training.datasets.speaker_streams``); each utterance's baseline is the mean pooled
vector of the speaker's earlier ones, as the runtime feeds the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from training.datasets import Utterance, speaker_streams

HISTORY_PROBE: Final = 8
"""Earlier utterances in the skewed-history conditions of the evaluation."""


STREAM_ORDER_SEED: Final = 0
"""Seed of the order in which a held-out speaker's utterances form one stream."""


def pooled_vectors(
    feats: Sequence[npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32]:
    """[N, 2D] raw frame mean and standard deviation of each utterance (the
    adaptation's ``pooled``; summaries give the same as the frames they summarise)."""
    return np.stack(
        [
            np.concatenate([f.mean(0, dtype=np.float64), f.std(0, dtype=np.float64)])
            for f in feats
        ]
    ).astype(np.float32)


def stream_baselines(
    utterances: Sequence[Utterance],
    pooled: npt.NDArray[np.float32],
    window: int,
    seed: int = STREAM_ORDER_SEED,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Baselines of utterances heard as one stream per speaker, in a seeded order.

    Each utterance's baseline is the mean ``pooled`` vector of the (at most
    ``window``) utterances of its speaker that came before it in that stream, and its
    count how many those are: what the runtime feeds the graph for a stream that
    carries one speaker's utterances.

    Returns:
        (baselines [N, 2D], counts [N]) in the order of ``utterances``.
    """
    baselines = np.zeros_like(pooled)
    counts = np.zeros(len(utterances), dtype=np.float32)
    for order in speaker_streams(utterances, seed):
        for position, i in enumerate(order):
            history = order[max(0, position - window) : position]
            if history:
                baselines[i] = pooled[history].mean(0)
                counts[i] = len(history)
    return baselines, counts


def history_baselines(
    utterances: Sequence[Utterance],
    pooled: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    keep: Sequence[int] | None,
    size: int,
    seed: int = STREAM_ORDER_SEED,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Baselines from ``size`` other utterances of the same speaker with a label in
    ``keep`` (None: the utterance's own label): the speaker's stream so far was calm,
    or was all in the emotion being judged. Fewer when the speaker has fewer."""
    baselines = np.zeros_like(pooled)
    counts = np.zeros(len(utterances), dtype=np.float32)
    rng = np.random.default_rng(seed)
    speakers = np.array([f"{u.corpus}/{u.speaker}" for u in utterances])
    for i in range(len(utterances)):
        wanted = [labels[i]] if keep is None else list(keep)
        pool = np.flatnonzero(
            (speakers == speakers[i])
            & np.isin(labels, wanted)
            & (np.arange(len(labels)) != i)
        )
        if len(pool):
            picked = rng.choice(pool, size=min(size, len(pool)), replace=False)
            baselines[i] = pooled[picked].mean(0)
            counts[i] = len(picked)
    return baselines, counts
