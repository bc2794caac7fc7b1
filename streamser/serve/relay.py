"""Relaying hub events to one /v1/events subscriber, with eviction and shutdown;
closing a connection whose client may still be sending.

The hub never waits for a subscriber: it queues, and evicts one that does not keep
up. This relay sends what is queued and evicts its subscriber itself when one send
blocks for ``hub.subscriber_stall_s``, or when the subscriber leaves a ping of its
own unanswered that long (a client that stops reading its socket: the kernel buffers
may hold megabytes of events before a send blocks). Both come before the WebSocket
keepalive would close it with 1011. On eviction it closes with 1013 and names the
last event it sent, so the client can resume with ``after=``; at shutdown it sends
what is left, then closes with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamser.serve.hub import Hub, Subscription, is_notice

_LOGGER = logging.getLogger(__name__)

_CLOSE_GOING_AWAY = 1001
_CLOSE_TRY_LATER = 1013
_EVICTED_CLOSE_TIMEOUT_S = 60.0


async def relay_events(
    connection: ServerConnection,
    hub: Hub,
    sub: Subscription,
    streams_done: asyncio.Event,
    client: str,
    after: int | str | None = None,
) -> None:
    """Send ``sub``'s events until the client leaves, is evicted or the server stops.

    Args:
        connection: the subscriber's WebSocket.
        hub: the hub that evicts it.
        sub: its hub subscription (the caller subscribes and unsubscribes).
        streams_done: set during shutdown once every stream has ended.
        client: the client's address, for logs.
        after: the ``after=`` the client asked for (what it has already seen).
    """
    last_id = sub.resume_from
    evicted = asyncio.ensure_future(sub.evicted.wait())
    closed = asyncio.ensure_future(connection.wait_closed())
    done = asyncio.ensure_future(streams_done.wait())
    stops = {evicted, closed, done}
    watch = asyncio.ensure_future(
        _evict_when_deaf(connection, hub, sub, hub.options.subscriber_stall_s)
    )
    stops.add(watch)
    try:
        while not sub.evicted.is_set():
            getter = asyncio.ensure_future(sub.queue.get())
            await asyncio.wait({getter, *stops}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()  # Queue.get loses no item when cancelled
                break
            envelope = getter.result()
            # send() writes the frame before its first await, so once the task
            # has started, the event is on its way even if we stop waiting.
            started = asyncio.Event()
            sender = asyncio.ensure_future(
                _send_started(connection, envelope.to_json(), started)
            )
            sub.sending_since = time.monotonic()
            await asyncio.wait(
                {sender, evicted, closed},
                timeout=hub.options.subscriber_stall_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            sub.sending_since = None
            if started.is_set() and not is_notice(envelope):
                last_id = hub.cursor(envelope)
            if not sender.done():
                if not evicted.done() and not closed.done():
                    hub.evict(sub)  # its send is stuck: it does not read
                sender.cancel()
                break
            sender.result()
        if sub.evicted.is_set():
            _LOGGER.warning(
                "Subscriber from %s evicted after event %s", client, last_id
            )
            # The close frame waits behind what the subscriber has not read yet:
            # give it time to read on and learn where to resume, without the
            # keepalive failing the connection (1011) meanwhile.
            connection.close_timeout = _EVICTED_CLOSE_TIMEOUT_S
            if connection.keepalive_task is not None:
                connection.keepalive_task.cancel()
            await connection.close(
                _CLOSE_TRY_LATER, f"fell behind; resume with after={last_id}"
            )
        elif streams_done.is_set():
            while not sub.queue.empty():
                await connection.send(sub.queue.get_nowait().to_json())
            await connection.close(_CLOSE_GOING_AWAY, "server shutting down")
    except ConnectionClosed:
        pass
    finally:
        for waiter in stops:
            waiter.cancel()


async def _evict_when_deaf(
    connection: ServerConnection, hub: Hub, sub: Subscription, stall_s: float
) -> None:
    """Ping every ``stall_s / 2``; evict ``sub`` when a pong takes ``stall_s``."""
    while True:
        await asyncio.sleep(stall_s / 2)
        try:
            async with asyncio.timeout(stall_s):
                pong = await connection.ping()
                await pong
        except TimeoutError:
            if not sub.evicted.is_set():
                _LOGGER.info("A subscriber left a ping unanswered for %.0f s", stall_s)
                hub.evict(sub)
            return
        except ConnectionClosed:
            return


async def _send_started(
    connection: ServerConnection, text: str, started: asyncio.Event
) -> None:
    started.set()
    await connection.send(text)


async def close_reading(connection: ServerConnection, code: int, reason: str) -> None:
    """Close, reading (and dropping) what the client still sends meanwhile.

    A client may still be sending audio when the stream ends (a limit, shutdown);
    unread messages would pause reading and stall the closing handshake until the
    close timeout.
    """

    async def discard() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in connection:
                pass

    reader = asyncio.create_task(discard())
    try:
        with contextlib.suppress(ConnectionClosed):
            await connection.close(code, reason)
    finally:
        reader.cancel()
