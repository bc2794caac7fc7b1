"""Shared fixtures: where the corpora and the models are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
