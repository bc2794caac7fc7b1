"""Offline call reports: ``streamser run --channels separate --report --csv`` on a
stereo call, the HTML and CSV writers on synthetic calls, and the progress bar."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf
from test_channels import conversation

from streamser.analytics.report import (
    CSV_COLUMNS,
    CallRecorder,
    render_html,
    write_csv,
)
from streamser.audio.sources import ProgressBar
from streamser.events import (
    CallAlert,
    CallSummary,
    ChannelSummary,
    EventSequencer,
    StreamStart,
    UtteranceEnd,
)

from conftest import REPO, SHIPPED_MODELS

_URL = re.compile(r"(https?:|//[a-z0-9]|src=|href=|url\(|@import|<script)", re.I)


def _utterance(
    utterance_id: int, channel: int, start: float, label: str, **extra: object
) -> UtteranceEnd:
    return UtteranceEnd(
        utterance_id,
        start,
        start + 2.0,
        extra.pop("transcript", None),  # type: ignore[arg-type]
        "de",
        label,
        0.8,
        {label: 0.8},
        channel=channel,
        **extra,  # type: ignore[arg-type]
    )


def _recorded_call() -> CallRecorder:
    recorder = CallRecorder()
    sequencer = EventSequencer()
    bodies = [
        StreamStart(
            16000,
            "pcm_s16le",
            "de",
            {"channels": ["agent", "customer"]},
            channel_mode="separate",
        ),
        _utterance(0, 0, 0.5, "anger", transcript='Nein, "so" <b>nicht</b>!'),
        _utterance(1, 1, 3.0, "sadness", arousal=-0.4, valence=-0.2),
        _utterance(2, 0, 6.0, "anger", transcript="a, b; c"),
        CallAlert("sustained_anger", 0, (0, 2), "anger on channel 0 (agent)"),
        _utterance(3, 1, 9.0, "fear", arousal=0.5, valence=-0.6),
        CallSummary(
            12.0,
            0.0,
            1.0,
            (
                ChannelSummary(
                    0, "agent", 2, {"anger": 2}, {"anger": 4.0}, 4.0, None, None
                ),
                ChannelSummary(
                    1,
                    "customer",
                    2,
                    {"fear": 1, "sadness": 1},
                    {"fear": 2.0, "sadness": 2.0},
                    4.0,
                    0.05,
                    -0.4,
                ),
            ),
            (CallAlert("sustained_anger", 0, (0, 2), "anger on channel 0 (agent)"),),
        ),
    ]
    for body in bodies:
        recorder(sequencer.stamp("call-1", body))
    return recorder


def test_html_report_is_self_contained_and_escaped() -> None:
    recorder = _recorded_call()
    page = render_html(list(recorder.calls.values()))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert _URL.search(page) is None, _URL.search(page)
    assert "<svg" in page and "<style>" in page
    # the summary, the alerts, the transcript lines (escaped), the names
    for text in ("12.0 s", "sustained_anger", "anger on channel 0 (agent)"):
        assert text in page
    assert "Nein, &quot;so&quot; &lt;b&gt;nicht&lt;/b&gt;!" in page
    assert "<b>nicht</b>" not in page
    assert "0 (agent)" in page and "1 (customer)" in page
    # arousal and valence are drawn where utterances have them
    assert page.count("<polyline") == 2
    assert "valence -0.60" in page
    empty = render_html([])
    assert _URL.search(empty) is None


def test_csv_has_one_row_per_utterance(tmp_path: Path) -> None:
    recorder = _recorded_call()
    path = tmp_path / "call.csv"
    write_csv(path, list(recorder.calls.values()))
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["utterance_id"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["channel_name"] for r in rows] == ["agent", "customer"] * 2
    assert rows[0]["transcript"] == 'Nein, "so" <b>nicht</b>!'
    assert rows[1]["transcript"] == "" and rows[1]["arousal"] == "-0.4000"
    assert rows[0]["arousal"] == "" and rows[0]["start"] == "0.500"
    assert {r["stream"] for r in rows} == {"call-1"}


def test_progress_bar_draws_and_clears() -> None:
    out = io.StringIO()
    bar = ProgressBar(16000 * 10, out, interval_s=0.0)
    bar.advance(16000 * 5)
    assert out.getvalue().endswith("]  50%  5.0/10.0 s")
    bar.advance(16000 * 9)  # never past the total
    assert "100%  10.0/10.0 s" in out.getvalue()
    bar.clear()
    assert out.getvalue().endswith("\r\x1b[K")
    bar.clear()  # nothing shown: nothing written
    assert out.getvalue().count("\x1b[K") == 1


@pytest.fixture(scope="module")
def stereo_call(tmp_path_factory: pytest.TempPathFactory, datasets: Path) -> Path:
    if not list(SHIPPED_MODELS.glob("emotion-acoustic-v*.onnx")):
        pytest.skip("no shipped acoustic model")
    stereo, _ = conversation(datasets)
    path = tmp_path_factory.mktemp("call") / "call.wav"
    sf.write(path, stereo, 16000, subtype="PCM_16")
    return path


def _run(
    *args: str, stderr: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamser",
            "run",
            "--no-asr",
            "--model-dir",
            str(SHIPPED_MODELS),
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=False,
    )


@pytest.mark.data
def test_run_writes_the_report_and_the_csv(stereo_call: Path, tmp_path: Path) -> None:
    report, table = tmp_path / "call.html", tmp_path / "call.csv"
    result = _run(
        "--channels",
        "separate",
        str(stereo_call),
        "--jsonl",
        "--report",
        str(report),
        "--csv",
        str(table),
    )
    assert result.returncode == 0, result.stderr.decode()
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert len(ends) == 8 and {e["channel"] for e in ends} == {0, 1}
    with open(table, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["channel"]), int(r["utterance_id"]), r["label"]) for r in rows] == [
        (e["channel"], e["utterance_id"], e["label"]) for e in ends
    ]
    page = report.read_text(encoding="utf-8")
    assert _URL.search(page) is None
    summary = next(e for e in events if e["type"] == "call.summary")
    assert f"{summary['duration_s']:.1f} s" in page
    assert "Summary" in page and "sustained_anger" in page
    assert page.count("<rect") >= 8 + 2  # an utterance each, a lane each
    # stderr is not a terminal here: no progress bar
    assert b"\r[" not in result.stderr


@pytest.mark.data
def test_progress_bar_only_on_a_terminal(stereo_call: Path, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result = _run(
            str(stereo_call), "--csv", str(tmp_path / "c.csv"), stderr=follower
        )
    finally:
        os.close(follower)
        reader.join(30)
        os.close(leader)
    assert result.returncode == 0
    terminal = b"".join(chunks)
    assert b"\r[" in terminal and b"100%" in terminal
    assert terminal.count(b"\x1b[K") >= 1  # erased before printing and at the end
    assert b"\r[" not in result.stdout
