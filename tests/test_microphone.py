"""``streamser listen`` against a real audio server: PulseAudio with a null sink whose
monitor is the default microphone, fed speech with ``paplay``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from _server_helpers import speech_with_pauses
from conftest import FIXTURE_MODELS, REPO

pytestmark = pytest.mark.data


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not (
        shutil.which("pulseaudio") and shutil.which("paplay") and shutil.which("pactl")
    ):
        pytest.skip(
            "needs pulseaudio, pactl and paplay (Debian: pulseaudio pulseaudio-utils)"
        )
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)}
    server = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "-n",
            "--load=module-native-protocol-unix",
            "--load=module-always-sink",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            if (
                subprocess.run(
                    ["pactl", "info"], env=env, capture_output=True
                ).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        else:
            pytest.skip("PulseAudio did not start here")
        subprocess.run(
            ["pactl", "load-module", "module-null-sink", "sink_name=fakemic"],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["pactl", "set-default-source", "fakemic.monitor"], env=env, check=True
        )
        yield env
    finally:
        server.terminate()
        server.wait(10)


def test_listen_recognises_speech_from_the_microphone(
    pulse: dict[str, str], emodb_clips: list[Path], tmp_path: Path
) -> None:
    sounddevice = pytest.importorskip("sounddevice", exc_type=OSError)
    del sounddevice
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech_with_pauses([emodb_clips[0], emodb_clips[1]]), 16000)
    listen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamser",
            "listen",
            "--model-dir",
            str(FIXTURE_MODELS),
            "--port",
            "0",
            "--language",
            "de",
        ],
        cwd=REPO,
        env={**pulse, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        assert listen.stderr is not None
        while time.monotonic() < deadline:
            line = listen.stderr.readline()
            assert line, "listen exited before recording"
            if "Recording from" in line:
                break
        subprocess.run(
            ["paplay", "--device=fakemic", str(wav)], env=pulse, check=True, timeout=60
        )
        time.sleep(6)  # hangover, then ASR of the last utterance
    finally:
        listen.send_signal(signal.SIGINT)
        out, err = listen.communicate(timeout=120)
    assert listen.returncode == 0, err
    lines = [line for line in out.splitlines() if line.startswith("microphone")]
    # one line per utterance, each with its transcript; the call ends with its summary
    utterances = [
        line for line in lines if "summary:" not in line and "channel " not in line
    ]
    assert len(utterances) == 2, out
    assert all('"' in line for line in utterances), "no transcript in the live view"
    assert any("summary:" in line for line in lines), out
    assert "demo clip" not in err
