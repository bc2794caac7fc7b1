"""One recorded two-channel call, three ways: ``run`` at full speed, ``run
--realtime`` and ``send`` to a real ``streamser serve``. The alerts (a 12 s silence's
``long_silence`` included) and the summary's silence are the same each way."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from dataclasses import dataclass
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


NAMED = ("--channel-names", "agent,customer")


@dataclass
class Ways:
    """The call's events each way, and what ``run`` and ``send`` wrote."""

    events: dict[str, list[dict[str, Any]]]
    terminal: str
    written: Path


@pytest.fixture(scope="module")
def ways(call_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Ways:
    out = tmp_path_factory.mktemp("written")
    events = {}
    for name, extra in (
        ("run", ("--report", str(out / "run.html"), "--csv", str(out / "run.csv"))),
        ("run --realtime", ("--realtime",)),
    ):
        result = streamser("run", str(call_wav), "--jsonl", *NAMED, *FAST, *extra)
        assert result.returncode == 0, result.stderr
        events[name] = events_of(result.stdout)
    terminal = streamser("run", str(call_wav), *NAMED, *FAST)
    assert terminal.returncode == 0, terminal.stderr
    with running(FAST, tmp_path_factory.mktemp("serve")) as server:
        reports = ("--report", str(out / "send.html"), "--csv", str(out / "send.csv"))
        sent = streamser(
            "send", str(call_wav), "--url", server.url, "--jsonl", *NAMED, *reports
        )
    assert sent.returncode == 0, sent.stderr
    events["send"] = events_of(sent.stdout)
    return Ways(events, terminal.stdout, out)


def test_the_same_alerts_however_the_call_is_run(ways: Ways) -> None:
    offline = alerts_of(ways.events["run"])
    silences = [a[3] for a in offline if a[0] == "long_silence"]
    assert len(silences) == 1, offline
    # the customer's speech ends at 13 s (plus the segmenter's end pad)
    since = float(silences[0].rpartition("since ")[2].removesuffix(" s)"))
    assert 13.0 <= since <= 13.5, silences
    for name, events in ways.events.items():
        assert alerts_of(events) == offline, name
        (summary,) = [e for e in events if e["type"] == "call.summary"]
        assert summary["longest_silence_s"] >= 12.0, name
        assert [(a["rule"], a["message"]) for a in summary["alerts"]] == [
            (e["rule"], e["message"]) for e in events if e["type"] == "call.alert"
        ]


def test_the_channels_are_named_in_every_view(ways: Ways) -> None:
    for name, events in ways.events.items():
        (start,) = [e for e in events if e["type"] == "stream.start"]
        assert start["metadata"]["channels"] == ["agent", "customer"], name
        assert start["channel_mode"] == "separate", name
        (summary,) = [e for e in events if e["type"] == "call.summary"]
        assert [c["name"] for c in summary["channels"]] == ["agent", "customer"]
    for kind in ("run", "send"):
        with open(ways.written / f"{kind}.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert {(r["channel"], r["channel_name"]) for r in rows} == {
            ("0", "agent"),
            ("1", "customer"),
        }, kind
        page = (ways.written / f"{kind}.html").read_text(encoding="utf-8")
        assert "0 (agent)" in page and "1 (customer)" in page, kind
        assert "long_silence" in page
        assert not re.search(r"\d\.\d{5,}", page), "numbers are rounded"
    # send names its call by the file, not by the server's random stream id
    assert "<h2>call.wav</h2>" in (ways.written / "send.html").read_text()
    # the terminal: each utterance with its channel, the alerts, then the summary
    lines = ways.terminal.splitlines()
    utterances = [line for line in lines if re.search(r"\d+\.\d\ds  ", line)]
    assert utterances and all(
        re.search(r"s  (agent|customer) ", line) for line in utterances
    ), lines
    assert any("ALERT long_silence: no one has spoken" in line for line in lines)
    summary_at = next(i for i, line in enumerate(lines) if "summary:" in line)
    assert "longest silence" in lines[summary_at]
    assert any("agent:" in line for line in lines[summary_at:])
    assert any("customer:" in line for line in lines[summary_at:])
