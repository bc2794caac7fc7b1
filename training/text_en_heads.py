"""Heads on frozen MiniLM features: logistic regression per layer set and setting,
chosen on MELD dev, and the TF-IDF WordPiece n-gram branches mixed in on dev."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, recall_score

from streamser.recognition.features import pad_batch
from training.datasets.meld import SENTIMENTS
from training.text_en_features import EMOTIONS, features, wordpiece_ids
from training.text_fit import Candidate
from training.text_fit import fit_ngram as fit_token_ngrams

_LOGGER = logging.getLogger(__name__)


def scores(
    reference: npt.NDArray[Any], predicted: npt.NDArray[Any], n: int
) -> dict[str, Any]:
    """Weighted F1, UA (macro recall), WA (accuracy), confusion and n."""
    labels = list(range(n))
    return {
        "weighted_f1": float(
            f1_score(reference, predicted, labels=labels, average="weighted")
        ),
        "ua": float(
            recall_score(
                reference, predicted, labels=labels, average="macro", zero_division=0
            )
        ),
        "wa": float(np.mean(reference == predicted)),
        "n": int(len(reference)),
        "confusion": confusion_matrix(reference, predicted, labels=labels).tolist(),
    }


LAYER_SETS: dict[str, tuple[int, ...]] = {
    "last": (6,),
    "all": (0, 1, 2, 3, 4, 5, 6),
}
"""Which mean-pooled layers the heads read (0: the embeddings)."""


HEADS: dict[str, dict[str, Any]] = {
    "c0.1": {"C": 0.1, "weight_power": 0.0},
    "c0.1-w0.5": {"C": 0.1, "weight_power": 0.5},
    "c0.01-w0.5": {"C": 0.01, "weight_power": 0.5},
    "c0.003-w0.5": {"C": 0.003, "weight_power": 0.5},
}
"""Logistic-regression settings: inverse regularisation and class weights
``(n / (k * count)) ** weight_power`` (0: none, 1: balanced)."""


def fit_head(
    x: npt.NDArray[np.float32], y: npt.NDArray[Any], n: int, settings: dict[str, Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Standardise, fit logistic regression, fold the scaling into the weights.

    Returns ``(coef [n, dim], intercept [n])`` acting on the raw features.
    """
    mean, std = x.mean(0), x.std(0) + 1e-6
    counts = np.bincount(y, minlength=n).astype(np.float64)
    weights = (len(y) / (n * np.maximum(counts, 1))) ** settings["weight_power"]
    clf = LogisticRegression(
        C=settings["C"], max_iter=500, tol=1e-3, class_weight=dict(enumerate(weights))
    )
    clf.fit((x - mean) / std, y)
    coef = clf.coef_ / std
    intercept = clf.intercept_ - coef @ mean
    return coef.astype(np.float32), intercept.astype(np.float32)


def predict(
    coef: npt.NDArray[Any], intercept: npt.NDArray[Any], x: npt.NDArray[Any]
) -> Any:
    """Arg-max class of a linear head."""
    return np.argmax(x @ coef.T + intercept, axis=1)


def select(train: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any]:
    """Fit every (layers, head) on train, score on dev; pick per task by weighted F1."""
    results: dict[str, Any] = {}
    for layers_name, layers in LAYER_SETS.items():
        x_train, x_dev = features(train, layers), features(dev, layers)
        for head_name, settings in HEADS.items():
            for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
                start = time.monotonic()
                coef, intercept = fit_head(x_train, train[task], n, settings)
                got = scores(dev[task], predict(coef, intercept, x_dev), n)
                key = f"{task}/{layers_name}/{head_name}"
                results[key] = {**got, "seconds": round(time.monotonic() - start, 1)}
                _LOGGER.info(
                    "%s: dev weighted F1 %.3f UA %.3f",
                    key,
                    got["weighted_f1"],
                    got["ua"],
                )

    # One layer set for both heads (one encoder pass): best summed weighted F1.
    def best_head(task: str, layers_name: str) -> str:
        return max(
            HEADS, key=lambda h: results[f"{task}/{layers_name}/{h}"]["weighted_f1"]
        )

    def total(layers_name: str) -> float:
        return sum(
            results[f"{t}/{layers_name}/{best_head(t, layers_name)}"]["weighted_f1"]
            for t in ("emotion", "sentiment")
        )

    layers_name = max(LAYER_SETS, key=total)
    return {
        "layers": layers_name,
        "emotion_head": best_head("emotion", layers_name),
        "sentiment_head": best_head("sentiment", layers_name),
        "candidates": results,
    }


NGRAMS: dict[str, dict[str, Any]] = {
    "wp2-c1": {"ngram": 2, "buckets": 50000, "C": 1.0, "weight_power": 0.5},
    "wp2-c4": {"ngram": 2, "buckets": 50000, "C": 4.0, "weight_power": 0.5},
}
"""TF-IDF n-gram branches over the WordPiece ids (unigrams + hashed bigrams)."""


ALPHAS = tuple(round(0.1 * k, 1) for k in range(11))
"""Mixing weights of the MiniLM head tried on dev (1.0: MiniLM alone, 0.0: n-grams)."""


def fit_ngram(
    ids: Sequence[npt.NDArray[np.int64]],
    y: npt.NDArray[Any],
    n: int,
    settings: dict[str, Any],
) -> Any:
    """Logistic regression on TF-IDF WordPiece n-grams, as ``NgramTextModel``."""
    config = {k: settings[k] for k in ("ngram", "buckets", "C")}
    candidate = Candidate(
        "wp", "ngram", config, class_weight_power=settings["weight_power"]
    )
    model: Any
    model, fitted = fit_token_ngrams(
        candidate, ids, np.asarray(y), np.arange(len(ids)), n
    )
    model.fitted_config = {k: fitted[k] for k in ("ngram", "buckets", "vocabulary")}
    return model


def ngram_logits(model: Any, ids: Sequence[npt.NDArray[np.int64]]) -> Any:
    """Class scores of an n-gram branch, ``[n, classes]``."""
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), 256):
            tokens, lengths = pad_batch(ids[start : start + 256], np.int64, min_width=2)
            logits = model.logits(torch.from_numpy(tokens), torch.from_numpy(lengths))
            out.append(logits[0].numpy())
    return np.concatenate(out)


def fit_ngram_branches(
    data: dict[str, Any], mix: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit each task's chosen n-gram branch on ``data``: (config, state dicts), both
    empty when ``mix`` chose none."""
    config: dict[str, Any] = {}
    states: dict[str, Any] = {}
    if not mix:
        return config, states
    ids = wordpiece_ids(data["text"])
    for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
        settings = NGRAMS[mix[task]["ngram"]]
        branch = fit_ngram(ids, data[task], n, settings)
        config[task] = {**model_config(branch), "C": settings["C"]}
        config[f"alpha_{task}"] = mix[task]["alpha"]
        states[task] = branch.state_dict()
    return config, states


def model_config(model: Any) -> dict[str, Any]:
    """What rebuilds an n-gram branch: order, buckets and vocabulary."""
    fitted = model.fitted_config
    return {**fitted, "vocabulary": [int(v) for v in fitted["vocabulary"]]}


def _log_softmax(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def select_mix(
    train: dict[str, Any], dev: dict[str, Any], chosen: dict[str, Any]
) -> dict[str, Any]:
    """For each head: the n-gram branch and mixing weight with the best dev weighted F1
    (both branches fit on train)."""
    layers = LAYER_SETS[chosen["layers"]]
    x_train, x_dev = features(train, layers), features(dev, layers)
    encoder = {}
    for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
        coef, intercept = fit_head(
            x_train, train[task], n, HEADS[chosen[task + "_head"]]
        )
        encoder[task] = _log_softmax(x_dev @ coef.T + intercept)
    return mix_on_dev(encoder, train, dev)


def mix_on_dev(
    encoder_dev: dict[str, npt.NDArray[Any]],
    train: dict[str, Any],
    dev: dict[str, Any],
) -> dict[str, Any]:
    """Per task, the n-gram branch (fit on train) and mixing weight whose mix with
    the encoder's dev log-probabilities ``encoder_dev[task]`` has the best dev
    weighted F1."""
    ids_train, ids_dev = wordpiece_ids(train["text"]), wordpiece_ids(dev["text"])
    out: dict[str, Any] = {}
    for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
        encoder = encoder_dev[task]
        best = ("", 1.0, -1.0)
        table: dict[str, Any] = {}
        for name, settings in NGRAMS.items():
            start = time.monotonic()
            ngram = _log_softmax(
                ngram_logits(fit_ngram(ids_train, train[task], n, settings), ids_dev)
            )
            for alpha in ALPHAS:
                mixed = alpha * encoder + (1 - alpha) * ngram
                got = scores(dev[task], mixed.argmax(1), n)
                table[f"{name}/alpha{alpha}"] = got
                if got["weighted_f1"] > best[2]:
                    best = (name, alpha, got["weighted_f1"])
            _LOGGER.info(
                "%s %s: n-grams alone %.3f, best mix so far %s alpha %.1f: %.3f (%.0f s)",
                task,
                name,
                table[f"{name}/alpha0.0"]["weighted_f1"],
                *best,
                time.monotonic() - start,
            )
        out[task] = {
            "ngram": best[0],
            "alpha": best[1],
            "dev": table[f"{best[0]}/alpha{best[1]}"],
        }
        out[task + "_table"] = {k: v["weighted_f1"] for k, v in table.items()}
    return out
