"""Synthetic audio for the VAD and segmenter tests (16 kHz mono float32)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RATE = 16000


def voiced(seconds: float, seed: int, level: float = 0.3) -> npt.NDArray[np.float32]:
    """A harmonic tone with gliding pitch and syllable-rate loudness (speech-like)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch_hz = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch_hz) / RATE
    signal = sum(np.sin(k * phase) / k for k in range(1, 25))
    signal *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    signal += 0.05 * rng.standard_normal(t.size)
    return (level * signal / np.abs(signal).max()).astype(np.float32)
