"""Admission to ``/v1/stream``: the stream limits, streams per address, and the
connections that have not sent ``start`` yet.

The handshake refuses what is over a limit (``refusal``); a connection accepted then
waits for its start message (``wait_for_start``) without taking a stream slot, and
the slots are checked again when it starts (``check_slots``), as other connections
may have started meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from streamser.errors import ProtocolError
from streamser.metrics import Metrics
from streamser.serve import handshake
from streamser.serve.handshake import ServerOptions

_LOGGER = logging.getLogger(__name__)

CLOSE_POLICY: Final = 1008
"""WebSocket close code for a connection that broke a rule (no start message)."""
_IDLE_BEFORE_START_S: Final = 1.0
"""A connection that has not sent ``start`` this long may make room for another."""
_PENDING_HARD_FACTOR: Final = 8
"""Beyond this many times ``max_pending_per_client`` waiting connections from one
address, the handshake refuses more."""


class Admission:
    """Counts what each address holds and decides what it may open. Use from the
    loop thread only."""

    def __init__(
        self,
        options: ServerOptions,
        metrics: Metrics,
        open_streams: Callable[[], int],
        drain_started: asyncio.Event,
    ) -> None:
        """Start with nothing open.

        Args:
            options: the limits (replace ``options`` to apply new ones).
            metrics: counts refusals by reason.
            open_streams: how many streams the server has open.
            drain_started: set when the server starts draining (waiting
                connections give up).
        """
        self.options = options
        self._metrics = metrics
        self._open_streams = open_streams
        self._drain_started = drain_started
        self._per_address: dict[str, int] = {}
        self._pending: dict[str, list[tuple[ServerConnection, float]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def refusal(self, connection: ServerConnection) -> Response | None:
        """The handshake's answer to a stream over a limit (503), or None."""
        if self._open_streams() >= self.options.max_streams:
            self._metrics.refused.labels("max_streams").inc()
            _LOGGER.warning("Refused a stream: %d streams open", self._open_streams())
            return handshake.try_later(connection, "server at its stream limit\n")
        client = handshake.address(connection)
        waiting = len(self._pending.get(client, ()))
        if waiting >= _PENDING_HARD_FACTOR * self.options.max_pending_per_client:
            self._metrics.refused.labels("max_pending_per_client").inc()
            _LOGGER.warning(
                "Refused a stream: %d waiting to start from %s", waiting, client
            )
            return handshake.try_later(connection, "too many connections waiting\n")
        if self._per_address.get(client, 0) >= self.options.max_streams_per_client:
            self._metrics.refused.labels("max_streams_per_client").inc()
            _LOGGER.warning("Refused a stream: too many from %s", client)
            return handshake.try_later(connection, "too many streams from you\n")
        return None

    def check_slots(self, client: str) -> None:
        """Whether a started stream still fits: the handshake checked the limits,
        but other connections may have started since.

        Raises:
            ProtocolError: ``server_busy`` (fatal).
        """
        if self._open_streams() >= self.options.max_streams:
            reason = "max_streams"
        elif self._per_address.get(client, 0) >= self.options.max_streams_per_client:
            reason = "max_streams_per_client"
        else:
            return
        self._metrics.refused.labels(reason).inc()
        _LOGGER.warning("Refused a start from %s: %s reached", client, reason)
        raise ProtocolError(
            "server_busy", f"the server is at its {reason} limit", fatal=True
        )

    def opened(self, client: str) -> None:
        """Count a stream of ``client`` as open."""
        self._per_address[client] = self._per_address.get(client, 0) + 1

    def closed(self, client: str) -> None:
        """Count one stream of ``client`` less."""
        self._per_address[client] -= 1
        if not self._per_address[client]:
            del self._per_address[client]

    async def wait_for_start(
        self, connection: ServerConnection, client: str
    ) -> str | bytes | None:
        """The first message; None on timeout, disconnect, shutdown, or when newer
        connections from the same address push this one out.

        Connections that have not sent ``start`` take no stream slot. Beyond
        ``max_pending_per_client`` of them from one address, a new one closes the
        oldest that has been idle for ``_IDLE_BEFORE_START_S`` (so idle connections
        never lock real calls out, while a burst of real calls from one gateway,
        each sending ``start`` at once, is never cut). Beyond eight times as many,
        the handshake answers 503 (``refusal``).
        """
        pending = self._pending.setdefault(client, [])
        now = time.monotonic()
        if len(pending) >= self.options.max_pending_per_client:
            idle = [c for c, since in pending if now - since >= _IDLE_BEFORE_START_S]
            if idle:
                self._close_idle(client, idle[0])
        entry = (connection, now)
        pending.append(entry)
        try:
            return await self._first_message(connection)
        finally:
            if entry in pending:
                pending.remove(entry)
            if not pending:
                self._pending.pop(client, None)

    def _close_idle(self, client: str, connection: ServerConnection) -> None:
        pending = self._pending.get(client, [])
        pending[:] = [entry for entry in pending if entry[0] is not connection]
        self._metrics.refused.labels("idle_before_start").inc()
        _LOGGER.info("Closing an idle connection from %s: newer ones wait", client)

        async def close() -> None:
            with contextlib.suppress(ConnectionClosed):
                await connection.close(CLOSE_POLICY, "no start message")

        task = asyncio.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _first_message(self, connection: ServerConnection) -> str | bytes | None:
        """The start message; None on timeout, disconnect or shutdown."""
        recv = asyncio.ensure_future(connection.recv())
        drain = asyncio.ensure_future(self._drain_started.wait())
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await asyncio.wait(
                {recv, drain, closed},
                timeout=self.options.start_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            drain.cancel()
            closed.cancel()
            if not recv.done():
                recv.cancel()  # safe: websockets loses no data on a cancelled recv
        if recv.cancelled() or not recv.done() or recv.exception() is not None:
            return None
        return recv.result()
