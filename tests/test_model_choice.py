"""Which emotion graphs are loaded: the newest by default, those named in
``[emotion]`` and ``[emotion.text]`` otherwise; a name not in the folder is a one-line
error listing what is there. Real fixture graphs (tests/make_fixture_models.py)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamser.config import load_config
from streamser.errors import ModelError
from streamser.recognition.emotion import EmotionModels
from streamser.recognition.model_choice import choose_models
from streamser.recognition.recognizer import Recognizer

from conftest import REPO

ACOUSTIC = "emotion-acoustic-v1"


@pytest.fixture
def two_versions(tmp_path: Path, fixture_models: Path) -> Path:
    """The fixture folder with its acoustic graph also as ``emotion-acoustic-v2``
    (the same graph: the choice goes by file name)."""
    folder = tmp_path / "models"
    shutil.copytree(fixture_models, folder)
    for suffix in (".onnx", ".onnx.json"):
        shutil.copy(
            folder / f"{ACOUSTIC}{suffix}", folder / f"emotion-acoustic-v2{suffix}"
        )
    return folder


def test_newest_by_default(
    two_versions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    choice = choose_models(two_versions)
    assert choice.acoustic.name == "emotion-acoustic-v2" and not choice.acoustic_named
    assert [f.name for f in choice.text] == ["emotion-text-fa-v1"]
    assert choice.fusion is not None and choice.fusion.name == "emotion-fusion-v1"
    caplog.set_level(logging.INFO, logger="streamser.recognition.emotion")
    models = EmotionModels.load(two_versions)
    assert models.acoustic_model.path.name == "emotion-acoustic-v2.onnx"
    chosen = [r.getMessage() for r in caplog.records if "chosen" in r.getMessage()]
    assert len(chosen) == 1
    assert "text.fa=emotion-text-fa-v1 (newest)" in chosen[0]
    assert "fusion=emotion-fusion-v1 (newest)" in chosen[0]


def test_named_models_from_the_config(
    two_versions: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "named.toml"
    path.write_text(
        f'[asr]\nenabled = false\n[emotion]\nmodel_dir = "{two_versions}"\n'
        f'acoustic = "{ACOUSTIC}"\n[emotion.text]\nfa = "emotion-text-fa-v1"\n'
    )
    caplog.set_level(logging.INFO, logger="streamser.recognition.emotion")
    recognizer = Recognizer(load_config(path, environ={}).recognizer_options())
    models = recognizer.models
    assert models.acoustic_model.path.name == f"{ACOUSTIC}.onnx"
    assert models.text_models["fa"].path.name == "emotion-text-fa-v1.onnx"
    chosen = [r.getMessage() for r in caplog.records if "chosen" in r.getMessage()]
    assert len(chosen) == 1
    assert f"acoustic={ACOUSTIC} (named)" in chosen[0]
    assert "text.fa=emotion-text-fa-v1 (named)" in chosen[0]


@pytest.mark.parametrize(
    ("acoustic", "text", "message"),
    [
        (
            "emotion-acoustic-v9",
            {},
            r"\[emotion\] acoustic = 'emotion-acoustic-v9': no such acoustic model "
            r"in .* \(acoustic models there: emotion-acoustic-v1, "
            r"emotion-acoustic-v2\)",
        ),
        (
            "emotion-text-fa-v1",
            {},
            r"no such acoustic model .*there: emotion-acoustic-v1, emotion-acoustic-v2",
        ),
        (
            "",
            {"en": "emotion-text-en-v2"},
            r"\[emotion.text\] en = 'emotion-text-en-v2': no such text model in .* "
            r"\(text models there: emotion-text-fa-v1\)",
        ),
        (
            "",
            {"en": "emotion-text-fa-v1"},
            r"\[emotion.text\] en = 'emotion-text-fa-v1': the model reads fa",
        ),
    ],
    ids=["acoustic-missing", "acoustic-of-another-kind", "text-missing", "language"],
)
def test_a_name_not_there_is_an_error_listing_what_is(
    two_versions: Path, acoustic: str, text: dict[str, str], message: str
) -> None:
    with pytest.raises(ModelError, match=message) as raised:
        EmotionModels.load(two_versions, acoustic=acoustic, text=text)
    assert "\n" not in str(raised.value)


def test_a_missing_name_fails_the_command_in_one_line(
    two_versions: Path, tmp_path: Path
) -> None:
    path = tmp_path / "missing.toml"
    path.write_text('[emotion]\nacoustic = "emotion-acoustic-v9"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamser",
            "run",
            str(REPO / "streamser" / "assets" / "demo.wav"),
            "--config",
            str(path),
            "--model-dir",
            str(two_versions),
            "--no-asr",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [
        line for line in result.stderr.splitlines() if "emotion-acoustic-v9" in line
    ]
    assert len(errors) == 1
    assert "emotion-acoustic-v1, emotion-acoustic-v2" in errors[0]
