"""The HTTP side of the server: tokens, TLS, plain responses and query checks.

Everything here runs in the WebSocket opening handshake (``process_request``), before
a connection is accepted, so a refused client never reaches the pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import http
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Final, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamser.errors import ConfigError
from streamser.events import EVENT_TYPES

_LOGGER = logging.getLogger(__name__)

_DASHBOARD_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
_STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(html|js|css|svg)")
_DASHBOARD_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

RETRY_AFTER_S = 5
"""What ``Retry-After`` tells a client refused for load or shutdown."""
REFUSAL_WARNING_INTERVAL_S: Final = 60.0
"""At most one WARNING per client address this often for refused tokens."""
_MAX_REQUEST_LINE_BYTES: Final = 8192
"""websockets' own limit on an HTTP line."""
OPEN_TIMEOUT_S: Final = 10.0
"""How long a connection may take to send its request line (websockets' own
``open_timeout`` then applies to a WebSocket handshake)."""
METHOD_NOT_ALLOWED: Final = "method not allowed: use GET\n"
"""The body of a 405 to a method other than GET on a GET-only path."""


@dataclass(frozen=True)
class ServerOptions:
    """Network, security and limit settings.

    Attributes:
        host: address to bind; loopback unless told otherwise.
        port: TCP port.
        token_file: file of bearer tokens, one per line ("" for no authentication).
        tls_cert: PEM certificate file, to serve wss:// ("" for plain ws://).
        tls_key: PEM private key file for ``tls_cert``.
        max_streams: audio streams open at once, server-wide (started streams:
            a connection that has not sent ``start`` takes no slot).
        max_streams_per_client: audio streams open at once from one address.
        start_timeout_s: how long a ``/v1/stream`` connection may take to send
            ``start`` before it is closed (1008).
        max_pending_per_client: connections from one address that may wait to
            send ``start``; another one closes the oldest of them (1008).
        allow_anonymous: serve beyond loopback without ``token_file`` (otherwise
            that is refused at startup).
        max_message_bytes: largest binary audio message accepted.
        max_stream_s: longest stream, in seconds of audio.
        drain_timeout_s: on shutdown, how long in-flight utterances may take.
        max_client_queue_events: events a stream's own client may fall behind
            before its connection is dropped (it sends but does not read).
        max_upload_bytes: largest file ``POST /v1/calls`` takes (413 beyond it).
        max_uploads: files recognised at once through ``POST /v1/calls``; another
            one gets 503 with ``Retry-After``.
        keepalive_s: how often the server pings a WebSocket connection, and how
            long it waits for the pong before closing it (1011). Paused while
            backpressure leaves a stream's socket unread.
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
    max_client_queue_events: int = 10000
    start_timeout_s: float = 5.0
    max_pending_per_client: int = 8
    allow_anonymous: bool = False
    max_upload_bytes: int = 200 << 20
    max_uploads: int = 2
    keepalive_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port {self.port} is not a TCP port")
        if (
            min(
                self.max_streams,
                self.max_streams_per_client,
                self.max_message_bytes,
                self.max_client_queue_events,
                self.max_pending_per_client,
                self.max_upload_bytes,
                self.max_uploads,
            )
            < 1
        ):
            raise ConfigError("server limits must be >= 1")
        if (
            min(
                self.max_stream_s,
                self.drain_timeout_s,
                self.start_timeout_s,
                self.keepalive_s,
            )
            <= 0
        ):
            raise ConfigError(
                "server.max_stream_s, drain_timeout_s, start_timeout_s and "
                "keepalive_s must be > 0"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key go together")


def read_tokens(path: str) -> tuple[bytes, ...]:
    """Bearer tokens from a file, one per line; blank lines and # comments skipped.

    Raises:
        ConfigError: unreadable file, or no token in it.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise ConfigError(f"cannot read token file {path}: {reason}") from err
    tokens = tuple(
        line.strip().encode()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not tokens:
        raise ConfigError(f"token file {path} holds no token")
    return tokens


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None without a certificate.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load TLS certificate/key: {err}") from err
    return context


def refuse_exposure(options: ServerOptions, tokens: tuple[bytes, ...]) -> None:
    """Refuse to serve beyond loopback without tokens unless ``allow_anonymous``.

    Raises:
        ConfigError: naming the address and the two ways out.
    """
    if is_loopback(options.host) or tokens or options.allow_anonymous:
        return
    where = options.host or "every address"
    raise ConfigError(
        f"refusing to listen on {where} without tokens: set server.token_file, or "
        "server.allow_anonymous = true to let anyone who can reach it connect"
    )


def check_security(options: ServerOptions) -> tuple[bytes, ...]:
    """What the server checks when it starts, done before the models load: the
    token file, the TLS certificate and key, and ``refuse_exposure``.

    Returns:
        The tokens.

    Raises:
        ConfigError: the first of those that fails.
    """
    tokens = read_tokens(options.token_file) if options.token_file else ()
    tls_context(options.tls_cert, options.tls_key)
    refuse_exposure(options, tokens)
    return tokens


def authorised(tokens: tuple[bytes, ...], request: Request) -> bool:
    """Whether ``request`` carries one of ``tokens`` (always true without tokens).

    The token comes from ``Authorization: Bearer`` or, for browsers, ``?token=``.
    Every configured token is compared in constant time, so timing reveals neither
    the token nor which one matched. A request with several ``Authorization``
    headers is refused: which one counts would be ambiguous.
    """
    if not tokens:
        return True
    values = request.headers.get_all("Authorization")
    if len(values) > 1:
        return False
    header = values[0] if values else ""
    if header[:7].lower() == "bearer ":
        offered = header[7:].strip().encode()
    else:
        query = parse_qs(urlsplit(request.path).query)
        offered = (query.get("token") or [""])[0].encode()
    matches = [hmac.compare_digest(offered, token) for token in tokens]
    return any(matches) and bool(offered)


def unauthorised(connection: ServerConnection) -> Response:
    """401 with a Bearer challenge."""
    response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "unauthorized\n")
    response.headers["WWW-Authenticate"] = 'Bearer realm="streamser"'
    return response


def try_later(connection: ServerConnection, text: str) -> Response:
    """503 with ``Retry-After`` (stream limits, shutdown)."""
    response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, text)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def metrics_response(body: bytes) -> Response:
    """The Prometheus text exposition as an HTTP response."""
    headers = Headers(
        [
            ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
    )
    return Response(200, "OK", headers, body)


def is_dashboard(path: str) -> bool:
    """Whether ``path`` (without query) belongs to the dashboard: ``/`` or
    ``/static/<file>``."""
    return path == "/" or path.startswith("/static/")


@functools.cache
def _dashboard_file(name: str) -> tuple[bytes, str, str] | None:
    """A file of ``streamser/web/``: body, Content-Type and ETag; None if absent.

    Cached: the files ship in the package and do not change while it runs.
    """
    match = _STATIC_NAME.fullmatch(name)
    if match is None:
        return None
    resource = resources.files("streamser").joinpath("web", name)
    try:
        body = resource.read_bytes()
    except OSError:
        return None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return body, _DASHBOARD_TYPES[match.group(1)], etag


def dashboard_response(
    connection: ServerConnection, request: Request, path: str
) -> Response:
    """The dashboard's page (``/``) or one of its files (``/static/<file>``).

    Every load revalidates (``no-cache`` with an ETag, so an upgraded server is
    never hidden behind a stale copy); ``no-referrer`` because the page's own URL
    may carry ``?token=``.
    """
    name = "index.html" if path == "/" else path.removeprefix("/static/")
    found = _dashboard_file(name)
    if found is None:
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    body, content_type, etag = found
    if etag in request.headers.get_all("If-None-Match"):
        status, body = http.HTTPStatus.NOT_MODIFIED, b""
    else:
        status = http.HTTPStatus.OK
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("ETag", etag),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", _DASHBOARD_POLICY),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


MAX_EVENT_ID: Final = 2**63 - 1
"""The largest ``after=`` the memory hub takes (a signed 64-bit integer)."""


def subscription_error(path: str) -> str:
    """Why a /v1/events query is invalid, or ""."""
    query = parse_qs(urlsplit(path).query)
    if len(query.get("after", [])) > 1:
        return "after may be given once"
    for value in query.get("after", []):
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            return "after must be a non-negative integer event id"
        if int(value) > MAX_EVENT_ID:
            return f"after must be at most {MAX_EVENT_ID}"
    unknown = {
        t for value in query.get("types", []) for t in value.split(",") if t
    } - set(EVENT_TYPES)
    if unknown:
        return f"unknown event types: {', '.join(sorted(unknown))}"
    return ""


def address(connection: ServerConnection) -> str:
    """The client's IP address, for logs and per-client limits."""
    remote = connection.remote_address
    return str(remote[0]) if remote else "unknown"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or "" for every address


class RefusalLog:
    """Rate-limits the log lines of refused tokens, per client address.

    A client retrying with a wrong token would otherwise write a WARNING per try:
    the first refusal per address in ``interval_s`` is a WARNING that counts the
    refusals logged at DEBUG since the previous one; the rest are DEBUG. (The
    metric counts every refusal.) At most ``max_addresses`` addresses are
    remembered. Not thread-safe: use it from the event loop.
    """

    def __init__(
        self,
        interval_s: float = REFUSAL_WARNING_INTERVAL_S,
        max_addresses: int = 4096,
    ) -> None:
        """Start with no address seen."""
        self.interval_s = interval_s
        self.max_addresses = max_addresses
        self._warned: dict[str, tuple[float, int]] = {}

    def refused(self, address: str, now: float) -> int | None:
        """Note a refusal from ``address`` at ``now`` (``time.monotonic()``).

        Returns:
            None to log it at DEBUG; else log it at WARNING, with this number of
            refusals from the address logged at DEBUG since its last WARNING.
        """
        warned_at, suppressed = self._warned.get(address, (None, 0))
        if warned_at is not None and now - warned_at < self.interval_s:
            self._warned[address] = (warned_at, suppressed + 1)
            return None
        self._warned.pop(address, None)
        if len(self._warned) >= self.max_addresses:
            self._forget(now)
        self._warned[address] = (now, 0)
        return suppressed

    def _forget(self, now: float) -> None:
        """Drop the addresses past their interval; then the oldest, if still full."""
        for key, (warned_at, _) in list(self._warned.items()):
            if now - warned_at >= self.interval_s:
                del self._warned[key]
        while len(self._warned) >= self.max_addresses:
            del self._warned[next(iter(self._warned))]


class HttpConnection(ServerConnection):
    """A ``ServerConnection`` that hands every HTTP method but GET to another server.

    websockets reads GET requests only: it closes the connection without a word on
    some others (a POST with a body) and hands the rest to ``process_request`` as
    if they were GET. This one holds the connection until its request line is in:
    a GET goes on to websockets; any other method goes, with the bytes read so far,
    to the protocol ``http_protocol`` makes (aiohttp's, for ``POST /v1/calls``).
    Without ``http_protocol`` those are closed. A client that
    sends no request line within ``OPEN_TIMEOUT_S`` is dropped.
    """

    http_protocol: ClassVar[Callable[[], asyncio.Protocol] | None] = None
    """Makes the protocol that serves a request other than GET (set by a subclass)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ``ServerConnection``."""
        super().__init__(*args, **kwargs)
        self._head = b""
        self._head_checked = False
        self._held: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Hold the connection until its request line says who serves it."""
        self._held = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(
            OPEN_TIMEOUT_S, self._held.abort
        )

    def data_received(self, data: bytes) -> None:
        """Hold the bytes until the request line is complete, then dispatch."""
        if self._head_checked:
            super().data_received(data)
            return
        self._head += data
        line, complete, _ = self._head.partition(b"\n")
        if not complete and len(self._head) < _MAX_REQUEST_LINE_BYTES:
            return
        head, self._head = self._head, b""
        method = line.split(b" ", 1)[0]
        if complete and method != b"GET":
            self._dispatch(head, method)
            return
        self._to_websockets(head)

    def eof_received(self) -> None:
        """Pass on what is held, then the end of the stream."""
        if not self._head_checked:
            self._to_websockets(self._head)
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget a connection that closed before its request line."""
        if self._head_checked:
            super().connection_lost(exc)
        elif self._timer is not None:
            self._timer.cancel()

    def _to_websockets(self, head: bytes) -> None:
        assert self._held is not None
        self._checked()
        super().connection_made(self._held)
        if head:
            super().data_received(head)

    def _checked(self) -> None:
        self._head_checked = True
        if self._timer is not None:
            self._timer.cancel()

    def _dispatch(self, head: bytes, method: bytes) -> None:
        transport = self._held
        assert transport is not None
        self._checked()
        make = type(self).http_protocol
        if make is None:
            _LOGGER.debug(
                "Closed an HTTP %s: no server for it",
                method[:16].decode("ascii", "replace"),
            )
            transport.close()
            return
        protocol = make()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(head)
