"""The daemon's parts in process: building, binding, running sources in order."""

from __future__ import annotations

import asyncio
import socket

import pytest

from streamser.audio.sources import ClipSource, demo_clip
from streamser.config import Config, load_config
from streamser.daemon import Daemon
from streamser.errors import StreamserError
from streamser.events import (
    Envelope,
    EventSequencer,
    SpeechStart,
    StreamEnd,
    UtteranceEnd,
)
from streamser.run import StreamOrder, run_sources

from conftest import FIXTURE_MODELS


def _config(**server: object) -> Config:
    return load_config(
        None,
        {
            "emotion": {"model_dir": str(FIXTURE_MODELS)},
            "asr": {"enabled": False},
            "server": server,
        },
        environ={},
    )


def test_stream_order_holds_later_streams_until_earlier_ones_end() -> None:
    sequencer = EventSequencer()
    out: list[Envelope] = []
    order = StreamOrder(["a", "b", "c"], out.append)

    def event(stream_id: str, end: bool = False) -> Envelope:
        body = (
            StreamEnd(utterances=0, audio_seconds=0.0)
            if end
            else SpeechStart(utterance_id=0, start=0.0)
        )
        envelope = sequencer.stamp(stream_id, body)
        order(envelope)
        return envelope

    a1, b1, c1 = event("a"), event("b"), event("c")
    assert out == [a1]  # a is first: it passes at once
    c2 = event("c", end=True)  # c ends first, still waits for a and b
    other = event("elsewhere")  # a stream not in the order passes at once
    assert out == [a1, other]
    a2 = event("a", end=True)
    assert out == [a1, other, a2, b1]  # b's turn: what it held, then live
    b2 = event("b")
    assert out[-1] is b2
    b3 = event("b", end=True)
    assert out == [a1, other, a2, b1, b2, b3, c1, c2]


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = await asyncio.to_thread(Daemon.build, _config(port=port))
        try:
            with pytest.raises(StreamserError) as caught:
                await asyncio.wait_for(daemon.start_server(), 30)
        finally:
            daemon.close()
    assert str(caught.value) == (
        f"Cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert daemon.server is None


async def test_run_sources_delivers_streams_in_the_order_given() -> None:
    audio = demo_clip()
    sources = [
        ClipSource(audio, "long", realtime=False),
        ClipSource(audio[: 6 * 16000], "short", realtime=False),
    ]
    out: list[Envelope] = []
    await asyncio.wait_for(run_sources(_config(), sources, None, out.append), 120)
    streams = [e.stream_id for e in out]
    assert streams == ["long"] * streams.count("long") + ["short"] * streams.count(
        "short"
    )
    ends = [e.stream_id for e in out if isinstance(e.body, StreamEnd)]
    assert ends == ["long", "short"]
    utterances = [e.stream_id for e in out if isinstance(e.body, UtteranceEnd)]
    assert utterances.count("long") == 3 and utterances.count("short") == 1
    # short finished first: it was held back, not recognised later
    assert max(e.id for e in out if e.stream_id == "short") < max(
        e.id for e in out if e.stream_id == "long"
    )


async def test_run_sources_refuses_two_streams_of_one_name() -> None:
    audio = demo_clip()[:1600]
    sources = [ClipSource(audio, "a", realtime=False)] * 2
    out: list[Envelope] = []
    with pytest.raises(ValueError, match="differ"):
        await asyncio.wait_for(run_sources(_config(), sources, None, out.append), 30)
