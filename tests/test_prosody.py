"""Prosodic functionals (``training.prosody``) on signals whose pitch, level and
rhythm are known."""

from __future__ import annotations

import numpy as np
import pytest

from training.prosody import NAMES, SAMPLE_RATE, prosodic_functionals


def _voice(
    f0_start: float, f0_end: float, seconds: float, gain: float = 0.3
) -> np.ndarray:
    """A harmonic tone gliding from ``f0_start`` to ``f0_end`` Hz, in two bursts."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = np.geomspace(f0_start, f0_end, len(t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    gate = ((t % (seconds / 2)) < seconds / 2 - 0.2).astype(float)
    return (gain * tone * gate / 2).astype(np.float32)


def test_pitch_level_and_rate_of_a_known_voice() -> None:
    values = dict(
        zip(NAMES, prosodic_functionals(_voice(200.0, 200.0, 2.0)), strict=True)
    )
    assert values["f0_p50"] == pytest.approx(12 * np.log2(200 / 55), abs=0.5)
    assert values["f0_std"] < 0.5
    assert 0.6 < values["voiced_share"] < 0.95
    assert values["onsets_per_s"] == pytest.approx(1.0, abs=0.3)  # two bursts in 2 s
    assert values["duration_s"] == pytest.approx(2.0)
    rising = dict(
        zip(NAMES, prosodic_functionals(_voice(120.0, 240.0, 2.0)), strict=True)
    )
    assert rising["f0_slope"] == pytest.approx(6.0, abs=1.5)  # an octave in 2 s
    quiet = dict(
        zip(NAMES, prosodic_functionals(_voice(200.0, 200.0, 2.0, 0.03)), strict=True)
    )
    assert quiet["energy_p90"] == pytest.approx(values["energy_p90"] - 20, abs=0.5)
    assert quiet["f0_p50"] == pytest.approx(values["f0_p50"], abs=0.2)


def test_silence_and_a_short_clip_give_finite_values() -> None:
    for audio in (np.zeros(SAMPLE_RATE, np.float32), np.zeros(100, np.float32)):
        values = prosodic_functionals(audio)
        assert values.shape == (len(NAMES),) and np.isfinite(values).all()
        assert values[NAMES.index("voiced_share")] == 0.0
