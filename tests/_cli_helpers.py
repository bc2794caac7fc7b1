"""Running the project's commands as a user does: ``python -m MODULE ARGS``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def run_command(
    *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` run in the repository (``env``: its environment, default
    this one's), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", *(str(arg) for arg in args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def usage_error(*args: str | Path, timeout: float = 120) -> str:
    """Run a command that must refuse its input with a clear message: exit status 2
    and no traceback. Returns its stderr, for the message."""
    result = run_command(*args, timeout=timeout)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr
