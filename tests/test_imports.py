"""Importing the runtime loads none of torch, onnx (imported only to build the e5
graph into the cache), training and export; the command line and ``streamser send``
load neither onnxruntime nor faster-whisper."""

from __future__ import annotations

import pytest
from _cli_helpers import run_python

HEAVY = ("onnxruntime", "faster_whisper", "ctranslate2")


def _modules_loaded_by(code: str, roots: tuple[str, ...]) -> list[str]:
    """Top-level packages among ``roots`` that ``code`` leaves in ``sys.modules``,
    run in a fresh interpreter."""
    probe = (
        f"{code}\n"
        "import sys\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} "
        f"& set({roots!r}))))\n"
    )
    result = run_python("-c", probe, timeout=120)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


def test_runtime_never_imports_torch() -> None:
    code = (
        "import streamser, streamser.cli, streamser.pipeline, streamser.serve.server\n"
        "import streamser.recognition.recognizer, streamser.audio.sources\n"
        "import streamser.config"
    )
    roots = ("torch", "onnx", "training", "export", "sklearn", "librosa")
    assert _modules_loaded_by(code, roots) == []


@pytest.mark.parametrize(
    "code",
    [
        "import streamser",
        "import streamser.cli",
        "import streamser.client",
        (
            "import contextlib, io\n"
            "from streamser.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main(['send', '--help'])\n"
            "    except SystemExit as done:\n"
            "        assert done.code == 0, done.code"
        ),
    ],
    ids=["package", "cli", "client", "send-help"],
)
def test_command_line_is_light(code: str) -> None:
    assert _modules_loaded_by(code, HEAVY) == []


def test_recognizer_is_there_on_first_use() -> None:
    code = "import streamser\nassert streamser.Recognizer.__name__ == 'Recognizer'"
    assert _modules_loaded_by(code, ("streamser",)) == ["streamser"]
