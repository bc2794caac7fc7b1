"""The fusion head's training: acoustic and text embeddings from graphs or torch
models, text paired per epoch (absent, the utterance's own sentence, or a
label-matched ShEMO transcript), and the small per-fold acoustic models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamser.recognition.features import pad_batch
from streamser.recognition.models import OnnxModel
from training.acoustic_models import build_model as build_acoustic
from training.fusion_models import build_model

MODES: Final = ("absent", "own", "matched")
"""How an acoustic utterance's text is chosen in a training epoch."""


@dataclass(frozen=True)
class FusionSettings:
    """Training settings of the fusion head."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    mode_probabilities: tuple[float, float, float] = (0.3, 0.2, 0.5)
    """Chance of absent / own-sentence / label-matched text per utterance and epoch."""
    dim: int = 64
    text_dropout: float = 0.2
    """Modality dropout inside the model, on top of the absent mode."""


@dataclass
class Embeddings:
    """Embeddings of one model setting (a fold's models or the shipped ones)."""

    acoustic: npt.NDArray[np.float32]
    """[N, Ea] of the acoustic utterances."""
    acoustic_probs: npt.NDArray[np.float32]
    """[N, C] acoustic model probabilities (acoustic labels)."""
    own_text: npt.NDArray[np.float32]
    """[N, Et] text-model embeddings of each utterance's own sentence."""
    pool_text: npt.NDArray[np.float32]
    """[M, Et] text-model embeddings of the ShEMO transcripts in the pairing pool."""
    pool_probs: npt.NDArray[np.float32]
    """[M, Ct] text-model probabilities of the pool (text labels)."""
    pool_labels: list[str]
    """Labels of the pool transcripts."""


def run_graph(
    model: OnnxModel, rows: Sequence[np.ndarray], *, text: bool, batch_size: int = 32
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(probs, embedding) of an exported acoustic or text graph over variable rows
    (one row per call for a graph with int8 Whisper layers, as the runtime runs it;
    an acoustic graph that adapts to the speaker hears every row alone)."""
    names = ("token_ids", "lengths") if text else ("features", "lengths")
    width = next(
        (i.shape[-1] for i in model.session.get_inputs() if i.name == "baseline"), 0
    )
    front_end = model.contract.front_end
    if front_end is not None and front_end.runs_whisper_layers:
        batch_size = 1
    probs, embeddings = [], []
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        values, lengths = pad_batch(chunk, np.int64 if text else np.float32)
        inputs = {names[0]: values, names[1]: lengths}
        if width:
            inputs["baseline"] = np.zeros((len(chunk), width), np.float32)
            inputs["baseline_count"] = np.zeros(len(chunk), np.float32)
        out = model.run(inputs)
        probs.append(out["probs"])
        embeddings.append(out["embedding"])
    return np.concatenate(probs), np.concatenate(embeddings)


def run_module(
    module: nn.Module, rows: Sequence[np.ndarray], *, text: bool, batch_size: int = 32
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(probs, embedding) of a torch acoustic or text model over variable rows."""
    module.eval()
    probs, embeddings = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = list(rows[start : start + batch_size])
            values, lengths = pad_batch(chunk, np.int64 if text else np.float32)
            p, e = module(torch.from_numpy(values), torch.from_numpy(lengths))
            probs.append(p.numpy())
            embeddings.append(e.numpy())
    return np.concatenate(probs), np.concatenate(embeddings)


def inverse_frequency(targets: np.ndarray, n_labels: int) -> torch.Tensor:
    """Loss weight of each class: 1 / its count (at least 1), mean 1."""
    inverse = 1.0 / np.maximum(np.bincount(targets, minlength=n_labels), 1)
    return torch.tensor(inverse / inverse.mean(), dtype=torch.float32)


def train_acoustic_fold(
    features: Sequence[np.ndarray],
    targets: np.ndarray,
    train: np.ndarray,
    *,
    arch: str,
    config: dict[str, Any],
    epochs: int,
    seed: int,
) -> nn.Module:
    """A small acoustic model of ``training.acoustic_models`` trained on ``train``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_acoustic(arch, config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss(
        weight=inverse_frequency(targets[train], config["n_labels"])
    )
    for _ in range(epochs):
        model.train()
        order = rng.permutation(train)
        for start in range(0, len(order), 32):
            index = order[start : start + 32]
            values, lengths = pad_batch([features[i] for i in index], np.float32)
            logits, _ = model.logits(
                torch.from_numpy(values), torch.from_numpy(lengths)
            )
            loss = loss_fn(logits, torch.from_numpy(targets[index]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def sample_pairs(
    embeddings: Embeddings,
    labels: list[str],
    index: np.ndarray,
    targets: np.ndarray,
    rng: np.random.Generator,
    probabilities: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text embedding and presence for each acoustic utterance of ``index`` (one epoch)."""
    by_label: dict[str, np.ndarray] = {
        label: np.flatnonzero(np.asarray(embeddings.pool_labels) == label)
        for label in set(embeddings.pool_labels)
    }
    width = embeddings.pool_text.shape[1]
    text = np.zeros((len(index), width), np.float32)
    present = np.zeros(len(index), np.float32)
    modes = rng.choice(len(MODES), size=len(index), p=probabilities)
    for row, (utt, mode) in enumerate(zip(index, modes, strict=True)):
        pool = by_label.get(labels[targets[utt]], np.zeros(0, np.int64))
        if MODES[mode] == "matched" and len(pool):
            text[row] = embeddings.pool_text[rng.choice(pool)]
            present[row] = 1.0
        elif MODES[mode] in ("own", "matched"):
            text[row] = embeddings.own_text[utt]
            present[row] = 1.0
    return text, present


def train_fusion(
    embeddings: Embeddings,
    labels: list[str],
    targets: np.ndarray,
    train: np.ndarray,
    settings: FusionSettings,
    *,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fit the fusion head on ``train`` utterances with freshly paired text each epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = {
        "n_labels": len(labels),
        "acoustic_dim": int(embeddings.acoustic.shape[1]),
        "text_dim": int(embeddings.pool_text.shape[1]),
        "dim": settings.dim,
        "text_dropout": settings.text_dropout,
    }
    model = build_model("attention", config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss(weight=inverse_frequency(targets[train], len(labels)))
    for _ in range(settings.epochs):
        model.train()
        order = rng.permutation(train)
        text, present = sample_pairs(
            embeddings, labels, order, targets, rng, settings.mode_probabilities
        )
        for start in range(0, len(order), settings.batch_size):
            part = slice(start, start + settings.batch_size)
            logits = model.logits(
                torch.from_numpy(embeddings.acoustic[order[part]]),
                torch.from_numpy(text[part]),
                torch.from_numpy(present[part]),
            )
            loss = loss_fn(logits, torch.from_numpy(targets[order[part]]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval(), config


def fused_probs(
    model: nn.Module, acoustic: np.ndarray, text: np.ndarray, present: np.ndarray
) -> np.ndarray:
    """Fusion probabilities in eval mode."""
    with torch.no_grad():
        return model(
            torch.from_numpy(acoustic),
            torch.from_numpy(text),
            torch.from_numpy(present),
        ).numpy()
