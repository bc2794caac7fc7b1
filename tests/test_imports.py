"""The runtime stays free of torch, onnx, training and export."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import streamser, streamser.cli, streamser.pipeline, streamser.serve.server\n"
        "import streamser.recognition.recognizer, streamser.audio.sources, streamser.config\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'onnx', 'training', 'export', 'sklearn', 'librosa'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
