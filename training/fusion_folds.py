"""The held-out evaluation of ``python -m training fusion`` (``--protocol``):
speaker-grouped folds over the acoustic corpora, a small acoustic model per fold,
a text model of the shipped configuration on a fixed 80% of ShEMO speakers, and
acoustic-only, text-only and fused scores side by side (see ``training.fusion``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.recognition.features import TextTokenizer
from training.command import protocol_folds
from training.datasets import Utterance, speaker_folds
from training.fusion_fit import (
    Embeddings,
    FusionSettings,
    fused_probs,
    run_module,
    train_acoustic_fold,
    train_fusion,
)
from training.metrics import score
from training.text_fit import (
    Candidate,
    TokenData,
    TrainSettings,
    fit,
    whisper_token_embeddings,
)

_LOGGER = logging.getLogger(__name__)

SCORES: Final = (
    "acoustic",
    "fused_absent",
    "fused_own",
    "text_matched",
    "acoustic_matched",
    "fused_matched",
)
"""What is scored: the acoustic model, the fusion without text, with the
utterance's own sentence, and on label-matched pairs the text model, the acoustic
model and the fusion."""


@dataclass
class TextSide:
    """The text model of the folds (trained on ShEMO pool A) and its outputs."""

    labels: list[str]
    """The text model's labels."""
    own_text: npt.NDArray[np.float32]
    """[N, Et] embeddings of each acoustic utterance's own sentence."""
    pool_a: Embeddings
    """Embeddings of pool A (``acoustic`` fields left empty): the pairing pool."""
    b_probs: npt.NDArray[np.float32]
    """[M, Ct] probabilities of the held-out pool B."""
    b_text: npt.NDArray[np.float32]
    """[M, Et] embeddings of pool B."""
    b_labels: list[str]
    """Labels of pool B."""


def _text_candidate(text_checkpoint: dict[str, Any]) -> Any:
    info = dict(text_checkpoint.get("training") or {})
    fields = set(Candidate.__dataclass_fields__)
    return Candidate(**{key: value for key, value in info.items() if key in fields})


def _shemo_split(
    texts: Sequence[Utterance], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed speaker-grouped 80/20 split of the ShEMO transcripts (pool A, pool B)."""
    train, test = speaker_folds(texts, kind="kfold", k=5, seed=seed)[0]
    return np.asarray(train), np.asarray(test)


def _matched_pairs(
    labels: list[str],
    targets: np.ndarray,
    index: np.ndarray,
    pool_labels: Sequence[str],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """For utterances of ``index`` whose label the pool has: (those utterances, pool rows)."""
    by_label: dict[str, np.ndarray] = {
        label: np.flatnonzero(np.asarray(pool_labels) == label)
        for label in set(pool_labels)
    }
    rows, picks = [], []
    for utt in index:
        pool = by_label.get(labels[targets[utt]])
        if pool is not None and len(pool):
            rows.append(utt)
            picks.append(int(rng.choice(pool)))
    return np.asarray(rows, np.int64), np.asarray(picks, np.int64)


def text_side(
    utterances: Sequence[Utterance],
    texts: Sequence[Utterance],
    text_checkpoint: dict[str, Any],
    tokenizer: TextTokenizer,
    seed: int,
) -> TextSide:
    """Train the text checkpoint's configuration on ShEMO pool A and embed the own
    sentences and both pools with it."""
    text_labels = list(text_checkpoint["labels"])
    text_ids = [tokenizer.encode(utt.text or "") for utt in texts]
    own_ids = [tokenizer.encode(utt.text or "") for utt in utterances]
    pool_a, pool_b = _shemo_split(texts, seed)
    candidate = _text_candidate(text_checkpoint)
    text_targets = np.array([text_labels.index(utt.label) for utt in texts], np.int64)
    epochs = int(text_checkpoint.get("training", {}).get("epochs", 10))
    embeddings = whisper_token_embeddings() if candidate.pretrained else None
    data = TokenData(text_ids, text_targets, len(text_labels), embeddings)
    text_model, _, _, _ = fit(
        candidate, data, pool_a, settings=TrainSettings(), seed=seed, epochs=epochs
    )
    a_probs, a_text = run_module(text_model, [text_ids[i] for i in pool_a], text=True)
    b_probs, b_text = run_module(text_model, [text_ids[i] for i in pool_b], text=True)
    _, own_text = run_module(text_model, own_ids, text=True)
    empty = np.zeros((0, 0), np.float32)
    return TextSide(
        labels=text_labels,
        own_text=own_text,
        pool_a=Embeddings(
            acoustic=empty,
            acoustic_probs=empty,
            own_text=own_text,
            pool_text=a_text,
            pool_probs=a_probs,
            pool_labels=[texts[i].label for i in pool_a],
        ),
        b_probs=b_probs,
        b_text=b_text,
        b_labels=[texts[i].label for i in pool_b],
    )


def _fold_outputs(
    fusion: Any,
    probs: npt.NDArray[np.float32],
    acoustic: npt.NDArray[np.float32],
    side: TextSide,
    labels: list[str],
    targets: np.ndarray,
    test: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, tuple[list[int], list[int]]]:
    """(predicted, reference) of one fold's test utterances for each of ``SCORES``."""
    zeros = np.zeros((len(test), side.own_text.shape[1]), np.float32)
    outputs = {
        "acoustic": probs[test],
        "fused_absent": fused_probs(
            fusion, acoustic[test], zeros, np.zeros(len(test), np.float32)
        ),
        "fused_own": fused_probs(
            fusion, acoustic[test], side.own_text[test], np.ones(len(test), np.float32)
        ),
    }
    found = {
        name: (value.argmax(1).tolist(), targets[test].tolist())
        for name, value in outputs.items()
    }
    rows, picks = _matched_pairs(labels, targets, test, side.b_labels, rng)
    if len(rows):
        # Text-only: the text model's best label among those the acoustic one has.
        shared = np.array([label in labels for label in side.labels])
        best = np.where(shared, side.b_probs[picks], -1.0).argmax(1)
        text_pred = [labels.index(side.labels[i]) for i in best]
        fused = fused_probs(
            fusion, acoustic[rows], side.b_text[picks], np.ones(len(rows), np.float32)
        )
        for name, value in (
            ("text_matched", text_pred),
            ("acoustic_matched", probs[rows].argmax(1).tolist()),
            ("fused_matched", fused.argmax(1).tolist()),
        ):
            found[name] = (list(value), targets[rows].tolist())
    return found


def cross_validate(
    utterances: Sequence[Utterance],
    features: Sequence[np.ndarray],
    labels: list[str],
    texts: Sequence[Utterance],
    text_checkpoint: dict[str, Any],
    tokenizer: TextTokenizer,
    settings: FusionSettings,
    *,
    protocol: str,
    fold_epochs: int,
    feature_kind: str,
    seed: int,
) -> dict[str, Any]:
    """Acoustic-only, text-only and fused scores on held-out speakers (see module doc)."""
    targets = np.array([labels.index(utt.label) for utt in utterances], dtype=np.int64)
    side = text_side(utterances, texts, text_checkpoint, tokenizer, seed)
    folds = protocol_folds(utterances, protocol, seed)
    arch = "cnn" if feature_kind == "mel" else "attn"
    config = {"n_labels": len(labels), "input_dim": int(features[0].shape[1])}
    predicted: dict[str, list[int]] = {name: [] for name in SCORES}
    reference: dict[str, list[int]] = {name: [] for name in SCORES}
    rng = np.random.default_rng(seed)
    for fold_index, (train, test) in enumerate(folds):
        started = time.monotonic()
        acoustic_model = train_acoustic_fold(
            features,
            targets,
            np.asarray(train),
            arch=arch,
            config=dict(config),
            epochs=fold_epochs,
            seed=seed + fold_index,
        )
        probs, acoustic = run_module(acoustic_model, features, text=False)
        fold_embeddings = Embeddings(
            **{**vars(side.pool_a), "acoustic": acoustic, "acoustic_probs": probs}
        )
        fusion, _ = train_fusion(
            fold_embeddings, labels, targets, np.asarray(train), settings, seed=seed
        )
        found = _fold_outputs(
            fusion, probs, acoustic, side, labels, targets, np.asarray(test), rng
        )
        for name, (got, want) in found.items():
            predicted[name] += got
            reference[name] += want
        _LOGGER.info(
            "fusion fold %d/%d done (%.0fs)",
            fold_index + 1,
            len(folds),
            time.monotonic() - started,
        )
    return {
        name: score(
            [labels[i] for i in reference[name]],
            [labels[i] for i in predicted[name]],
            labels,
        ).to_dict()
        for name in SCORES
        if reference[name]
    }
