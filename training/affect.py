"""Categorical emotion labels as points of the affective circumplex (arousal, valence).

The angles are those of Russell's circular scaling of affect words (J. A. Russell,
"A circumplex model of affect", Journal of Personality and Social Psychology 39(6),
1980, fig. 2 / table 3: happy 7.8 deg, astonished 69.8, angry 99.0, afraid 116.0,
sad 207.5, bored 241.9, calm 316.2; valence on the horizontal axis, arousal on the
vertical one, angles read counter-clockwise from "pleasure"). Neutral is the centre.
Russell places no word for disgust; it is put at 130 deg here (between "annoyed"
and "distressed", unpleasant and moderately aroused), a choice of this project. Each
point lies at radius ``RADIUS``, so targets stay inside tanh's range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

RADIUS: Final = 0.8
"""Distance from the centre of every non-neutral category."""
ANGLES_DEG: Final[dict[str, float | None]] = {
    "happiness": 7.8,
    "surprise": 69.8,
    "anger": 99.0,
    "fear": 116.0,
    "disgust": 130.0,
    "sadness": 207.5,
    "boredom": 241.9,
    "calm": 316.2,
    "neutral": None,
}
AFFECT_NAMES: Final = ("arousal", "valence")
"""Order of the graph's ``affect`` output."""


def coordinates(label: str) -> tuple[float, float]:
    """(arousal, valence) of a canonical label, each in [-RADIUS, RADIUS].

    Raises:
        KeyError: a label without a place on the circumplex.
    """
    angle = ANGLES_DEG[label]
    if angle is None:
        return (0.0, 0.0)
    rad = math.radians(angle)
    return (RADIUS * math.sin(rad), RADIUS * math.cos(rad))


def targets(labels: Sequence[str]) -> npt.NDArray[np.float32]:
    """[L, 2] (arousal, valence) of each label, in order."""
    return np.array([coordinates(label) for label in labels], dtype=np.float32)


def ccc(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    """Lin's concordance correlation coefficient."""
    mx, my = float(np.mean(x)), float(np.mean(y))
    vx, vy = float(np.var(x)), float(np.var(y))
    cov = float(np.mean((x - mx) * (y - my)))
    denominator = vx + vy + (mx - my) ** 2
    return 2.0 * cov / denominator if denominator > 0 else 0.0


def agreement(
    predicted: npt.NDArray[np.float32], reference: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Spearman and CCC of predicted arousal and valence against the mapped labels,
    and the mean predicted value per reference label."""
    from scipy.stats import spearmanr

    target = targets(reference).astype(np.float64)
    out: dict[str, dict[str, float]] = {}
    for column, name in enumerate(AFFECT_NAMES):
        x = predicted[:, column].astype(np.float64)
        rho = spearmanr(x, target[:, column]).statistic
        means = {
            label: float(np.mean(x[[r == label for r in reference]]))
            for label in sorted(set(reference))
        }
        out[name] = {
            "spearman": float(rho) if np.isfinite(rho) else 0.0,
            "ccc": ccc(x, target[:, column]),
            **{f"mean_{k}": v for k, v in means.items()},
        }
    return out
