"""Load and back-pressure: 16 concurrent minute-long EMO-DB streams against one
``streamser serve`` (every utterance's events arrive, seq without gaps, memory growth
bounded and printed), and a subscriber too slow to read, evicted with 1013, that
resumes with ``after=`` without missing an event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from _ops_helpers import (
    FAST,
    check_events,
    metric,
    pcm16,
    read_clip,
    rss_kib,
    run_stream,
    running,
    slow_socket,
    speech,
)

STREAMS = 16
CLIPS_PER_STREAM = 20  # 2 s clips + 1 s pauses: 60 s of audio per stream
SPEED = float(os.environ.get("STREAMSER_LOAD_SPEED", "4"))  # times real time


async def _round(url: str, audios: list[bytes], tag: str) -> list[list[dict]]:
    rate = 32000 * SPEED  # pcm_s16le bytes per second, sped up
    results = await asyncio.gather(
        *(
            run_stream(
                url,
                audio,
                {"stream_id": f"{tag}-{i}", "metadata": {"call": i}},
                chunk_bytes=3200,
                bytes_per_s=rate,
                timeout=60 / SPEED + 150,
            )
            for i, audio in enumerate(audios)
        )
    )
    for result in results:
        assert result.close_code == 1000
    return [r.events for r in results]


def _check_utterances(events: list[dict]) -> int:
    check_events(events)
    starts = [e["utterance_id"] for e in events if e["type"] == "speech.start"]
    ends = [e["utterance_id"] for e in events if e["type"] == "utterance.end"]
    assert starts == ends, (starts, ends)
    assert not [e for e in events if e["type"] == "error"]
    return len(ends)


@pytest.mark.slow
@pytest.mark.data
async def test_sixteen_concurrent_minute_long_streams(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    audios = [
        pcm16(
            speech(
                [
                    read_clip(p)
                    for p in emodb_clips[
                        i * CLIPS_PER_STREAM : (i + 1) * CLIPS_PER_STREAM
                    ]
                ]
            )[: 60 * 16000]
        )
        for i in range(STREAMS)
    ]
    env = {"STREAMSER_PIPELINE_MAX_PENDING_UTTERANCES": "64"}
    with running(FAST, tmp_path, env) as server:
        warm = await run_stream(server.url, audios[0][: 32000 * 10])
        check_events(warm.events)
        rss_start = rss_kib(server.process.pid)
        async with connect(f"{server.url}/v1/events", max_size=None) as subscriber:
            seen: set[int] = set()

            async def read() -> None:
                async for message in subscriber:
                    seen.add(json.loads(message)["id"])

            reader = asyncio.create_task(read())  # reads all along, as a monitor would
            began = time.monotonic()
            first = await _round(server.url, audios, "a")
            took = time.monotonic() - began
            expected = {e["id"] for events in first for e in events}
            for _ in range(600):
                if expected <= seen:
                    break
                await asyncio.sleep(0.1)
            reader.cancel()
            assert expected <= seen, len(expected - seen)
        rss_first = rss_kib(server.process.pid)
        second = await _round(server.url, audios, "b")
        rss_second = rss_kib(server.process.pid)
        text = server.metrics()
    utterances = [_check_utterances(events) for events in first + second]
    assert min(utterances) >= CLIPS_PER_STREAM - 2, utterances
    assert metric(text, "streamser_dropped_utterances_total") == 0
    assert metric(text, "streamser_active_streams") == 0
    latency_count = metric(text, "streamser_end_of_speech_latency_seconds_count")
    latency_sum = metric(text, "streamser_end_of_speech_latency_seconds_sum")
    growth_first_mib = (rss_first - rss_start) / 1024
    growth_second_mib = (rss_second - rss_first) / 1024
    print(
        f"\nload: {STREAMS} streams x 60 s at {SPEED:g}x, round 1 took {took:.1f} s, "
        f"{sum(utterances)} utterances, mean latency "
        f"{1000 * latency_sum / max(latency_count, 1):.0f} ms; RSS {rss_start / 1024:.0f}"
        f" MiB -> {rss_first / 1024:.0f} MiB (round 1, +{growth_first_mib:.1f})"
        f" -> {rss_second / 1024:.0f} MiB (round 2, +{growth_second_mib:.1f})"
    )
    # the first round may grow arenas and the hub's retention ring; a second
    # identical round must not keep growing
    assert growth_first_mib < 300
    assert growth_second_mib < 50


async def test_slow_subscriber_is_evicted_with_1013_and_resumes_after(
    tmp_path: Path,
) -> None:
    env = {
        "STREAMSER_HUB_SUBSCRIBER_QUEUE": "8",
        "STREAMSER_HUB_RETENTION_EVENTS": "50000",
    }
    with running(FAST, tmp_path, env) as server:
        slow = await connect(
            f"{server.url}/v1/events?stream_id=busy",
            sock=slow_socket(server.port),
            max_queue=1,
            max_size=None,
            close_timeout=30,
        )
        # a busy stream: thousands of events (bad control messages are cheap
        # non-fatal errors), read by its own client
        async with connect(f"{server.url}/v1/stream", max_size=None) as producer:

            async def produce() -> None:
                await producer.send(json.dumps({"type": "start", "stream_id": "busy"}))
                for i in range(6000):
                    await producer.send(json.dumps({"type": f"junk-{i}"}))
                    if i % 100 == 0:
                        await asyncio.sleep(0)
                await producer.send(json.dumps({"type": "stop"}))

            await asyncio.wait_for(produce(), 120)
            own = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    own.append(json.loads(await asyncio.wait_for(producer.recv(), 60)))
        check_events(own)
        assert len(own) == 6003  # start, 6000 errors, call.summary, end
        # now the slow subscriber reads what reached it, then the 1013
        received = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                received.append(json.loads(await asyncio.wait_for(slow.recv(), 30)))
        assert slow.close_code == 1013, (slow.close_code, slow.close_reason)
        last = received[-1]["id"]
        assert f"after={last}" in (slow.close_reason or "")
        assert len(received) < len(own)
        # resume: the rest, nothing missing, nothing twice
        resumed = []
        async with connect(
            f"{server.url}/v1/events?stream_id=busy&after={last}", max_size=None
        ) as again:
            while not resumed or resumed[-1]["id"] < own[-1]["id"]:
                resumed.append(json.loads(await asyncio.wait_for(again.recv(), 30)))
        ids = [e["id"] for e in received + resumed]
        assert ids == [e["id"] for e in own]
        text = server.metrics()
    assert metric(text, "streamser_evicted_subscribers_total") == 1
    assert "evicted after event" in server.log()
