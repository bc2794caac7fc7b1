"""Classification metrics for emotion models: UA, WA, macro F1, confusion, calibration.

UA (unweighted average recall, i.e. balanced accuracy) averages the recall of every
class present in the reference; a reference class the model cannot output still
counts, with recall 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Scores:
    """Metrics of predicted against reference labels.

    Attributes:
        labels: row/column order of ``confusion`` (reference labels first, sorted,
            then predicted-only labels).
        confusion: counts, rows = reference, columns = prediction.
        wa: weighted accuracy (plain accuracy).
        ua: unweighted average recall over reference classes.
        macro_f1: F1 averaged over reference classes.
        per_class_recall: recall of each reference class.
        n: number of utterances.
    """

    labels: list[str]
    confusion: list[list[int]]
    wa: float
    ua: float
    macro_f1: float
    per_class_recall: dict[str, float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict."""
        return {
            "wa": self.wa,
            "ua": self.ua,
            "macro_f1": self.macro_f1,
            "per_class_recall": self.per_class_recall,
            "confusion": self.confusion,
            "labels": self.labels,
            "n": self.n,
        }


def score(
    reference: Sequence[str],
    predicted: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Scores:
    """Compare predicted labels with the reference.

    Args:
        reference: true label of each utterance.
        predicted: predicted label of each utterance.
        labels: label order of the confusion matrix; defaults to the sorted
            reference labels followed by any predicted-only labels.

    Returns:
        The metrics.

    Raises:
        ValueError: the two lists differ in length or are empty, or ``labels``
            misses a label that occurs.
    """
    if len(reference) != len(predicted):
        raise ValueError(
            f"{len(reference)} reference labels but {len(predicted)} predictions"
        )
    if not reference:
        raise ValueError("no utterances to score")
    present = sorted(set(reference))
    if labels is None:
        order = present + sorted(set(predicted) - set(present))
    else:
        order = list(labels)
        unknown = (set(reference) | set(predicted)) - set(order)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not in {order}")
    index = {label: i for i, label in enumerate(order)}
    confusion = np.zeros((len(order), len(order)), dtype=np.int64)
    for ref, pred in zip(reference, predicted, strict=True):
        confusion[index[ref], index[pred]] += 1
    recall: dict[str, float] = {}
    f1s = []
    for label in present:
        i = index[label]
        true_positive = confusion[i, i]
        support = confusion[i].sum()
        predicted_count = confusion[:, i].sum()
        rec = float(true_positive / support)
        prec = float(true_positive / predicted_count) if predicted_count else 0.0
        recall[label] = rec
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return Scores(
        labels=order,
        confusion=confusion.tolist(),
        wa=float(np.trace(confusion) / confusion.sum()),
        ua=float(np.mean(list(recall.values()))),
        macro_f1=float(np.mean(f1s)),
        per_class_recall=recall,
        n=len(reference),
    )


def format_confusion(scores: Scores) -> str:
    """The confusion matrix as a Markdown table (rows = reference)."""
    short = [label[:5] for label in scores.labels]
    lines = ["| ref \\ pred | " + " | ".join(short) + " |"]
    lines.append("| --- " * (len(short) + 1) + "|")
    for label, row in zip(scores.labels, scores.confusion, strict=True):
        if sum(row) == 0:
            continue
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """Expected calibration error over ``bins`` equal-width confidence bins: the
    bins' share-weighted gap between accuracy and mean confidence."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > low) & (conf <= high)
        if low == 0.0:
            inside |= conf == 0.0
        if inside.any():
            total += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    return float(total)


def top_label_ece(
    probs: npt.NDArray[Any], correct_labels: npt.NDArray[np.int64], bins: int = 10
) -> float:
    """ECE of class probabilities [N, L] over ``bins`` equal-width confidence bins
    (confidence: the top probability; correct: the top label is the reference)."""
    return expected_calibration_error(
        probs.max(1), probs.argmax(1) == correct_labels, bins
    )


TEMPERATURES: Final = np.exp(np.linspace(np.log(0.25), np.log(4.0), 81))
"""The temperatures ``fit_temperature`` tries: 0.25 to 4, log-spaced."""


def calibrate(
    probs: npt.NDArray[Any], temperature: float, logs: bool = False
) -> npt.NDArray[np.float64]:
    """``softmax(log(probs) / temperature)`` (``logs``: ``probs`` are logs already)."""
    logp = probs if logs else np.log(np.clip(probs, 1e-12, None))
    z = logp / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


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
