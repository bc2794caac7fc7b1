"""Event sink appending every event to a Redis stream (``XADD``), at least once.

``Engine.emit`` calls the sink on the event loop, inside the audio path, so the sink
only serialises the event and appends it to a bounded in-memory buffer; one
background task writes the buffer to Redis in batches (a pipeline of ``XADD`` with
approximate ``MAXLEN`` trimming), in ``id`` order. While Redis is unreachable the
events wait in the buffer and go out in order once it answers again; only when the
buffer is full is the oldest event dropped (counted, and logged once per outage). A
batch whose reply was lost with the connection is written again, so an event may be
in the stream twice, or would be: after a failed write, the sink first looks for its
own newest entry at the end of the stream (each sink marks its entries with a
``writer`` field unique to the process) and does not write again what is there. An
event is in the stream twice only if that look finds nothing within
``_VERIFY_ENTRIES``; ``(origin, id)`` tells the copies apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from streamser.events import Envelope
from streamser.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

EVENT_FIELD: Final = "event"
"""The stream entry field holding the event's JSON."""
WRITER_FIELD: Final = "writer"
"""The stream entry field naming the sink (one per process) that wrote it."""
_VERIFY_ENTRIES: Final = 20_000
"""After a failed write, how far back the sink looks for what it did write."""
_BATCH: Final = 512
"""Events per pipeline round trip."""
_RETRY_S: Final = (0.1, 0.2, 0.5, 1.0)
"""Waits between attempts while Redis is unreachable (the last one repeats)."""


@dataclass(frozen=True)
class RedisSinkOptions:
    """``[sinks.redis]``: where and how events are appended to Redis.

    Attributes:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS); "" for
            no Redis sink.
        stream: the stream key events are appended to.
        maxlen: the stream is trimmed to about this many entries (``MAXLEN ~``).
        required: the daemon is not ready (``/healthz`` 503, no systemd READY)
            until Redis answers, and exits if it does not within
            ``startup_timeout_s``.
        buffer_events: events held in memory while Redis is unreachable; beyond
            it the oldest are dropped (counted in
            ``streamser_redis_dropped_events_total``).
        startup_timeout_s: with ``required``, how long startup waits for Redis.
    """

    url: str = ""
    stream: str = "streamser:events"
    maxlen: int = 1_000_000
    required: bool = False
    buffer_events: int = 100_000
    startup_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.url and urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"sinks.redis.url must be redis://, rediss:// or unix://, "
                f"got {where(self.url)!r}"
            )
        if not self.stream:
            raise ValueError("sinks.redis.stream must not be empty")
        if self.maxlen < 1 or self.buffer_events < 1:
            raise ValueError("sinks.redis.maxlen and buffer_events must be >= 1")
        if self.startup_timeout_s <= 0:
            raise ValueError("sinks.redis.startup_timeout_s must be > 0")


def where(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` that fails fast instead of retrying inside redis-py."""
    client: aioredis.Redis = aioredis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return client


class RedisSink:
    """Appends every event to a Redis stream from a background task.

    Call it from the event loop (as ``Engine.emit`` does); ``start`` launches the
    writer, ``close`` flushes what it can and stops.
    """

    def __init__(
        self,
        options: RedisSinkOptions,
        metrics: Metrics,
        on_written: Callable[[Sequence[float]], None] | None = None,
    ) -> None:
        """Prepare the buffer and the metrics; nothing connects before ``start``.

        Args:
            options: ``[sinks.redis]``.
            metrics: the daemon's metrics (the sink adds ``streamser_redis_*``).
            on_written: gets, per written batch, each event's seconds from emit to
                acknowledgement (the benchmark's hook).
        """
        self.options = options
        self._metrics = metrics
        self._on_written = on_written
        self._buffer: deque[tuple[int, float, int, str]] = deque()
        """(buffer number, perf_counter when emitted, event id, JSON)."""
        self.writer = uuid.uuid4().hex[:16]
        """This sink's ``writer`` field."""
        self._verify = False
        self._closed = False
        self._numbers = itertools.count()
        self._wake = asyncio.Event()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._dropped_in_outage = 0
        self.connected = asyncio.Event()
        """Set once a write or a ping succeeded."""

    @property
    def buffered(self) -> int:
        """Events not yet acknowledged by Redis."""
        return len(self._buffer)

    def __call__(self, envelope: Envelope) -> None:
        """Queue one event; never blocks, never raises for Redis's sake."""
        if len(self._buffer) >= self.options.buffer_events:
            self._buffer.popleft()
            self._metrics.redis_dropped.inc()
            if self._dropped_in_outage == 0:
                _LOGGER.error(
                    "Redis event buffer full (%d events): dropping the oldest until "
                    "Redis at %s answers again",
                    self.options.buffer_events,
                    where(self.options.url),
                )
            self._dropped_in_outage += 1
        self._buffer.append(
            (next(self._numbers), time.perf_counter(), envelope.id, envelope.to_json())
        )
        self._metrics.redis_buffered.set(len(self._buffer))
        self._wake.set()

    async def start(self) -> None:
        """Start the writer task (connecting lazily; an unreachable Redis is retried)."""
        if self._task is None:
            self._client = connect(self.options.url)
            self._task = asyncio.create_task(self._run(), name="redis-sink")

    async def wait_ready(self, timeout_s: float) -> bool:
        """Ping Redis until it answers (True) or ``timeout_s`` passes (False)."""
        assert self._client is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while not self.connected.is_set():
            try:
                await asyncio.wait_for(self._client.ping(), 2)
                self.connected.set()
            except (RedisError, OSError, TimeoutError):
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.2)
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is buffered (for up to ``timeout_s``), then stop."""
        if self._task is None:
            return
        deadline = time.monotonic() + timeout_s
        while self._buffer and time.monotonic() < deadline and not self._task.done():
            await asyncio.sleep(0.02)
        self._closed = True  # redis-py may swallow a cancellation inside a read
        if self._buffer:
            _LOGGER.error(
                "%d event(s) not written to Redis at %s before shutdown",
                len(self._buffer),
                where(self.options.url),
            )
        await stop(self._task, self._client)
        self._task = None

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._verify:
                    await self._drop_written()
                    self._verify = False
                    if not self._buffer:
                        self._up(0)
                        continue
                batch = list(itertools.islice(self._buffer, _BATCH))
                await self._write(batch)
            except (RedisError, OSError, TimeoutError) as err:
                self._verify = True  # the batch may have been written, or part of it
                if self._closed:
                    return  # close() ended the write
                self._down(err)
                await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S) - 1)])
                failures += 1
                continue
            failures = 0
            done = time.perf_counter()
            last = batch[-1][0]
            while self._buffer and self._buffer[0][0] <= last:
                self._buffer.popleft()  # those dropped meanwhile are gone already
            self._metrics.redis_buffered.set(len(self._buffer))
            self._metrics.redis_written.inc(len(batch))
            latencies = [done - queued for _, queued, _, _ in batch]
            for seconds in latencies:
                self._metrics.redis_write_seconds.observe(seconds)
            if self._on_written is not None:
                self._on_written(latencies)
            self._up(len(batch))

    async def _drop_written(self) -> None:
        """Forget buffered events a failed write did get into the stream."""
        assert self._client is not None
        newest = await self._newest_written()
        if newest is None:
            return
        dropped = 0
        while self._buffer and self._buffer[0][2] <= newest:
            self._buffer.popleft()
            dropped += 1
        self._metrics.redis_buffered.set(len(self._buffer))
        if dropped:
            self._metrics.redis_written.inc(dropped)
            _LOGGER.info(
                "%d event(s) of the failed write had reached Redis; not writing "
                "them again",
                dropped,
            )

    async def _newest_written(self) -> int | None:
        """The id of this sink's newest event at the end of the stream, if any."""
        assert self._client is not None
        high, scanned = "+", 0
        while scanned < _VERIFY_ENTRIES:
            entries = await self._client.xrevrange(
                self.options.stream, max=high, min="-", count=500
            )
            for _, entry in entries:
                if entry.get(WRITER_FIELD) == self.writer:
                    with contextlib.suppress(TypeError, ValueError, KeyError):
                        return int(json.loads(entry[EVENT_FIELD])["id"])
            if len(entries) < 500:
                return None
            high = f"({entries[-1][0]}"
            scanned += len(entries)
        return None

    async def _write(self, batch: list[tuple[int, float, int, str]]) -> None:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for _, _, _, text in batch:
            pipe.xadd(
                self.options.stream,
                {EVENT_FIELD: text, WRITER_FIELD: self.writer},
                maxlen=self.options.maxlen,
                approximate=True,
            )
        await pipe.execute()

    def _down(self, err: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self.connected.clear()
        self._metrics.redis_outages.inc()
        _LOGGER.error(
            "Redis at %s unreachable (%s): holding events in memory (up to %d) "
            "until it answers",
            where(self.options.url),
            _reason(err),
            self.options.buffer_events,
        )

    def _up(self, written: int) -> None:
        self.connected.set()
        if self._down_since is None:
            if self._dropped_in_outage:  # a buffer overrun without an outage
                _LOGGER.warning(
                    "%d event(s) dropped: the Redis buffer was full",
                    self._dropped_in_outage,
                )
                self._dropped_in_outage = 0
            return
        _LOGGER.info(
            "Redis at %s reachable again after %.1f s: flushing %d event(s) held "
            "meanwhile, %d dropped",
            where(self.options.url),
            time.monotonic() - self._down_since,
            written + len(self._buffer),
            self._dropped_in_outage,
        )
        self._down_since = None
        self._dropped_in_outage = 0


async def stop(task: asyncio.Task[None], client: Any) -> None:
    """Cancel ``task`` and close ``client``, never waiting more than a few seconds.

    A task cancelled inside a redis-py read may go on waiting for the reply; closing
    the client's connections ends that wait.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(client.aclose(), 2)
    if not done:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(
                client.connection_pool.disconnect(inuse_connections=True), 2
            )
        done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        _LOGGER.warning("Redis task %s did not stop; leaving it", task.get_name())


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:200]


def entry_key(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id ("1700000000000-3") as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def decode_entry(fields: dict[str, Any]) -> str | None:
    """The event JSON of a stream entry written by ``RedisSink``, or None."""
    value = fields.get(EVENT_FIELD)
    return value if isinstance(value, str) else None
