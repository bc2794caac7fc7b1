"""Prosodic functionals of an utterance with librosa and numpy (no openSMILE, whose
licence bars commercial use): pitch, energy, voicing, spectral slope and rate.

F0 is librosa's YIN (60-500 Hz) on 64 ms frames every 10 ms; a frame is voiced when
its energy is within 30 dB of the utterance's loudest frame, its zero-crossing rate
is low and YIN's F0 is inside the range. Pitch is in semitones above 55 Hz, energy in
dB of RMS, so that neither depends on the speaker's key or the microphone's gain more
than the speech does.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

SAMPLE_RATE: Final = 16000
HOP: Final = 160
FRAME: Final = 1024
FMIN, FMAX = 60.0, 500.0

NAMES: Final = (
    "f0_mean",
    "f0_std",
    "f0_p10",
    "f0_p50",
    "f0_p90",
    "f0_range",
    "f0_slope",
    "f0_delta_abs",
    "energy_mean",
    "energy_std",
    "energy_p10",
    "energy_p90",
    "energy_range",
    "energy_voiced_minus_unvoiced",
    "voiced_share",
    "voiced_run_s",
    "spectral_slope_mean",
    "spectral_slope_std",
    "alpha_ratio",
    "hammarberg",
    "centroid_mean",
    "centroid_std",
    "onsets_per_s",
    "duration_s",
)
"""The functionals, in the order ``prosodic_functionals`` returns them."""


def prosodic_functionals(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``NAMES``' values for 16 kHz mono ``audio`` (zeros for pitch of an utterance
    with no voiced frame)."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[0] < FRAME:
        audio = np.pad(audio, (0, FRAME - audio.shape[0]))
    rms = librosa.feature.rms(y=audio, frame_length=FRAME, hop_length=HOP)[0]
    energy = 20 * np.log10(np.maximum(rms, 1e-5))
    zcr = librosa.feature.zero_crossing_rate(audio, frame_length=FRAME, hop_length=HOP)[
        0
    ]
    f0 = librosa.yin(
        audio, fmin=FMIN, fmax=FMAX, sr=SAMPLE_RATE, frame_length=FRAME, hop_length=HOP
    )
    n = min(len(energy), len(f0), len(zcr))
    energy, zcr, f0 = energy[:n], zcr[:n], f0[:n]
    voiced = (energy > energy.max() - 30) & (zcr < 0.2) & (f0 > FMIN) & (f0 < FMAX)
    semitones = 12 * np.log2(f0[voiced] / 55.0)
    pitch = _pitch(semitones, np.flatnonzero(voiced))
    spectrum = np.abs(librosa.stft(audio, n_fft=FRAME, hop_length=HOP))[:, :n] ** 2
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=FRAME)
    frames = voiced if voiced.any() else np.ones(n, dtype=bool)
    spec = spectrum[:, frames]
    slope = _spectral_slope(spec, freqs)
    centroid = (freqs[:, None] * spec).sum(0) / np.maximum(spec.sum(0), 1e-10)
    low = spec[(freqs >= 50) & (freqs < 1000)].sum()
    high = spec[(freqs >= 1000) & (freqs < 5000)].sum()
    peak_low = spec[freqs < 2000].max(initial=1e-10)
    peak_high = spec[(freqs >= 2000) & (freqs < 5000)].max(initial=1e-10)
    runs = _runs(voiced)
    duration = len(audio) / SAMPLE_RATE
    values = [
        *pitch,
        energy.mean(),
        energy.std(),
        *np.percentile(energy, [10, 90]),
        np.percentile(energy, 95) - np.percentile(energy, 5),
        (energy[voiced].mean() - energy[~voiced].mean())
        if voiced.any() and (~voiced).any()
        else 0.0,
        voiced.mean(),
        (np.mean(runs) * HOP / SAMPLE_RATE) if runs else 0.0,
        slope.mean(),
        slope.std(),
        10 * np.log10(max(low, 1e-10) / max(high, 1e-10)),
        10 * np.log10(max(peak_low, 1e-10) / max(peak_high, 1e-10)),
        centroid.mean() / 1000,
        centroid.std() / 1000,
        len(runs) / duration,
        duration,
    ]
    return np.nan_to_num(np.array(values, dtype=np.float32))


def _pitch(
    semitones: npt.NDArray[np.float64], at: npt.NDArray[np.int64]
) -> list[float]:
    """Mean, std, percentiles 10/50/90, range 5-95, slope (semitones per second) and
    mean absolute frame-to-frame change of the voiced frames' pitch."""
    if len(semitones) < 2:
        return [0.0] * 8
    times = at * HOP / SAMPLE_RATE
    slope = float(np.polyfit(times, semitones, 1)[0]) if np.ptp(times) > 0 else 0.0
    return [
        float(semitones.mean()),
        float(semitones.std()),
        *(float(v) for v in np.percentile(semitones, [10, 50, 90])),
        float(np.percentile(semitones, 95) - np.percentile(semitones, 5)),
        slope,
        float(np.abs(np.diff(semitones)).mean()),
    ]


def _spectral_slope(
    spec: npt.NDArray[np.float64], freqs: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Per frame, the slope (dB per kHz) of the log power spectrum over 0-5 kHz."""
    band = freqs < 5000
    x = freqs[band] / 1000
    db = 10 * np.log10(np.maximum(spec[band], 1e-10))
    x0 = x - x.mean()
    return np.asarray((x0 @ (db - db.mean(0))) / (x0 @ x0))


def _runs(mask: npt.NDArray[np.bool_]) -> list[int]:
    """Lengths of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return (ends - starts).tolist()
