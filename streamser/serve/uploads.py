"""``POST /v1/calls``: a whole audio file in one HTTP request, its events back.

Every request other than GET reaches this aiohttp application on the stream's own
port (``handshake.HttpConnection`` hands the connection over). The upload is spooled
to a temporary file a block at a time, never held in memory, and refused with 413
past ``max_upload_bytes`` (at once when ``Content-Length`` says so). The file is then
opened as ``streamser run`` opens one (``audio.sources.file_source``; 415 when it is
not audio) and recognised as a stream of the server's own engine that is not live:
it waits for recognition between chunks (backpressure) and its utterances never
take the place of a live stream's. ``max_uploads`` run at once; another gets 503
with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Final, Protocol

from aiohttp import BodyPartReader, MultipartReader, web
from websockets.datastructures import Headers
from websockets.http11 import Request

from streamser.analytics.report import CallRecorder, render_html
from streamser.analytics.rules import parse_channel_names
from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.sources import FileSource, drive, file_source
from streamser.errors import AudioSourceError, ProtocolError
from streamser.events import CallSummary, Envelope
from streamser.messages import CHANNEL_MODES, local_start_message, parse_start
from streamser.pipeline import Engine, StreamSession
from streamser.serve import handshake
from streamser.serve.handshake import ServerOptions

__all__ = ["CALLS_PATH", "CallServer", "CallUploads"]

_LOGGER = logging.getLogger(__name__)

CALLS_PATH: Final = "/v1/calls"
NDJSON: Final = "application/x-ndjson"
FORMATS: Final = ("json", "ndjson", "html")
"""``?format=``: one JSON object at the end, a line per event as it comes, or the
HTML call report."""
_CHUNK_BYTES: Final = 1 << 16
_MAX_FIELD_BYTES: Final = 4096
"""Longest form field other than the file."""
_OPTION_NAMES: Final = ("channels", "channel_names", "language", "format", "asr")
_SWITCH: Final = {
    "true": True,
    "on": True,
    "1": True,
    "false": False,
    "off": False,
    "0": False,
}
"""``asr=``'s values."""


class CallServer(Protocol):
    """What uploads need of the server (``server.StreamServer``)."""

    options: ServerOptions
    engine: Engine
    draining: bool

    @property
    def drain_started(self) -> asyncio.Event:
        """Set when the drain begins."""
        ...

    def authorise(self, request: Request, path: str, client: str) -> bool:
        """Whether ``request`` carries a token (a refusal is counted and logged)."""
        ...

    def serving(
        self, stream_id: str
    ) -> contextlib.AbstractContextManager[asyncio.Queue[Envelope | None]]:
        """Route ``stream_id``'s events to a queue while the drain waits for us."""
        ...


class _Refused(Exception):
    """An upload refused with ``status`` and ``text``."""

    def __init__(self, status: int, text: str, reason: str) -> None:
        super().__init__(text)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class CallOptions:
    """What an upload asks for (query parameters or form fields).

    Attributes:
        channel_mode: "downmix" or "separate" (``channels``).
        channel_names: names of the channels kept apart (``channel_names``,
            comma-separated).
        language: ISO 639-1 code, or None to detect it.
        format: one of ``FORMATS``.
        asr: transcribe (when the server has ASR); False for the voice only.
        file_name: the uploaded file's name, when the form gives one.
    """

    channel_mode: str = "downmix"
    channel_names: tuple[str, ...] = ()
    language: str | None = None
    format: str = "json"
    asr: bool = True
    file_name: str = ""

    @classmethod
    def parse(cls, values: Mapping[str, str], accept: str) -> CallOptions:
        """Read and check the options; ``Accept: application/x-ndjson`` asks for
        ndjson.

        Raises:
            ProtocolError: an option is invalid (the message says which).
        """
        try:
            names = parse_channel_names(values.get("channel_names", ""))
        except ValueError as err:
            raise ProtocolError("invalid_metadata", str(err), fatal=True) from err
        mode = values.get("channels") or ("separate" if names else "downmix")
        if mode not in CHANNEL_MODES:
            raise ProtocolError(
                "invalid_channels",
                f"channels must be one of {', '.join(CHANNEL_MODES)}, not {mode!r:.40}",
                fatal=True,
            )
        fmt = values.get("format") or ("ndjson" if NDJSON in accept else "json")
        if fmt not in FORMATS:
            raise ProtocolError(
                "invalid_format",
                f"format must be one of {', '.join(FORMATS)}, not {fmt!r:.40}",
                fatal=True,
            )
        asr = _SWITCH.get((values.get("asr") or "true").lower())
        if asr is None:
            raise ProtocolError(
                "invalid_asr", "asr must be true or false (on/off, 1/0)", fatal=True
            )
        language = values.get("language") or None
        # The start message's own check of the language code.
        parse_start(json.dumps({"type": "start", "language": language}))
        return cls(mode, names, language, fmt, asr)


class CallUploads:
    """The aiohttp application serving ``POST /v1/calls`` for a ``StreamServer``."""

    def __init__(self, server: CallServer) -> None:
        """Serve uploads through ``server``'s engine, tokens and limits."""
        self._server = server
        self._active = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> Callable[[], web.RequestHandler]:
        """Set the application up; returns what makes a protocol per connection."""
        app = web.Application()
        app.router.add_post(CALLS_PATH, self._post, expect_handler=self._expect)
        app.router.add_route("*", "/{tail:.*}", _not_allowed)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        assert self._runner.server is not None
        return self._runner.server

    async def close(self) -> None:
        """Close the connections still open (uploads have ended by then)."""
        if self._runner is not None:
            await self._runner.cleanup()

    # -- refusals -----------------------------------------------------------------

    def _refusal(self, request: web.Request) -> web.Response | None:
        """401, 503 or 413 before the body is read; None to go on."""
        server = self._server
        client = request.remote or "unknown"
        head = Request(request.path_qs, Headers(list(request.headers.items())))
        if not server.authorise(head, CALLS_PATH, client):
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": 'Bearer realm="streamser"'},
            )
        metrics = server.engine.metrics
        if server.draining:
            metrics.refused.labels("draining").inc()
            return _try_later("server shutting down\n")
        if self._active >= server.options.max_uploads:
            metrics.refused.labels("max_uploads").inc()
            _LOGGER.info("Refused an upload from %s: %d running", client, self._active)
            return _try_later(f"{self._active} uploads are running, the most at once\n")
        limit = server.options.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            metrics.refused.labels("max_upload_bytes").inc()
            return _too_large(limit)
        return None

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse before the client sends the body."""
        refusal = self._refusal(request)
        if refusal is not None:
            refusal.force_close()
            return refusal
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.Response(status=417, text="expect only 100-continue\n")
        if request.version >= (1, 1):  # as aiohttp's own handler does
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    # -- the upload ---------------------------------------------------------------

    async def _post(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            refusal.force_close()
            return refusal
        gauge = self._server.engine.metrics.connections.labels(CALLS_PATH)
        self._active += 1
        gauge.inc()
        try:
            with tempfile.NamedTemporaryFile(prefix="streamser-call-") as spooled:
                options = await self._receive(request, spooled)
                spooled.flush()
                return await self._recognise(request, Path(spooled.name), options)
        except _Refused as err:
            self._server.engine.metrics.refused.labels(err.reason).inc()
            _LOGGER.info("Refused an upload from %s: %s", request.remote, err)
            response = web.Response(status=err.status, text=f"{err}\n")
            response.force_close()
            return response
        except ConnectionError:
            _LOGGER.info("The client of an upload left before sending all of it")
            response = web.Response(status=400, text="incomplete upload\n")
            response.force_close()  # not sent: there is no one to read it
            return response
        finally:
            self._active -= 1
            gauge.dec()

    async def _receive(self, request: web.Request, spooled: IO[bytes]) -> CallOptions:
        """Spool the file into ``spooled``; the options from the query and form."""
        values = {k: v for k in _OPTION_NAMES if (v := request.query.get(k))}
        file_name = ""
        if request.content_type == "multipart/form-data":
            async for part in _parts(await request.multipart()):
                if part.filename is not None or part.name == "file":
                    if spooled.tell():
                        raise _Refused(400, "upload one file per request", "invalid")
                    file_name = os.path.basename(part.filename or "")
                    await self._spool(_part_chunks(part), spooled)
                elif part.name in _OPTION_NAMES:
                    values[part.name] = await _field(part)
        else:
            await self._spool(request.content.iter_chunked(_CHUNK_BYTES), spooled)
        if not spooled.tell():
            raise _Refused(400, "no audio: the body or its file part is empty", "empty")
        try:
            options = CallOptions.parse(values, request.headers.get("Accept", ""))
        except ProtocolError as err:
            raise _Refused(400, str(err), "invalid") from err
        return replace(options, file_name=file_name[:200])

    async def _spool(self, chunks: AsyncIterator[bytes], spooled: IO[bytes]) -> None:
        limit = self._server.options.max_upload_bytes
        async for chunk in chunks:
            if spooled.tell() + len(chunk) > limit:
                raise _Refused(413, _too_large_text(limit), "max_upload_bytes")
            spooled.write(chunk)

    async def _recognise(
        self, request: web.Request, path: Path, options: CallOptions
    ) -> web.StreamResponse:
        """Open the spooled file (415 when it is not audio) and recognise it."""
        stream_id = "call-" + uuid.uuid4().hex[:12]
        separate = options.channel_mode == "separate"
        try:
            source = await asyncio.to_thread(
                file_source, path, stream_id, realtime=False, separate=separate
            )
        except AudioSourceError as err:
            text = str(err).replace(str(path), "the upload")
            raise _Refused(415, text, "unsupported_media") from err
        with source.reader:  # closed even if the file is never read to its end
            return await self._recognise_source(request, source, options)

    async def _recognise_source(
        self, request: web.Request, source: FileSource, options: CallOptions
    ) -> web.StreamResponse:
        """Recognise the file as a stream; answer as ``options.format`` says."""
        server = self._server
        stream_id = source.name
        longest = server.options.max_stream_s
        if source.samples > longest * SAMPLE_RATE_HZ:
            text = f"the file is longer than server.max_stream_s ({longest:g} s)"
            raise _Refused(413, text, "max_stream_s")
        start = local_start_message(
            stream_id,
            options.language,
            source.channels,
            options.channel_names if source.channels > 1 else (),
        )
        if options.file_name:
            metadata = {**start.metadata, "file": options.file_name}
            start = replace(start, metadata=metadata)
        session = StreamSession(
            server.engine, start, stream_id, live=False, transcribe=options.asr
        )
        _LOGGER.info(
            "Call %s uploaded from %s (%.1f s of audio)",
            stream_id,
            request.remote,
            source.samples / SAMPLE_RATE_HZ,
        )
        with server.serving(stream_id) as queue:
            task = asyncio.create_task(drive(source, session, server.drain_started))
            task.add_done_callback(lambda _: queue.put_nowait(None))
            try:
                response = await _respond(request, options, queue, task)
            finally:
                if not task.done():
                    task.cancel()  # the client left: stop reading the file
                failure = await _failure(task)
        _LOGGER.info(
            "Call %s done (%d utterances, %.1f s)%s",
            stream_id,
            session.utterances,
            session.audio_seconds,
            f": {failure}" if failure else "",
        )
        return response


async def _respond(
    request: web.Request,
    options: CallOptions,
    queue: asyncio.Queue[Envelope | None],
    task: asyncio.Task[None],
) -> web.StreamResponse:
    """The events of the call, as ``options.format`` asks, once they are all in
    (ndjson: each as it comes). The connection is closed after it: any next request
    on it may be a GET, which websockets serves, on a new connection."""
    if options.format == "ndjson":
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        response.force_close()
        await response.prepare(request)
        try:
            async for envelope in _events(queue):
                await response.write(envelope.to_json().encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            _LOGGER.info("The client of an upload left before its end")
        return response
    envelopes = [envelope async for envelope in _events(queue)]
    if options.format == "html":
        recorder = CallRecorder()
        for envelope in envelopes:
            recorder(envelope)
        title = options.file_name or "Call report"
        html = render_html(list(recorder.calls.values()), title)
        page = web.Response(text=html, content_type="text/html")
        page.force_close()
        return page
    summaries = [e.to_dict() for e in envelopes if isinstance(e.body, CallSummary)]
    body: dict[str, Any] = {
        "events": [envelope.to_dict() for envelope in envelopes],
        "summary": summaries[-1] if summaries else None,
    }
    failure = await _failure(task)
    if failure:
        body["error"] = failure
    answer = web.json_response(body)
    answer.force_close()
    return answer


async def _events(queue: asyncio.Queue[Envelope | None]) -> AsyncIterator[Envelope]:
    while (envelope := await queue.get()) is not None:
        yield envelope


async def _failure(task: asyncio.Task[None]) -> str:
    """Why the recognition of an upload ended early ("" when it did not)."""
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    except AudioSourceError as err:
        return str(err)
    return ""


async def _parts(reader: MultipartReader) -> AsyncIterator[BodyPartReader]:
    """The form's parts (nested multiparts are skipped)."""
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader):
            yield part


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK_BYTES):
        yield chunk


async def _field(part: BodyPartReader) -> str:
    """A short form field as text."""
    data = b""
    async for chunk in _part_chunks(part):
        data += chunk
        if len(data) > _MAX_FIELD_BYTES:
            raise _Refused(400, f"form field {part.name} is too long", "invalid")
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise _Refused(400, f"form field {part.name} is not UTF-8", "invalid") from err


async def _not_allowed(request: web.Request) -> web.Response:
    """405 for anything but ``POST /v1/calls`` (the rest of the API is GET)."""
    allow = "POST" if request.path == CALLS_PATH else "GET"
    text = "method not allowed: use POST\n" if allow == "POST" else None
    response = web.Response(
        status=405,
        text=text or handshake.METHOD_NOT_ALLOWED,
        headers={"Allow": allow},
    )
    response.force_close()
    return response


def _try_later(text: str) -> web.Response:
    return web.Response(
        status=503, text=text, headers={"Retry-After": str(handshake.RETRY_AFTER_S)}
    )


def _too_large_text(limit: int) -> str:
    return f"the upload exceeds server.max_upload_bytes ({limit} bytes)"


def _too_large(limit: int) -> web.Response:
    return web.Response(status=413, text=_too_large_text(limit) + "\n")
