"""The daemon: /v1/stream, /v1/events, /healthz, /metrics and POST /v1/calls on one
port.

Routing, authentication and limits happen in the HTTP handshake
(``process_request``, helpers in ``handshake.py``); each accepted connection then
only moves data between its socket and the pipeline (``pipeline.StreamSession``) or
the event hub. Requests other than GET go to aiohttp (``uploads.py``). ``drain`` is
the SIGTERM path: refuse new work, let every stream finish its utterances and deliver
their events, then close with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamser.errors import ProtocolError
from streamser.events import Envelope, ErrorEvent
from streamser.messages import StartMessage, parse_start
from streamser.pipeline import Engine, StreamSession
from streamser.serve import handshake
from streamser.serve.admission import CLOSE_POLICY, Admission
from streamser.serve.handshake import ServerOptions, read_tokens
from streamser.serve.hub import Hub, Subscription
from streamser.serve.relay import close_reading, relay_events
from streamser.serve.stream_io import receive_audio, send_events
from streamser.serve.uploads import CALLS_PATH, CallUploads

__all__ = ["ServerOptions", "StreamServer", "read_tokens"]

_LOGGER = logging.getLogger(__name__)

_CLOSE_NORMAL = 1000
_CLOSE_GOING_AWAY = 1001
_CLOSE_UNSUPPORTED = 1003
_CLOSE_TRY_LATER = 1013
_END_REASONS = {
    "stop": "stop",
    "drain": "shutdown",
    "stream_too_long": "stream_too_long",
}
"""``stream.end``'s ``reason`` for what ended the receiving; else "disconnect"."""


class StreamServer:
    """Serves the protocol over an ``Engine`` and a ``Hub`` (memory or Redis)."""

    def __init__(self, options: ServerOptions, engine: Engine, hub: Hub) -> None:
        """Prepare (tokens and TLS are read here, so errors surface at startup).

        Raises:
            ConfigError: unreadable token file, certificate or key.
        """
        self.options = options
        self.engine = engine
        self.hub = hub
        self.tokens = read_tokens(options.token_file) if options.token_file else ()
        self.ssl_context: ssl.SSLContext | None = handshake.tls_context(
            options.tls_cert, options.tls_key
        )
        self.ready = False
        self.draining = False
        self._drain_started = asyncio.Event()
        self._streams_done = asyncio.Event()
        self._sessions: dict[str, StreamSession] = {}
        self._clients: dict[str, asyncio.Queue[Envelope | None]] = {}
        self._client_connections: dict[str, ServerConnection] = {}
        self._admission = Admission(
            options, engine.metrics, lambda: len(self._sessions), self._drain_started
        )
        self._stream_handlers: set[asyncio.Task[None]] = set()
        self._subscriptions: set[Subscription] = set()
        self._connections: set[ServerConnection] = set()
        self._server: WsServer | None = None
        self._uploads = CallUploads(self)
        # Refused tokens are logged at most once a minute per address (a client
        # retrying with a wrong token must not flood the log).
        self._refusals = handshake.RefusalLog()
        # First, so clients see an event before any error a later sink (the JSONL
        # file) reports about it from inside the same emit.
        engine.add_sink(self._route, first=True)
        metrics = engine.metrics
        metrics.client_queue_depth.set_function(
            lambda: sum(q.qsize() for q in self._clients.values())
        )
        metrics.subscriber_queue_depth.set_function(
            lambda: max((s.queue.qsize() for s in self._subscriptions), default=0)
        )

    # -- event routing ----------------------------------------------------------------

    def _route(self, envelope: Envelope) -> None:
        self.hub.publish(envelope)
        queue = self._clients.get(envelope.stream_id)
        if queue is None:
            return
        queue.put_nowait(envelope)
        if queue.qsize() == self.options.max_client_queue_events:
            # The client sends audio but does not read its events: drop the
            # connection (its buffers are full, a close frame would not get
            # through). The stream ends as on a disconnect; its events still reach
            # subscribers and sinks.
            connection = self._client_connections.get(envelope.stream_id)
            if connection is not None:
                _LOGGER.warning(
                    "Dropping stream %s: its client is %d events behind",
                    envelope.stream_id,
                    queue.qsize(),
                )
                self.engine.metrics.dropped_clients.inc()
                connection.transport.abort()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start accepting connections.

        Raises:
            ConfigError: the address is beyond loopback, there are no tokens and
                ``allow_anonymous`` is off.
            OSError: the port cannot be bound (in use, no permission).
        """
        handshake.refuse_exposure(self.options, self.tokens)
        if not handshake.is_loopback(self.options.host) and not self.tokens:
            where = self.options.host or "every address"
            _LOGGER.warning(
                "Listening on %s without tokens (allow_anonymous): anyone who can "
                "reach it may connect",
                where,
            )
        # Requests other than GET (POST /v1/calls) go to aiohttp, on this port.
        calls = await self._uploads.start()

        class Connection(handshake.HttpConnection):
            http_protocol = calls

        self._server = await serve(
            self._handle,
            self.options.host or None,
            self.options.port,
            create_connection=Connection,
            process_request=self._process_request,
            ssl=self.ssl_context,
            max_size=max(4 * self.options.max_message_bytes, 1 << 16),
            compression=None,
            ping_interval=self.options.keepalive_s,
            ping_timeout=self.options.keepalive_s,
        )
        self.ready = True
        scheme = "wss" if self.ssl_context else "ws"
        _LOGGER.info(
            "Listening on %s://%s:%d%s",
            scheme,
            self.options.host,
            self.port,
            f" ({len(self.tokens)} token(s))" if self.tokens else "",
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            return self.options.port
        return int(self._server.sockets[0].getsockname()[1])

    def reload(self, options: ServerOptions) -> None:
        """Apply new limits and re-read the token file (SIGHUP).

        The address, port and TLS files need a restart; a change to them is logged
        and ignored.

        Raises:
            ConfigError: the new token file cannot be read (nothing is changed).
        """
        fixed = ("host", "port", "tls_cert", "tls_key")
        changed = [n for n in fixed if getattr(options, n) != getattr(self.options, n)]
        if changed:
            _LOGGER.warning(
                "server.%s changed: takes effect after a restart", ", ".join(changed)
            )
        tokens = read_tokens(options.token_file) if options.token_file else ()
        keep = {n: getattr(self.options, n) for n in fixed}
        self.options = replace(options, **keep)
        self._admission.options = self.options
        self.tokens = tokens

    async def drain(self) -> None:
        """Stop taking streams, finish in-flight utterances, close with 1001.

        Every open stream ends as if its client had sent ``stop``: pending
        utterances are recognised and their events go to the client, the
        subscribers and the sinks before ``stream.end``. Bounded by
        ``drain_timeout_s``: after half of it, utterances still waiting are
        recognised without ASR (``skipped_shutdown``), so every one is delivered in
        time; what is still running at the deadline is cut off.
        """
        self.draining = True
        self.engine.metrics.draining.set(1)
        handlers = set(self._stream_handlers)
        _LOGGER.info(
            "Draining %d stream(s), %d subscriber(s)",
            len(handlers),
            len(self._subscriptions),
        )
        self._drain_started.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.drain_timeout_s
        self.engine.stop_asr_at(time.monotonic() + self.options.drain_timeout_s / 2)
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=self.options.drain_timeout_s)
            if late:
                _LOGGER.warning(
                    "%d stream(s) did not finish within %.0f s; cutting them off",
                    len(late),
                    self.options.drain_timeout_s,
                )
        self._streams_done.set()  # subscribers send what they hold, then close
        if self._server is not None:
            self._server.close(close_connections=False)
            remaining = max(1.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), remaining)
            if self._connections:
                # Clients that stopped reading: their buffers are full, so a close
                # frame would not get through either; drop them.
                _LOGGER.warning(
                    "Dropping %d connection(s) still open after the drain deadline",
                    len(self._connections),
                )
                for connection in list(self._connections):
                    connection.transport.abort()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._server.wait_closed(), 5)
        await self._uploads.close()

    # -- shared with POST /v1/calls ------------------------------------------------------

    def authorise(self, request: Request, path: str, client: str) -> bool:
        """Whether ``request`` carries a token; a refusal is counted and logged (a
        WARNING at most once a minute per address, the rest at DEBUG)."""
        if handshake.authorised(self.tokens, request):
            return True
        self.engine.metrics.refused.labels("unauthorized").inc()
        suppressed = self._refusals.refused(client, time.monotonic())
        if suppressed is None:
            _LOGGER.debug("Refused %s from %s: missing or wrong token", path, client)
        else:
            _LOGGER.warning(
                "Refused %s from %s: missing or wrong token%s",
                path,
                client,
                f" ({suppressed} more since the last warning, logged at DEBUG)"
                if suppressed
                else "",
            )
        return False

    @property
    def drain_started(self) -> asyncio.Event:
        """Set when ``drain`` begins: streams stop taking audio."""
        return self._drain_started

    @contextlib.contextmanager
    def serving(self, stream_id: str) -> Iterator[asyncio.Queue[Envelope | None]]:
        """Route ``stream_id``'s events to the queue it yields, and make ``drain``
        wait for the current task, while the block runs."""
        task = asyncio.current_task()
        assert task is not None
        queue: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._clients[stream_id] = queue
        self._stream_handlers.add(task)
        try:
            yield queue
        finally:
            self._stream_handlers.discard(task)
            self._clients.pop(stream_id, None)

    # -- handshake --------------------------------------------------------------------

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
        if handshake.is_dashboard(path):
            # Public like /healthz: the page holds no data, and must load to say
            # that a token is missing; its /v1/events socket carries the token.
            return handshake.dashboard_response(connection, request, path)
        if path == CALLS_PATH:
            response = connection.respond(
                http.HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed: use POST\n"
            )
            response.headers["Allow"] = "POST"
            return response
        if path not in ("/metrics", "/v1/stream", "/v1/events"):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if not self.authorise(request, path, handshake.address(connection)):
            return handshake.unauthorised(connection)
        if path == "/metrics":
            return handshake.metrics_response(self.engine.metrics.render())
        if self.draining:
            self.engine.metrics.refused.labels("draining").inc()
            return handshake.try_later(connection, "server shutting down\n")
        if path == "/v1/events":
            error = self.hub.query_error(request.path)
            if error:
                return connection.respond(http.HTTPStatus.BAD_REQUEST, error + "\n")
            return None
        return self._admission.refusal(connection)

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set once the handshake succeeded
        path = urlsplit(connection.request.path).path
        gauge = self.engine.metrics.connections.labels(path)
        gauge.inc()
        self._connections.add(connection)
        try:
            if path == "/v1/events":
                await self._serve_subscriber(connection)
                return
            await self._serve_stream(connection)
        finally:
            self._connections.discard(connection)
            gauge.dec()

    # -- /v1/events -------------------------------------------------------------------

    async def _serve_subscriber(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        types = [t for value in query.get("types", []) for t in value.split(",") if t]
        after = query["after"][0] if "after" in query else None
        sub = self.hub.subscribe(query.get("stream_id", []), types, after)
        self._subscriptions.add(sub)
        client = handshake.address(connection)
        _LOGGER.info("Subscriber connected from %s", client)
        try:
            await relay_events(
                connection, self.hub, sub, self._streams_done, client, after
            )
        finally:
            self._subscriptions.discard(sub)
            self.hub.unsubscribe(sub)
            _LOGGER.info("Subscriber from %s disconnected", client)

    # -- /v1/stream -------------------------------------------------------------------

    async def _serve_stream(self, connection: ServerConnection) -> None:
        client = handshake.address(connection)
        connection_id = uuid.uuid4().hex[:12]
        first = await self._admission.wait_for_start(connection, client)
        if first is None:
            code = _CLOSE_GOING_AWAY if self.draining else CLOSE_POLICY
            with contextlib.suppress(ConnectionClosed):
                await connection.close(code, "no start message")
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
            self._admission.check_slots(client)
        except ProtocolError as err:
            await self._refuse(connection, connection_id, err)
            return
        task = asyncio.current_task()
        assert task is not None
        self._stream_handlers.add(task)
        self._admission.opened(client)
        try:
            await self._serve_session(connection, client, start, stream_id)
        finally:
            self._stream_handlers.discard(task)
            self._admission.closed(client)

    async def _serve_session(
        self,
        connection: ServerConnection,
        client: str,
        start: StartMessage,
        stream_id: str,
    ) -> None:
        queue: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._clients[stream_id] = queue
        self._client_connections[stream_id] = connection
        session = StreamSession(self.engine, start, stream_id)
        self._sessions[stream_id] = session
        sender = asyncio.create_task(send_events(connection, queue))
        _LOGGER.info("Stream %s opened from %s", stream_id, client)
        outcome = "disconnect"
        try:
            session.open()
            outcome = await self._receive_until_drain(connection, session)
        finally:
            await session.close(_END_REASONS.get(outcome, "disconnect"))
            self._sessions.pop(stream_id, None)
            queue.put_nowait(None)
            await sender
            self._clients.pop(stream_id, None)
            self._client_connections.pop(stream_id, None)
            _LOGGER.info(
                "Stream %s closed (%s, %d utterances, %.1f s)",
                stream_id,
                outcome,
                session.utterances,
                session.audio_seconds,
            )
        code, reason = {
            "stop": (_CLOSE_NORMAL, ""),
            "drain": (_CLOSE_GOING_AWAY, "server shutting down"),
            "stream_too_long": (_CLOSE_NORMAL, "stream_too_long"),
        }.get(outcome, (_CLOSE_NORMAL, ""))
        await close_reading(connection, code, reason)

    async def _receive_until_drain(
        self, connection: ServerConnection, session: StreamSession
    ) -> str:
        """Receive until stop, disconnect or shutdown; returns which ended it."""
        receiver = asyncio.create_task(
            receive_audio(
                connection,
                session,
                self.options.max_message_bytes,
                self.options.max_stream_s,
            )
        )
        drain = asyncio.ensure_future(self._drain_started.wait())
        try:
            await asyncio.wait({receiver, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
            receiver.cancel()  # a no-op once it has ended
            with contextlib.suppress(asyncio.CancelledError):
                outcome = await receiver
        return "drain" if receiver.cancelled() else outcome

    async def _refuse(
        self, connection: ServerConnection, stream_id: str, err: ProtocolError
    ) -> None:
        """Send a fatal error event for a stream that never started, and close."""
        envelope = self.engine.emit(
            stream_id, ErrorEvent(code=err.code, message=str(err), fatal=True)
        )
        self.engine.sequencer.forget(stream_id)
        code = _CLOSE_UNSUPPORTED if err.code in _UNSUPPORTED else CLOSE_POLICY
        if err.code == "server_busy":
            code = _CLOSE_TRY_LATER
        with contextlib.suppress(ConnectionClosed):
            await connection.send(envelope.to_json())
        await close_reading(connection, code, err.code)


_UNSUPPORTED = frozenset(
    {"unexpected_binary", "unsupported_encoding", "unsupported_sample_rate"}
    | {"unsupported_channels"}
)
