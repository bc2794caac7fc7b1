"""Deployment-level label-shift adaptation: the class priors of the traffic re-estimated
by EM over the clips heard so far (Saerens, Latinne and Decaestecker, 2002), bounded.

Each clip is scored with the estimate of the clips *before* it, then joins the
estimate, so no clip's own label leaks into its score. The estimate starts from the
model's prior on the data its calibration was fit on, waits for ``warmup`` clips,
is pulled toward that prior by ``pseudo_count`` clips' worth of evidence, and never
moves a class's weight outside ``[1 / bound, bound]`` times that prior, so that a day
of angry callers stays angry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class PriorShift:
    """Settings of the online prior estimate.

    Attributes:
        warmup: clips heard before the estimate is used.
        pseudo_count: weight, in clips, of the starting prior in the estimate.
        bound: the largest factor by which a class's prior may move either way.
        iterations: EM iterations per update.
        every: clips between updates.
    """

    warmup: int = 50
    pseudo_count: float = 100.0
    bound: float = 2.0
    iterations: int = 10
    every: int = 10


def estimate_priors(
    probs: npt.NDArray[Any], source: npt.NDArray[np.float64], settings: PriorShift
) -> npt.NDArray[np.float64]:
    """The EM estimate of the class priors of the clips ``probs`` [N, L]
    (posteriors under the ``source`` prior), smoothed and bounded as ``settings``
    says."""
    prior = source.copy()
    for _ in range(settings.iterations):
        adapted = reweight(probs, prior / source)
        counts = adapted.sum(0) + settings.pseudo_count * source
        prior = _bounded(counts / counts.sum(), source, settings.bound)
    return prior


def _bounded(
    prior: npt.NDArray[np.float64], source: npt.NDArray[np.float64], bound: float
) -> npt.NDArray[np.float64]:
    """``prior`` with each share within ``[1 / bound, bound]`` times ``source``'s,
    the mass cut off (or missing) spread over the classes still inside."""
    low, high = source / bound, source * bound
    p = prior.copy()
    for _ in range(len(p) + 1):
        p = np.clip(p, low, high)
        gap = 1.0 - p.sum()
        if abs(gap) < 1e-12:
            break
        free = p < high if gap > 0 else p > low
        p[free] += gap * p[free] / p[free].sum()
    return p


def reweight(
    probs: npt.NDArray[Any], ratio: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Posteriors ``probs`` [N, L] under priors changed by ``ratio`` (new / old)."""
    p = np.asarray(probs, dtype=np.float64) * ratio
    return p / p.sum(1, keepdims=True)


def online_adaptation(
    probs: npt.NDArray[Any],
    source: npt.NDArray[np.float64],
    order: npt.NDArray[np.int64],
    settings: PriorShift | None = None,
) -> npt.NDArray[np.float64]:
    """Each clip's posterior under the priors estimated from the clips before it
    in ``order`` (the traffic's order); rows returned in ``probs``'s order.

    Raises:
        ValueError: ``order`` is not a permutation of the rows, or ``source`` is not
            a distribution over the columns.
    """
    settings = settings or PriorShift()
    n, n_labels = probs.shape
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError("order must be a permutation of the rows")
    if source.shape != (n_labels,) or not np.isclose(source.sum(), 1.0):
        raise ValueError(f"source prior must be {n_labels} shares summing to 1")
    out = np.empty((n, n_labels))
    prior = source.copy()
    for start in range(0, n, settings.every):
        if start >= settings.warmup:
            prior = estimate_priors(probs[order[:start]], source, settings)
        batch = order[start : start + settings.every]
        out[batch] = reweight(probs[batch], prior / source)
    return out
