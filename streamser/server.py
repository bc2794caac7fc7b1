"""The WebSocket daemon: /v1/stream, /v1/events, /healthz and /metrics on one port.

Routing, authentication and limits happen in the HTTP handshake
(``process_request``); each accepted connection then only moves data between its
socket and the pipeline (``pipeline.StreamSession``) or the event hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .errors import ConfigError, ProtocolError
from .events import EVENT_TYPES, Envelope, ErrorEvent
from .hub import EventHub
from .messages import parse_control, parse_start
from .pipeline import Engine, StreamSession

_LOGGER = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_CLOSE_NORMAL = 1000
_CLOSE_GOING_AWAY = 1001
_CLOSE_UNSUPPORTED = 1003
_CLOSE_POLICY = 1008
_CLOSE_TRY_LATER = 1013


@dataclass(frozen=True)
class ServerOptions:
    """Network, security and limit settings.

    Attributes:
        host: address to bind; loopback unless told otherwise.
        port: TCP port.
        token_file: file of bearer tokens, one per line ("" for no authentication).
        tls_cert: PEM certificate file, to serve wss:// ("" for plain ws://).
        tls_key: PEM private key file for ``tls_cert``.
        max_streams: audio streams open at once, server-wide.
        max_streams_per_client: audio streams open at once from one address.
        max_message_bytes: largest binary audio message accepted.
        max_stream_s: longest stream, in seconds of audio.
        drain_timeout_s: on shutdown, how long in-flight utterances may take.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    max_streams: int = 64
    max_streams_per_client: int = 16
    max_message_bytes: int = 1 << 20
    max_stream_s: float = 4 * 3600.0
    drain_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port {self.port} is not a TCP port")
        if (
            min(self.max_streams, self.max_streams_per_client, self.max_message_bytes)
            < 1
        ):
            raise ConfigError("server limits must be >= 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key go together")


def read_tokens(path: str) -> tuple[bytes, ...]:
    """Bearer tokens from a file, one per line; blank lines and # comments skipped.

    Raises:
        ConfigError: unreadable file, or no token in it.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read token file {path}: {err.strerror}") from err
    tokens = tuple(
        line.strip().encode()
        for line in lines
        if line.strip() and not line.startswith("#")
    )
    if not tokens:
        raise ConfigError(f"token file {path} holds no token")
    return tokens


class StreamServer:
    """Serves the protocol over an ``Engine`` and an ``EventHub``."""

    def __init__(self, options: ServerOptions, engine: Engine, hub: EventHub) -> None:
        """Prepare (tokens and TLS are read here, so errors surface at startup)."""
        self.options = options
        self.engine = engine
        self.hub = hub
        self.tokens = read_tokens(options.token_file) if options.token_file else ()
        self.ssl_context: ssl.SSLContext | None = None
        if options.tls_cert:
            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                self.ssl_context.load_cert_chain(options.tls_cert, options.tls_key)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(f"cannot load TLS certificate/key: {err}") from err
        self.ready = False
        self.draining = False
        self._sessions: dict[str, StreamSession] = {}
        self._clients: dict[str, asyncio.Queue[Envelope | None]] = {}
        self._per_address: dict[str, int] = {}
        self._connections: set[ServerConnection] = set()
        self._server: WsServer | None = None
        engine.sinks.append(self._route)

    # -- event routing ----------------------------------------------------------------

    def _route(self, envelope: Envelope) -> None:
        self.hub.publish(envelope)
        queue = self._clients.get(envelope.stream_id)
        if queue is not None:
            queue.put_nowait(envelope)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start accepting connections."""
        if (
            self.options.host not in ("127.0.0.1", "::1", "localhost")
            and not self.tokens
        ):
            _LOGGER.warning(
                "Listening on %s without tokens: anyone who can reach it may connect",
                self.options.host,
            )
        self._server = await serve(
            self._handle,
            self.options.host,
            self.options.port,
            process_request=self._process_request,
            ssl=self.ssl_context,
            max_size=max(4 * self.options.max_message_bytes, 1 << 16),
            compression=None,
        )
        self.ready = True
        scheme = "wss" if self.ssl_context else "ws"
        _LOGGER.info("Listening on %s://%s:%d", scheme, self.options.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            return self.options.port
        return int(self._server.sockets[0].getsockname()[1])

    async def drain(self) -> None:
        """Stop taking streams, finish in-flight utterances, close with 1001."""
        self.draining = True
        _LOGGER.info("Draining %d stream(s)", len(self._sessions))
        sessions = list(self._sessions.values())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.close() for s in sessions), return_exceptions=True),
                self.options.drain_timeout_s,
            )
        for queue in self._clients.values():
            queue.put_nowait(None)
        await asyncio.sleep(0)
        if self._server is not None:
            self._server.close(close_connections=False)
            for connection in list(self._connections):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        connection.close(_CLOSE_GOING_AWAY, "server shutting down"), 5
                    )
            await self._server.wait_closed()

    # -- handshake --------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        if not self.tokens:
            return True
        offered = b""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered = header[len("Bearer ") :].strip().encode()
        else:
            query = parse_qs(urlsplit(request.path).query)
            offered = (query.get("token") or [""])[0].encode()
        # Compare against every token so timing does not reveal which one matched.
        matches = [hmac.compare_digest(offered, token) for token in self.tokens]
        return any(matches) and bool(offered)

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            healthy = self.ready and not self.draining
            status = (
                http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
            )
            return connection.respond(status, "ok\n" if healthy else "unavailable\n")
        if path not in ("/metrics", "/v1/stream", "/v1/events"):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if not self._authorised(request):
            response = connection.respond(
                http.HTTPStatus.UNAUTHORIZED, "unauthorized\n"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="streamser"'
            return response
        if path == "/metrics":
            body = self.engine.metrics.render()
            return Response(
                200,
                "OK",
                Headers(
                    [
                        ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                        ("Content-Length", str(len(body))),
                    ]
                ),
                body,
            )
        if path == "/v1/events":
            error = _subscription_error(request.path)
            if error:
                return connection.respond(http.HTTPStatus.BAD_REQUEST, error + "\n")
            return None
        if self.draining or len(self._sessions) >= self.options.max_streams:
            return _try_later(connection, "server at its stream limit\n")
        address = _address(connection)
        if self._per_address.get(address, 0) >= self.options.max_streams_per_client:
            return _try_later(connection, "too many streams from this client\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        self._connections.add(connection)
        try:
            assert connection.request is not None  # set once the handshake succeeded
            path = urlsplit(connection.request.path).path
            if path == "/v1/events":
                await self._serve_subscriber(connection)
            else:
                await self._serve_stream(connection)
        finally:
            self._connections.discard(connection)

    # -- /v1/events -------------------------------------------------------------------

    async def _serve_subscriber(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        types = [t for value in query.get("types", []) for t in value.split(",") if t]
        after = int(query["after"][0]) if "after" in query else None
        sub = self.hub.subscribe(query.get("stream_id", []), types, after)
        _LOGGER.info("Subscriber connected from %s", _address(connection))
        last_id = after or 0
        evicted = asyncio.ensure_future(sub.evicted.wait())
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            while True:
                getter = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getter, evicted, closed}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    break
                envelope = getter.result()
                await connection.send(envelope.to_json())
                last_id = envelope.id
                if sub.evicted.is_set():
                    break
            if sub.evicted.is_set():
                await connection.close(
                    _CLOSE_TRY_LATER, f"fell behind; resume with after={last_id}"
                )
        except ConnectionClosed:
            pass
        finally:
            evicted.cancel()
            closed.cancel()
            self.hub.unsubscribe(sub)
            _LOGGER.info("Subscriber from %s disconnected", _address(connection))

    # -- /v1/stream -------------------------------------------------------------------

    async def _serve_stream(self, connection: ServerConnection) -> None:
        address = _address(connection)
        connection_id = uuid.uuid4().hex[:12]
        try:
            first = await asyncio.wait_for(connection.recv(), _START_TIMEOUT_S)
        except (TimeoutError, ConnectionClosed):
            await connection.close(_CLOSE_POLICY, "no start message")
            return
        try:
            if isinstance(first, bytes):
                raise ProtocolError(
                    "unexpected_binary",
                    "the first message must be the text start message",
                    fatal=True,
                )
            start = parse_start(first)
            stream_id = start.stream_id or connection_id
            if stream_id in self._sessions:
                raise ProtocolError(
                    "stream_id_in_use",
                    f"stream {stream_id!r} is already open",
                    fatal=True,
                )
        except ProtocolError as err:
            await self._refuse(connection, connection_id, err)
            return
        queue: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._clients[stream_id] = queue
        session = StreamSession(self.engine, start, stream_id)
        self._sessions[stream_id] = session
        self._per_address[address] = self._per_address.get(address, 0) + 1
        sender = asyncio.create_task(self._send_events(connection, queue))
        _LOGGER.info("Stream %s opened from %s", stream_id, address)
        clean = False
        try:
            session.open()
            clean = await self._receive_audio(connection, session)
        finally:
            await session.close()
            self._sessions.pop(stream_id, None)
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
            queue.put_nowait(None)
            await sender
            self._clients.pop(stream_id, None)
            _LOGGER.info(
                "Stream %s closed (%s, %d utterances, %.1f s)",
                stream_id,
                "stop" if clean else "disconnect",
                session.utterances,
                session.audio_seconds,
            )
        with contextlib.suppress(ConnectionClosed):
            code = _CLOSE_GOING_AWAY if self.draining else _CLOSE_NORMAL
            await connection.close(code)

    async def _receive_audio(
        self, connection: ServerConnection, session: StreamSession
    ) -> bool:
        """Feed messages to ``session`` until stop (True) or disconnect (False)."""
        limit = self.options.max_message_bytes
        try:
            async for message in connection:
                if session.closed:
                    return True
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
                    if session.audio_seconds > self.options.max_stream_s:
                        session.error(
                            "stream_too_long",
                            f"stream exceeds {self.options.max_stream_s:.0f} s of audio",
                            fatal=True,
                        )
                        return True
                    continue
                try:
                    command = parse_control(message)
                except ProtocolError as err:
                    session.error(err.code, str(err), fatal=False)
                    continue
                if command == "flush":
                    session.flush()
                elif command == "stop":
                    return True
        except ConnectionClosed:
            return False
        return False

    async def _send_events(
        self, connection: ServerConnection, queue: asyncio.Queue[Envelope | None]
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

    async def _refuse(
        self, connection: ServerConnection, stream_id: str, err: ProtocolError
    ) -> None:
        """Send a fatal error event for a stream that never started, and close."""
        envelope = self.engine.emit(
            stream_id, ErrorEvent(code=err.code, message=str(err), fatal=True)
        )
        self.engine.sequencer.forget(stream_id)
        code = _CLOSE_UNSUPPORTED if err.code in _UNSUPPORTED else _CLOSE_POLICY
        with contextlib.suppress(ConnectionClosed):
            await connection.send(envelope.to_json())
            await connection.close(code, err.code)


_UNSUPPORTED = frozenset(
    {
        "unexpected_binary",
        "unsupported_encoding",
        "unsupported_sample_rate",
        "unsupported_channels",
    }
)


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return str(remote[0]) if remote else "unknown"


def _try_later(connection: ServerConnection, text: str) -> Response:
    response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, text)
    response.headers["Retry-After"] = "5"
    return response


def _subscription_error(path: str) -> str:
    """Why a /v1/events query is invalid, or ""."""
    query = parse_qs(urlsplit(path).query)
    for value in query.get("after", []):
        if not value.isdigit():
            return "after must be a non-negative integer event id"
    unknown = {
        t for value in query.get("types", []) for t in value.split(",") if t
    } - set(EVENT_TYPES)
    if unknown:
        return f"unknown event types: {', '.join(sorted(unknown))}"
    return ""
