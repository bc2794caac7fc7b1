"""Sinks: the engine hands them every event in order (``Engine.add_sink``); the JSONL
sink keeps recognising when the disk is full, and says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from streamser.config import Config
from streamser.events import Envelope, ErrorEvent, EventSequencer, SpeechStart
from streamser.metrics import Metrics
from streamser.pipeline import Engine
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions
from streamser.sinks.jsonl import JsonlSink


async def test_engine_sinks_get_each_event_in_the_order_added(
    fixture_models: Path,
) -> None:
    config = Config()
    recognizer = Recognizer(
        RecognizerOptions(
            EmotionOptions(model_dir=str(fixture_models)), AsrOptions(enabled=False)
        )
    )
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    got: list[tuple[str, int]] = []
    try:
        engine.add_sink(lambda e: got.append(("late", e.id)))
        engine.add_sink(lambda e: got.append(("first", e.id)), first=True)
        engine.add_sink(lambda e: got.append(("last", e.id)))
        for i in range(2):
            engine.emit("s", SpeechStart(utterance_id=i, start=0.0))
    finally:
        engine.close()
    assert got == [
        ("first", 1),
        ("late", 1),
        ("last", 1),
        ("first", 2),
        ("late", 2),
        ("last", 2),
    ]
    assert len(engine.sinks) == 3


def test_appends_one_line_per_event(tmp_path: Path) -> None:
    sequencer = EventSequencer()
    sink = JsonlSink(tmp_path / "events.jsonl", Metrics(), lambda *_: None)
    for i in range(3):
        sink(sequencer.stamp("s", SpeechStart(utterance_id=i, start=0.5 * i)))
    sink.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [
        Envelope.from_dict(json.loads(line)).body.utterance_id for line in lines
    ] == [0, 1, 2]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_is_reported_once_and_counted() -> None:
    sequencer = EventSequencer()
    metrics = Metrics()
    reported: list[tuple[str, object]] = []
    sink = JsonlSink(
        Path("/dev/full"), metrics, lambda sid, body: reported.append((sid, body))
    )
    for i in range(3):
        sink(sequencer.stamp("call-1", SpeechStart(utterance_id=i, start=0.0)))
    assert len(reported) == 1
    stream_id, body = reported[0]
    assert stream_id == "call-1"
    assert isinstance(body, ErrorEvent) and body.code == "sink_write_failed"
    assert not body.fatal
    assert metrics.sink_failures._value.get() == 3


def test_unwritable_path_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "sub" / "events.jsonl"  # its parent cannot be made
    metrics = Metrics()
    caplog.set_level(logging.ERROR, logger="streamser.sinks.jsonl")
    sink = JsonlSink(path, metrics, lambda *_: None)
    sequencer = EventSequencer()
    for i in range(3):
        sink(sequencer.stamp("s", SpeechStart(utterance_id=i, start=0.0)))
    sink.close()
    # logged once, naming the file; every failed attempt (the open, then each
    # event) counted; nothing written anywhere
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "Cannot write events" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage()
    assert metrics.sink_failures._value.get() == 1 + 3
    assert not path.exists() and blocker.read_text() == "x"


def test_unwritable_path_is_reported_on_the_first_stream(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    reported: list[tuple[str, object]] = []
    sink = JsonlSink(
        blocker / "events.jsonl",
        Metrics(),
        lambda sid, body: reported.append((sid, body)),
    )
    sink(EventSequencer().stamp("call-1", SpeechStart(utterance_id=0, start=0.0)))
    assert [sid for sid, _ in reported] == ["call-1"]
    body = reported[0][1]
    assert isinstance(body, ErrorEvent) and body.code == "sink_write_failed"


def test_every_stream_of_an_outage_is_told_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    reported: list[str] = []
    sink = JsonlSink(
        blocker / "events.jsonl", Metrics(), lambda sid, body: reported.append(sid)
    )
    sequencer = EventSequencer()
    for i in range(3):
        for stream in ("call-1", "call-2", "call-3"):
            sink(sequencer.stamp(stream, SpeechStart(utterance_id=i, start=0.0)))
    assert reported == ["call-1", "call-2", "call-3"]
