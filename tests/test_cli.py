"""The command line: help, exit codes, clear errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_MODELS, REPO


def streamser(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamser", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "command", ["serve", "run", "listen", "models", "config", "devices"]
)
def test_every_command_has_help(command: str) -> None:
    result = streamser(command, "--help")
    assert result.returncode == 0
    assert "usage: streamser" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = streamser()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_version() -> None:
    result = streamser("--version")
    assert result.returncode == 0 and result.stdout.startswith("streamser ")


def test_config_prints_effective_toml(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[server]\nport = 9999\n")
    result = streamser("config", "--config", str(path), "--no-asr")
    assert result.returncode == 0, result.stderr
    assert "port = 9999" in result.stdout
    assert "[asr]\nenabled = false" in result.stdout


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 'eighty'\n")
    result = streamser("config", "--config", str(path))
    assert result.returncode == 1
    assert "server.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_on_unreadable_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    result = streamser(
        "run",
        str(garbage),
        str(tmp_path / "absent.flac"),
        "--model-dir",
        str(FIXTURE_MODELS),
    )
    assert result.returncode == 1
    assert "garbage.wav" in result.stderr and "absent.flac" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_on_the_demo_clip_prints_json_lines() -> None:
    import json

    demo = REPO / "streamser" / "assets" / "demo.wav"
    result = streamser("run", str(demo), "--jsonl", "--model-dir", str(FIXTURE_MODELS))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert len(ends) == 3
    assert all(e["transcript"] and e["language"] == "en" for e in ends)
    assert events[-1]["type"] == "stream.end" and events[-1]["utterances"] == 3


def test_models_lists_the_shipped_graphs_and_their_front_end() -> None:
    result = streamser("models", "--no-asr")
    assert result.returncode == 0, result.stderr
    assert (
        "emotion-acoustic-v2" in result.stdout and "emotion-text-fa-v1" in result.stdout
    )
    assert (
        "features: log-mel, whisper-base encoder layers 2+3 in the graph (dim 80)"
        in result.stdout
    )
    assert result.stdout.count("load: ok") == 2
