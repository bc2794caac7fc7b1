"""The training loop of one acoustic head: batches, augmentation, loss, early stopping.

Training reads the data in ``training.acoustic.data.SHARED`` (``share``), so forked
fold workers share it copy-on-write. The head standardises its input with the training
utterances' statistics, draws one feature copy per example, masks time spans and
feature bands, optionally mixes examples (mixup) and, for a head that adapts to the
speaker, draws each example's baseline from other utterances of its speaker.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from training import affect
from training.acoustic.data import (
    SHARED,
    TrainingData,
    calm_labels,
    moments,
    use_summaries,
    window_summary,
)
from training.acoustic.options import TrainOptions
from training.acoustic.predict import pad, predict
from training.acoustic_models import build_model


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
    data: TrainingData = SHARED["data"]
    calm = calm_labels(data)
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
    data: TrainingData = SHARED["data"]
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


def length_batches(
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


def spec_augment(
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


def fit_scalers(model: Any, train_idx: npt.NDArray[np.int64]) -> Any:
    """Set the model's scalers from the training utterances' moments; return the frame mean.

    Frame statistics pool the per-utterance moments exactly (no concatenation of
    all frames); the ``stats`` head's pooled scaler sees each utterance's
    standardised mean and standard deviation, computed from the same moments.
    """
    data: TrainingData = SHARED["data"]
    if SHARED.get("moments_of") is not data:
        SHARED["moments"], SHARED["moments_of"] = moments(data.copies[0]), data
    counts, means, stds = (m[train_idx] for m in SHARED["moments"])
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


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``-weight`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Any, weight: float) -> Any:  # noqa: D102
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:  # noqa: D102
        return -ctx.weight * grad, None


def reverse_gradient(x: Any, weight: float) -> Any:
    """``x`` unchanged; its gradient multiplied by ``-weight`` on the way back."""
    return _ReverseGradient.apply(x, weight)


class _CorpusAdversary:
    """A corpus classifier on the embedding, trained through gradient reversal
    (``TrainOptions.corpus_adversary``); its weight ramps from 0 to the full weight
    as ``2 / (1 + exp(-10 p)) - 1`` of the training progress ``p``."""

    def __init__(
        self, data: TrainingData, embedding: int, weight: float, steps: int
    ) -> None:
        names = sorted({u.corpus for u in data.utterances})
        index = {name: i for i, name in enumerate(names)}
        self.corpus = torch.tensor([index[u.corpus] for u in data.utterances])
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(embedding, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, len(names)),
        )
        self.weight, self.steps, self.step = weight, max(1, steps), 0

    def loss(self, embedding: Any, batch: Any) -> Any:
        """The corpus cross-entropy of ``batch`` with the reversed gradient."""
        progress = min(1.0, self.step / self.steps)
        ramp = 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
        reversed_ = reverse_gradient(embedding, self.weight * ramp)
        return torch.nn.functional.cross_entropy(
            self.classifier(reversed_), self.corpus[batch]
        )


def unweighted_accuracy(
    y: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]
) -> float:
    """Mean recall over the classes present in ``y``."""
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
    data: TrainingData = SHARED["data"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(arch, config)
    # Standardise with the training utterances' statistics (clean copy).
    fill = fit_scalers(model, train_idx)
    n_epochs = epochs or options.epochs
    steps = n_epochs * int(np.ceil(len(train_idx) / options.batch_size))
    adversary = (
        _CorpusAdversary(
            data, int(config.get("embedding", 128)), options.corpus_adversary, steps
        )
        if options.corpus_adversary > 0
        else None
    )
    loss_fn = loss_function(model, data, train_idx, options, adversary)
    sample_weights = (
        _corpus_weights(data, train_idx) if options.balance == "corpus" else None
    )
    parameters = list(model.parameters())
    if adversary is not None:
        parameters += list(adversary.classifier.parameters())
    optimizer = torch.optim.AdamW(
        parameters, lr=options.lr, weight_decay=options.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.lr, total_steps=steps, pct_start=0.15
    )
    inputs = SHARED["summaries"] if use_summaries(arch, options) else data.copies
    lengths = np.array([c.shape[0] for c in inputs[0]], dtype=np.int64)
    batch = _BatchMaker(model, data, inputs, config, train_idx, options, fill, rng)
    best_state, best_epoch, best_ua = None, n_epochs, math.nan
    val_feats = [inputs[0][i] for i in val_idx] if val_idx is not None else []
    for epoch in range(1, n_epochs + 1):
        model.train()
        for rows in length_batches(
            train_idx, lengths, options.batch_size, rng, sample_weights
        ):
            loss = batch.loss(rows, loss_fn)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            scheduler.step()
            if adversary is not None:
                adversary.step += 1
        if val_idx is not None:
            ua = unweighted_accuracy(
                data.y[val_idx], predict(model, val_feats).argmax(1)
            )
            if not ua <= best_ua:  # first epoch or better (nan-safe)
                best_ua, best_epoch = ua, epoch
                best_state = _copy_state(model)
    if best_state is None:
        best_state = _copy_state(model)
    return best_state, best_epoch, best_ua


def _copy_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


LossFn = Callable[[Any, Any, Any, Any], Any]
"""(logits, targets, batch indices, embedding) -> the loss of a batch."""


def loss_function(
    model: Any,
    data: TrainingData,
    train_idx: npt.NDArray[np.int64],
    options: TrainOptions,
    adversary: _CorpusAdversary | None = None,
) -> LossFn:
    """The class-weighted loss of a batch, plus the affect regression of a head with
    affect (``TrainOptions.affect_weight``) and the corpus adversary's loss."""
    counts = np.bincount(data.y[train_idx], minlength=len(data.labels)).astype(
        np.float64
    )
    weights = np.where(
        counts > 0, counts.sum() / np.maximum(counts, 1) / len(counts), 0.0
    )
    class_weights = torch.tensor(weights, dtype=torch.float32)
    allowed_all = torch.from_numpy(data.allowed) if data.allowed is not None else None
    affect_targets = (
        torch.from_numpy(affect.targets(data.labels))
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
        if adversary is not None:
            loss = loss + adversary.loss(embedding, torch.as_tensor(batch))
        return loss

    return loss_fn


def _corpus_weights(
    data: TrainingData, train_idx: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Sampling weights that draw every corpus equally often (1 / corpus size)."""
    corpora = np.array([data.utterances[i].corpus for i in train_idx])
    sizes = {c: int((corpora == c).sum()) for c in set(corpora.tolist())}
    return np.array([1.0 / sizes[c] for c in corpora])


class _BatchMaker:
    """One training batch's inputs and loss: a random feature copy per example,
    masks, the speaker baselines of an adapting head, and mixup."""

    def __init__(
        self,
        model: Any,
        data: TrainingData,
        inputs: list[list[npt.NDArray[np.float32]]],
        config: dict[str, Any],
        train_idx: npt.NDArray[np.int64],
        options: TrainOptions,
        fill: Any,
        rng: np.random.Generator,
    ) -> None:
        self.model, self.data, self.inputs = model, data, inputs
        self.options, self.fill, self.rng = options, fill, rng
        self.copies = min(options.copies, len(inputs))
        self.window = int(config.get("adaptation_window", 0))
        self.others = _same_speaker_others(train_idx) if self.window else {}
        self.pooled = SHARED["pooled"][: self.copies] if self.window else []

    def loss(self, batch: npt.NDArray[np.int64], loss_fn: LossFn) -> Any:
        """The loss of the examples ``batch`` (the rng is drawn in a fixed order)."""
        rng, options = self.rng, self.options
        choice = rng.integers(0, self.copies, size=len(batch))
        rows = [self.inputs[c][i] for c, i in zip(choice, batch, strict=True)]
        if options.crop_probability > 0 and self.inputs is not self.data.copies:
            crop = rng.random(len(batch)) < options.crop_probability
            for k in np.flatnonzero(crop):
                frames = self.data.copies[choice[k]][batch[k]]
                rows[k] = window_summary(frames, options.crop_seconds, rng)
        x, lens = pad(rows)
        x = spec_augment(x, lens, options, rng, self.fill)
        target = torch.from_numpy(self.data.y[batch])
        adapt = (
            _sample_baselines(
                batch,
                self.others,
                self.pooled,
                self.window,
                options.history_sizes,
                rng,
                options.history_mixes,
            )
            if self.window
            else ()
        )
        if options.mixup <= 0:
            logits, emb = self.model.logits(x, lens, *adapt)
            return loss_fn(logits, target, batch, emb)
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
        logits, emb = self.model.logits(x, lens, *adapt)
        return lam * loss_fn(logits, target, batch, emb) + (1 - lam) * loss_fn(
            logits, target[perm], batch[perm.numpy()], emb
        )


def validation_split(
    train_idx: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[Any, Any]:
    """Hold out about ``fraction`` of the training speakers of every corpus."""
    data: TrainingData = SHARED["data"]
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
