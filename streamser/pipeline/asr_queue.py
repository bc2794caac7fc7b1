"""``AsrQueue``: the order in which waiting utterances get transcription, and which of
them are skipped because their transcript could not be ready in time.

Two classes of stream share it:

- **live** streams, whose audio comes at its real-time pace: each utterance has a due
  time (``asr_max_lag_ms`` after its audio arrived). They come first, and among them
  ASR goes round-robin: a stream's waiting utterance waits behind at most one
  utterance of each other live stream. An utterance whose transcript would not be
  ready by its due time, counting the utterances ahead of it and the batches running,
  is skipped as soon as that is known, so its label is not held back by queued ASR.
- **bulk** streams (uploads, files, clients that send faster than real time): no due
  time. They get only what the live streams leave (the engine starts a bulk batch
  only when no live utterance waits or is being transcribed), round-robin among
  themselves, and are not skipped for being late: they wait, and their sources are
  paused by backpressure. One that has waited ``bulk_max_wait_s`` while the workers
  stay busy, or while live streams are in overload, is labelled without a transcript rather than keep its connection unread
  until a client's keepalive gives up: under sustained live overload the upload,
  not the live calls, goes without transcripts.

The queue is sans-I/O: the caller passes the time and what a batch takes, so it is
tested on a fake clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

_T = TypeVar("_T")


@dataclass(eq=False)
class _Entry(Generic[_T]):
    item: _T
    stream: str
    due: float
    added: float
    patient: bool = False


class _RoundRobin(Generic[_T]):
    """Waiting entries by stream; streams take turns, one entry per turn."""

    def __init__(self) -> None:
        self._streams: dict[str, deque[_Entry[_T]]] = {}

    def add(self, entry: _Entry[_T]) -> None:
        self._streams.setdefault(entry.stream, deque()).append(entry)

    def __len__(self) -> int:
        return sum(len(q) for q in self._streams.values())

    def order(self) -> Iterator[_Entry[_T]]:
        """Every entry in the order ``pop`` would give them."""
        queues = [list(q) for q in self._streams.values()]
        depth = max((len(q) for q in queues), default=0)
        for turn in range(depth):
            for queue in queues:
                if turn < len(queue):
                    yield queue[turn]

    def peek(self) -> _Entry[_T] | None:
        """The entry ``pop`` would give, left in place."""
        for queue in self._streams.values():
            return queue[0]
        return None

    def pop(self) -> _Entry[_T] | None:
        """The next stream's oldest entry; that stream goes to the back of the turn."""
        for stream in self._streams:
            queue = self._streams.pop(stream)
            entry = queue.popleft()
            if queue:
                self._streams[stream] = queue  # to the back of the turn
            return entry
        return None

    def remove(self, doomed: Callable[[_Entry[_T]], bool]) -> list[_Entry[_T]]:
        """Take out the entries ``doomed`` says; keep the turn of the others."""
        removed: list[_Entry[_T]] = []
        for stream in list(self._streams):
            queue = self._streams[stream]
            kept = deque(e for e in queue if not doomed(e))
            removed += [e for e in queue if doomed(e)]
            if kept:
                self._streams[stream] = kept
            else:
                del self._streams[stream]
        return removed


class AsrQueue(Generic[_T]):
    """Utterances waiting for transcription, live before bulk, round-robin by stream.

    Args:
        workers: batches that may run at once.
        max_batch: utterances per batch.
        per_utterance: what a batch takes grows with its size (on CPU: ``item_s``
            per utterance); otherwise a batch takes ``item_s`` whatever its size
            (a GPU).
        bulk_max_wait_s: a bulk utterance that has waited this long while a batch
            runs, or while bulk may not be transcribed, is skipped (labelled without a transcript), so that a bulk
            source keeps moving under sustained live overload (its connection is
            not read meanwhile).
    """

    def __init__(
        self,
        workers: int,
        max_batch: int,
        *,
        per_utterance: bool = True,
        bulk_max_wait_s: float = 16.0,
    ) -> None:
        self.workers = workers
        self.max_batch = max_batch
        self.per_utterance = per_utterance
        self.bulk_max_wait_s = bulk_max_wait_s
        self._live: _RoundRobin[_T] = _RoundRobin()
        self._bulk: _RoundRobin[_T] = _RoundRobin()

    def add(
        self, item: _T, stream: str, due: float, now: float, *, patient: bool = False
    ) -> None:
        """Queue ``item`` of ``stream`` at time ``now``; ``due`` is when its
        transcript is owed, or infinity for a bulk stream. A ``patient`` bulk
        utterance (a file read as fast as recognition goes, with no connection
        to keep alive) is never given up."""
        lane = self._bulk if math.isinf(due) else self._live
        lane.add(_Entry(item, stream, due, now, patient))

    def __len__(self) -> int:
        return len(self._live) + len(self._bulk)

    @property
    def live_waiting(self) -> int:
        """Live utterances waiting."""
        return len(self._live)

    @property
    def bulk_waiting(self) -> int:
        """Bulk utterances waiting."""
        return len(self._bulk)

    def items(self) -> list[_T]:
        """Every waiting item, in the order they would be taken."""
        return [e.item for e in self._live.order()] + [
            e.item for e in self._bulk.order()
        ]

    def next_deadline(self) -> float:
        """The earliest due time of a live utterance or the time a bulk one is
        given up (infinity: none)."""
        dues = (e.due for e in self._live.order())
        given_up = (
            e.added + self.bulk_max_wait_s for e in self._bulk.order() if not e.patient
        )
        return min((*dues, *given_up), default=math.inf)

    def batch_s(self, size: int, item_s: float) -> float:
        """What a batch of ``size`` takes, given ``item_s``."""
        return item_s * size if self.per_utterance else item_s

    def take(self, now: float, item_s: float, *, bulk: int | None = None) -> list[_T]:
        """The next batch: live utterances round-robin, or, when none waits and
        ``bulk`` allows, up to ``bulk`` bulk ones round-robin (``None``:
        ``max_batch``; 0: none). The two are never mixed, so an upload does not
        slow a batch of live utterances. A live batch takes no more utterances
        than can be transcribed before the first of them is due (but at least
        one)."""
        live = bool(len(self._live))
        size = self.max_batch if live or bulk is None else min(bulk, self.max_batch)
        lane = self._live if live else (self._bulk if size else None)
        batch: list[_Entry[_T]] = []
        while lane is not None and len(batch) < size:
            entry = lane.peek()
            if entry is None:
                break
            if live and batch and item_s > 0:
                due = min(e.due for e in (*batch, entry))
                if now + self.batch_s(len(batch) + 1, item_s) > due:
                    break
            batch.append(entry)
            lane.pop()
        return [e.item for e in batch]

    def remove(self, doomed: Callable[[_T], bool]) -> list[_T]:
        """Take out (and return) the items ``doomed`` says, of either class."""
        return [
            e.item
            for lane in (self._live, self._bulk)
            for e in lane.remove(lambda e: doomed(e.item))
        ]

    def overdue(
        self,
        now: float,
        running: Sequence[tuple[float, int]],
        item_s: float,
        *,
        bulk_blocked: bool = False,
    ) -> list[_T]:
        """Take out (and return) the utterances whose transcript would not be ready
        in time: live ones by their due time, bulk ones that have waited
        ``bulk_max_wait_s`` while a batch runs or ``bulk_blocked`` (the caller
        gives bulk no transcription now).

        It plays the live queue forward in ``take`` order, each batch on the first
        worker free (a running batch frees it ``batch_s`` after it started): one
        utterance at a time where a batch's cost grows with its size, else
        ``max_batch`` at a time. A live utterance that would finish after its due
        time is skipped and takes no seat from the others. When no batch runs, an
        utterance whose due time has not passed is tried: an idle engine keeps
        learning what a transcription takes.

        Args:
            now: the time now.
            running: (start time, size) of each batch running now.
            item_s: what an utterance (``per_utterance``) or a batch takes now
                (0 when not known yet).
            bulk_blocked: bulk utterances may not be transcribed now.
        """
        free = [max(now, t + self.batch_s(n, item_s)) for t, n in running]
        free += [now] * max(0, self.workers - len(running))
        free.sort()
        chunk = 1 if self.per_utterance else self.max_batch
        doomed: set[int] = set()
        seats = 0
        for entry in self._live.order():
            start = free[0]
            idle = not running and start <= now
            late = now >= entry.due if idle else start + item_s > entry.due
            if late:
                doomed.add(id(entry))
                continue
            seats += 1
            if seats == chunk:
                free[0] = start + item_s
                free.sort()
                seats = 0
        given_up = now - self.bulk_max_wait_s
        skipped = self._live.remove(lambda e: id(e) in doomed) if doomed else []
        if running or bulk_blocked:
            skipped += self._bulk.remove(
                lambda e: e.added <= given_up and not e.patient
            )
        return [e.item for e in skipped]
