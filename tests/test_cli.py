"""The command line: help, exit codes, clear errors without tracebacks."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from conftest import FIXTURE_MODELS, REPO

DEMO = REPO / "streamser" / "assets" / "demo.wav"
FAST = ("--model-dir", str(FIXTURE_MODELS), "--no-asr")


def streamser(
    *args: str, timeout: float = 300, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streamser", *args],
        cwd=REPO,
        capture_output=True,
        input=stdin,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    "command", ["serve", "run", "send", "listen", "models", "config", "devices"]
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
    result = streamser("run", str(DEMO), "--jsonl", "--model-dir", str(FIXTURE_MODELS))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert len(ends) == 3
    assert all(e["transcript"] and e["language"] == "en" for e in ends)
    assert events[-1]["type"] == "stream.end" and events[-1]["utterances"] == 3


def test_models_lists_the_shipped_graphs_and_their_front_end() -> None:
    result = streamser("models", "--no-asr")
    assert result.returncode == 0, result.stderr
    assert all(
        name in result.stdout
        for name in (
            "emotion-acoustic-v4",
            "emotion-text-en-v2",
            "emotion-text-multi-v1",
        )
    )
    assert (
        "features: log-mel, level 0, whisper-base encoder layers 2+3 in the graph (dim 80)"
        in result.stdout
    )
    assert result.stdout.count("load: ok") == 3
    # the card's metrics, whole: one line per family, numbers to 3 decimals
    card = json.loads(
        (REPO / "streamser/models/emotion-text-multi-v1.onnx.json").read_text()
    )
    test = card["metrics"]["shemo_kfold5"]
    lines = result.stdout.splitlines()
    assert "  metrics:" in lines
    assert (
        f"    shemo_kfold5: wa {round(test['wa'], 3)}, ua {round(test['ua'], 3)}, "
        f"macro_f1 {round(test['macro_f1'], 3)}, confusion [6x6 matrix], "
        f"labels [{', '.join(test['labels'])}], n {test['n']}"
    ) in lines
    recall = ", ".join(
        f"{label} {round(value, 3)}"
        for label, value in test["per_class_recall"].items()
    )
    assert f"    shemo_kfold5 / per_class_recall: {recall}" in lines
    assert all(len(line) < 400 for line in lines)


@pytest.mark.parametrize("command", [["listen", "--demo"], ["serve"]])
def test_a_taken_port_is_one_clear_error(command: list[str], taken_port: int) -> None:
    result = streamser(*command, "--port", str(taken_port), *FAST, timeout=120)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(
        f"Cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    )
    assert "Traceback" not in result.stderr and "Ready" not in result.stderr


def test_run_missing_file_says_file_not_found(tmp_path: Path) -> None:
    result = streamser("run", "nope.wav", *FAST)
    assert result.returncode == 1
    assert "file not found: nope.wav" in result.stderr
    assert "System error" not in result.stderr


def test_language_is_a_flag_of_run_and_listen_only() -> None:
    for command in ("run", "listen"):
        assert "--language" in streamser(command, "--help").stdout
    for command in ("serve", "models", "config"):
        result = streamser(command, "--language", "de")
        assert result.returncode == 2
        assert "unrecognized arguments: --language" in result.stderr


def test_run_prints_streams_in_the_order_given_and_reads_mp3_from_stdin() -> None:
    # The demo clip's first utterance as MP3 on standard input, after the whole
    # clip: the short stream ends first but is printed second.
    audio, rate = sf.read(DEMO, dtype="float32")
    mp3 = io.BytesIO()
    sf.write(mp3, audio[: int(5.8 * rate)], rate, format="MP3")
    result = streamser("run", str(DEMO), "-", "--jsonl", *FAST, stdin=mp3.getvalue())
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    streams = [e["stream_id"] for e in events]
    first = streams.count("demo.wav")
    assert streams == ["demo.wav"] * first + ["stdin"] * (len(streams) - first)
    ends = {
        stream: [e for e in events if e["stream_id"] == stream]
        for stream in ("demo.wav", "stdin")
    }
    assert [e["type"] for e in ends["demo.wav"]].count("utterance.end") == 3
    assert [e["type"] for e in ends["stdin"]].count("utterance.end") == 1
    assert events[-1]["type"] == "stream.end" and events[-1]["stream_id"] == "stdin"
    # the stdin stream finished first: its events have the smaller ids
    assert ends["stdin"][-1]["id"] < ends["demo.wav"][-1]["id"]


def test_listen_on_an_unknown_device_exits_1_before_loading_models() -> None:
    result = streamser("listen", "--device", "99", *FAST, timeout=120)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    # no such device, or no PortAudio at all: either way one line, no demo instead
    assert len(errors) == 1, result.stderr
    assert "microphone" in errors[0] or "PortAudio" in errors[0], errors[0]
    assert "demo" not in result.stdout and "Emotion model" not in result.stderr


def test_channel_names_are_checked_as_a_usage_error() -> None:
    for bad in ("agent,", "agent,agent", "x" * 65):
        result = streamser("run", str(DEMO), "--channel-names", bad, *FAST)
        assert result.returncode == 2, (bad, result.stderr)
        assert "channel names must" in result.stderr


def test_a_whisper_model_that_is_not_here_is_one_line(tmp_path: Path) -> None:
    # offline, with an empty cache: a size name cannot be fetched from the hub
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "STREAMSER_CACHE": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-m", "streamser", "run", str(DEMO), "--whisper-model"]
        + ["small", "--model-dir", str(FIXTURE_MODELS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert "Whisper model 'small' is not installed" in errors[0]
    assert "ships Whisper base" in errors[0] and "--whisper-model /path" in errors[0]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
