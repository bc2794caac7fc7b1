"""One /v1/stream connection's data: its messages into the ``StreamSession`` (with
backpressure and limits), its events back to its client."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from streamser.errors import ProtocolError
from streamser.events import Envelope
from streamser.messages import parse_control
from streamser.pipeline import StreamSession


async def receive_audio(
    connection: ServerConnection,
    session: StreamSession,
    max_message_bytes: int,
    max_stream_s: float,
) -> str:
    """Feed a stream's messages to ``session`` until it ends.

    Audio beyond ``max_message_bytes`` in one message is refused with a non-fatal
    error; a stream past ``max_stream_s`` of audio ends with ``stream_too_long``.
    While the session is backlogged the socket is not read (backpressure).

    Returns:
        What ended it: "stop", "disconnect" or "stream_too_long".
    """
    limit = max_message_bytes
    try:
        async for message in connection:
            if isinstance(message, bytes):
                if len(message) > limit:
                    session.error(
                        "message_too_large",
                        f"audio message of {len(message)} bytes exceeds {limit}",
                        fatal=False,
                    )
                    continue
                try:
                    session.feed(message)
                except ProtocolError as err:
                    session.error(err.code, str(err), fatal=err.fatal)
                if session.backlogged:
                    await _hold(connection, session)
                if session.audio_seconds > max_stream_s:
                    session.error(
                        "stream_too_long",
                        f"stream exceeds {max_stream_s:g} s of audio",
                        fatal=True,
                    )
                    return "stream_too_long"
                continue
            try:
                command = parse_control(message)
            except ProtocolError as err:
                session.error(err.code, str(err), fatal=False)
                continue
            if command == "flush":
                session.flush()
            elif command == "summary":
                session.summarize()
            elif command == "stop":
                return "stop"
    except ConnectionClosed:
        pass
    return "disconnect"


async def _hold(connection: ServerConnection, session: StreamSession) -> None:
    """Backpressure: leave the socket unread until recognition catches up, so a fast
    sender slows down and loses nothing. The server's keepalive pings pause
    meanwhile: the client's pongs wait behind the audio not read, and the connection
    would otherwise fail with 1011 while the client is alive and waiting."""
    keepalive = connection.keepalive_task
    if keepalive is not None:
        keepalive.cancel()
        connection.keepalive_task = None
    try:
        await session.wait_for_room()
    finally:
        if keepalive is not None and connection.state is State.OPEN:
            connection.start_keepalive()


async def send_events(
    connection: ServerConnection, queue: asyncio.Queue[Envelope | None]
) -> None:
    """Relay a stream's events to its own client until the stream ends."""
    alive = True
    while (envelope := await queue.get()) is not None:
        if not alive:
            continue  # the client left; its events still reach hub and sinks
        try:
            await connection.send(envelope.to_json())
        except ConnectionClosed:
            alive = False
