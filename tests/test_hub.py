"""The event hub: filters, replay with after=, eviction of a slow subscriber."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from websockets.asyncio.client import connect

from streamser.events import EventSequencer, SpeechStart, StreamEnd
from streamser.metrics import Metrics
from streamser.serve.hub import EventHub, HubOptions

from _ops_helpers import FAST, REPO, pcm16, read_clip, run_stream, running

DEMO = REPO / "streamser" / "assets" / "demo.wav"


async def test_filters_replay_and_eviction() -> None:
    hub = EventHub(HubOptions(retention_events=100, subscriber_queue=3), Metrics())
    sequencer = EventSequencer()
    everyone = hub.subscribe()
    everyone.sending_since = time.monotonic() - 5  # its relay is stuck: not reading
    reader = hub.subscribe()  # reads, but the burst comes before its relay runs
    only_a = hub.subscribe(stream_ids=["a"], types=["speech.start"])
    published = []
    for i in range(3):
        for stream in ("a", "b"):
            envelope = sequencer.stamp(
                stream, SpeechStart(utterance_id=i, start=float(i))
            )
            published.append(envelope)
            hub.publish(envelope)
    # 6 events for a queue of 3: the stuck subscriber is evicted, not awaited; the
    # one that reads keeps every event of the burst (decided per subscriber)
    assert everyone.evicted.is_set()
    assert not reader.evicted.is_set() and reader.queue.qsize() == 6
    assert only_a.queue.qsize() == 3 and not only_a.evicted.is_set()
    got = [only_a.queue.get_nowait() for _ in range(3)]
    assert [e.stream_id for e in got] == ["a", "a", "a"]
    # resume after the last event it saw: the rest comes from the retention ring
    last_seen = published[1].id
    resumed = hub.subscribe(after=last_seen)
    replay = [resumed.queue.get_nowait() for _ in range(resumed.queue.qsize())]
    assert [e.id for e in replay] == [e.id for e in published if e.id > last_seen]
    end = sequencer.stamp("a", StreamEnd(utterances=3, audio_seconds=3.0))
    hub.publish(end)
    assert resumed.queue.get_nowait() == end
    assert hub.oldest_id() == published[0].id


async def test_retention_is_bounded() -> None:
    hub = EventHub(HubOptions(retention_events=5, subscriber_queue=10), Metrics())
    sequencer = EventSequencer()
    for i in range(12):
        hub.publish(sequencer.stamp("s", SpeechStart(utterance_id=i, start=0.0)))
    late = hub.subscribe(after=0)
    # events 1 to 7 are gone: an events.gap says so first, naming the oldest kept
    gap = late.queue.get_nowait()
    assert gap.type == "events.gap" and gap.id == 0
    assert gap.to_dict()["after"] == "0" and gap.to_dict()["first"] == "8"
    assert [late.queue.get_nowait().id for _ in range(5)] == [8, 9, 10, 11, 12]
    # a resume the ring still covers gets no notice
    covered = hub.subscribe(after=7)
    assert [covered.queue.get_nowait().id for _ in range(5)] == [8, 9, 10, 11, 12]


def test_after_is_checked_at_the_handshake() -> None:
    hub = EventHub(HubOptions(), Metrics())
    assert hub.query_error("/v1/events?after=9223372036854775807") == ""
    for bad in ("99999999999999999999", "9223372036854775808", "-1", "1-0", "x"):
        assert hub.query_error(f"/v1/events?after={bad}"), bad
    assert "once" in hub.query_error("/v1/events?after=1&after=2")


async def test_a_reader_is_evicted_only_ten_queues_behind() -> None:
    hub = EventHub(HubOptions(subscriber_queue=2), Metrics())
    sequencer = EventSequencer()
    reader = hub.subscribe()
    for i in range(20):
        hub.publish(sequencer.stamp("s", SpeechStart(utterance_id=i, start=0.0)))
    assert not reader.evicted.is_set() and reader.queue.qsize() == 20
    hub.publish(sequencer.stamp("s", SpeechStart(utterance_id=20, start=0.0)))
    assert reader.evicted.is_set()


async def test_a_subscriber_resuming_past_the_retention_is_told_over_the_socket(
    tmp_path: Path,
) -> None:
    env = {"STREAMSER_HUB_RETENTION_EVENTS": "5"}
    with running(FAST, tmp_path, env) as server:
        call = await run_stream(server.url, pcm16(read_clip(DEMO)))
        ids = [e["id"] for e in call.events]
        assert len(ids) > 6  # more than the ring keeps
        async with connect(f"{server.url}/v1/events?after={ids[0]}") as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            replay = [
                json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in ids[-5:]
            ]
    assert first["type"] == "events.gap" and first["id"] == 0
    assert (first["after"], first["first"]) == (str(ids[0]), str(ids[-5]))
    assert [e["id"] for e in replay] == ids[-5:]
