"""Fit one transcript model (``Candidate``) on Whisper token ids: the neural
architectures of ``training.text_models`` trained with early stopping, or
logistic regression on TF-IDF token n-grams copied into ``NgramTextModel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
from torch import nn

from streamser.recognition.features import TextTokenizer, pad_batch
from streamser.recognition.whisper_model import default_whisper_dir
from training.datasets import Utterance
from training.text_models import NGRAM_PRIME as _PRIME
from training.text_models import UNK, WHISPER_VOCAB_SIZE, build_model
from training.whisper_prefix import read_weights

_EMBEDDINGS: Final = "decoder/embeddings/weight"


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: architecture, model config and optimiser settings."""

    name: str
    """Short id used in reports."""
    arch: str
    """``cnn``, ``bow`` or ``gru`` (see ``training.text_models``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Model hyperparameters (without ``n_labels``/``vocabulary``)."""
    lr: float = 2e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    class_weight_power: float = 0.5
    """Loss weight of a class = (1 / frequency) ** power, normalised."""
    pretrained: bool = False
    """Initialise token embeddings from Whisper base's decoder embeddings."""
    freeze_embeddings: bool = False
    """Keep the (pretrained) token embeddings fixed during training."""


@dataclass(frozen=True)
class TrainSettings:
    """Loop settings shared by every candidate."""

    max_epochs: int = 30
    patience: int = 6
    batch_size: int = 32
    seeds: int = 1
    """Models per fold (soft-voting ensemble of seeds)."""
    final_seeds: int = 3
    """Models in the shipped ensemble."""


def whisper_token_embeddings(model_dir: Path | None = None) -> npt.NDArray[np.float32]:
    """Whisper base's decoder token embeddings [51865, 512], read from the CTranslate2
    ``model.bin`` of the default Whisper model without loading the model.

    Raises:
        ValueError: the file has no ``decoder/embeddings/weight`` variable.
    """
    path = (model_dir or default_whisper_dir()) / "model.bin"
    found = read_weights(path, _EMBEDDINGS)
    if _EMBEDDINGS not in found:
        raise ValueError(f"{path}: no {_EMBEDDINGS}")
    return found[_EMBEDDINGS]


def tokenize(
    utterances: Sequence[Utterance], tokenizer: TextTokenizer
) -> list[np.ndarray]:
    """Token ids of each utterance's transcript (empty for none)."""
    return [tokenizer.encode(utt.text or "") for utt in utterances]


def vocabulary_of(ids: Sequence[np.ndarray]) -> list[int]:
    """Sorted Whisper ids occurring in ``ids``."""
    seen = set()
    for row in ids:
        seen.update(int(token) for token in row)
    return sorted(token for token in seen if 0 <= token < WHISPER_VOCAB_SIZE)


def token_batch(
    ids: Sequence[np.ndarray], index: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded token ids and lengths of the rows ``index`` picks."""
    batch, lengths = pad_batch([ids[i] for i in index], np.int64)
    return torch.from_numpy(batch), torch.from_numpy(lengths)


def class_weights(targets: np.ndarray, n_labels: int, power: float) -> torch.Tensor:
    """Loss weight of each class: (1 / frequency) ** ``power``, mean 1."""
    counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
    weights = (1.0 / np.maximum(counts, 1.0)) ** power
    weights *= n_labels / weights.sum()
    return torch.tensor(weights, dtype=torch.float32)


def build(
    candidate: Candidate,
    vocabulary: list[int],
    n_labels: int,
    embeddings: npt.NDArray[np.float32] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model of ``candidate`` (embeddings initialised when pretrained)."""
    config = {**candidate.config, "n_labels": n_labels, "vocabulary": vocabulary}
    model = build_model(candidate.arch, config)
    if candidate.pretrained:
        if embeddings is None:
            raise ValueError(f"{candidate.name} needs the Whisper token embeddings")
        table = model.embed.weight.data
        rows = torch.from_numpy(embeddings[np.asarray(vocabulary, dtype=np.int64)])
        scale = float(rows.std()) or 1.0
        table[2:] = rows / scale  # unit scale; PAD row stays zero, UNK keeps its init
        table[0] = 0.0
    if candidate.freeze_embeddings:
        model.embed.weight.requires_grad_(False)
    return model, config


def predict(
    model: nn.Module, ids: Sequence[np.ndarray], index: np.ndarray
) -> np.ndarray:
    """Probabilities [len(index), C] in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(index), 256):
            tokens, lengths = token_batch(ids, index[start : start + 256])
            out.append(model(tokens, lengths)[0].numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def ngram_features(
    ids: Sequence[np.ndarray], vocabulary: list[int], order: int, buckets: int
) -> Any:
    """Sparse n-gram counts [N, vocab + 2 + buckets], as ``NgramTextModel`` indexes them."""
    lookup = {token: index + 2 for index, token in enumerate(vocabulary)}
    vocab = len(vocabulary) + 2
    rows, cols = [], []
    for row_index, row in enumerate(ids):
        compact = np.array([lookup.get(int(t), UNK) for t in row], dtype=np.int64)
        found = [compact]
        for n in range(2, order + 1):
            steps = len(compact) - n + 1
            if steps <= 0:
                continue
            code = compact[:steps].copy()
            for offset in range(1, n):
                code = code * _PRIME + compact[offset : offset + steps]
            found.append(np.remainder(code, buckets) + vocab)
        columns = np.concatenate(found)
        rows.append(np.full(len(columns), row_index))
        cols.append(columns)
    row_ids = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col_ids = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = np.ones(len(row_ids), dtype=np.float64)
    shape = (len(ids), vocab + buckets)
    return sparse.csr_matrix((data, (row_ids, col_ids)), shape=shape)


def _tfidf(counts: Any, idf: np.ndarray) -> Any:
    tf = counts.copy()
    tf.data = 1.0 + np.log(tf.data)
    return normalize(tf.multiply(idf[None, :]).tocsr(), norm="l2")


def fit_ngram(
    candidate: Candidate,
    ids: Sequence[np.ndarray],
    targets: np.ndarray,
    train: np.ndarray,
    n_labels: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Logistic regression on TF-IDF token n-grams, copied into ``NgramTextModel``."""
    vocabulary = vocabulary_of([ids[i] for i in train])
    config = {**candidate.config, "n_labels": n_labels, "vocabulary": vocabulary}
    model = build_model("ngram", config)
    counts = ngram_features(
        [ids[i] for i in train], vocabulary, model.order, model.buckets
    )
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    idf = np.where(df > 0, np.log((1 + len(train)) / (1 + df)) + 1.0, 0.0)
    idf[0] = 0.0  # PAD
    weights = class_weights(targets[train], n_labels, candidate.class_weight_power)
    classifier = LogisticRegression(
        C=float(candidate.config.get("C", 1.0)),
        max_iter=3000,
        class_weight=dict(enumerate(weights.tolist())),
    )
    classifier.fit(_tfidf(counts, idf), targets[train])
    coef = np.zeros((n_labels, idf.shape[0]), np.float32)
    bias = np.full(n_labels, -30.0, np.float32)  # a class absent from training
    coef[classifier.classes_] = classifier.coef_
    bias[classifier.classes_] = classifier.intercept_
    with torch.no_grad():
        model.idf.copy_(torch.from_numpy(idf.astype(np.float32)))
        model.out.weight.copy_(torch.from_numpy(coef))
        model.out.bias.copy_(torch.from_numpy(bias))
    return model.eval(), config


@dataclass(frozen=True)
class TokenData:
    """What a candidate is fit on: every row's token ids and class, and for the
    pretrained candidates Whisper's token embeddings."""

    ids: Sequence[np.ndarray]
    """Token ids of each row."""
    targets: np.ndarray
    """Class index of each row."""
    n_labels: int
    """Number of classes."""
    embeddings: npt.NDArray[np.float32] | None = None
    """``whisper_token_embeddings()``; needed by pretrained candidates only."""


def fit(
    candidate: Candidate,
    data: TokenData,
    train: np.ndarray,
    *,
    settings: TrainSettings,
    seed: int,
    validation: np.ndarray | None = None,
    epochs: int | None = None,
) -> tuple[nn.Module, dict[str, Any], int, float]:
    """Train one model on the rows ``train``; early-stops on ``validation`` UA when
    given, else trains ``epochs`` (default ``settings.max_epochs``).

    Returns:
        (model at its best epoch, its config, best epoch count, best validation UA).
    """
    ids, targets, n_labels = data.ids, data.targets, data.n_labels
    if candidate.arch == "ngram":
        model, config = fit_ngram(candidate, ids, targets, train, n_labels)
        if validation is None:
            return model, config, 0, float("nan")
        probs = predict(model, ids, validation)
        return model, config, 0, _ua(targets[validation], probs.argmax(1), n_labels)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocabulary = vocabulary_of([ids[i] for i in train])
    model, config = build(candidate, vocabulary, n_labels, data.embeddings)
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=candidate.lr,
        weight_decay=candidate.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(targets[train], n_labels, candidate.class_weight_power)
    )
    max_epochs = epochs or settings.max_epochs
    best = (-1.0, 0, {k: v.clone() for k, v in model.state_dict().items()})
    stale = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = rng.permutation(train)
        for start in range(0, len(order), settings.batch_size):
            tokens, lengths = token_batch(
                ids, order[start : start + settings.batch_size]
            )
            logits, _ = model.logits(tokens, lengths)
            loss = loss_fn(
                logits,
                torch.from_numpy(targets[order[start : start + settings.batch_size]]),
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if validation is None:
            continue
        probs = predict(model, ids, validation)
        ua = _ua(targets[validation], probs.argmax(1), n_labels)
        if ua > best[0]:
            best = (ua, epoch, {k: v.clone() for k, v in model.state_dict().items()})
            stale = 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if validation is not None:
        model.load_state_dict(best[2])
        return model.eval(), config, best[1], best[0]
    return model.eval(), config, max_epochs, float("nan")


def _ua(reference: np.ndarray, predicted: np.ndarray, n_labels: int) -> float:
    recalls = [
        float(np.mean(predicted[reference == label] == label))
        for label in range(n_labels)
        if np.any(reference == label)
    ]
    return float(np.mean(recalls))
