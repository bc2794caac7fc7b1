"""Nothing is lost under load: overdue transcriptions are skipped, never utterances;
a shutdown stops ASR instead of cutting streams off; a fast sender gets backpressure
(real Whisper, shipped graphs, real EMO-DB speech, a real WebSocket client)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect

from streamser.config import Config
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.pipeline import Engine, StreamSession
from streamser.recognition.recognizer import Recognizer
from streamser.serve.handshake import ServerOptions
from streamser.serve.hub import EventHub
from streamser.serve.server import StreamServer

from _pipeline_helpers import warm_recognizer
from _server_helpers import send_call

pytestmark = pytest.mark.data

CHUNK = 3200  # 200 ms


@pytest.fixture(scope="module")
def recognizer(shipped_models: Path) -> Recognizer:
    return warm_recognizer(shipped_models)


def _call(clips: list[Path], pause_s: float = 0.8) -> np.ndarray:
    parts = [np.zeros(8000, np.float32)]
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32")
        assert rate == 16000
        parts += [audio, np.zeros(int(pause_s * 16000), np.float32)]
    return np.concatenate(parts)


def _engine(recognizer: Recognizer, **options: Any) -> tuple[Engine, list[Any]]:
    config = Config()
    pipeline = dataclasses.replace(config.pipeline, **options)
    engine = Engine(recognizer, pipeline, config.vad, config.segmenter, Metrics())
    events: list[Any] = []
    engine.add_sink(lambda envelope: events.append(envelope.body))
    return engine, events


def _of(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if kind == e.TYPE]


async def test_overdue_transcription_is_skipped_not_the_utterance(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    """With no time to wait for ASR (asr_max_lag_ms = 0), a live stream still gets
    every utterance, labelled, without transcripts, saying why."""
    clips = emodb_clips[:3]
    engine, events = _engine(recognizer, asr_max_lag_ms=0)
    session = StreamSession(engine, StartMessage(language="de"), "live")
    session.open()
    audio = _call(clips)
    started = time.monotonic()
    for offset in range(0, audio.size, CHUNK):
        # A live call: each chunk arrives once it has been spoken.
        due = started + (offset + CHUNK) / 16000
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        session.feed_audio(audio[offset : offset + CHUNK])
    await asyncio.wait_for(session.close(), 60)
    engine.close()
    ends = _of(events, "utterance.end")
    assert len(ends) == len(clips)
    assert not _of(events, "error")
    labels = set(recognizer.models.acoustic_model.contract.labels)
    for end in ends:
        assert end.asr == "skipped_overload"
        assert end.transcript is None
        assert end.label in labels
        assert end.modalities["acoustic"] is not None
    assert engine.metrics.skipped_asr.labels("skipped_overload")._value.get() >= 3


async def test_shutdown_cutoff_recognises_without_asr(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    """After the drain's ASR cutoff, waiting utterances are still delivered."""
    clips = emodb_clips[3:7]
    engine, events = _engine(recognizer)
    engine.stop_asr_at(time.monotonic())
    session = StreamSession(engine, StartMessage(language="de"), "draining")
    session.open()
    audio = _call(clips)
    for offset in range(0, audio.size, CHUNK):
        session.feed_audio(audio[offset : offset + CHUNK])
        await asyncio.wait_for(session.wait_for_room(), 60)
    await asyncio.wait_for(session.close(), 60)
    engine.close()
    ends = _of(events, "utterance.end")
    assert len(ends) == len(clips)
    assert {e.asr for e in ends} == {"skipped_shutdown"}
    assert all(e.transcript is None for e in ends)
    assert not _of(events, "error")


async def test_fast_upload_gets_backpressure_and_loses_nothing(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    """A client that sends a whole call as fast as it can, and reads only after
    ``stop``, gets every utterance transcribed: the server stops reading it while
    its queue is full (two pending utterances here) instead of shedding."""
    clips = emodb_clips[7:17]
    engine, _ = _engine(recognizer, max_pending_utterances=2)
    server = StreamServer(
        ServerOptions(port=0), engine, EventHub(Config().hub, engine.metrics)
    )
    await server.start()
    audio = (_call(clips, pause_s=0.7) * 32767).astype("<i2")
    try:
        url = f"ws://127.0.0.1:{server.port}"  # 1 s messages, no pacing
        received = await send_call(url, audio, 16000, realtime=False)
    finally:
        await asyncio.wait_for(server.drain(), 60)
        engine.close()
    ends = [e for e in received if e["type"] == "utterance.end"]
    assert len(ends) == len(clips)
    assert [e for e in received if e["type"] == "error"] == []
    assert {e["asr"] for e in ends} == {"ok"}
    assert all(e["transcript"] for e in ends)
    assert engine.metrics.dropped_utterances._value.get() == 0


async def test_fast_upload_waits_behind_a_live_call(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    """A live call and a client uploading a call as fast as it goes, on one server
    that gives ASR no time at all (asr_max_lag_ms = 0): the live call is in
    overload from its first utterance, whose utterances are labelled at once,
    without transcripts unless the engine was idle. The upload, which is bulk (more
    than 1 s ahead of real time), gets no transcription meanwhile: it waits, gets
    backpressure, and an utterance that waited 16 s is labelled without a
    transcript; once the live call is over, the rest are transcribed. Nothing is
    lost on either."""
    engine, _ = _engine(recognizer, asr_max_lag_ms=0, max_pending_utterances=2)
    server = StreamServer(
        ServerOptions(port=0), engine, EventHub(Config().hub, engine.metrics)
    )
    await server.start()
    url = f"ws://127.0.0.1:{server.port}"
    live_clips, upload_clips = emodb_clips[17:20], emodb_clips[20:28]
    live_audio = (_call(live_clips) * 32767).astype("<i2")
    upload_audio = (_call(upload_clips, pause_s=0.7) * 32767).astype("<i2")
    try:
        live, upload = await asyncio.gather(
            send_call(url, live_audio, CHUNK, realtime=True),
            send_call(url, upload_audio, CHUNK, realtime=False),
        )
    finally:
        await asyncio.wait_for(server.drain(), 60)
        engine.close()
    live_ends = [e for e in live if e["type"] == "utterance.end"]
    upload_ends = [e for e in upload if e["type"] == "utterance.end"]
    assert len(live_ends) == len(live_clips)
    assert len(upload_ends) == len(upload_clips)
    # A live utterance is transcribed only when the engine is idle before its due
    # time (its audio may come up to 1 s ahead of its real-time pace); it never
    # waits behind the upload.
    assert {e["asr"] for e in live_ends} <= {"ok", "skipped_overload"}
    assert {e["asr"] for e in upload_ends} <= {"ok", "skipped_overload"}
    assert upload_ends[-1]["asr"] == "ok" and upload_ends[-1]["transcript"]
    assert not [e for e in live + upload if e["type"] == "error"]
    assert engine.metrics.dropped_utterances._value.get() == 0


async def test_a_held_sender_outlives_the_servers_keepalive(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    """A client sending a call as fast as it goes is held by backpressure (its
    socket unread) for longer than the server's keepalive allows a ping to go
    unanswered. The server pauses its pings while it holds the socket, so the
    connection is not failed (1011): every utterance comes back, transcribed."""
    engine, _ = _engine(recognizer, max_pending_utterances=2)
    options = ServerOptions(port=0, keepalive_s=0.5)
    server = StreamServer(options, engine, EventHub(Config().hub, engine.metrics))
    await server.start()
    clips = emodb_clips[28:34]
    audio = (_call(clips, pause_s=0.7) * 32767).astype("<i2")
    events: list[dict[str, Any]] = []

    async def read(ws: ClientConnection) -> None:
        async for message in ws:
            events.append(json.loads(message))
            if events[-1]["type"] == "stream.end":
                return

    try:
        async with connect(f"ws://127.0.0.1:{server.port}/v1/stream") as ws:
            start = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}
            await ws.send(json.dumps({**start, "language": "de"}))
            reader = asyncio.create_task(read(ws))
            for offset in range(0, audio.size, CHUNK):
                await asyncio.wait_for(
                    ws.send(audio[offset : offset + CHUNK].tobytes()), 60
                )
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(reader, 120)
    finally:
        await asyncio.wait_for(server.drain(), 60)
        engine.close()
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert len(ends) == len(clips)
    assert {e["asr"] for e in ends} == {"ok"}
    assert events[-1] == {**events[-1], "type": "stream.end", "reason": "stop"}
    assert engine.metrics.dropped_utterances._value.get() == 0
