"""Differential-evolution feature selection on synthetic speaker-grouped data."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.train
pytest.importorskip("sklearn")

from training.datasets import Utterance  # noqa: E402
from training.selection import DeOptions, differential_evolution_mask  # noqa: E402


def test_de_keeps_informative_features_and_drops_noise() -> None:
    rng = np.random.default_rng(0)
    n, informative, noise = 480, 3, 27
    y = np.array(["anger", "sadness", "neutral"] * (n // 3), dtype=object)
    codes = np.unique(y, return_inverse=True)[1]
    signal = rng.standard_normal((n, informative)) * 1.2 + codes[:, None]
    x = np.concatenate([signal, rng.standard_normal((n, noise)) * 3.0], axis=1)
    utts = [Utterance(f"x:{i}", None, str(y[i]), f"x:{i % 6}", "x") for i in range(n)]
    options = DeOptions(population=12, generations=15, size_penalty=0.3, seed=1)
    mask = differential_evolution_mask(x.astype(np.float32), y, utts, options)
    assert mask[:informative].all()
    assert mask[informative:].sum() < noise // 2
