"""Train and evaluate the acoustic emotion model speaker-independently.

``python -m training acoustic --data emodb:PATH --data ravdess:PATH [--arch attn]
[--protocol loso|kfold|loco] [--labels fold|union|mask] [--calibrate-with OOF.npz]
[--final] --out artifacts/acoustic [--json]``

Features are of the utterance the daemon's VAD and segmenter cut from each clip
(``--view daemon``, the default; ``training.daemon_path``). ``loco`` holds out one
corpus at a time. Held-out reports give, per corpus, UA/WA over the model's labels
and restricted to the corpus's own, the predicted-label distribution, ECE before and
after temperature scaling, and arousal/valence agreement for a head with
``{"affect": true}``; out-of-fold predictions are saved as ``oof-PROTOCOL.npz``. The
final checkpoint carries the temperature (fit on this run's and ``--calibrate-with``'s
out-of-fold predictions) that export bakes into the graph.

Features come from ``training.features_cache`` (computed through
``streamser.recognition.features`` exactly as the runtime does: Whisper-base int8 encoder states
of the unpadded utterance for ``attn``, Whisper log-mel for ``cnn``/``cnn-lstm``),
clean plus seeded augmented copies. Each outer fold holds out speakers; inside it an
inner speaker-grouped validation split of the training speakers picks the epoch
(early stopping), never the test speakers. Several seeds form a soft-voting
ensemble. Metrics are pooled over the held-out predictions of each corpus.
``--final`` then fits every seed on all speakers for the median chosen epoch count
and writes the checkpoint read by ``python -m export``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.labels import CANONICAL_LABELS
from streamser.recognition.features import FrontEnd, pad_batch
from training import metrics
from training.datasets import Utterance, load_dataset, speaker_folds
from training.features_cache import (
    TELEPHONE,
    VIEWS,
    AugmentOptions,
    front_end_of,
    load_features,
)
from training.metrics import format_confusion, score

_LOGGER = logging.getLogger(__name__)

FEATURE_KIND: Final = {
    "attn": "encoder",
    "stats": "encoder",
    "cnn": "mel",
    "cnn-lstm": "mel",
}
DEFAULT_CONFIG: Final[dict[str, dict[str, Any]]] = {
    "attn": {
        "hidden": 256,
        "embedding": 128,
        "blocks": 1,
        "kernel": 5,
        "pool": 2,
        "dropout": 0.3,
    },
    "stats": {"hidden": 256, "embedding": 128, "dropout": 0.3},
    "cnn": {"channels": [32, 64, 96], "embedding": 128, "dropout": 0.3},
    "cnn-lstm": {
        "channels": [32, 64, 96],
        "embedding": 128,
        "lstm": 96,
        "dropout": 0.3,
    },
}


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation and augmentation settings of one training run.

    Attributes:
        epochs: maximum epochs (early stopping picks the best on validation).
        batch_size: utterances per step.
        lr: peak AdamW learning rate (one-cycle cosine schedule).
        weight_decay: AdamW weight decay.
        label_smoothing: cross-entropy label smoothing.
        time_masks: SpecAugment time masks per utterance (each <= 10% of frames).
        feature_masks: SpecAugment feature masks per utterance.
        feature_mask_width: maximal width of a feature mask, in dims.
        copies: feature copies to sample from: the clean one and ``copies - 1``
            augmented ones (``features_cache.augment_audio``; 1 = clean only). The
            shipped model's 3 keep it right on telephone audio (MODEL_CARD.md).
        mixup: mixup alpha (0 = off).
        seeds: seeds of the ensemble members.
        val_fraction: share of training speakers held out for early stopping.
        history_sizes: for a head that adapts to the speaker, how many other
            utterances of its speaker a training example's baseline averages (drawn
            uniformly from these, capped by the window and the speaker's utterances);
            0 trains the unadapted path a stream's first utterance takes.
        history_mixes: which of the speaker's utterances such a baseline is drawn
            from, one mix per example: "any", "calm" (calm or neutral ones), "same"
            (the example's own emotion) or "one" (all in one random emotion). The
            last three keep the head from taking "sounds like the speaker's recent
            speech" for "calm" (MODEL_CARD.md, speaker adaptation).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    time_masks: int = 0
    feature_masks: int = 0
    feature_mask_width: int = 48
    copies: int = 3
    mixup: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.15
    history_sizes: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
    history_mixes: tuple[str, ...] = ("any", "calm", "same", "one")
    affect_weight: float = 1.0
    """Weight of the (arousal, valence) regression loss of a head with ``affect``."""
    valence_weight: float = 1.0
    """Extra factor on the valence column of that loss (arousal's is 1)."""
    balance: str = "none"
    """"corpus": draw every corpus equally often in an epoch (sampling with
    replacement, weights 1 / corpus size); "none": every utterance once."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``features_cache.AugmentOptions`` for the augmented copies, e.g.
    ``{"reverb_probability": 1.0, "noise_probability": 0.0}``."""


@dataclass
class _Data:
    utterances: list[Utterance]
    labels: list[str]
    y: npt.NDArray[np.int64]
    copies: list[list[npt.NDArray[np.float32]]] = field(default_factory=list)
    telephone: list[npt.NDArray[np.float32]] = field(default_factory=list)
    """Features of each utterance through ``features_cache.TELEPHONE`` (held-out
    speakers are scored on these too), or empty."""
    allowed: Any = None
    """[N, L] bool: the labels the utterance's corpus has (``--labels mask``: the
    loss normalises over those only), or None."""
    corpus_labels: dict[str, list[str]] = field(default_factory=dict)
    """Each corpus's own labels (after folding)."""


_SHARED: dict[str, Any] = {}
"""Data shared with forked fold workers (copy-on-write)."""
_REPORTED: Final = (
    ("per_corpus", "stream"),
    ("per_corpus_telephone", "telephone"),
    ("per_corpus_cold", "cold"),
    ("per_corpus_telephone_cold", "telephone_cold"),
    ("per_corpus_history_calm", "history_calm"),
    ("per_corpus_history_same", "history_same"),
)
"""Report keys of a model that adapts to the speaker, and the condition of each."""
_REPORTED_PLAIN: Final = (
    ("per_corpus", "cold"),
    ("per_corpus_telephone", "telephone_cold"),
)
"""The same for a model that does not (every utterance is heard alone)."""
_METRIC_ROWS: Final = (
    ("per_corpus", ""),
    ("per_corpus_telephone", " telephone"),
    ("per_corpus_cold", " cold"),
    ("per_corpus_telephone_cold", " telephone cold"),
    ("per_corpus_history_calm", " after calm history"),
    ("per_corpus_history_same", " after same-emotion history"),
)
"""Evaluation keys and the suffixes of their checkpoint metric rows."""
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


def speaker_streams(
    utterances: Sequence[Utterance], seed: int = STREAM_ORDER_SEED
) -> list[list[int]]:
    """Utterance indices as one stream per speaker (speakers sorted), each in a seeded
    random order: how held-out speakers are scored here and in ``training.evaluate``."""
    by_speaker: dict[tuple[str, str], list[int]] = {}
    for i, u in enumerate(utterances):
        by_speaker.setdefault((u.corpus, u.speaker), []).append(i)
    rng = np.random.default_rng(seed)
    return [
        [int(i) for i in rng.permutation(by_speaker[key])] for key in sorted(by_speaker)
    ]


def _sample_baselines(
    batch: npt.NDArray[np.int64],
    others: dict[int, npt.NDArray[np.int64]],
    pooled: list[npt.NDArray[np.float32]],
    window: int,
    sizes: Sequence[int],
    rng: np.random.Generator,
    mixes: Sequence[str] = ("any",),
) -> tuple[Any, Any]:
    """Training baselines: for each example, the mean pooled vector of a random
    number (one of ``sizes``, at most ``window``) of other utterances of its speaker,
    random copies, drawn as one of ``mixes`` says (``TrainOptions.history_mixes``)."""
    import torch

    data: _Data = _SHARED["data"]
    calm = _calm_labels(data)
    baselines = np.zeros((len(batch), pooled[0].shape[1]), dtype=np.float32)
    counts = np.zeros(len(batch), dtype=np.float32)
    sizes = [min(n, window) for n in sizes]
    for row, i in enumerate(batch):
        pool = others[int(i)]
        mix = mixes[int(rng.integers(len(mixes)))]
        if mix == "calm":
            narrowed = pool[np.isin(data.y[pool], calm)]
        elif mix == "same":
            narrowed = pool[data.y[pool] == data.y[i]]
        elif mix == "one":
            narrowed = (
                pool[data.y[pool] == data.y[rng.choice(pool)]] if len(pool) else pool
            )
        else:
            narrowed = pool
        pool = narrowed if len(narrowed) else pool
        n = min(int(rng.choice(sizes)), len(pool))
        if n:
            picked = rng.choice(pool, size=n, replace=False)
            copy = rng.integers(0, len(pooled), size=n)
            baselines[row] = np.mean(
                [pooled[c][j] for c, j in zip(copy, picked, strict=True)], 0
            )
            counts[row] = n
    return torch.from_numpy(baselines), torch.from_numpy(counts)


def _same_speaker_others(
    indices: npt.NDArray[np.int64],
) -> dict[int, npt.NDArray[np.int64]]:
    """For each index, the other indices of its speaker (within ``indices``)."""
    data: _Data = _SHARED["data"]
    groups: dict[tuple[str, str], list[int]] = {}
    for i in indices:
        u = data.utterances[int(i)]
        groups.setdefault((u.corpus, u.speaker), []).append(int(i))
    members = {key: np.array(v, dtype=np.int64) for key, v in groups.items()}
    out = {}
    for i in indices:
        u = data.utterances[int(i)]
        group = members[(u.corpus, u.speaker)]
        out[int(i)] = group[group != i]
    return out


def _batches(
    indices: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    size: int,
    rng: np.random.Generator,
    weights: npt.NDArray[np.float64] | None = None,
) -> list[npt.NDArray[np.int64]]:
    """Shuffled batches of similar length (sorted within chunks of 8 batches);
    with ``weights`` (one per index), as many indices drawn with replacement."""
    if weights is None:
        order = rng.permutation(indices)
    else:
        order = rng.choice(indices, size=len(indices), p=weights / weights.sum())
    batches = []
    chunk = size * 8
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + size] for i in range(0, len(part), size)]
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def _pad(arrays: Sequence[npt.NDArray[np.float32]]) -> tuple[Any, Any]:
    """``pad_batch`` as torch tensors (features and lengths)."""
    import torch

    features, lengths = pad_batch(arrays, np.float32)
    return torch.from_numpy(features), torch.from_numpy(lengths)


def _spec_augment(
    x: Any, lengths: Any, options: TrainOptions, rng: np.random.Generator, fill: Any
) -> Any:
    """Mask random time spans and feature bands of each row (in place).

    Masked values are set to ``fill`` (the training frames' mean, per dimension),
    which a standardising model sees as zero; plain zeros would be far off the
    data for Whisper states, whose dimensions have large, unequal means.
    """
    dim = x.shape[2]
    for row in range(x.shape[0]):
        length = int(lengths[row])
        for _ in range(options.time_masks):
            width = int(rng.integers(0, max(1, length // 10) + 1))
            start = int(rng.integers(0, max(1, length - width) + 1))
            x[row, start : start + width] = fill
        for _ in range(options.feature_masks):
            width = int(rng.integers(0, options.feature_mask_width + 1))
            start = int(rng.integers(0, max(1, dim - width) + 1))
            x[row, :length, start : start + width] = fill[start : start + width]
    return x


def predict(
    model: Any,
    feats: Sequence[npt.NDArray[np.float32]],
    batch_size: int = 64,
    baselines: tuple[Any, Any] | None = None,
) -> npt.NDArray[np.float32]:
    """Class probabilities of each utterance (eval mode, no gradients); with
    ``baselines`` ((baselines, counts) from ``stream_baselines``), adapted."""
    return predict_outputs(model, feats, batch_size, baselines)[0]


def predict_outputs(
    model: Any,
    feats: Sequence[npt.NDArray[np.float32]],
    batch_size: int = 64,
    baselines: tuple[Any, Any] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """``predict``'s probabilities and, for a head with affect, the [N, 2]
    (arousal, valence) of each utterance (else None)."""
    import torch

    model.eval()
    order = np.argsort([f.shape[0] for f in feats])
    outs: dict[int, npt.NDArray[np.float32]] = {}
    affects: dict[int, npt.NDArray[np.float32]] = {}
    has_affect = getattr(model, "affect_head", None) is not None
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, lengths = _pad([feats[i] for i in idx])
            if baselines is None:
                logits, embedding = model.logits(x, lengths)
                p = torch.softmax(logits, dim=-1)
                if has_affect:
                    for i, row in zip(
                        idx, model.affect_of(embedding).numpy(), strict=True
                    ):
                        affects[int(i)] = row
            else:
                logits, _ = model.logits(
                    x,
                    lengths,
                    torch.from_numpy(baselines[0][idx]),
                    torch.from_numpy(baselines[1][idx]),
                )
                p = torch.softmax(logits, dim=-1)
            for i, row in zip(idx, p.numpy(), strict=True):
                outs[int(i)] = row
    probs = np.stack([outs[i] for i in range(len(feats))])
    affect = np.stack([affects[i] for i in range(len(feats))]) if affects else None
    return probs, affect


def _loss(
    logits: Any,
    target: Any,
    weights: Any,
    smoothing: float,
    allowed: Any | None,
) -> Any:
    """Class-weighted cross-entropy with label smoothing; with ``allowed`` ([B, L]
    bool, ``--labels mask``) the softmax and the smoothing cover only the labels
    of each example's corpus, so a corpus is silent about labels it lacks."""
    import torch

    n_labels = logits.shape[-1]
    if allowed is None:
        allowed = torch.ones_like(logits, dtype=torch.bool)
    logp = torch.log_softmax(logits.masked_fill(~allowed, -1.0e4), dim=-1)
    share = allowed.to(logits.dtype) / allowed.sum(-1, keepdim=True).to(logits.dtype)
    onehot = torch.nn.functional.one_hot(target, n_labels).to(logits.dtype)
    soft = (1.0 - smoothing) * onehot + smoothing * share
    per_row = -(soft * logp.masked_fill(~allowed, 0.0)).sum(-1)
    w = weights[target]
    return (w * per_row).sum() / w.sum()


def _summaries(
    copies: list[list[npt.NDArray[np.float32]]],
) -> list[list[npt.NDArray[np.float32]]]:
    """Two frames per utterance (mean +- std) with the utterance's exact statistics.

    The ``stats`` head reads an utterance only through the mean and standard
    deviation of its frames, which the two frames ``mu + sigma`` and ``mu - sigma``
    share; training on them (without time/feature masking) gives the same model at
    a fraction of the cost of padding hundreds of frames per utterance.
    """
    out = []
    for feats in copies:
        rows = []
        for f in feats:
            mean, std = f.mean(0, dtype=np.float64), f.std(0, dtype=np.float64)
            rows.append(np.stack([mean + std, mean - std]).astype(np.float32))
        out.append(rows)
    return out


def _moments(feats: list[npt.NDArray[np.float32]]) -> tuple[Any, Any, Any]:
    """Per-utterance frame counts, means and standard deviations (float64)."""
    counts = np.array([f.shape[0] for f in feats], dtype=np.float64)
    means = np.stack([f.mean(0, dtype=np.float64) for f in feats])
    stds = np.stack([f.std(0, dtype=np.float64) for f in feats])
    return counts, means, stds


def _fit_scalers(model: Any, train_idx: npt.NDArray[np.int64]) -> Any:
    """Set the model's scalers from the training utterances' moments; return the frame mean.

    Frame statistics pool the per-utterance moments exactly (no concatenation of
    all frames); the ``stats`` head's pooled scaler sees each utterance's
    standardised mean and standard deviation, computed from the same moments.
    """
    import torch

    data: _Data = _SHARED["data"]
    if _SHARED.get("moments_of") is not data:
        _SHARED["moments"], _SHARED["moments_of"] = _moments(data.copies[0]), data
    counts, means, stds = (m[train_idx] for m in _SHARED["moments"])
    total = counts.sum()
    mean = (counts[:, None] * means).sum(0) / total
    second = (counts[:, None] * (stds**2 + means**2)).sum(0) / total
    std = np.sqrt(np.maximum(second - mean**2, 0.0))
    scaler = getattr(model, "scaler", None)
    if scaler is not None:
        scaler.set_statistics(
            torch.tensor(mean, dtype=torch.float32),
            torch.tensor(std, dtype=torch.float32),
        )
        pooled_scaler = getattr(model, "pooled_scaler", None)
        if pooled_scaler is not None:
            inv_std = 1.0 / np.maximum(std, 1e-3)
            pooled = np.concatenate([(means - mean) * inv_std, stds * inv_std], axis=1)
            pooled_scaler.set_statistics(
                torch.tensor(pooled.mean(0), dtype=torch.float32),
                torch.tensor(pooled.std(0), dtype=torch.float32),
            )
    return torch.tensor(mean, dtype=torch.float32)


def _use_summaries(arch: str, options: TrainOptions) -> bool:
    # A feature mask covers every frame of its band, so it masks the two summary
    # frames exactly as it would all frames (mean = fill, std = 0); time masks do not.
    return arch == "stats" and options.time_masks == 0


def _ua(y: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> float:
    return float(np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)]))


def train_one(
    arch: str,
    config: dict[str, Any],
    train_idx: npt.NDArray[np.int64],
    val_idx: npt.NDArray[np.int64] | None,
    options: TrainOptions,
    seed: int,
    epochs: int | None = None,
) -> tuple[dict[str, Any], int, float]:
    """Train one model; with ``val_idx``, keep the epoch of best validation UA.

    Args:
        arch: architecture name.
        config: constructor kwargs (``n_labels`` included).
        train_idx: training utterance indices (into the shared data).
        val_idx: validation indices for early stopping, or None.
        options: training settings.
        seed: random seed.
        epochs: epochs to run (default ``options.epochs``).

    Returns:
        (state_dict, best epoch (1-based), best validation UA or nan).
    """
    import torch

    from training import affect as affect_module
    from training.acoustic_models import build_model

    data: _Data = _SHARED["data"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(arch, config)
    # Standardise with the training utterances' statistics (clean copy).
    fill = _fit_scalers(model, train_idx)
    n_epochs = epochs or options.epochs
    counts = np.bincount(data.y[train_idx], minlength=len(data.labels)).astype(
        np.float64
    )
    weights = np.where(
        counts > 0, counts.sum() / np.maximum(counts, 1) / len(counts), 0.0
    )
    class_weights = torch.tensor(weights, dtype=torch.float32)
    allowed_all = torch.from_numpy(data.allowed) if data.allowed is not None else None
    affect_targets = (
        torch.from_numpy(affect_module.targets(data.labels))
        if getattr(model, "affect_head", None) is not None
        else None
    )

    def loss_fn(logits: Any, target: Any, batch: Any, embedding: Any) -> Any:
        allowed = allowed_all[batch] if allowed_all is not None else None
        loss = _loss(logits, target, class_weights, options.label_smoothing, allowed)
        if affect_targets is not None:
            predicted = model.affect_of(embedding)
            column = torch.tensor([1.0, options.valence_weight])
            loss = loss + options.affect_weight * torch.mean(
                column * (predicted - affect_targets[target]) ** 2
            )
        return loss

    sample_weights = None
    if options.balance == "corpus":
        corpora = np.array([data.utterances[i].corpus for i in train_idx])
        sizes = {c: int((corpora == c).sum()) for c in set(corpora.tolist())}
        sample_weights = np.array([1.0 / sizes[c] for c in corpora])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.lr, weight_decay=options.weight_decay
    )
    steps = n_epochs * int(np.ceil(len(train_idx) / options.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.lr, total_steps=steps, pct_start=0.15
    )
    inputs = _SHARED["summaries"] if _use_summaries(arch, options) else data.copies
    lengths = np.array([c.shape[0] for c in inputs[0]], dtype=np.int64)
    copies = min(options.copies, len(inputs))
    window = int(config.get("adaptation_window", 0))
    others = _same_speaker_others(train_idx) if window else {}
    pooled = _SHARED["pooled"][:copies] if window else []
    best_state, best_epoch, best_ua = None, n_epochs, float("nan")
    val_feats = [inputs[0][i] for i in val_idx] if val_idx is not None else []
    for epoch in range(1, n_epochs + 1):
        model.train()
        for batch in _batches(
            train_idx, lengths, options.batch_size, rng, sample_weights
        ):
            choice = rng.integers(0, copies, size=len(batch))
            x, lens = _pad([inputs[c][i] for c, i in zip(choice, batch, strict=True)])
            x = _spec_augment(x, lens, options, rng, fill)
            target = torch.from_numpy(data.y[batch])
            adapt = (
                _sample_baselines(
                    batch,
                    others,
                    pooled,
                    window,
                    options.history_sizes,
                    rng,
                    options.history_mixes,
                )
                if window
                else ()
            )
            if options.mixup > 0:
                lam = float(rng.beta(options.mixup, options.mixup))
                perm = torch.from_numpy(rng.permutation(len(batch)))
                # Mix features of equal-length-sorted batches; lengths take the max.
                x = lam * x + (1 - lam) * x[perm]
                lens = torch.maximum(lens, lens[perm])
                if adapt:
                    baseline, count = adapt
                    adapt = (
                        lam * baseline + (1 - lam) * baseline[perm],
                        torch.minimum(count, count[perm]),
                    )
                logits, emb = model.logits(x, lens, *adapt)
                loss = lam * loss_fn(logits, target, batch, emb) + (1 - lam) * loss_fn(
                    logits, target[perm], batch[perm.numpy()], emb
                )
            else:
                logits, emb = model.logits(x, lens, *adapt)
                loss = loss_fn(logits, target, batch, emb)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
        if val_idx is not None:
            ua = _ua(data.y[val_idx], predict(model, val_feats).argmax(1))
            if not ua <= best_ua:  # first epoch or better (nan-safe)
                best_ua, best_epoch = ua, epoch
                best_state = {
                    k: v.detach().clone() for k, v in model.state_dict().items()
                }
    if best_state is None:
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best_state, best_epoch, best_ua


def _validation_split(
    train_idx: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[Any, Any]:
    """Hold out about ``fraction`` of the training speakers of every corpus."""
    data: _Data = _SHARED["data"]
    rng = np.random.default_rng(seed)
    val_speakers: set[str] = set()
    for corpus in sorted({data.utterances[i].corpus for i in train_idx}):
        speakers = sorted(
            {
                data.utterances[i].speaker
                for i in train_idx
                if data.utterances[i].corpus == corpus
            }
        )
        n_val = max(1, round(fraction * len(speakers))) if len(speakers) > 2 else 0
        val_speakers.update(rng.choice(speakers, size=n_val, replace=False).tolist())
    is_val = np.array([data.utterances[i].speaker in val_speakers for i in train_idx])
    return train_idx[~is_val], train_idx[is_val]


def _run_fold(
    job: tuple[int, Any, Any, str, dict[str, Any], TrainOptions],
) -> tuple[int, dict[str, Any], list[int], list[float]]:
    import torch

    fold, train_idx, test_idx, arch, config, options = job
    torch.set_num_threads(_SHARED.get("threads", 1))
    data: _Data = _SHARED["data"]
    inputs = _SHARED["summaries"] if _use_summaries(arch, options) else data.copies
    test_feats = [inputs[0][i] for i in test_idx]
    telephone = _SHARED.get("telephone_inputs")
    telephone_feats = [telephone[i] for i in test_idx] if telephone else []
    from training.acoustic_models import build_model

    window = int(config.get("adaptation_window", 0))
    test_utts = [data.utterances[i] for i in test_idx]
    # Conditions: (key, features, baselines or None for every utterance alone).
    conditions: list[tuple[str, list[Any], Any]] = [("cold", test_feats, None)]
    if telephone_feats:
        conditions.append(("telephone_cold", telephone_feats, None))
    if window:
        pooled = pooled_vectors(test_feats)
        labels = data.y[test_idx]
        conditions += [
            # each held-out speaker as one stream, in a seeded order
            ("stream", test_feats, stream_baselines(test_utts, pooled, window)),
            # a history of 8 calm/neutral utterances, or of 8 in the same emotion
            ("history_calm", test_feats, history_baselines(
                test_utts, pooled, labels, _calm_labels(data), HISTORY_PROBE)),
            ("history_same", test_feats, history_baselines(
                test_utts, pooled, labels, None, HISTORY_PROBE)),
        ]  # fmt: skip
        if telephone_feats:
            conditions.append(
                (
                    "telephone",
                    telephone_feats,
                    stream_baselines(
                        test_utts, pooled_vectors(telephone_feats), window
                    ),
                )
            )
    probs: dict[str, list[Any]] = {key: [] for key, _, _ in conditions}
    epochs, val_uas = [], []
    for seed in options.seeds:
        inner_train, val = _validation_split(
            train_idx, options.val_fraction, seed * 1000 + fold
        )
        if len(val) == 0:  # too few speakers to hold any out: no early stopping
            inner_train, val = train_idx, None
        state, epoch, val_ua = train_one(arch, config, inner_train, val, options, seed)
        model = build_model(arch, config)
        model.load_state_dict(state)
        for key, feats, baselines in conditions:
            p, affect = predict_outputs(model, feats, baselines=baselines)
            probs[key].append(p)
            if key == "cold" and affect is not None:
                probs.setdefault("affect", []).append(affect)
        epochs.append(epoch)
        val_uas.append(val_ua)
    return fold, {k: np.mean(v, axis=0) for k, v in probs.items()}, epochs, val_uas


def _calm_labels(data: _Data) -> list[int]:
    return [data.labels.index(k) for k in ("neutral", "calm") if k in data.labels]


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


def cross_validate(
    data: _Data,
    arch: str,
    config: dict[str, Any],
    options: TrainOptions,
    protocol: str = "loso",
    k: int = 5,
    jobs: int = 2,
) -> dict[str, Any]:
    """Speaker-independent evaluation; metrics per corpus of the pooled test predictions.

    Args:
        data: the dataset with its feature copies.
        arch: architecture name.
        config: constructor kwargs (``n_labels`` included).
        options: training settings.
        protocol: "loso" (one speaker out, all corpora together) or "kfold".
        k: folds for "kfold".
        jobs: folds trained in parallel (processes, one torch thread each).

    Returns:
        JSON-ready dict: per-corpus metrics (``per_corpus``; ``per_corpus_telephone``
        for the held-out speakers' telephone copies when ``data.telephone`` is set),
        chosen epochs, inner validation UA.
    """
    from tqdm import tqdm

    folds = speaker_folds(data.utterances, kind=protocol, k=k, seed=0)  # type: ignore[arg-type]
    _SHARED["data"] = data
    _SHARED["moments"], _SHARED["moments_of"] = _moments(data.copies[0]), data
    _SHARED["summaries"] = (
        _summaries(data.copies) if _use_summaries(arch, options) else None
    )
    _SHARED["telephone_inputs"] = (
        (
            _summaries([data.telephone])[0]
            if _use_summaries(arch, options)
            else data.telephone
        )
        if data.telephone
        else None
    )
    _SHARED["pooled"] = _pooled_copies(data, arch, options, config)
    _SHARED["threads"] = 1  # two threads thrash on a shared 2-core host
    jobs_list = [(i, tr, te, arch, config, options) for i, (tr, te) in enumerate(folds)]
    probs: dict[str, npt.NDArray[np.float32]] = {}
    epochs: list[int] = []
    val_uas: list[float] = []
    start = time.monotonic()
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = list(
                tqdm(
                    pool.imap_unordered(_run_fold, jobs_list),
                    total=len(folds),
                    desc="folds",
                )
            )
    else:
        results = [_run_fold(job) for job in tqdm(jobs_list, desc="folds")]
    for fold, fold_probs, fold_epochs, fold_val in results:
        for key, value in fold_probs.items():
            probs.setdefault(
                key,
                np.zeros((len(data.y), value.shape[1]), dtype=np.float32),
            )[folds[fold][1]] = value
        epochs += fold_epochs
        val_uas += fold_val
    adaptive = "stream" in probs
    report: dict[str, Any] = {
        "protocol": protocol if protocol in ("loso", "loco") else f"kfold{k}",
        "folds": len(folds),
        "epochs_chosen": epochs,
        "inner_val_ua": float(np.mean(val_uas)),
        "wall_s": round(time.monotonic() - start, 1),
    }
    if adaptive:
        report["streams"] = (
            "per_corpus, per_corpus_telephone: each held-out speaker's utterances as "
            "one stream (seeded order), adapted to the speaker; *_cold: every "
            f"utterance alone; per_corpus_history_calm / _same: {HISTORY_PROBE} "
            "earlier utterances of the speaker, all calm or neutral / all in the "
            "emotion being judged"
        )
    for key, condition in _REPORTED if adaptive else _REPORTED_PLAIN:
        if condition in probs:
            report[key] = _per_corpus(data, probs[condition].argmax(1))
    if not adaptive and "cold" in probs:
        report.update(held_out_report(data, probs["cold"], probs.get("affect")))
        report["oof"] = {"probs": probs["cold"], "affect": probs.get("affect")}
    return report


FOLD_TO_NEUTRAL: Final = {"calm": "neutral", "boredom": "neutral"}
"""``--labels fold``: the labels that each come from one acted corpus and are read
as neutral."""
TEMPERATURES: Final = np.exp(np.linspace(np.log(0.25), np.log(4.0), 81))


def fit_temperature(probs: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    """The temperature T minimising the negative log-likelihood of
    ``softmax(log(probs) / T)`` (grid over 0.25..4, log-spaced)."""
    logp = np.log(np.clip(probs, 1e-12, None))
    best, best_nll = 1.0, np.inf
    for t in TEMPERATURES:
        scaled = calibrate(logp, float(t), logs=True)
        nll = -float(
            np.mean(np.log(np.clip(scaled[np.arange(len(y)), y], 1e-12, None)))
        )
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def calibrate(
    probs: npt.NDArray[Any], temperature: float, logs: bool = False
) -> npt.NDArray[np.float64]:
    """``softmax(log(probs) / temperature)`` (``logs``: ``probs`` are logs already)."""
    logp = probs if logs else np.log(np.clip(probs, 1e-12, None))
    z = logp / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def expected_calibration_error(
    probs: npt.NDArray[Any], correct_labels: npt.NDArray[np.int64], bins: int = 10
) -> float:
    """ECE over ``bins`` equal-width confidence bins (confidence: the top
    probability; correct: the top label is the reference)."""
    return metrics.expected_calibration_error(
        probs.max(1), probs.argmax(1) == correct_labels, bins
    )


def held_out_report(
    data: _Data,
    probs: npt.NDArray[np.float32],
    affect: npt.NDArray[np.float32] | None,
) -> dict[str, Any]:
    """Per corpus, of out-of-fold predictions: scores over the model's own labels
    and restricted to the corpus's classes, the predicted-label distribution, ECE
    (10 bins) raw and after temperature scaling fit on the *other* corpora's rows,
    the same with calm and boredom read as neutral, and arousal/valence agreement.
    Also the temperature fit on all rows (what a final model ships)."""
    from training import affect as affect_module

    out: dict[str, Any] = {"held_out": {}}
    corpora = np.array([u.corpus for u in data.utterances])
    out["temperature"] = fit_temperature(probs, data.y)
    for corpus in sorted(set(corpora.tolist())):
        rows = np.flatnonzero(corpora == corpus)
        others = np.flatnonzero(corpora != corpus)
        # one corpus alone: no other corpora to fit on, so its own rows
        fit_rows = others if len(others) else rows
        t = fit_temperature(probs[fit_rows], data.y[fit_rows])
        reference = [data.labels[data.y[i]] for i in rows]
        own = probs[rows].argmax(1)
        own_labels = [data.labels[i] for i in own]
        mine = [data.labels.index(k) for k in data.corpus_labels[corpus]]
        restricted = [mine[i] for i in probs[rows][:, mine].argmax(1)]
        cal = calibrate(probs[rows], t)
        folded_ref = [FOLD_TO_NEUTRAL.get(k, k) for k in reference]
        folded_pred = [FOLD_TO_NEUTRAL.get(k, k) for k in own_labels]
        folded_correct = np.array(
            [a == b for a, b in zip(folded_ref, folded_pred, strict=True)]
        )
        entry: dict[str, Any] = {
            "own": score(reference, own_labels, labels=data.labels).to_dict(),
            "restricted": score(
                reference, [data.labels[i] for i in restricted], labels=data.labels
            ).to_dict(),
            "folded": score(folded_ref, folded_pred).to_dict(),
            "predicted": {
                k: int(own_labels.count(k)) for k in data.labels if k in own_labels
            },
            "ece_raw": expected_calibration_error(probs[rows], data.y[rows]),
            "temperature_other_corpora": t,
            "ece": expected_calibration_error(cal, data.y[rows]),
            "ece_folded": _folded_ece(cal, folded_correct),
        }
        if affect is not None:
            entry["affect"] = affect_module.agreement(affect[rows], reference)
        out["held_out"][corpus] = entry
    return out


def pooled_temperature(
    paths: Sequence[Path],
    data: _Data,
    own: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """The temperature fit on the out-of-fold predictions in ``paths`` (and this
    run's, ``own``), all rows pooled, and the ECE (10 bins) at that temperature of
    each set's rows per corpus: the calibration of the graph that ships it.

    Raises:
        ValueError: a file is missing, or its labels or utterances differ from
            ``data``'s.
    """
    ids = [u.utt_id for u in data.utterances]
    probs, ys = [], []
    for path in paths:
        if not path.is_file():
            raise ValueError(f"--calibrate-with: {path} not found")
        with np.load(path, allow_pickle=False) as oof:
            if [str(k) for k in oof["labels"]] != data.labels or [
                str(i) for i in oof["ids"]
            ] != ids:
                raise ValueError(
                    f"--calibrate-with: {path} is of other labels or utterances"
                )
            probs.append(oof["probs"])
            ys.append(oof["y"])
    if own is not None:
        probs.append(own)
        ys.append(data.y)
    temperature = fit_temperature(np.concatenate(probs), np.concatenate(ys))
    names = [p.name for p in paths] + (["this run"] if own is not None else [])
    corpora = np.array([u.corpus for u in data.utterances])
    ece = {
        name: {
            corpus: expected_calibration_error(
                calibrate(set_probs[corpora == corpus], temperature),
                set_y[corpora == corpus],
            )
            for corpus in sorted(set(corpora.tolist()))
        }
        for name, set_probs, set_y in zip(names, probs, ys, strict=True)
    }
    return {"temperature": temperature, "fit_on": names, "ece": ece}


def _folded_ece(probs: npt.NDArray[Any], correct: npt.NDArray[np.bool_]) -> float:
    """ECE of the top label's probability against correctness with calm and
    boredom read as neutral."""
    return metrics.expected_calibration_error(probs.max(1), correct)


def _pooled_copies(
    data: _Data, arch: str, options: TrainOptions, config: dict[str, Any]
) -> list[npt.NDArray[np.float32]]:
    """Pooled vectors of every feature copy, when the model adapts (else empty)."""
    if not config.get("adaptation_window", 0):
        return []
    inputs = _SHARED["summaries"] if _use_summaries(arch, options) else data.copies
    return [pooled_vectors(copy) for copy in inputs]


def _per_corpus(
    data: _Data, predicted: npt.NDArray[np.int64]
) -> dict[str, dict[str, Any]]:
    """Metrics of ``predicted`` (label index per utterance) for each corpus."""
    out = {}
    for corpus in sorted({u.corpus for u in data.utterances}):
        rows = [i for i, u in enumerate(data.utterances) if u.corpus == corpus]
        s = score(
            [data.labels[data.y[i]] for i in rows],
            [data.labels[predicted[i]] for i in rows],
            labels=data.labels,
        )
        out[corpus] = s.to_dict()
    return out


def fit_final(
    data: _Data, arch: str, config: dict[str, Any], options: TrainOptions, epochs: int
) -> list[dict[str, Any]]:
    """Train every seed on all utterances for ``epochs`` epochs; their state dicts."""
    import torch
    from tqdm import tqdm

    _SHARED["data"] = data
    _SHARED["moments"], _SHARED["moments_of"] = _moments(data.copies[0]), data
    _SHARED["summaries"] = (
        _summaries(data.copies) if _use_summaries(arch, options) else None
    )
    _SHARED["pooled"] = _pooled_copies(data, arch, options, config)
    torch.set_num_threads(1)
    all_idx = np.arange(len(data.y), dtype=np.int64)
    states = []
    for seed in tqdm(options.seeds, desc="final fit"):
        state, _, _ = train_one(
            arch, config, all_idx, None, options, seed, epochs=epochs
        )
        states.append(state)
    return states


def load_data(
    specs: Sequence[str],
    kind: str,
    copies: int,
    telephone: bool = False,
    labels_mode: str = "fold",
    view: str = "daemon",
    front_end: FrontEnd | None = None,
    augment: AugmentOptions | None = None,
) -> _Data:
    """Load corpora, labels (canonical order, those present), feature copies and,
    with ``telephone``, the telephone-channel copy for evaluation.

    ``labels_mode``: "fold" reads calm and boredom as neutral
    (``FOLD_TO_NEUTRAL``); "union" keeps every corpus's labels; "mask" keeps them
    and lets each corpus's loss cover only its own labels. ``view``: the audio the
    features describe (``features_cache.VIEWS``; "daemon": the segmenter's
    utterance, as the daemon recognises it). ``front_end``: for the "encoder" kind,
    what to compute (``features_cache.front_end_of``; default: the shipped one).
    ``augment``: how the augmented copies are made (default ``AugmentOptions()``)."""
    if labels_mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, not {labels_mode!r}")
    utts = [u for spec in specs for u in load_dataset(spec)]
    if labels_mode == "fold":
        utts = [replace(u, label=FOLD_TO_NEUTRAL.get(u.label, u.label)) for u in utts]
    present = {u.label for u in utts}
    labels = [label for label in CANONICAL_LABELS if label in present]
    y = np.array([labels.index(u.label) for u in utts], dtype=np.int64)
    data = _Data(utts, labels, y)
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
    if telephone:
        data.telephone = load_features(
            utts, kind, 1, TELEPHONE, view=view, front_end=front_end
        )
    return data


LABEL_MODES: Final = ("fold", "union", "mask")


def _layer_list(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of layers: {text!r}") from None
    if not layers:
        raise argparse.ArgumentTypeError(f"not a list of layers: {text!r}")
    return layers  # the prefix graph checks them against the Whisper model


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training acoustic", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data", action="append", required=True, help="KIND:PATH (repeatable)"
    )
    parser.add_argument(
        "--arch", default="stats", choices=sorted(FEATURE_KIND), help="default: stats"
    )
    parser.add_argument(
        "--config", default="{}", help="JSON overrides of the architecture config"
    )
    parser.add_argument("--train", default="{}", help="JSON overrides of TrainOptions")
    parser.add_argument(
        "--protocol",
        default="loso",
        choices=("loso", "kfold", "loco", "none"),
        help="evaluation (default loso; kfold: speaker-grouped folds over all "
        "corpora; loco: leave one corpus out; none: skip)",
    )
    parser.add_argument(
        "--folds", type=int, default=5, help="folds for --protocol kfold"
    )
    parser.add_argument(
        "--final",
        action="store_true",
        help="fit on all speakers and write the checkpoint",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="final fit epochs (default: median chosen by the evaluation's inner validation, else 20)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="folds trained in parallel (default 2)"
    )
    parser.add_argument(
        "--no-telephone",
        action="store_true",
        help="do not also score held-out speakers through a telephone channel "
        "(8 kHz mu-law)",
    )
    parser.add_argument(
        "--labels",
        default="fold",
        choices=LABEL_MODES,
        help="fold: calm and boredom read as neutral (default); union: every "
        "corpus's labels; mask: union, each corpus's loss over its own labels only",
    )
    parser.add_argument(
        "--view",
        default="daemon",
        choices=VIEWS,
        help="train and score on the daemon's utterances (default) or whole clips",
    )
    parser.add_argument(
        "--layers",
        type=_layer_list,
        default=None,
        help="Whisper encoder layers the stats/attn heads read, e.g. 2,3 (default: "
        "the shipped front end's); the exported graph runs Whisper up to the deepest",
    )
    parser.add_argument(
        "--mel-level",
        type=float,
        default=None,
        help="shift each utterance's log-mel to this level of its louder half of "
        "frames before the Whisper layers, as a gain normalisation (0 is about "
        "-20 dBFS speech; default: none)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="temperature baked into the exported graph (default: fit on the "
        "evaluation's out-of-fold predictions, else 1)",
    )
    parser.add_argument(
        "--calibrate-with",
        action="append",
        type=Path,
        default=[],
        help="out-of-fold predictions (oof-*.npz of earlier runs on the same data "
        "and labels, e.g. --protocol loco) that the temperature is fit on too, so "
        "it serves unseen speakers and unseen corpora alike (repeatable)",
    )
    parser.add_argument("--name", default="emotion-acoustic-v4", help="checkpoint name")
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts/acoustic"), help="output folder"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training acoustic``)."""
    args = _parse(argv)
    command = "python -m training acoustic " + " ".join(
        sys.argv[2:] if argv is None else argv
    )
    try:
        config_over = json.loads(args.config)
        train_over = json.loads(args.train)
        for key in ("seeds", "history_sizes", "history_mixes"):
            if key in train_over:
                train_over[key] = tuple(train_over[key])
        options = replace(TrainOptions(), **train_over)
        augment = AugmentOptions(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in options.augment.items()
            }
        )
    except (json.JSONDecodeError, TypeError) as err:
        print(f"error: bad --config/--train JSON: {err}", file=sys.stderr)
        return 2
    try:
        front_end = front_end_of(FEATURE_KIND[args.arch], args.layers, args.mel_level)
        data = load_data(
            args.data,
            FEATURE_KIND[args.arch],
            options.copies,
            telephone=args.protocol != "none" and not args.no_telephone,
            labels_mode=args.labels,
            view=args.view,
            front_end=front_end,
            augment=augment,
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    config = {**DEFAULT_CONFIG[args.arch], **config_over, "n_labels": len(data.labels)}
    config["input_dim"] = int(data.copies[0][0].shape[1])
    started = time.monotonic()
    report: dict[str, Any] = {
        "arch": args.arch,
        "config": config,
        "train": asdict(options),
        "labels": data.labels,
        "label_mode": args.labels,
        "view": args.view,
    }
    if args.protocol != "none":
        report["evaluation"] = cross_validate(
            data, args.arch, config, options, args.protocol, args.folds, args.jobs
        )
        for channel, key in (
            ("", "per_corpus"),
            (" telephone", "per_corpus_telephone"),
            (" cold", "per_corpus_cold"),
            (" telephone cold", "per_corpus_telephone_cold"),
            (" after calm history", "per_corpus_history_calm"),
            (" after same-emotion history", "per_corpus_history_same"),
        ):
            for corpus, s in report["evaluation"].get(key, {}).items():
                _LOGGER.info(
                    "%s %s%s: UA %.1f WA %.1f",
                    args.protocol,
                    corpus,
                    channel,
                    100 * s["ua"],
                    100 * s["wa"],
                )
    oof = report.get("evaluation", {}).pop("oof", None)
    if oof is not None and args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez(
            args.out / f"oof-{report['evaluation']['protocol']}.npz",
            probs=oof["probs"],
            affect=oof["affect"] if oof["affect"] is not None else np.zeros(0),
            y=data.y,
            ids=np.array([u.utt_id for u in data.utterances]),
            labels=np.array(data.labels),
        )
    if args.calibrate_with:
        report["calibration"] = pooled_temperature(
            args.calibrate_with, data, oof["probs"] if oof is not None else None
        )
    if args.final:
        chosen = report.get("evaluation", {}).get("epochs_chosen")
        epochs = args.epochs or (int(np.median(chosen)) if chosen else 20)
        final_start = time.monotonic()
        states = fit_final(data, args.arch, config, options, epochs)
        report["final"] = {
            "epochs": epochs,
            "wall_s": round(time.monotonic() - final_start, 1),
        }
        checkpoint = {
            "kind": "acoustic",
            "name": args.name,
            "arch": args.arch,
            "config": config,
            "state_dict": states[0],
            "labels": data.labels,
            "front_end": front_end.to_dict(),
            "metrics": {
                f"{corpus}{suffix}": scores
                for key, suffix in _METRIC_ROWS
                for corpus, scores in report.get("evaluation", {}).get(key, {}).items()
            },
            "data": list(args.data),
            "protocol": report.get("evaluation", {}).get("protocol", "none"),
            "command": command,
            "train": asdict(options),
            "final_epochs": epochs,
            "temperature": (
                args.temperature
                if args.temperature is not None
                else report["calibration"]["temperature"]
                if "calibration" in report
                else report.get("evaluation", {}).get("temperature", 1.0)
            ),
            "label_mode": args.labels,
            "view": args.view,
            "held_out": report.get("evaluation", {}).get("held_out"),
        }
        if len(states) > 1:
            checkpoint["ensemble"] = states
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{args.name}.pt"
        torch.save(checkpoint, path)
        report["checkpoint"] = str(path)
        _LOGGER.info("wrote %s", path)
    report["wall_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report))
    elif "evaluation" in report:
        for corpus, s in report["evaluation"]["per_corpus"].items():
            print(f"{corpus}: UA {100 * s['ua']:.1f} WA {100 * s['wa']:.1f} n {s['n']}")
            from training.metrics import Scores

            print(format_confusion(Scores(**s)))
    return 0
