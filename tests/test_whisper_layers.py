"""streamser.whisper_layers: the real Whisper base encoder, cut after its first layers."""

from __future__ import annotations

import struct
from pathlib import Path

import ctranslate2
import numpy as np
import pytest

from streamser import features
from streamser.errors import ModelError
from streamser.whisper_layers import load_encoder_layers, truncated_model_bin
from streamser.whisper_model import default_whisper_dir


@pytest.fixture(scope="module")
def whisper_dir() -> Path:
    return default_whisper_dir()


@pytest.fixture(scope="module")
def mel() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return features.log_mel(
        (voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    )


def test_all_layers_equal_the_full_encoder(whisper_dir: Path, mel: np.ndarray) -> None:
    full = ctranslate2.models.Whisper(str(whisper_dir), compute_type="int8")
    cut = load_encoder_layers(whisper_dir, 6)
    expected = features.encoder_states(full, [mel])[0]
    np.testing.assert_array_equal(features.encoder_states(cut, [mel])[0], expected)


def test_fewer_layers_give_other_states(whisper_dir: Path, mel: np.ndarray) -> None:
    three = features.encoder_states(load_encoder_layers(whisper_dir, 3), [mel])[0]
    six = features.encoder_states(load_encoder_layers(whisper_dir, 6), [mel])[0]
    assert three.shape == six.shape == (mel.shape[0] // 2, 512)
    assert np.isfinite(three).all()
    assert np.abs(three - six).max() > 1.0


def test_bad_model_files_raise_model_error(whisper_dir: Path, tmp_path: Path) -> None:
    data = (whisper_dir / "model.bin").read_bytes()
    for layers in (0, 7):
        with pytest.raises(ModelError, match="encoder layers"):
            truncated_model_bin(data, layers)
    with pytest.raises(ModelError, match="truncated"):
        truncated_model_bin(data[: len(data) // 2], 3)
    with pytest.raises(ModelError, match="binary version"):
        truncated_model_bin(struct.pack("<I", 99) + data[4:], 3)
    with pytest.raises(ModelError, match="truncated"):
        truncated_model_bin(b"", 3)
    with pytest.raises(ModelError, match="cannot read"):
        load_encoder_layers(tmp_path / "missing", 3)


def test_corrupt_model_folder_raises_model_error(
    whisper_dir: Path, tmp_path: Path
) -> None:
    data = (whisper_dir / "model.bin").read_bytes()
    for name, content, message in (
        ("empty", b"", "cannot read"),
        ("half", data[: len(data) // 3], "truncated"),
        ("garbage", b"\x07" * 4096, "binary version"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.bin").write_bytes(content)
        with pytest.raises(ModelError, match=message):
            load_encoder_layers(folder, 3)


def test_cut_model_is_small(whisper_dir: Path) -> None:
    """The decoder embeddings become a placeholder: the cut model is a fraction of the
    whole (Whisper base: 145 MB on disk)."""
    data = (whisper_dir / "model.bin").read_bytes()
    assert len(truncated_model_bin(data, 3)) < len(data) // 4
