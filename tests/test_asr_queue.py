"""``AsrQueue``: live before bulk, round-robin among streams, and overdue utterances
skipped as soon as the queue ahead of them makes them late (a fake clock: times are
plain numbers)."""

from __future__ import annotations

import math

from streamser.pipeline.asr_queue import AsrQueue


def _queue(
    workers: int = 1, max_batch: int = 1, per_utterance: bool = False
) -> AsrQueue[str]:
    return AsrQueue(workers, max_batch, per_utterance=per_utterance)


def _drain(queue: AsrQueue[str]) -> list[str]:
    taken: list[str] = []
    while batch := queue.take(0.0, 0.0):
        taken += batch
    return taken


def test_live_streams_take_turns() -> None:
    """A stream that queued many utterances first does not hold the others back:
    each waits behind at most one utterance of each other stream."""
    queue = _queue()
    for i in range(4):
        queue.add(f"a{i}", "a", due=100.0, now=0.0)
    queue.add("b0", "b", due=100.0, now=0.0)
    queue.add("c0", "c", due=100.0, now=0.0)
    queue.add("b1", "b", due=100.0, now=0.0)
    assert _drain(queue) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_turn_moves_on_between_batches() -> None:
    """The stream served last goes to the back of the turn."""
    queue = _queue(max_batch=2)
    for stream in "abc":
        queue.add(f"{stream}0", stream, due=100.0, now=0.0)
        queue.add(f"{stream}1", stream, due=100.0, now=0.0)
    assert queue.take(0.0, 0.0) == ["a0", "b0"]
    queue.add("d0", "d", due=100.0, now=0.0)
    assert queue.take(0.0, 0.0) == ["c0", "a1"]
    assert queue.take(0.0, 0.0) == ["b1", "d0"]
    assert queue.take(0.0, 0.0) == ["c1"]
    assert queue.take(0.0, 0.0) == []


def test_live_before_bulk_and_never_mixed() -> None:
    """Bulk utterances (no due time) go only when no live one waits, in batches of
    their own."""
    queue = _queue(max_batch=4)
    for i in range(3):
        queue.add(f"up{i}", "upload", due=math.inf, now=0.0)
    queue.add("a0", "a", due=10.0, now=0.0)
    queue.add("b0", "b", due=10.0, now=0.0)
    assert queue.live_waiting == 2 and queue.bulk_waiting == 3
    assert queue.take(0.0, 0.0) == ["a0", "b0"]
    assert queue.take(0.0, 0.0, bulk=0) == []
    queue.add("a1", "a", due=12.0, now=0.0)
    assert queue.take(0.0, 0.0, bulk=1) == ["a1"]
    assert queue.take(0.0, 0.0, bulk=1) == ["up0"]
    assert queue.take(0.0, 0.0) == ["up1", "up2"]


def test_skip_is_decided_by_the_queue_ahead() -> None:
    """With one worker busy until t=2 and batches of one taking 1 s, the queue plays
    forward: a0 starts at 2 and ends at 3, b0 ends at 4, a1 would end at 5. Due at 4.5,
    a1 is skipped at once (t=0), not when its due time comes near."""
    queue = _queue()
    queue.add("a0", "a", due=3.5, now=0.0)
    queue.add("a1", "a", due=4.5, now=0.0)
    queue.add("b0", "b", due=4.5, now=0.0)
    assert queue.overdue(now=0.0, running=[(1.0, 1)], item_s=1.0) == ["a1"]
    assert queue.items() == ["a0", "b0"]
    # Nothing else is late: a0 ends at 3, b0 at 4.
    assert queue.overdue(now=0.0, running=[(1.0, 1)], item_s=1.0) == []


def test_skipped_utterance_makes_room_for_later_ones() -> None:
    """A skipped utterance takes no worker: the ones behind it move up."""
    queue = _queue()
    queue.add("a0", "a", due=1.5, now=0.0)  # would end at 2: skipped
    queue.add("b0", "b", due=2.5, now=0.0)  # then starts at 1, ends at 2: kept
    assert queue.overdue(now=0.0, running=[(0.0, 1)], item_s=1.0) == ["a0"]
    assert queue.items() == ["b0"]


def test_batches_and_workers_share_the_wait() -> None:
    """Two workers, batches of two: four utterances start at once when both workers
    are free soon; the fifth waits a batch."""
    queue = _queue(workers=2, max_batch=2)
    for stream in "abcde":
        queue.add(stream, stream, due=2.5, now=0.0)
    # Both workers busy until t=1 (started at 0, batch 1 s): a-d end at 2, e at 3.
    assert queue.overdue(now=0.0, running=[(0.0, 2), (0.0, 2)], item_s=1.0) == ["e"]


def test_idle_engine_tries_and_bulk_is_not_skipped() -> None:
    """With no batch running, an utterance not yet due is tried even if the last
    batches were slow; past its due time it is skipped. Bulk is not (before it has waited twice
    ``bulk_max_wait_s``)."""
    queue = _queue()
    queue.add("a0", "a", due=5.0, now=0.0)
    queue.add("up", "upload", due=math.inf, now=0.0)
    assert queue.overdue(now=1.0, running=[], item_s=10.0) == []
    assert queue.overdue(now=6.0, running=[], item_s=10.0) == ["a0"]
    assert queue.overdue(now=15.0, running=[(0.0, 1)], item_s=10.0) == []
    assert queue.items() == ["up"]


def test_remove_and_earliest_due() -> None:
    queue = _queue()
    queue.add("a0", "a", due=3.0, now=0.0)
    queue.add("b0", "b", due=2.0, now=0.0)
    queue.add("up", "upload", due=math.inf, now=0.0)
    assert queue.next_deadline() == 2.0
    assert queue.remove(lambda item: item != "a0") == ["b0", "up"]
    assert len(queue) == 1 and queue.items() == ["a0"]


def test_cpu_cost_grows_with_the_batch() -> None:
    """Where a batch costs per utterance (CPU), the queue plays utterances one at a
    time, and a live batch takes only as many as finish before the first is due."""
    queue = _queue(workers=1, max_batch=8, per_utterance=True)
    for stream in "abcd":
        queue.add(stream, stream, due=2.5, now=0.0)
    # Busy until 1 (one utterance started at 0): a ends at 2, b at 3 (late), ...
    assert queue.overdue(now=0.0, running=[(0.0, 1)], item_s=1.0) == ["b", "c", "d"]
    for stream in "efg":
        queue.add(stream, stream, due=3.5, now=0.0)
    # At t=1, 1 s per utterance: a (due 2.5) and e, f (due 3.5) would end at 4.
    assert queue.take(1.0, 1.0) == ["a"]
    assert queue.take(1.0, 1.0) == ["e", "f"]


def test_bulk_never_takes_a_live_turn() -> None:
    """However long an upload waits, live streams keep their turns: a bulk utterance
    goes only when no live one waits."""
    queue = AsrQueue[str](1, 1, bulk_max_wait_s=16.0)
    queue.add("up0", "upload", due=math.inf, now=0.0)
    for t in range(5):
        queue.add(f"a{t}", "a", due=100.0, now=10.0 * t)
        assert queue.take(10.0 * t, 1.0) == [f"a{t}"]
    assert queue.items() == ["up0"]
    assert queue.next_deadline() == 16.0


def test_a_bulk_utterance_is_given_up_after_its_wait_while_workers_are_busy() -> None:
    """A bulk utterance that waited ``bulk_max_wait_s`` while a batch runs is
    skipped (its connection is not read meanwhile); with no batch running it is
    tried."""
    queue = AsrQueue[str](1, 1, bulk_max_wait_s=16.0)
    queue.add("up0", "upload", due=math.inf, now=0.0)
    assert queue.overdue(now=15.0, running=[(0.0, 1)], item_s=100.0) == []
    assert queue.overdue(now=17.0, running=[], item_s=100.0) == []
    assert queue.overdue(now=17.0, running=[(0.0, 1)], item_s=100.0) == ["up0"]
    # or while the caller gives bulk no transcription (live streams in overload)
    queue.add("up1", "upload", due=math.inf, now=20.0)
    assert queue.overdue(now=30.0, running=[], item_s=1.0, bulk_blocked=True) == []
    assert queue.overdue(now=36.0, running=[], item_s=1.0, bulk_blocked=True) == ["up1"]


def test_a_patient_bulk_utterance_is_never_given_up() -> None:
    """A file's utterance (no connection to keep alive) waits however long it takes,
    and sets no deadline for the batcher to wake up for."""
    queue = AsrQueue[str](1, 1, bulk_max_wait_s=16.0)
    queue.add("file0", "file", due=math.inf, now=0.0, patient=True)
    assert queue.next_deadline() == math.inf
    assert queue.overdue(now=100.0, running=[(99.0, 1)], item_s=1.0) == []
    assert queue.overdue(now=100.0, running=[], item_s=1.0, bulk_blocked=True) == []
    assert queue.take(100.0, 1.0) == ["file0"]
