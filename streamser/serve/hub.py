"""Fan-out of events to subscribers, with a bounded retention ring for ``after=`` replay.

Each subscriber has its own bounded queue; the hub never waits for one. A subscriber
whose queue is full is evicted (the server closes it with 1013) and may resume with
``after=<last id>``, which replays what the ring still holds, so nothing is lost while
it is retained (websockets' broadcast guide: per-client queues, no backpressure).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamser.events import Envelope
from streamser.metrics import Metrics

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubOptions:
    """Event retention and subscriber limits.

    Attributes:
        retention_events: events kept for ``after=`` replay.
        subscriber_queue: events a subscriber may fall behind before eviction.
    """

    retention_events: int = 10000
    subscriber_queue: int = 1000

    def __post_init__(self) -> None:
        if self.retention_events < 1 or self.subscriber_queue < 1:
            raise ValueError("hub retention_events and subscriber_queue must be >= 1")


@dataclass(eq=False)
class Subscription:
    """One subscriber's filters and queue (owned by the event loop thread)."""

    stream_ids: frozenset[str]
    types: frozenset[str]
    queue: asyncio.Queue[Envelope]
    evicted: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, envelope: Envelope) -> bool:
        """Whether the filters let ``envelope`` through."""
        if self.stream_ids and envelope.stream_id not in self.stream_ids:
            return False
        return not self.types or envelope.body.TYPE in self.types


class EventHub:
    """Retains recent events and relays them to subscribers. Use from the loop only."""

    def __init__(self, options: HubOptions, metrics: Metrics) -> None:
        """Create an empty hub."""
        self.options = options
        self.metrics = metrics
        self._ring: deque[Envelope] = deque(maxlen=options.retention_events)
        self._subscribers: set[Subscription] = set()

    def publish(self, envelope: Envelope) -> None:
        """Retain ``envelope`` and queue it for every matching subscriber."""
        self._ring.append(envelope)
        for sub in list(self._subscribers):
            if not sub.wants(envelope):
                continue
            try:
                sub.queue.put_nowait(envelope)
            except asyncio.QueueFull:
                self._evict(sub)

    def subscribe(
        self,
        stream_ids: Iterable[str] = (),
        types: Iterable[str] = (),
        after: int | None = None,
    ) -> Subscription:
        """Register a subscriber; with ``after`` it first gets retained events > after."""
        sub = Subscription(
            stream_ids=frozenset(stream_ids),
            types=frozenset(types),
            queue=asyncio.Queue(self.options.subscriber_queue),
        )
        if after is not None:
            backlog = [e for e in self._ring if e.id > after and sub.wants(e)]
            # The replay may be longer than the live queue: size the queue to hold it.
            sub.queue = asyncio.Queue(self.options.subscriber_queue + len(backlog))
            for envelope in backlog:
                sub.queue.put_nowait(envelope)
        self._subscribers.add(sub)
        self.metrics.subscribers.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(sub)
        self.metrics.subscribers.set(len(self._subscribers))

    def oldest_id(self) -> int | None:
        """The id of the oldest retained event."""
        return self._ring[0].id if self._ring else None

    def _evict(self, sub: Subscription) -> None:
        _LOGGER.warning(
            "Evicting a subscriber that fell %d events behind", sub.queue.qsize()
        )
        self.metrics.evicted_subscribers.inc()
        sub.evicted.set()
        self.unsubscribe(sub)
