"""Calibration under shift: a temperature and one offset per class on the log-scores,
``softmax(log(p) / T + b)``, fit on predictions for corpora the model never heard.

For a held-out corpus they are fit on the leave-one-corpus-out predictions of the
*other* corpora (never on the corpus being scored, never on unseen speakers of seen
corpora); a shipped graph would take them from every corpus's LOCO predictions.
``balanced`` weighting gives every (corpus, class) cell the same total weight, so the
offsets undo each corpus's label mix rather than learn the pooled one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

OFFSET_PENALTY: Final = 1e-3
"""L2 weight on the offsets: keeps a class the fit rows lack at a finite offset."""

WEIGHTINGS: Final = ("balanced", "pooled")
"""``balanced``: every (corpus, class) cell weighs the same; ``pooled``: every row."""


@dataclass(frozen=True)
class Offsets:
    """A temperature and per-class offsets on the log-probabilities.

    Attributes:
        temperature: divides the log-probabilities.
        offsets: added after, one per label (mean zero).
    """

    temperature: float
    offsets: tuple[float, ...]

    def apply(self, probs: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """``softmax(log(probs) / temperature + offsets)``, rows of [N, L]."""
        z = _logits(probs) / self.temperature + np.asarray(self.offsets)
        return _softmax(z)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"temperature": T, "offsets": [...]}``."""
        return {"temperature": self.temperature, "offsets": list(self.offsets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Offsets:
        """The inverse of ``to_dict``."""
        return cls(float(data["temperature"]), tuple(float(v) for v in data["offsets"]))


def fit_offsets(
    probs: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    groups: npt.NDArray[Any] | None = None,
    weighting: str = "balanced",
) -> Offsets:
    """The temperature and offsets minimising the weighted negative log-likelihood
    of ``y`` (plus ``OFFSET_PENALTY`` times the offsets' squared norm).

    Args:
        probs: [N, L] class probabilities.
        y: [N] label indices.
        groups: [N] the corpus of each row, for ``balanced`` (default: one group).
        weighting: ``WEIGHTINGS``.

    Raises:
        ValueError: no rows, shapes disagree, or an unknown weighting.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    if probs.ndim != 2 or len(probs) != len(y) or not len(y):
        raise ValueError(f"need [N, L] probabilities for N labels; got {probs.shape}")
    logp = _logits(probs)
    n, n_labels = logp.shape
    weights = np.ones(n)
    if weighting == "balanced":
        cells = list(zip(np.zeros(n) if groups is None else groups, y, strict=True))
        counts: dict[Any, int] = {}
        for cell in cells:
            counts[cell] = counts.get(cell, 0) + 1
        weights = np.array([1.0 / counts[cell] for cell in cells])
    weights = weights / weights.sum()
    onehot = np.eye(n_labels)[y]

    def loss(theta: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        temperature, b = np.exp(theta[0]), theta[1:]
        p = _softmax(logp / temperature + b)
        nll = -float(weights @ np.log(np.clip(p[np.arange(n), y], 1e-12, None)))
        delta = weights[:, None] * (p - onehot)  # d loss / d logits
        grad_t = -float(np.sum(delta * logp)) / temperature
        grad_b = delta.sum(0) + 2 * OFFSET_PENALTY * b
        return nll + OFFSET_PENALTY * float(b @ b), np.concatenate([[grad_t], grad_b])

    theta0 = np.zeros(n_labels + 1)
    bounds = [(np.log(0.25), np.log(4.0))] + [(-5.0, 5.0)] * n_labels
    fit = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    b = fit.x[1:] - fit.x[1:].mean()
    return Offsets(float(np.exp(fit.x[0])), tuple(float(v) for v in b))


def _logits(probs: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
