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

import abc
import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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


SubscriptionT = TypeVar("SubscriptionT", bound=Subscription)


class Hub(abc.ABC, Generic[SubscriptionT]):
    """What the server needs of a hub, and what every hub does alike: registering,
    forgetting and evicting subscribers (use from the event loop only)."""

    subscription_type: type[SubscriptionT]
    """What ``subscribe`` makes: ``Subscription``, or the hub's own kind of it."""

    def __init__(self, options: HubOptions, metrics: Metrics) -> None:
        """Start with no subscriber."""
        self.options = options
        self.metrics = metrics
        self._subscribers: set[SubscriptionT] = set()

    @abc.abstractmethod
    def publish(self, envelope: Envelope) -> None:
        """Hand over one of this daemon's events."""

    def subscribe(
        self,
        stream_ids: Iterable[str] = (),
        types: Iterable[str] = (),
        after: int | str | None = None,
    ) -> Subscription:
        """Register a subscriber; with ``after``, replay what is retained after it.

        Raises:
            ValueError: ``after`` is not a position of this hub (``query_error``).
        """
        sub = self.subscription_type(
            stream_ids=frozenset(stream_ids),
            types=frozenset(types),
            queue=asyncio.Queue(),
        )
        self._resume(sub, after)
        self._subscribers.add(sub)
        self.metrics.subscribers.set(len(self._subscribers))
        return sub

    @abc.abstractmethod
    def _resume(self, sub: SubscriptionT, after: int | str | None) -> None:
        """Set where a new subscriber starts: now, or after ``after`` (a replay)."""

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(sub)  # type: ignore[arg-type]
        self.metrics.subscribers.set(len(self._subscribers))

    def evict(self, sub: Subscription) -> None:
        """Drop a subscriber that does not keep up (its relay closes it with 1013)."""
        if sub.evicted.is_set():
            return
        _LOGGER.warning(
            "Evicting a subscriber that fell %d events behind", sub.queue.qsize()
        )
        self.metrics.evicted_subscribers.inc()
        sub.evicted.set()
        self.unsubscribe(sub)

    @abc.abstractmethod
    def cursor(self, envelope: Envelope) -> str:
        """The ``after=`` value that resumes after ``envelope``."""

    @abc.abstractmethod
    def query_error(self, path: str) -> str:
        """Why a /v1/events request path is invalid for this hub, or ""."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin (connect, start tasks)."""

    @abc.abstractmethod
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


class EventHub(Hub[Subscription]):
    """Retains recent events and relays them to subscribers. Use from the loop only."""

    subscription_type = Subscription

    def __init__(self, options: HubOptions, metrics: Metrics) -> None:
        """Create an empty hub."""
        super().__init__(options, metrics)
        self._ring: deque[Envelope] = deque(maxlen=options.retention_events)

    def publish(self, envelope: Envelope) -> None:
        """Retain ``envelope`` (unless it is a transient partial) and queue it for
        every matching subscriber."""
        if envelope.body.TYPE not in TRANSIENT_TYPES:
            self._ring.append(envelope)
        for sub in list(self._subscribers):
            if sub.wants(envelope):
                offer(self, sub, envelope)

    def _resume(self, sub: Subscription, after: int | str | None) -> None:
        """With ``after``, queue the retained events > after, preceded by an
        ``events.gap`` when some of those are no longer retained.

        Raises:
            ValueError: ``after`` is not a non-negative integer.
        """
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
