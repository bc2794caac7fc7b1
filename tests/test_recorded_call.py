"""Behaviour lock: ``streamser run --jsonl`` on recorded calls gives the stored events.

The demo clip (``streamser/assets/demo.wav``, mono) and a two-channel call built from
it (the clip on the left; on the right the same clip, quieter, 2.5 s later, so the
two sides overlap) go through ``streamser run FILE... --channels separate --jsonl``
in a subprocess, with the shipped emotion models and real Whisper ASR on the CPU.
Their events must equal ``tests/data/recorded_call.jsonl``:

- the same events of each type, in the same order per stream, with the same
  labels, channels, transcripts, languages and times; scores, confidences,
  arousal and valence within ``SCORE_TOLERANCE``;
- fields that depend on the wall clock or the host are left out: ``time``,
  ``latency_ms``, ``origin``, and ``id``/``seq`` (they number events in the order
  they left, which interleaves utterances with the recognition's timing);
- ``emotion.partial`` events are not stored: whether a partial is computed depends
  on whether the models are busy at that moment. Each partial is checked against
  its utterance instead (same stream, channel and start, ending inside it).

The stored copy changes only when an issue changes behaviour on purpose. To
regenerate it after such a change, run::

    STREAMSER_RECORD_CALL=1 python -m pytest tests/test_recorded_call.py

review the diff of ``tests/data/recorded_call.jsonl``, and say in the commit which
issue changed what.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SHIPPED_MODELS

DEMO = REPO / "streamser" / "assets" / "demo.wav"
STORED = REPO / "tests" / "data" / "recorded_call.jsonl"
SCORE_TOLERANCE = 5e-3
"""Largest difference allowed in a number (scores, confidence, arousal, valence);
times are positions of 16 kHz samples rounded to 10 ms, so they agree exactly."""
IGNORED = ("time", "latency_ms", "origin", "id", "seq")
CALL_DELAY_S = 2.5
CALL_GAIN = 0.6


def _call_wav(folder: Path) -> Path:
    """The two-channel call: the demo clip left, quieter and ``CALL_DELAY_S`` later
    right, both as long as the delayed side."""
    audio, rate = sf.read(DEMO, dtype="int16")
    delay = int(CALL_DELAY_S * rate)
    stereo = np.zeros((audio.shape[0] + delay, 2), np.int16)
    stereo[: audio.shape[0], 0] = audio
    stereo[delay:, 1] = (audio * CALL_GAIN).astype(np.int16)
    path = folder / "call.wav"
    sf.write(path, stereo, rate, subtype="PCM_16")
    return path


def _run(call: Path) -> list[dict[str, Any]]:
    """The events of ``streamser run`` on the demo clip and the call, as printed."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamser",
            "run",
            str(DEMO),
            str(call),
            "--channels",
            "separate",
            "--inference-device",
            "cpu",
            "--model-dir",
            str(SHIPPED_MODELS),
            "--jsonl",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "STREAMSER_CONFIG": ""},
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _rank(event: dict[str, Any]) -> tuple[Any, ...]:
    """Where an event goes in the canonical order of its stream: ``stream.start``;
    each utterance's ``speech.start`` then ``utterance.end`` by ``utterance_id``;
    alerts (by rule, channel and utterances); ``call.summary``; ``stream.end``."""
    kind = event["type"]
    if kind == "stream.start":
        return (0,)
    if kind in ("speech.start", "utterance.end"):
        return (1, event["utterance_id"], kind == "utterance.end")
    if kind == "call.alert":
        return (2, event["rule"], event["channel"], event["utterance_ids"])
    if kind == "error":
        return (3, event["code"], event["message"])
    return (4 if kind == "call.summary" else 5,)


def _canonical(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streams in the order they were printed, each stream's events in ``_rank``
    order, without partials and the ``IGNORED`` fields."""
    streams = list(dict.fromkeys(e["stream_id"] for e in events))
    kept = [
        {k: v for k, v in e.items() if k not in IGNORED}
        for e in events
        if e["type"] != "emotion.partial"
    ]
    return sorted(kept, key=lambda e: (streams.index(e["stream_id"]), _rank(e)))


def _differences(expected: Any, actual: Any, where: str) -> list[str]:
    """Where ``actual`` differs from ``expected``, numbers within the tolerance."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        if set(expected) != set(actual):
            found.append(f"{where}: fields {sorted(expected)} != {sorted(actual)}")
        for key in sorted(set(expected) & set(actual)):
            found += _differences(expected[key], actual[key], f"{where}.{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items != {len(actual)}"]
        return [
            difference
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for difference in _differences(e, a, f"{where}[{i}]")
        ]
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(actual, numbers)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        if math.isclose(expected, actual, rel_tol=0.0, abs_tol=SCORE_TOLERANCE):
            return []
    elif type(expected) is type(actual) and expected == actual:
        return []
    return [f"{where}: {expected!r} != {actual!r}"]


def _check_order(events: list[dict[str, Any]]) -> None:
    """What the protocol promises of the printed order, per stream: ``stream.start``
    first, ``call.summary`` then ``stream.end`` last, an utterance's ``speech.start``
    before its partials and its ``utterance.end``, ends in ``utterance_id`` order per
    channel, and no partial after its utterance's end."""
    for stream in dict.fromkeys(e["stream_id"] for e in events):
        own = [e for e in events if e["stream_id"] == stream]
        kinds = [e["type"] for e in own]
        assert kinds[0] == "stream.start" and kinds[-2:] == [
            "call.summary",
            "stream.end",
        ], (stream, kinds)
        seen: dict[int, str] = {}
        last_end: dict[int, int] = {}
        for event in own:
            kind, uid = event["type"], event.get("utterance_id")
            if kind == "speech.start":
                assert uid not in seen, (stream, event)
                seen[uid] = kind
            elif kind in ("emotion.partial", "utterance.end"):
                assert seen.get(uid) == "speech.start", (stream, event)
            if kind == "utterance.end":
                seen[uid] = kind
                assert uid > last_end.get(event["channel"], -1), (stream, event)
                last_end[event["channel"]] = uid


def _check_partials(events: list[dict[str, Any]]) -> None:
    """Each partial belongs to an utterance of its stream: same channel and start,
    ending inside it, its label the most probable of its scores."""
    ends = {
        (e["stream_id"], e["utterance_id"]): e
        for e in events
        if e["type"] == "utterance.end"
    }
    for partial in (e for e in events if e["type"] == "emotion.partial"):
        end = ends[partial["stream_id"], partial["utterance_id"]]
        assert partial["channel"] == end["channel"], partial
        assert partial["start"] == end["start"], partial
        # a partial may see the hangover (400 ms) and the rest of a 100 ms chunk
        assert end["start"] < partial["end"] <= end["end"] + 0.5, partial
        scores = partial["scores"]
        assert set(scores) == set(end["scores"]), partial
        assert partial["label"] == max(scores, key=scores.__getitem__), partial


def test_recorded_call_gives_the_stored_events(tmp_path: Path) -> None:
    events = _run(_call_wav(tmp_path))
    _check_order(events)
    _check_partials(events)
    actual = _canonical(events)
    if os.environ.get("STREAMSER_RECORD_CALL"):
        STORED.write_text(
            "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in actual),
            encoding="utf-8",
        )
    expected = [
        json.loads(line) for line in STORED.read_text("utf-8").splitlines() if line
    ]
    assert [(e["stream_id"], e["type"]) for e in actual] == [
        (e["stream_id"], e["type"]) for e in expected
    ]
    assert _differences(expected, actual, "events") == []
    # the lock covers both streams, the call's two channels and real transcripts
    ends = [e for e in expected if e["type"] == "utterance.end"]
    assert {e["stream_id"] for e in ends} == {"demo.wav", "call.wav"}
    assert {e["channel"] for e in ends if e["stream_id"] == "call.wav"} == {0, 1}
    assert all(e["transcript"] for e in ends)


@pytest.mark.parametrize(
    ("expected", "actual", "found"),
    [
        ({"a": 0.5, "b": "x"}, {"a": 0.5 + SCORE_TOLERANCE / 2, "b": "x"}, 0),
        ({"a": 0.5}, {"a": 0.5 + SCORE_TOLERANCE * 2}, 1),
        ({"a": [1, 2]}, {"a": [1]}, 1),
        ({"a": "x"}, {"a": "y", "b": 1}, 2),
        ({"a": True}, {"a": 1}, 1),
    ],
)
def test_differences_finds_what_differs(
    expected: dict[str, Any], actual: dict[str, Any], found: int
) -> None:
    assert len(_differences(expected, actual, "e")) == found
