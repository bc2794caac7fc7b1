"""One recorded two-channel call, three ways: ``run`` at full speed, ``run
--realtime`` and ``send`` to a real ``streamser serve``. The alerts (a 12 s silence's
``long_silence`` included) and the summary's silence are the same each way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from _ops_helpers import FAST, REPO, running

DEMO = REPO / "streamser" / "assets" / "demo.wav"
RATE = 16000


def two_channel_call(path: Path) -> Path:
    """Agent, then customer, then 12 s in which no one speaks, then the agent again:
    real (synthetic) speech from the demo clip, 16 kHz 16-bit stereo."""
    demo, rate = sf.read(DEMO, dtype="int16")
    assert rate == RATE
    first, second = demo[: 6 * RATE], demo[6 * RATE : 12 * RATE]
    call = np.zeros((int(33.5 * RATE), 2), dtype=np.int16)
    call[RATE // 2 : RATE // 2 + first.shape[0], 0] = first
    call[7 * RATE : 7 * RATE + second.shape[0], 1] = second
    call[26 * RATE : 26 * RATE + first.shape[0], 0] = first
    sf.write(path, call, RATE, subtype="PCM_16")
    return path


def streamser(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamser", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def events_of(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def alerts_of(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each ``call.alert`` as comparable fields, in the order of stream audio."""
    alerts = [
        (e["rule"], e["channel"], tuple(e["utterance_ids"]), e["message"])
        for e in events
        if e["type"] == "call.alert"
    ]
    return sorted(alerts, key=lambda a: (a[2], a[3]))


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_channel_call(tmp_path_factory.mktemp("call") / "call.wav")


@pytest.fixture(scope="module")
def three_ways(
    call_wav: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    separate = ("--channels", "separate", "--jsonl")
    ways = {}
    for name, extra in (("run", ()), ("run --realtime", ("--realtime",))):
        result = streamser("run", str(call_wav), *separate, *FAST, *extra)
        assert result.returncode == 0, result.stderr
        ways[name] = events_of(result.stdout)
    with running(FAST, tmp_path_factory.mktemp("serve")) as server:
        result = streamser("send", str(call_wav), "--url", server.url, *separate)
    assert result.returncode == 0, result.stderr
    ways["send"] = events_of(result.stdout)
    return ways


def test_the_same_alerts_however_the_call_is_run(
    three_ways: dict[str, list[dict[str, Any]]],
) -> None:
    offline = alerts_of(three_ways["run"])
    silences = [a[3] for a in offline if a[0] == "long_silence"]
    assert len(silences) == 1, offline
    # the customer's speech ends at 13 s (plus the segmenter's end pad)
    since = float(silences[0].rpartition("since ")[2].removesuffix(" s)"))
    assert 13.0 <= since <= 13.5, silences
    for name, events in three_ways.items():
        assert alerts_of(events) == offline, name
        (summary,) = [e for e in events if e["type"] == "call.summary"]
        assert summary["longest_silence_s"] >= 12.0, name
        assert [(a["rule"], a["message"]) for a in summary["alerts"]] == [
            (e["rule"], e["message"]) for e in events if e["type"] == "call.alert"
        ]
