"""Level-normalised log-mel (``FrontEnd.mel_level``): the same speech at any gain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamser.recognition import features
from streamser.recognition.features import FrontEnd, level_mel, log_mel


@pytest.fixture(scope="module")
def clip(emodb_clips: list[Path]) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(emodb_clips[0], dtype="float32")
    assert rate == 16000
    return audio


@pytest.mark.parametrize("gain_db", [-30.0, -12.0, 0.0])
def test_levelled_mel_does_not_depend_on_gain(clip: np.ndarray, gain_db: float) -> None:
    """Speech recorded 30 dB quieter gives the same levelled frames."""
    scaled = (clip * 10.0 ** (gain_db / 20.0)).astype(np.float32)
    want = level_mel(log_mel(clip), 0.0)
    got = level_mel(log_mel(scaled), 0.0)
    np.testing.assert_allclose(got, want, atol=2e-3)
    unlevelled = np.abs(log_mel(scaled) - log_mel(clip)).max()
    assert gain_db == 0.0 or unlevelled > 0.2  # without it, gain moves every frame


def test_louder_half_sits_at_the_level(clip: np.ndarray) -> None:
    out = level_mel(log_mel(clip), 0.25)
    frames = out.mean(axis=1)
    assert out.dtype == np.float32
    assert frames[frames >= np.median(frames)].mean() == pytest.approx(0.25, abs=1e-4)
    # A shift only: the spectral shape within the utterance is unchanged.
    np.testing.assert_allclose(
        np.diff(out, axis=0), np.diff(log_mel(clip), axis=0), atol=1e-4
    )


def test_front_end_levels_only_when_asked(clip: np.ndarray) -> None:
    mel = log_mel(clip)
    assert features.WHISPER_LAYERS.levelled(mel) is mel
    levelled = FrontEnd(type="log-mel", dim=80, encoder_layers=(2, 3), mel_level=0.0)
    np.testing.assert_array_equal(levelled.levelled(mel), level_mel(mel, 0.0))


def test_front_end_metadata_round_trip() -> None:
    """Graphs without a level keep their metadata as before; with one, it travels."""
    assert "mel_level" not in features.WHISPER_LAYERS.to_dict()
    levelled = FrontEnd(type="log-mel", dim=80, encoder_layers=(1, 2), mel_level=-0.1)
    assert levelled.to_dict()["mel_level"] == -0.1
    assert FrontEnd.from_dict(levelled.to_dict()) == levelled
    assert (
        FrontEnd.from_dict(features.WHISPER_LAYERS.to_dict()) == features.WHISPER_LAYERS
    )


def test_silence_and_empty_input_do_not_fail() -> None:
    silent = log_mel(np.zeros(16000, dtype=np.float32))
    assert np.isfinite(level_mel(silent, 0.0)).all()
    empty = np.zeros((0, 80), dtype=np.float32)
    assert level_mel(empty, 0.0).shape == (0, 80)


def test_shipped_acoustic_model_hears_speech_at_any_gain(
    emodb_clips: list[Path],
) -> None:
    """The shipped graph asks for a level, so the same utterance 20 dB quieter (a
    quieter microphone, a lower codec gain) gets the same emotion scores."""
    import soundfile

    from streamser.recognition.emotion import EmotionModels
    from streamser.recognition.models import bundled_model_dir

    models = EmotionModels.load(bundled_model_dir(), device="cpu", num_threads=1)
    front_end = models.acoustic_model.contract.front_end
    assert front_end is not None and front_end.mel_level is not None
    for path in emodb_clips[:4]:
        audio, _ = soundfile.read(path, dtype="float32")
        quiet = (audio * 0.1).astype(np.float32)
        loud, soft = models.acoustic([log_mel(audio), log_mel(quiet)])
        assert loud.scores.label == soft.scores.label
        for label, value in loud.scores.scores.items():
            assert soft.scores.scores[label] == pytest.approx(value, abs=0.02)
