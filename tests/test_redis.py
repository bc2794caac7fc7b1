"""Events on Redis Streams: the sink through an outage, the Redis-backed hub, and two
real daemons sharing one real ``redis-server`` (started here on a free port; the
tests skip when the binary is absent)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.redis import RedisServer, redis_server_binary
from benchmarks.serving import REPO, ServedDaemon, free_port
from streamser.config import load_config
from streamser.errors import ConfigError
from streamser.events import (
    EventSequencer,
    ModalityScores,
    SpeechStart,
    StreamEnd,
    TranscriptPartial,
    UtteranceEnd,
)
from streamser.metrics import Metrics
from streamser.serve.hub import HubOptions
from streamser.serve.redis_hub import RedisHub
from streamser.sinks.redis import RedisSink, RedisSinkOptions

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (Debian: apt-get install redis-server)",
)

DEMO = REPO / "streamser" / "assets" / "demo.wav"
FIXTURE_MODELS = REPO / "tests" / "data" / "models"
STREAM = "streamser:events"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server whose acknowledged writes survive SIGKILL."""
    server = RedisServer(tmp_path / "redis", fsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stored(url: str, stream: str = STREAM) -> list[tuple[str, dict[str, Any]]]:
    """Every entry of ``stream``: (entry id, event)."""
    with contextlib.closing(redis.Redis.from_url(url, decode_responses=True)) as r:
        return [(i, json.loads(f["event"])) for i, f in r.xrange(stream)]


def unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without the second copy of one written twice (at least once)."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for event in events:
        key = (event["origin"], event["id"])
        if key not in seen:
            seen.add(key)
            kept.append(event)
    return kept


async def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


# -- configuration ------------------------------------------------------------------


def test_sinks_redis_section_file_environment_and_output(tmp_path: Path) -> None:
    path = tmp_path / "streamser.toml"
    path.write_text(
        '[hub]\nbackend = "redis"\norigin = "stt-1"\n'
        '[sinks.redis]\nurl = "redis://10.0.0.5:6379/0"\nmaxlen = 5000\n'
    )
    env = {"STREAMSER_SINKS_REDIS_REQUIRED": "yes", "STREAMSER_SINKS_REDIS_MAXLEN": "7"}
    config = load_config(path, environ=env)
    redis_options = config.sinks.redis
    assert (redis_options.url, redis_options.maxlen) == ("redis://10.0.0.5:6379/0", 7)
    assert redis_options.required and redis_options.stream == "streamser:events"
    assert (config.hub.backend, config.hub.origin) == ("redis", "stt-1")
    text = config.to_toml()
    assert '[sinks.redis]\nurl = "redis://10.0.0.5:6379/0"' in text
    assert "[sinks]" not in text  # a section of sub-sections only
    path.write_text(text)
    assert load_config(path, environ={}).sinks.redis == redis_options
    for bad, message in (
        ({"STREAMSER_HUB_BACKEND": "redis"}, "set sinks.redis.url"),
        ({"STREAMSER_HUB_BACKEND": "kafka"}, "memory"),
        ({"STREAMSER_SINKS_REDIS_URL": "http://x"}, "redis://"),
        ({"STREAMSER_SINKS_REDIS_MAXLEN": "0"}, ">= 1"),
        ({"STREAMSER_SINKS_REDIS_COLOUR": "red"}, "unknown setting"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, environ=bad)


# -- the sink -------------------------------------------------------------------------


@needs_redis
async def test_sink_holds_events_through_an_outage_and_flushes_in_order(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "streamser.sinks.redis")
    metrics = Metrics()
    sink = RedisSink(RedisSinkOptions(url=redis_server.url, maxlen=10_000), metrics)
    await sink.start()
    sequencer = EventSequencer(origin="host-a:1")
    for i in range(50):
        sink(sequencer.stamp(f"s{i % 3}", SpeechStart(i, 0.0)))
    await wait_for(lambda: sink.buffered == 0, 10, "first 50 written")
    redis_server.kill()
    # emitting is a plain call that only queues: it cannot wait for Redis
    assert not inspect.iscoroutinefunction(RedisSink.__call__)
    for i in range(50, 150):  # emitted while Redis is gone: queued at once
        queued = sink.buffered
        sink(sequencer.stamp(f"s{i % 3}", SpeechStart(i, 0.0)))
        assert sink.buffered == queued + 1
        await asyncio.sleep(0.01)
    assert sink.buffered > 0
    assert metrics.registry.get_sample_value("streamser_redis_outages_total") == 1
    redis_server.start()
    await wait_for(lambda: sink.buffered == 0, 15, "buffer flushed")
    await sink.close()
    entries = [event for _, event in stored(redis_server.url)]
    events = unique(entries)
    assert len(entries) == len(events)  # a write cut off is not repeated
    assert [e["id"] for e in events] == list(range(1, 151))
    for stream in ("s0", "s1", "s2"):
        seqs = [e["seq"] for e in events if e["stream_id"] == stream]
        assert seqs == list(range(len(seqs)))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    again = [m for m in messages if "reachable again" in m]
    assert len(again) == 1 and "0 dropped" in again[0]
    assert (
        metrics.registry.get_sample_value("streamser_redis_written_events_total") >= 150
    )


@needs_redis
async def test_a_full_buffer_drops_the_oldest_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet: Redis is down
    metrics = Metrics()
    options = RedisSinkOptions(url=server.url, buffer_events=10)
    sink = RedisSink(options, metrics)
    await sink.start()
    sequencer = EventSequencer(origin="host-a:1")
    for i in range(25):
        sink(sequencer.stamp("s", SpeechStart(i, 0.0)))
    assert sink.buffered == 10
    assert (
        metrics.registry.get_sample_value("streamser_redis_dropped_events_total") == 15
    )
    assert sum("buffer full" in r.getMessage() for r in caplog.records) == 1
    assert not await sink.wait_ready(0.3)
    server.start()
    try:
        assert await sink.wait_ready(10)
        await wait_for(lambda: sink.buffered == 0, 10, "buffer flushed")
        await sink.close()
        assert [e["id"] for _, e in stored(server.url)] == list(range(16, 26))
    finally:
        server.stop()


# -- the Redis-backed hub -------------------------------------------------------------


@needs_redis
async def test_redis_hub_replays_filters_and_goes_live(
    redis_server: RedisServer,
) -> None:
    options = RedisSinkOptions(url=redis_server.url)
    sinks = [RedisSink(options, Metrics()) for _ in range(2)]
    for sink in sinks:
        await sink.start()
    a, b = EventSequencer(origin="a:1"), EventSequencer(origin="b:1")
    for i in range(5):
        sinks[0](a.stamp("call-a", SpeechStart(i, 0.0)))
        sinks[1](b.stamp("call-b", SpeechStart(i, 0.0)))
    await wait_for(lambda: not any(s.buffered for s in sinks), 10, "written")
    hub = RedisHub(HubOptions(backend="redis"), Metrics(), options)
    await hub.start()
    try:
        assert hub.query_error("/v1/events?after=1700000000000-0") == ""
        assert hub.query_error("/v1/events?after=0&types=speech.start") == ""
        assert "entry id" in hub.query_error("/v1/events?after=abc")
        assert "unknown" in hub.query_error("/v1/events?types=nope")
        everything = hub.subscribe(after=0)
        only_b = hub.subscribe(stream_ids=["call-b"], types=["stream.end"], after="0")
        live = hub.subscribe()
        sinks[0](a.stamp("call-a", StreamEnd(5, 1.0)))
        sinks[1](b.stamp("call-b", StreamEnd(5, 1.0)))
        await wait_for(lambda: everything.queue.qsize() == 12, 10, "replay + live")
        await wait_for(lambda: live.queue.qsize() == 2, 10, "live")
        got = [everything.queue.get_nowait() for _ in range(12)]
        assert {e.origin for e in got} == {"a:1", "b:1"}
        for origin in ("a:1", "b:1"):
            assert [e.seq for e in got if e.origin == origin] == list(range(6))
        cursors = [hub.cursor(e) for e in got]
        assert cursors == sorted(cursors, key=lambda c: tuple(map(int, c.split("-"))))
        assert json.loads(got[0].to_json())["cursor"] == cursors[0]
        await wait_for(lambda: only_b.queue.qsize() == 1, 10, "filtered")
        assert only_b.queue.get_nowait().origin == "b:1"
        # resume after the 7th event: the rest, exactly once, in order
        resumed = hub.subscribe(after=cursors[6])
        await wait_for(lambda: resumed.queue.qsize() == 5, 10, "resumed")
        assert [resumed.queue.get_nowait() for _ in range(5)] == got[7:]
        # a subscriber that does not read is evicted by its own progress
        stuck = hub.subscribe()
        stuck.sending_since = time.monotonic() - 5
        for i in range(hub.options.subscriber_queue + 5):
            sinks[0](a.stamp("flood", SpeechStart(i, 0.0)))
        await wait_for(stuck.evicted.is_set, 20, "eviction")
        assert not live.evicted.is_set()
    finally:
        await hub.close()
        for sink in sinks:
            await sink.close()


@needs_redis
async def test_redis_hub_sends_partials_live_and_never_replays_them(
    redis_server: RedisServer,
) -> None:
    """``transcript.partial`` is live only, with the Redis hub as with the memory
    hub: a replay skips it, a live subscriber gets it."""
    options = RedisSinkOptions(url=redis_server.url, stream="partials-test")
    sink = RedisSink(options, Metrics())
    await sink.start()
    seq = EventSequencer(origin="a:1")

    def partial(text: str) -> TranscriptPartial:
        return TranscriptPartial(0, 0.0, 1.0, text=text, stable="")

    sink(seq.stamp("call", SpeechStart(0, 0.0)))
    sink(seq.stamp("call", partial("hello")))
    sink(seq.stamp("call", StreamEnd(1, 2.0)))
    await wait_for(lambda: not sink.buffered, 10, "written")
    hub = RedisHub(HubOptions(backend="redis"), Metrics(), options)
    await hub.start()
    try:
        replay = hub.subscribe(after=0)
        await wait_for(lambda: replay.queue.qsize() == 2, 10, "replay")
        live = hub.subscribe()
        sink(seq.stamp("call", partial("hello again")))
        await wait_for(
            lambda: live.queue.qsize() == 1 and replay.queue.qsize() == 3, 10, "live"
        )
        assert [replay.queue.get_nowait().body.TYPE for _ in range(3)] == [
            "speech.start",
            "stream.end",
            "transcript.partial",
        ]
        assert live.queue.get_nowait().body.text == "hello again"
    finally:
        await hub.close()
        await sink.close()


@needs_redis
async def test_redis_hub_refuses_out_of_range_cursors_and_names_a_gap(
    redis_server: RedisServer,
) -> None:
    options = RedisSinkOptions(url=redis_server.url)
    sink = RedisSink(options, Metrics())
    await sink.start()
    sequencer = EventSequencer(origin="a:1")
    for i in range(8):
        sink(sequencer.stamp("call", SpeechStart(i, 0.0)))
    await wait_for(lambda: not sink.buffered, 10, "written")
    entries = stored(redis_server.url)
    # retention drops the first five entries (as MAXLEN does)
    with contextlib.closing(redis.Redis.from_url(redis_server.url)) as client:
        client.xtrim(STREAM, maxlen=3, approximate=False)
    hub = RedisHub(HubOptions(backend="redis"), Metrics(), options)
    await hub.start()
    try:
        for bad in (
            "99999999999999999999-0",
            "18446744073709551616",
            "0-18446744073709551616",
            "18446744073709551615-18446744073709551615",
        ):
            assert "entry id" in hub.query_error(f"/v1/events?after={bad}"), bad
        assert hub.query_error("/v1/events?after=18446744073709551615-0") == ""
        assert "once" in hub.query_error("/v1/events?after=0&after=0")
        # resuming after the 2nd entry: 3rd to 5th are gone, and it is told so
        late = hub.subscribe(after=entries[1][0])
        await wait_for(lambda: late.queue.qsize() == 4, 10, "gap and replay")
        gap = late.queue.get_nowait()
        assert gap.type == "events.gap"
        assert gap.to_dict()["first"] == entries[5][0]
        assert gap.to_dict()["after"] == entries[1][0]
        assert [hub.cursor(late.queue.get_nowait()) for _ in range(3)] == [
            e[0] for e in entries[5:]
        ]
        # resuming from an entry still held gets no notice
        exact = hub.subscribe(after=entries[5][0])
        await wait_for(lambda: exact.queue.qsize() == 2, 10, "replay")
        assert [hub.cursor(exact.queue.get_nowait()) for _ in range(2)] == [
            e[0] for e in entries[6:]
        ]
    finally:
        await hub.close()
        await sink.close()


# -- deploy/consumer.py ----------------------------------------------------------------


def _utterance(i: int) -> UtteranceEnd:
    scores = {"anger": 0.25, "neutral": 0.75}
    return UtteranceEnd(
        utterance_id=i,
        start=float(i),
        end=i + 0.5,
        transcript=f"words {i}",
        language="en",
        label="neutral",
        confidence=0.75,
        scores=scores,
        modalities={"acoustic": ModalityScores("neutral", scores), "text": None},
    )


@needs_redis
async def test_consumer_example_stores_each_utterance_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    sink = RedisSink(RedisSinkOptions(url=redis_server.url), Metrics())
    await sink.start()
    sequencer = EventSequencer(origin="host-a:1")
    events = [sequencer.stamp("call-1", SpeechStart(0, 0.0))]
    events += [sequencer.stamp("call-1", _utterance(i)) for i in range(3)]
    events.append(sequencer.stamp("call-1", StreamEnd(3, 3.0)))
    for envelope in [*events, events[2]]:  # one written twice, as after a lost reply
        sink(envelope)
    await wait_for(lambda: sink.buffered == 0, 10, "written")
    await sink.close()
    db = tmp_path / "calls.sqlite"
    command = [
        sys.executable,
        str(REPO / "deploy" / "consumer.py"),
        "--redis-url",
        redis_server.url,
        "--db",
        str(db),
        "--once",
    ]
    for _ in range(2):  # a second run finds nothing new
        run = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT origin, event_id, stream_id, utterance_id, label, transcript "
            "FROM utterances ORDER BY utterance_id"
        ).fetchall()
    assert rows == [
        ("host-a:1", events[i + 1].id, "call-1", i, "neutral", f"words {i}")
        for i in range(3)
    ]
    with contextlib.closing(redis.Redis.from_url(redis_server.url)) as client:
        assert client.xpending(STREAM, "sqlite")["pending"] == 0


# -- two daemons, one Redis -----------------------------------------------------------


def _daemon_env(url: str, **extra: str) -> dict[str, str]:
    return {"STREAMSER_SINKS_REDIS_URL": url, **extra}


def _serve(
    tmp: Path, env: dict[str, str], *args: str
) -> contextlib.AbstractContextManager[ServedDaemon]:
    return ServedDaemon.serve(
        ["--no-asr", "--model-dir", str(FIXTURE_MODELS), *args],
        tmp,
        env=env,
        ready_timeout_s=180,
        poll_timeout_s=10,
    )


async def _call(url: str, stream_id: str, audio: np.ndarray) -> list[dict[str, Any]]:
    """One call at twice real time in 100 ms chunks; the events the client got."""
    events: list[dict[str, Any]] = []
    async with connect(f"{url}/v1/stream", max_size=None) as ws:
        start = {"type": "start", "sample_rate": 16000, "encoding": "pcm_f32le"}
        await ws.send(json.dumps({**start, "stream_id": stream_id}))

        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    events.append(json.loads(message))

        reader = asyncio.create_task(read())
        chunk = 1600
        for offset in range(0, len(audio), chunk):
            await ws.send(audio[offset : offset + chunk].astype("<f4").tobytes())
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"type": "stop"}))
        await reader
    return events


@contextlib.asynccontextmanager
async def _subscriber(url: str, query: str) -> AsyncIterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            async with connect(f"{url}/v1/events{query}", max_size=None) as ws:
                async for message in ws:
                    events.append(json.loads(message))

    task = asyncio.create_task(read())
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@needs_redis
@pytest.mark.slow
async def test_two_daemons_one_redis_through_an_outage_and_a_restart(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    audio, rate = sf.read(DEMO, dtype="float32")
    assert rate == 16000
    audio = audio[: 8 * rate]  # 8 s of speech: 4 s of sending per call
    url = redis_server.url
    with (
        _serve(tmp_path, _daemon_env(url)) as first,
        _serve(tmp_path, _daemon_env(url, STREAMSER_HUB_BACKEND="redis")) as second,
    ):
        status, body, _ = second.http("/v1/events?after=abc")
        assert status == 400 and "entry id" in body
        async with _subscriber(second.url, "?types=utterance.end") as live:
            await asyncio.sleep(0.5)
            calls = asyncio.gather(
                *(
                    _call(daemon.url, f"{name}-{i}", audio)
                    for name, daemon in (("first", first), ("second", second))
                    for i in range(2)
                )
            )
            outage = asyncio.create_task(_outage(redis_server, after_s=1.0, for_s=5))
            received = await asyncio.wait_for(calls, 120)
            await asyncio.wait_for(outage, 30)

            def all_stored() -> bool:
                ids = {(e["origin"], e["id"]) for _, e in stored(url)}
                return all(
                    (e["origin"], e["id"]) in ids for call in received for e in call
                )

            await wait_for(all_stored, 30, "every event in Redis")
            ends = {
                (e["origin"], e["id"])
                for call in received
                for e in call
                if e["type"] == "utterance.end"
            }
            assert ends, "no utterances in the calls"
            await wait_for(
                lambda: ends <= {(e["origin"], e["id"]) for e in live},
                30,
                "the live subscriber of the second daemon got every utterance.end",
            )
        entries = [e for _, e in stored(url)]
        events = unique(entries)
        assert len(entries) == len(events)  # a write cut off is not repeated
        for call in received:
            stream_id = call[0]["stream_id"]
            in_redis = [e for e in events if e["stream_id"] == stream_id]
            assert in_redis == call  # the same events, in seq order, no gaps
            assert [e["seq"] for e in in_redis] == list(range(len(call)))
        assert {e["origin"] for e in events} == {
            call[0]["origin"] for call in received
        } and len({call[0]["origin"] for call in received}) == 2
        for daemon in (first, second):
            log = daemon.log()
            assert "Redis at redis://127.0.0.1" in log and "unreachable" in log
            assert "reachable again" in log
    # every daemon is gone; a new one replays what Redis kept, from both
    env = _daemon_env(url, STREAMSER_HUB_BACKEND="redis")
    with _serve(tmp_path, env) as third:
        expected = [(e["origin"], e["id"]) for e in events]
        async with _subscriber(third.url, "?after=0") as replay:
            await wait_for(lambda: len(unique(replay)) >= len(expected), 60, "replay")
        got = unique(replay)
        assert [(e["origin"], e["id"]) for e in got] == expected
        for stream_id in {e["stream_id"] for e in got}:
            seqs = [e["seq"] for e in got if e["stream_id"] == stream_id]
            assert seqs == list(range(len(seqs)))
        cursors = [e["cursor"] for e in replay]
        assert cursors == [entry for entry, _ in stored(url)][: len(cursors)]


async def _outage(server: RedisServer, after_s: float, for_s: float) -> None:
    await asyncio.sleep(after_s)
    await asyncio.to_thread(server.kill)
    await asyncio.sleep(for_s)
    await asyncio.to_thread(server.start)


@needs_redis
@pytest.mark.slow
def test_required_redis_holds_readiness(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "STREAMSER_SINKS_REDIS_URL": f"redis://127.0.0.1:{port}",
        "STREAMSER_SINKS_REDIS_REQUIRED": "true",
        "STREAMSER_SINKS_REDIS_STARTUP_TIMEOUT_S": "120",
    }
    args = ["--no-asr", "--model-dir", str(FIXTURE_MODELS)]
    daemon = ServedDaemon.spawn(args, tmp_path, env=env)
    server = RedisServer(tmp_path / "redis", port=port)
    try:
        daemon.wait_log("Waiting up to 120 s for Redis", timeout=180)
        assert daemon.http("/healthz")[0] == 503
        time.sleep(1)
        assert daemon.http("/healthz")[0] == 503
        server.start()
        daemon.wait_healthy(30)
    finally:
        daemon.stop()
        server.stop()
    # no Redis at all: a clear line and exit status 1 after the startup timeout
    env["STREAMSER_SINKS_REDIS_STARTUP_TIMEOUT_S"] = "1"
    late = ServedDaemon.spawn(args, tmp_path, env=env)
    try:
        assert late.wait(180) == 1
        assert "did not answer within 1 s and sinks.redis.required is on" in late.log()
    finally:
        late.stop()


@needs_redis
@pytest.mark.slow
async def test_an_evicted_subscriber_resumes_from_its_redis_cursor(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = _daemon_env(
        redis_server.url,
        STREAMSER_HUB_BACKEND="redis",
        STREAMSER_HUB_SUBSCRIBER_QUEUE="1",
    )
    sequencer = EventSequencer(origin="elsewhere:1")
    burst = [sequencer.stamp("call-x", SpeechStart(i, 0.0)) for i in range(20)]
    with _serve(tmp_path, env) as daemon:
        async with connect(f"{daemon.url}/v1/events", max_size=None) as ws:
            await asyncio.sleep(1.5)  # the hub is past its first XREAD
            # 20 events in one transaction reach the hub in one read: with
            # hub.subscriber_queue = 1 this subscriber is 10 queues behind at once
            with contextlib.closing(redis.Redis.from_url(redis_server.url)) as r:
                before = r.xrevrange(STREAM, count=1)
                pipe = r.pipeline(transaction=True)
                for envelope in burst:
                    pipe.xadd(STREAM, {"event": envelope.to_json()})
                pipe.execute()
            got = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        assert ws.close_code == 1013
        hint = ws.close_reason.removeprefix("fell behind; resume with after=")
        expected = (
            got[-1]["cursor"] if got else (before[0][0].decode() if before else "0-0")
        )
        assert hint == expected
        query = f"?after={hint}&stream_id=call-x"
        async with _subscriber(daemon.url, query) as resumed:
            await wait_for(lambda: len(got) + len(resumed) >= 20, 30, "the rest")
        assert [e["id"] for e in got + resumed] == [e.id for e in burst]
