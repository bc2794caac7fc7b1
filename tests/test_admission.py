"""Who gets in: idle connections never lock real calls out, a bind beyond loopback
needs tokens, a subscriber that stops reading gets 1013 with its resume point
(a real server in process, the shipped acoustic graph, real WebSocket clients)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from _cli_helpers import run_command
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamser.audio.sources import demo_clip
from streamser.config import Config
from streamser.errors import ConfigError
from streamser.metrics import Metrics
from streamser.pipeline import Engine
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions
from streamser.serve.handshake import ServerOptions
from streamser.serve.hub import EventHub, HubOptions
from streamser.serve.server import StreamServer


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    options = RecognizerOptions(asr=AsrOptions(enabled=False))
    return Recognizer(options)


@contextlib.asynccontextmanager
async def _serving(
    recognizer: Recognizer, options: ServerOptions, hub: HubOptions | None = None
) -> AsyncIterator[StreamServer]:
    config = Config()
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    server = StreamServer(options, engine, EventHub(hub or config.hub, engine.metrics))
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.drain(), 60)
        engine.close()


async def _call(port: int, local: str = "127.0.0.1") -> list[dict[str, object]]:
    """A short real call: the demo clip, then stop; its events."""
    pcm = (demo_clip()[: 16000 * 4] * 32767).astype("<i2").tobytes()
    async with connect(
        f"ws://127.0.0.1:{port}/v1/stream", open_timeout=10, local_addr=(local, 0)
    ) as ws:
        await ws.send(json.dumps({"type": "start"}))
        for offset in range(0, len(pcm), 32000):
            await ws.send(pcm[offset : offset + 32000])
        await ws.send(json.dumps({"type": "stop"}))
        events = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    return events


async def test_idle_connections_do_not_lock_out_a_real_call(
    recognizer: Recognizer,
) -> None:
    """64 connections from 8 loopback addresses that never send ``start`` (more
    than ``max_streams``, 8 per address): a real call from one of those addresses
    still starts, and every idle connection is closed with 1008."""
    options = ServerOptions(port=0, max_streams=16, max_streams_per_client=4)
    async with _serving(recognizer, options) as server:
        url = f"ws://127.0.0.1:{server.port}/v1/stream"
        idle: list[ClientConnection] = []
        for i in range(64):
            local = f"127.0.0.{2 + i % 8}"
            idle.append(await connect(url, open_timeout=10, local_addr=(local, 0)))
        await asyncio.sleep(1.2)  # idle long enough to make room for a newcomer
        events = await asyncio.wait_for(_call(server.port, "127.0.0.2"), 60)
        assert events[0]["type"] == "stream.start"
        assert events[-1]["type"] == "stream.end"
        assert not [e for e in events if e["type"] == "error"]
        for ws in idle:  # closed for making room, or by the 5 s start timeout
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
        assert {(ws.close_code, ws.close_reason) for ws in idle} == {
            (1008, "no start message")
        }


async def test_a_burst_of_real_calls_from_one_address_all_start(
    recognizer: Recognizer,
) -> None:
    """A gateway opening 16 calls at once from one address, with room for only 4
    waiting connections per address: every call starts (none has been idle)."""
    options = ServerOptions(port=0, max_pending_per_client=4)
    async with _serving(recognizer, options) as server:
        calls = [_call(server.port) for _ in range(16)]
        results = await asyncio.wait_for(asyncio.gather(*calls), 120)
    for events in results:
        assert events[0]["type"] == "stream.start", events[:1]
        assert events[-1]["type"] == "stream.end"
        assert not [e for e in events if e["type"] == "error"]


async def test_a_connection_without_start_is_closed_after_the_timeout(
    recognizer: Recognizer,
) -> None:
    options = ServerOptions(port=0, start_timeout_s=0.5)
    async with _serving(recognizer, options) as server:
        ws = await connect(f"ws://127.0.0.1:{server.port}/v1/stream", open_timeout=10)
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1008
        assert ws.close_reason == "no start message"


async def test_a_start_beyond_max_streams_is_refused_with_server_busy(
    recognizer: Recognizer,
) -> None:
    """Handshakes are not counted, so two may pass for the last slot; the second
    ``start`` gets a fatal ``server_busy`` and 1013."""
    options = ServerOptions(port=0, max_streams=1)
    async with _serving(recognizer, options) as server:
        url = f"ws://127.0.0.1:{server.port}/v1/stream"
        async with (
            connect(url, open_timeout=10) as first,
            connect(url, open_timeout=10) as second,
        ):
            await first.send(json.dumps({"type": "start"}))
            started = json.loads(await asyncio.wait_for(first.recv(), 10))
            assert started["type"] == "stream.start"
            await second.send(json.dumps({"type": "start"}))
            refused = json.loads(await asyncio.wait_for(second.recv(), 10))
            assert (refused["type"], refused["code"], refused["fatal"]) == (
                "error",
                "server_busy",
                True,
            )
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(second.recv(), 10)
            assert second.close_code == 1013


async def test_bind_beyond_loopback_without_tokens_is_refused(
    recognizer: Recognizer,
) -> None:
    config = Config()
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    hub = EventHub(config.hub, engine.metrics)
    try:
        refused = StreamServer(ServerOptions(host="0.0.0.0", port=0), engine, hub)
        with pytest.raises(ConfigError, match="allow_anonymous"):
            await refused.start()
        allowed = StreamServer(
            ServerOptions(host="0.0.0.0", port=0, allow_anonymous=True), engine, hub
        )
        await allowed.start()
        await asyncio.wait_for(allowed.drain(), 30)
    finally:
        engine.close()


def test_serve_on_every_address_without_tokens_exits_with_a_clear_line(
    tmp_path: Path,
) -> None:
    result = run_command(
        *("streamser", "serve", "--host", "0.0.0.0", "--port", "0", "--no-asr"),
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert "refusing to listen on 0.0.0.0 without tokens" in errors[0]
    assert "Traceback" not in result.stderr
    # checked before the models load (seconds), not after
    assert "Emotion model" not in result.stderr and "loaded" not in result.stderr


async def test_a_subscriber_that_stops_reading_gets_1013_before_the_keepalive(
    recognizer: Recognizer,
) -> None:
    """It leaves pings unanswered and its sends block; within ``subscriber_stall_s``
    (3 s here) it is evicted with
    1013 and the last event id it was sent, though its queue is far from full."""
    hub = HubOptions(subscriber_queue=10000, subscriber_stall_s=3.0)
    options = ServerOptions(port=0, max_client_queue_events=100000)
    async with _serving(recognizer, options, hub) as server:
        base = f"ws://127.0.0.1:{server.port}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # backs up soon
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        stuck = await connect(  # its own keepalive off: it reads nothing, pongs neither
            f"{base}/v1/events",
            sock=sock,
            open_timeout=10,
            max_queue=1,
            max_size=None,
            ping_interval=None,
        )
        reader = await connect(f"{base}/v1/events", open_timeout=10)
        transport = stuck.transport
        transport.pause_reading()  # the client stops reading its socket

        counts: dict[int, int] = {}

        async def read_all(ws: ClientConnection) -> int:
            counts[id(ws)] = 0
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
                    counts[id(ws)] += 1
            return counts[id(ws)]

        # Cheap non-fatal errors, a flood of events: more than the kernel buffers
        # between the server and the stuck subscriber hold (a few MiB).
        flood = 30000
        reading = asyncio.create_task(read_all(reader))
        async with connect(f"{base}/v1/stream", open_timeout=10) as producer:
            own = asyncio.create_task(read_all(producer))
            await producer.send(json.dumps({"type": "start"}))
            for i in range(flood):
                await producer.send(json.dumps({"type": f"junk-{i}"}))
                if i % 500 == 0:
                    await asyncio.sleep(0.01)
            await producer.send(json.dumps({"type": "stop"}))
            # stream.start, the errors, call.summary, stream.end
            assert await asyncio.wait_for(own, 120) == flood + 3
        for _ in range(100):
            if server.engine.metrics.evicted_subscribers._value.get():
                break
            await asyncio.sleep(0.1)
        assert server.engine.metrics.evicted_subscribers._value.get() == 1
        # the reader got everything and is still connected
        await asyncio.wait_for(reader.ping(), 10)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        assert reader.close_code is None
        assert server.engine.metrics.evicted_subscribers._value.get() == 1
        transport.resume_reading()
        ids = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                ids.append(json.loads(await asyncio.wait_for(stuck.recv(), 30))["id"])
        assert stuck.close_code == 1013
        assert stuck.close_reason == f"fell behind; resume with after={ids[-1]}"
        await reader.close()
    assert np.all(np.diff(ids) > 0)
