"""Partial transcripts on a real server: real Whisper, shipped graphs, real EMO-DB
speech joined into one long utterance, real WebSocket clients.

Checks the stable-prefix rule (LocalAgreement) on what the client receives, that
partials come before the utterance's ``utterance.end`` and carry its channel, and
that a subscriber naming ``types=`` without ``transcript.partial`` gets none."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from streamser.config import Config
from streamser.metrics import Metrics
from streamser.pipeline import Engine
from streamser.pipeline.engine import PARTIAL_OVERLOAD_S
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions
from streamser.serve.handshake import ServerOptions
from streamser.serve.hub import EventHub
from streamser.serve.server import StreamServer

from _server_helpers import send_call

pytestmark = pytest.mark.data

CHUNK = 1600  # 100 ms


def _trimmed(path: Path) -> np.ndarray:
    """A clip without its leading and trailing quiet (below 2% of its peak)."""
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


def long_utterance(clips: list[Path], count: int = 5) -> np.ndarray:
    """``count`` clips of one speaker, trimmed, joined by 0.15 s gaps, with silence
    before and after: one utterance of several seconds."""
    speaker = clips[0].name[:2]
    chosen = [c for c in clips if c.name[:2] == speaker][:count]
    gap = np.zeros(2400, np.float32)
    parts = [np.zeros(8000, np.float32)]
    for clip in chosen:
        parts += [_trimmed(clip), gap]
    parts.append(np.zeros(24000, np.float32))
    return np.concatenate(parts)


def _words(text: str) -> list[str]:
    return [re.sub(r"[^\w']+", "", w.lower()) for w in text.split()]


def _is_prefix(short: str, long: str) -> bool:
    a, b = _words(short), _words(long)
    return a == b[: len(a)]


def check_stable_prefix(partials: list[dict[str, Any]]) -> None:
    """LocalAgreement: each partial's stable words begin its text, and either were
    stable before (a revision may drop some) or begin the previous text as well."""
    for before, after in zip(partials, partials[1:], strict=False):
        assert _is_prefix(after["stable"], after["text"]), after
        assert after["revisions"] >= before["revisions"]
        assert after["end"] >= before["end"]
        kept = _is_prefix(after["stable"], before["stable"])
        agreed = _is_prefix(after["stable"], before["text"])
        assert kept or agreed, (before, after)
    assert partials[0]["stable"] == ""  # the first hypothesis agrees with nothing


@pytest.fixture(scope="module")
def recognizer(shipped_models: Path) -> Recognizer:
    loaded = Recognizer(
        RecognizerOptions(EmotionOptions(model_dir=str(shipped_models)))
    )
    loaded.warm_up()
    return loaded


async def test_partial_transcripts_of_a_long_utterance(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    config = Config()
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    server = StreamServer(
        ServerOptions(port=0), engine, EventHub(config.hub, engine.metrics)
    )
    await server.start()
    url = f"ws://127.0.0.1:{server.port}"
    audio = (long_utterance(emodb_clips) * 32767).astype("<i2")
    watched: list[dict[str, Any]] = []
    try:
        async with connect(
            f"{url}/v1/events?types=speech.start,emotion.partial,utterance.end"
        ) as events:

            async def watch() -> None:
                async for message in events:
                    watched.append(json.loads(message))
                    if watched[-1]["type"] == "utterance.end":
                        return

            watcher = asyncio.create_task(watch())
            received = await send_call(url, audio, CHUNK, realtime=True)
            await asyncio.wait_for(watcher, 60)
    finally:
        await asyncio.wait_for(server.drain(), 60)
        engine.close()
    ends = [e for e in received if e["type"] == "utterance.end"]
    assert len(ends) == 1 and ends[0]["asr"] == "ok"
    final = ends[0]
    at_end = received.index(final)
    partials = [e for e in received if e["type"] == "transcript.partial"]
    assert len(partials) >= 2, [e["type"] for e in received]
    assert all(received.index(p) < at_end for p in partials)
    assert {p["utterance_id"] for p in partials} == {final["utterance_id"]}
    assert {p["channel"] for p in partials} == {0}
    assert all(p["text"] for p in partials)
    check_stable_prefix(partials)
    # The subscriber that named its types gets no partial transcript.
    assert any(e["type"] == "utterance.end" for e in watched)
    assert not [e for e in watched if e["type"] == "transcript.partial"]


async def test_first_partial_text_goes_to_the_utterance_that_waited_longest(
    recognizer: Recognizer,
) -> None:
    """Utterances without partial text stand in line, oldest first, and leave it
    when they get text or close; an idle engine rests after a partial transcript
    before an utterance with text gets more; partials stop while live streams are
    in overload."""
    config = Config()
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    waiting = {"a": True, "b": True}
    engine.await_text("a", lambda: waiting["a"])
    engine.await_text("b", lambda: waiting["b"])
    engine.await_text("a", lambda: True)  # already in line: keeps its place
    assert engine.next_for_text == "a"
    assert engine.idle and not engine.room_for_more_text
    waiting["a"] = False  # got its text, or its utterance closed
    assert engine.next_for_text == "b"
    waiting["b"] = False
    assert engine.next_for_text is None
    assert engine.room_for_more_text
    audio = np.zeros(16000, np.float32)
    await engine.run("partial_asr", recognizer.partial_transcript, audio, "en")
    assert not engine.room_for_more_text  # rests after the partial
    # A live utterance that waited past asr_max_lag_ms goes without a transcript:
    # live streams are in overload, and partials stop.
    assert not engine.overloaded()
    late = await engine.recognize(
        audio, "en", arrived=time.monotonic() - 60, stream="late"
    )
    assert late.asr == "skipped_overload"
    assert engine.overloaded() and engine.overloaded(PARTIAL_OVERLOAD_S)
    engine.close()
