"""Fan-out of events to subscribers, with a bounded retention ring for ``after=`` replay.

Each subscriber has its own queue; the hub never waits for one. Whether one is
evicted is decided by its own progress: one that is more than ``subscriber_queue``
events behind while its relay has been stuck sending for a second, one whose send
has been stuck for ``subscriber_stall_s``, or one ten times ``subscriber_queue``
behind. A subscriber that reads keeps up through a burst. An evicted one is closed
with 1013 and may resume with ``after=<last id>``, which replays what the ring still
holds, so nothing is lost while it is retained (websockets' broadcast guide:
per-client queues, no backpressure).

``Hub`` is what the server needs of a hub; ``EventHub`` (memory, this daemon's
events) and ``redis_hub.RedisHub`` (every daemon's events, from a Redis stream)
implement it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from streamser.events import (
    TRANSIENT_TYPES,
    Envelope,
    EventsGap,
    default_origin,
    rfc3339_now,
)
from streamser.metrics import Metrics
from streamser.serve import handshake

_LOGGER = logging.getLogger(__name__)

_STUCK_S = 1.0
"""A subscriber whose send has blocked this long is not reading."""


@dataclass(frozen=True)
class HubOptions:
    """Event retention and subscriber limits.

    Attributes:
        retention_events: events kept for ``after=`` replay.
        subscriber_queue: events a subscriber that is not reading may fall behind
            before eviction (one that reads may fall ten times as far behind in a
            burst).
        subscriber_stall_s: how long one send to a subscriber may block before it
            is evicted (below the WebSocket keepalive's 20 s, so the subscriber
            gets 1013 and its ``after=`` hint, not a keepalive timeout).
        backend: "memory" (this daemon's events, retained here) or "redis" (every
            daemon's events, read from the ``[sinks.redis]`` stream; ``after=``
            takes Redis entry ids and ``retention_events`` does not apply).
        origin: the name stamped on this daemon's events as ``origin``; "" for
            the host name and port.
    """

    retention_events: int = 10000
    subscriber_queue: int = 1000
    subscriber_stall_s: float = 10.0
    backend: str = "memory"
    origin: str = ""

    def __post_init__(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ValueError(
                f'hub backend must be "memory" or "redis", got {self.backend!r}'
            )
        if self.retention_events < 1 or self.subscriber_queue < 1:
            raise ValueError("hub retention_events and subscriber_queue must be >= 1")
        if self.subscriber_stall_s <= 0:
            raise ValueError("hub subscriber_stall_s must be > 0")


@dataclass(eq=False)
class Subscription:
    """One subscriber's filters and queue (owned by the event loop thread)."""

    stream_ids: frozenset[str]
    types: frozenset[str]
    queue: asyncio.Queue[Envelope]
    evicted: asyncio.Event = field(default_factory=asyncio.Event)
    sending_since: float | None = None
    """``time.monotonic()`` when the send in progress began; None when idle."""
    resume_from: str = "0"
    """The ``after=`` to resume with before any event has been sent."""

    def stalled(self, seconds: float) -> bool:
        """Whether a send has been blocked for ``seconds`` or more."""
        since = self.sending_since
        return since is not None and time.monotonic() - since >= seconds

    def wants(self, envelope: Envelope) -> bool:
        """Whether the filters let ``envelope`` through."""
        if self.stream_ids and envelope.stream_id not in self.stream_ids:
            return False
        return not self.types or envelope.body.TYPE in self.types


class Hub(Protocol):
    """What the server needs of a hub (use from the event loop only)."""

    options: HubOptions

    def publish(self, envelope: Envelope) -> None:
        """Hand over one of this daemon's events."""

    def subscribe(
        self,
        stream_ids: Iterable[str] = (),
        types: Iterable[str] = (),
        after: int | str | None = None,
    ) -> Subscription:
        """Register a subscriber; with ``after``, replay what is retained after it."""
        ...

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber."""

    def evict(self, sub: Subscription) -> None:
        """Drop a subscriber that does not keep up (its relay closes it with 1013)."""

    def cursor(self, envelope: Envelope) -> str:
        """The ``after=`` value that resumes after ``envelope``."""
        ...

    def query_error(self, path: str) -> str:
        """Why a /v1/events request path is invalid for this hub, or ""."""
        ...

    async def start(self) -> None:
        """Begin (connect, start tasks)."""

    async def close(self) -> None:
        """Stop its tasks and connections."""


def gap_notice(after: str, first: str, origin: str = "") -> Envelope:
    """The ``events.gap`` telling a resuming subscriber that the events between
    ``after`` and ``first`` are no longer retained (``id`` 0: no place to resume
    from)."""
    return Envelope(
        0, "", 0, rfc3339_now(), EventsGap(after, first), origin or default_origin()
    )


def is_notice(envelope: Envelope) -> bool:
    """Whether ``envelope`` is a hub notice rather than a stream's event."""
    return isinstance(envelope.body, EventsGap)


def evict_subscriber(
    sub: Subscription, metrics: Metrics, unsubscribe: Callable[[Subscription], None]
) -> None:
    """Drop a subscriber that does not keep up (its relay closes it with 1013);
    shared by every hub."""
    if sub.evicted.is_set():
        return
    _LOGGER.warning(
        "Evicting a subscriber that fell %d events behind", sub.queue.qsize()
    )
    metrics.evicted_subscribers.inc()
    sub.evicted.set()
    unsubscribe(sub)


def offer(hub: Hub, sub: Subscription, envelope: Envelope) -> bool:
    """Queue ``envelope`` for ``sub`` unless that evicts it; whether it was queued.

    A subscriber ``subscriber_queue`` events behind whose send is stuck, or ten
    times that behind, is evicted instead.
    """
    behind = sub.queue.qsize()
    limit = hub.options.subscriber_queue
    if behind >= limit and (sub.stalled(_STUCK_S) or behind >= 10 * limit):
        hub.evict(sub)
        return False
    sub.queue.put_nowait(envelope)
    return True


class EventHub:
    """Retains recent events and relays them to subscribers. Use from the loop only."""

    def __init__(self, options: HubOptions, metrics: Metrics) -> None:
        """Create an empty hub."""
        self.options = options
        self.metrics = metrics
        self._ring: deque[Envelope] = deque(maxlen=options.retention_events)
        self._subscribers: set[Subscription] = set()

    def publish(self, envelope: Envelope) -> None:
        """Retain ``envelope`` (unless it is a transient partial) and queue it for
        every matching subscriber."""
        if envelope.body.TYPE not in TRANSIENT_TYPES:
            self._ring.append(envelope)
        for sub in list(self._subscribers):
            if sub.wants(envelope):
                offer(self, sub, envelope)

    def subscribe(
        self,
        stream_ids: Iterable[str] = (),
        types: Iterable[str] = (),
        after: int | str | None = None,
    ) -> Subscription:
        """Register a subscriber; with ``after`` it first gets retained events > after,
        preceded by an ``events.gap`` when some of those are no longer retained.

        Raises:
            ValueError: ``after`` is not a non-negative integer.
        """
        sub = Subscription(
            stream_ids=frozenset(stream_ids),
            types=frozenset(types),
            queue=asyncio.Queue(),
        )
        if after is not None:
            after = int(after)
            sub.resume_from = str(after)
            oldest = self.oldest_id()
            if oldest is not None and after < oldest - 1:
                _LOGGER.info(
                    "A subscriber resumes after %d; events up to %d are gone",
                    after,
                    oldest - 1,
                )
                sub.queue.put_nowait(
                    gap_notice(str(after), str(oldest), self.options.origin)
                )
            for envelope in self._ring:
                if envelope.id > after and sub.wants(envelope):
                    sub.queue.put_nowait(envelope)
        self._subscribers.add(sub)
        self.metrics.subscribers.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(sub)
        self.metrics.subscribers.set(len(self._subscribers))

    def cursor(self, envelope: Envelope) -> str:
        """The event's ``id``: ``after=<id>`` resumes after it."""
        return str(envelope.id)

    def query_error(self, path: str) -> str:
        """Why a /v1/events request path is invalid, or ""."""
        return handshake.subscription_error(path)

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to stop."""

    def oldest_id(self) -> int | None:
        """The id of the oldest retained event."""
        return self._ring[0].id if self._ring else None

    def evict(self, sub: Subscription) -> None:
        """Drop a subscriber that does not keep up (its relay closes it with 1013)."""
        evict_subscriber(sub, self.metrics, self.unsubscribe)
