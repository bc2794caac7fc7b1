"""The Redis-backed hub (``[hub] backend = "redis"``): /v1/events from a Redis stream.

Every daemon appends its events to the ``[sinks.redis]`` stream; this hub reads that
stream with ``XREAD BLOCK`` in one task and fans each entry out to the subscribers,
so a subscriber of any daemon gets the events of all of them. ``after=`` takes a
Redis stream entry id (``1700000000000-0``; ``0`` for everything the stream
retains), events carry it as ``cursor``, and an evicted subscriber's 1013 close
reason names the last one it was sent. Replay comes from ``XRANGE`` and survives
restarts for as long as Redis retains the entries. Filters and eviction are those
of the memory hub (``hub.offer``); a replaying subscriber is paced by its own queue.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

from redis.exceptions import RedisError, ResponseError

from streamser.errors import ProtocolError
from streamser.events import TRANSIENT_TYPES, Envelope
from streamser.metrics import Metrics
from streamser.serve import handshake
from streamser.serve.hub import (
    Hub,
    HubOptions,
    Subscription,
    gap_notice,
    offer,
)
from streamser.sinks.redis import (
    RedisSinkOptions,
    connect,
    decode_entry,
    entry_key,
    stop,
    where,
)

_LOGGER = logging.getLogger(__name__)

_ENTRY_ID: Final = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
_MAX_PART: Final = 2**64 - 1
"""Redis entry ids are two unsigned 64-bit integers."""
_READ_COUNT: Final = 1000
_REPLAY_PAGE: Final = 500
_BLOCK_MS: Final = 1000


def valid_entry_id(text: str) -> bool:
    """Whether ``text`` is a Redis entry id (``MS-SEQ`` or ``MS``) that an entry can
    follow: each part fits 64 bits, and it is not the largest id."""
    if not _ENTRY_ID.fullmatch(text):
        return False
    parts = [int(part) for part in text.split("-")]
    return max(parts) <= _MAX_PART and parts != [_MAX_PART, _MAX_PART]


@dataclass(frozen=True)
class StreamedEnvelope(Envelope):
    """An event read from the Redis stream, with its entry id as ``cursor``."""

    cursor: str = ""
    """Its Redis stream entry id; ``after=<cursor>`` resumes after it."""

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON object plus ``cursor``."""
        return {**super().to_dict(), "cursor": self.cursor}


@dataclass(eq=False)
class RedisSubscription(Subscription):
    """A subscription with its position in the stream and its replay state."""

    last: tuple[int, int] = (0, 0)
    """Entry id of the last entry it was offered (or skipped by its filters)."""
    replaying: bool = False
    backlog: list[StreamedEnvelope] = field(default_factory=list)
    """Live entries read while it replays, delivered once the replay catches up."""
    replay: asyncio.Task[None] | None = None


class RedisHub(Hub[RedisSubscription]):
    """Relays every daemon's events from a Redis stream to subscribers."""

    subscription_type = RedisSubscription

    def __init__(
        self, options: HubOptions, metrics: Metrics, redis: RedisSinkOptions
    ) -> None:
        """Prepare; ``start`` connects and begins reading."""
        super().__init__(options, metrics)
        self.redis = redis
        self._position = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._down_since: float | None = None
        self._unreadable = 0
        self._closed = False

    # -- the Hub interface ----------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        """Nothing: this daemon's events come back through the stream."""

    def _resume(self, sub: RedisSubscription, after: int | str | None) -> None:
        """Start ``sub`` at the stream's end, or replay it after ``after`` (an entry
        id, or 0) first.

        Raises:
            ValueError: ``after`` is not an entry id.
        """
        if after is None:
            sub.last = entry_key(self._position)
            sub.resume_from = self._position
        else:
            text = str(after)
            if not valid_entry_id(text):
                raise ValueError(f"after must be a Redis entry id, got {text!r:.40}")
            sub.last = entry_key(text)
            sub.resume_from = text
            sub.replaying = True
            sub.replay = asyncio.create_task(self._replay(sub))

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber (and stop its replay)."""
        if isinstance(sub, RedisSubscription) and sub.replay is not None:
            sub.replay.cancel()
        super().unsubscribe(sub)

    def cursor(self, envelope: Envelope) -> str:
        """The event's Redis entry id."""
        return envelope.cursor if isinstance(envelope, StreamedEnvelope) else "0"

    def query_error(self, path: str) -> str:
        """Like the memory hub's check, with ``after=`` taking entry ids."""
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        values = query.pop("after", [])
        if len(values) > 1:
            return "after may be given once"
        for value in values:
            if not valid_entry_id(value):
                return (
                    "after must be a Redis stream entry id (e.g. 1700000000000-0) or "
                    f"0, each part at most {_MAX_PART}, below the largest id"
                )
        return handshake.subscription_error(
            parts._replace(query=urlencode(query, doseq=True)).geturl()
        )

    async def start(self) -> None:
        """Find the end of the stream and start reading from there."""
        if self._task is not None:
            return
        self._client = connect(self.redis.url)
        try:
            last = await asyncio.wait_for(
                self._client.xrevrange(self.redis.stream, count=1), 3
            )
            self._position = last[0][0] if last else "0-0"
        except (RedisError, OSError, TimeoutError) as err:
            # Unknown end: start from now (entry ids are Redis's clock in ms).
            self._position = f"{int(time.time() * 1000)}-0"
            _LOGGER.warning(
                "Redis at %s unreachable (%s): /v1/events starts with events "
                "from now on",
                where(self.redis.url),
                err,
            )
        self._task = asyncio.create_task(self._read(), name="redis-hub")
        _LOGGER.info(
            "Event hub reads %s at %s from entry %s",
            self.redis.stream,
            where(self.redis.url),
            self._position,
        )

    async def close(self) -> None:
        """Stop reading and replaying."""
        self._closed = True  # redis-py may swallow a cancellation inside a read
        for sub in list(self._subscribers):
            if sub.replay is not None:
                sub.replay.cancel()
        if self._task is not None:
            await stop(self._task, self._client)
            self._task = None

    # -- reading ----------------------------------------------------------------------

    async def _read(self) -> None:
        failures = 0
        while not self._closed:
            try:
                reply = await self._client.xread(
                    {self.redis.stream: self._position},
                    count=_READ_COUNT,
                    block=_BLOCK_MS,
                )
            except (RedisError, OSError, TimeoutError) as err:
                if self._closed:
                    return  # close() ended the read
                self._down(err)
                await asyncio.sleep(min(0.1 * 2**failures, 1.0))
                failures += 1
                continue
            failures = 0
            self._up()
            for _, entries in reply or ():
                for entry_id, entry in entries:
                    self._position = entry_id
                    envelope = self._parse(entry_id, entry)
                    if envelope is not None:
                        for sub in list(self._subscribers):
                            self._deliver(sub, envelope)

    def _deliver(self, sub: RedisSubscription, envelope: StreamedEnvelope) -> None:
        if sub.replaying:
            sub.backlog.append(envelope)
            if len(sub.backlog) > 10 * self.options.subscriber_queue:
                self.evict(sub)
            return
        key = entry_key(envelope.cursor)
        if key <= sub.last:
            return  # its replay got this one already
        sub.last = key
        if sub.wants(envelope):
            offer(self, sub, envelope)

    async def _replay(self, sub: RedisSubscription) -> None:
        """Send ``sub`` the retained entries after its ``after``, then go live."""
        low = sub.resume_from
        failures = 0
        while not sub.evicted.is_set() and not self._closed:
            try:
                await self._check_gap(sub)
                break
            except (RedisError, OSError, TimeoutError) as err:
                self._down(err)
                await asyncio.sleep(min(0.1 * 2**failures, 1.0))
                failures += 1
        while not sub.evicted.is_set() and not self._closed:
            while sub.queue.qsize() >= self.options.subscriber_queue:
                if sub.evicted.is_set():
                    return
                await asyncio.sleep(0.05)  # paced by how fast it reads
            try:
                entries = await self._client.xrange(
                    self.redis.stream, min=f"({low}", max="+", count=_REPLAY_PAGE
                )
            except (RedisError, OSError, TimeoutError) as err:
                self._down(err)
                await asyncio.sleep(min(0.1 * 2**failures, 1.0))
                failures += 1
                continue
            caught_up = not entries
            for entry_id, entry in entries:
                key = entry_key(entry_id)
                if sub.backlog and key >= entry_key(sub.backlog[0].cursor):
                    caught_up = True  # the live reader has it from here on
                    break
                low = entry_id
                sub.last = key
                envelope = self._parse(entry_id, entry)
                if (
                    envelope is not None
                    and envelope.body.TYPE not in TRANSIENT_TYPES
                    and sub.wants(envelope)
                ):
                    sub.queue.put_nowait(envelope)  # partials are live only
            if caught_up:
                break
        backlog, sub.backlog = sub.backlog, []
        sub.replaying = False
        for envelope in backlog:
            self._deliver(sub, envelope)
        sub.replay = None

    async def _check_gap(self, sub: RedisSubscription) -> None:
        """Queue an ``events.gap`` for ``sub`` when its ``after`` is older than the
        stream's oldest entry and the stream has lost entries (trimmed by ``MAXLEN``,
        or deleted): Redis keeps no record of which ids those had."""
        try:
            info = await self._client.xinfo_stream(self.redis.stream)
        except ResponseError:
            return  # no such stream yet: nothing was lost
        first = info.get("first-entry")
        first_id = first[0] if first else info.get("last-generated-id", "0-0")
        lost = int(info.get("entries-added", 0)) > int(info.get("length", 0))
        if not lost or entry_key(first_id) <= entry_key(sub.resume_from):
            return
        _LOGGER.info(
            "A subscriber resumes after %s; the stream now begins at %s",
            sub.resume_from,
            first_id,
        )
        sub.queue.put_nowait(gap_notice(sub.resume_from, first_id, self.options.origin))

    def _parse(self, entry_id: str, entry: dict[str, Any]) -> StreamedEnvelope | None:
        text = decode_entry(entry)
        try:
            if text is None:
                raise ProtocolError("malformed_event", "no 'event' field")
            envelope = Envelope.from_json(text)
        except ProtocolError as err:
            self._unreadable += 1
            if self._unreadable in (1, 10, 100) or self._unreadable % 1000 == 0:
                _LOGGER.warning(
                    "Skipping stream entry %s of %s (%d so far): %s",
                    entry_id,
                    self.redis.stream,
                    self._unreadable,
                    err,
                )
            return None
        values = {f.name: getattr(envelope, f.name) for f in fields(Envelope)}
        return StreamedEnvelope(**values, cursor=entry_id)

    def _down(self, err: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            _LOGGER.error(
                "Event hub cannot read Redis at %s (%s): subscribers wait",
                where(self.redis.url),
                str(err).splitlines()[0][:200] if str(err) else type(err).__name__,
            )

    def _up(self) -> None:
        if self._down_since is not None:
            _LOGGER.info(
                "Event hub reads Redis at %s again after %.1f s",
                where(self.redis.url),
                time.monotonic() - self._down_since,
            )
            self._down_since = None
