"""The data of an acoustic training run: corpora, labels and feature copies, and what
forked fold workers share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamser.labels import CANONICAL_LABELS
from streamser.recognition.features import FrontEnd
from training.acoustic.options import LABEL_MODES, TrainOptions
from training.acoustic.streams import pooled_vectors
from training.datasets import Utterance, fold_to_neutral, load_dataset
from training.features_cache import TELEPHONE, AugmentOptions, load_features


@dataclass
class TrainingData:
    """Utterances, their labels and feature copies (``load_data``)."""

    utterances: list[Utterance]
    labels: list[str]
    y: npt.NDArray[np.int64]
    copies: list[list[npt.NDArray[np.float32]]] = field(default_factory=list)
    telephone: list[npt.NDArray[np.float32]] = field(default_factory=list)
    """Features of each utterance through ``features_cache.TELEPHONE`` (held-out
    speakers are scored on these too), or empty."""
    scored: list[npt.NDArray[np.float32]] = field(default_factory=list)
    """Clean features of the view held-out utterances are scored on, when it is not
    the view training reads (``load_data``'s ``score_view``), or empty."""
    allowed: Any = None
    """[N, L] bool: the labels the utterance's corpus has (``--labels mask``: the
    loss normalises over those only), or None."""
    corpus_labels: dict[str, list[str]] = field(default_factory=dict)
    """Each corpus's own labels (after folding)."""


def load_data(
    specs: Sequence[str],
    kind: str,
    copies: int,
    telephone: bool = False,
    labels_mode: str = "fold",
    view: str = "daemon",
    front_end: FrontEnd | None = None,
    augment: AugmentOptions | None = None,
    score_view: str | None = None,
) -> TrainingData:
    """Load corpora, labels (canonical order, those present), feature copies and,
    with ``telephone``, the telephone-channel copy for evaluation.

    ``labels_mode``: "fold" reads calm and boredom as neutral
    (``training.datasets.FOLD_TO_NEUTRAL``); "union" keeps every corpus's labels; "mask" keeps them
    and lets each corpus's loss cover only its own labels. ``view``: the audio the
    features describe (``features_cache.VIEWS``; "daemon": the segmenter's
    utterance, as the daemon recognises it). ``front_end``: for the "encoder" kind,
    what to compute (``features_cache.front_end_of``; default: the shipped one).
    ``augment``: how the augmented copies are made (default ``AugmentOptions()``).
    ``score_view``: the view held-out utterances are scored on, if not ``view`` (a
    model trained on whole clips, scored on the daemon's utterances)."""
    if labels_mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, not {labels_mode!r}")
    utts = [u for spec in specs for u in load_dataset(spec)]
    if labels_mode == "fold":
        utts = fold_to_neutral(utts)
    present = {u.label for u in utts}
    labels = [label for label in CANONICAL_LABELS if label in present]
    y = np.array([labels.index(u.label) for u in utts], dtype=np.int64)
    data = TrainingData(utts, labels, y)
    for corpus in sorted({u.corpus for u in utts}):
        have = {u.label for u in utts if u.corpus == corpus}
        data.corpus_labels[corpus] = [k for k in labels if k in have]
    if labels_mode == "mask":
        data.allowed = np.array(
            [[k in data.corpus_labels[u.corpus] for k in labels] for u in utts]
        )
    for copy in range(copies):
        data.copies.append(
            load_features(utts, kind, copy, augment, view=view, front_end=front_end)
        )
    if score_view is not None and score_view != view:
        data.scored = load_features(utts, kind, 0, view=score_view, front_end=front_end)
    if telephone:
        data.telephone = load_features(
            utts, kind, 1, TELEPHONE, view=view, front_end=front_end
        )
    return data


def normalise_by_corpus(data: TrainingData, source: str = "all") -> None:
    """Standardise every corpus's frames with that corpus's own frame mean and
    standard deviation (every copy, by the clean copy's statistics; in place),
    taken over all its clips or, with ``source`` a label, over its clips of that
    label only (neutral: statistics of calm traffic).

    A held-out corpus is standardised by its own unlabelled clips too: the
    deployment counterpart is a running normalisation over the traffic of many
    calls (``TrainOptions.corpus_norm``)."""
    corpora = np.array([u.corpus for u in data.utterances])
    labels = np.array([data.labels[k] for k in data.y])
    counts, means, stds = moments(data.copies[0])
    for corpus in np.unique(corpora):
        rows = np.flatnonzero(corpora == corpus)
        stats = rows if source == "all" else rows[labels[rows] == source]
        if not len(stats):
            raise ValueError(f"corpus {corpus} has no {source} clips to normalise by")
        n = counts[stats].sum()
        mean = (counts[stats, None] * means[stats]).sum(0) / n
        second = (counts[stats, None] * (stds[stats] ** 2 + means[stats] ** 2)).sum(
            0
        ) / n
        scale = 1.0 / np.maximum(np.sqrt(np.maximum(second - mean**2, 0.0)), 1e-3)
        shift, scale = mean.astype(np.float32), scale.astype(np.float32)
        extra = [feats for feats in (data.telephone, data.scored) if feats]
        for feats in (*data.copies, *extra):
            for i in rows:
                feats[i] = (feats[i] - shift) * scale


def calm_labels(data: TrainingData) -> list[int]:
    """Indices of the calm and neutral labels of ``data`` (those it has)."""
    return [data.labels.index(k) for k in ("neutral", "calm") if k in data.labels]


SHARED: dict[str, Any] = {}
"""Data shared with forked fold workers (copy-on-write): ``data``, its ``moments``
(``moments_of`` the data they are of), the stats head's ``summaries``, the ``pooled``
vectors of an adapting head, the held-out ``telephone_inputs`` and ``scored_inputs``
(``TrainingData.scored``), and torch ``threads``."""


def summaries(
    copies: list[list[npt.NDArray[np.float32]]],
) -> list[list[npt.NDArray[np.float32]]]:
    """Two frames per utterance (mean +- std) with the utterance's exact statistics.

    The ``stats`` head reads an utterance only through the mean and standard
    deviation of its frames, which the two frames ``mu + sigma`` and ``mu - sigma``
    share; training on them (without time/feature masking) gives the same model at
    a fraction of the cost of padding hundreds of frames per utterance.
    """
    return [[summary(f) for f in feats] for feats in copies]


def summary(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The two frames ``mean + std`` and ``mean - std`` of ``frames`` (``summaries``)."""
    mean, std = frames.mean(0, dtype=np.float64), frames.std(0, dtype=np.float64)
    return np.stack([mean + std, mean - std]).astype(np.float32)


ENCODER_FRAMES_PER_SECOND = 50
"""Whisper's encoder frames: one per 20 ms of audio."""


def window_summary(
    frames: npt.NDArray[np.float32],
    seconds: tuple[float, float],
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """The two ``summaries`` frames of a random window of ``frames``, its length
    drawn uniformly from ``seconds`` (capped by the utterance)."""
    low, high = (round(s * ENCODER_FRAMES_PER_SECOND) for s in seconds)
    length = min(int(rng.integers(max(1, low), max(low, high) + 1)), len(frames))
    start = int(rng.integers(0, len(frames) - length + 1))
    return summary(frames[start : start + length])


def moments(feats: list[npt.NDArray[np.float32]]) -> tuple[Any, Any, Any]:
    """Per-utterance frame counts, means and standard deviations (float64)."""
    counts = np.array([f.shape[0] for f in feats], dtype=np.float64)
    means = np.stack([f.mean(0, dtype=np.float64) for f in feats])
    stds = np.stack([f.std(0, dtype=np.float64) for f in feats])
    return counts, means, stds


def use_summaries(arch: str, options: TrainOptions) -> bool:
    """Whether the head trains on ``summaries`` rather than every frame."""
    # A feature mask covers every frame of its band, so it masks the two summary
    # frames exactly as it would all frames (mean = fill, std = 0); time masks do not.
    return arch == "stats" and options.time_masks == 0


def pooled_copies(
    data: TrainingData, arch: str, options: TrainOptions, config: dict[str, Any]
) -> list[npt.NDArray[np.float32]]:
    """Pooled vectors of every feature copy, when the model adapts (else empty)."""
    if not config.get("adaptation_window", 0):
        return []
    inputs = SHARED["summaries"] if use_summaries(arch, options) else data.copies
    return [pooled_vectors(copy) for copy in inputs]


def share(
    data: TrainingData, arch: str, options: TrainOptions, config: dict[str, Any]
) -> None:
    """Put ``data`` and what training reads of it in ``SHARED``."""
    SHARED["data"] = data
    SHARED["moments"], SHARED["moments_of"] = moments(data.copies[0]), data
    SHARED["summaries"] = (
        summaries(data.copies) if use_summaries(arch, options) else None
    )
    SHARED["pooled"] = pooled_copies(data, arch, options, config)
