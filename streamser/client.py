"""``streamser send``: stream audio files to a running daemon's ``/v1/stream``.

Each file goes as its own stream, one after another, in its own sample rate and
channel count as ``pcm_s16le``: as fast as the server takes it (it applies
backpressure by not reading its socket) or paced at real time. A reader task runs
beside the sender from the first message to the close, so the client's events
never pile up on the server and keepalive pings are answered while audio goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import soundfile
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from streamser.errors import AudioSourceError, ProtocolError, StreamserError
from streamser.events import Envelope, ErrorEvent, StreamEnd

_LOGGER = logging.getLogger(__name__)

DEFAULT_URL: Final = "ws://127.0.0.1:8765"
CHANNEL_MODES: Final = ("downmix", "separate")
"""``--channels``: mixed to mono by the server, or each channel its own speaker."""
CHUNK_MS: Final = 100
"""Audio per binary message."""
OPEN_TIMEOUT_S: Final = 30.0

EventHandler = Callable[[str, str, Envelope | None], None]
"""Called with (the file's name, the event's JSON text, the event or None when it
cannot be read) for each event, in order."""


class ConnectError(StreamserError):
    """The server cannot be reached or refused the connection."""


@dataclass(frozen=True)
class SendOptions:
    """How ``send_files`` talks to the server."""

    url: str = DEFAULT_URL
    """Base ``ws://`` or ``wss://`` URL of the daemon; ``/v1/stream`` is added."""
    realtime: bool = False
    """Pace the audio at real time instead of as fast as the server takes it."""
    channel_mode: str = "downmix"
    """One of ``CHANNEL_MODES``."""
    language: str | None = None
    """ISO 639-1 code of the speech; None to let the server detect it."""
    token: str | None = None
    """Bearer token (from a file, never the command line), or None."""
    channel_names: tuple[str, ...] = ()
    """Names of the channels kept apart (``metadata.channels``); empty for none."""


@dataclass(frozen=True)
class Clip:
    """A decoded audio file, ready to send."""

    name: str
    """The file's name ("stdin" for standard input)."""
    pcm: bytes
    """Interleaved 16-bit little-endian samples."""
    sample_rate: int
    """The file's own rate in Hz."""
    channels: int
    """The file's own channel count."""

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return 2 * self.channels


def read_clip(path: str, stdin: BinaryIO | None = None) -> Clip:
    """Read an audio file (``-``: standard input) in its own rate and channels.

    Args:
        path: a WAV, FLAC, OGG or MP3 file, or ``-``.
        stdin: where ``-`` reads (default: the process's standard input).

    Raises:
        AudioSourceError: missing, unreadable, not audio, or empty.
    """
    if path == "-":
        name = "stdin"
        data = (stdin if stdin is not None else sys.stdin.buffer).read()
    else:
        name = os.path.basename(path) or path
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as err:
            raise AudioSourceError(f"file not found: {path}") from err
        except IsADirectoryError as err:
            raise AudioSourceError(f"{path}: is a directory, not audio") from err
        except OSError as err:
            raise AudioSourceError(f"{path}: cannot read ({err.strerror})") from err
    where = "standard input" if path == "-" else path
    if not data:
        raise AudioSourceError(f"{where}: the file is empty")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            frames = sound.read(dtype="int16", always_2d=True)
            rate, channels = sound.samplerate, sound.channels
    except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioSourceError(f"{where}: cannot read audio ({reason})") from err
    if frames.shape[0] == 0:
        raise AudioSourceError(f"{where}: the file contains no audio")
    pcm = np.ascontiguousarray(frames, dtype="<i2").tobytes()
    return Clip(name, pcm, int(rate), int(channels))


def read_token(path: str) -> str:
    """The first token of a token file, as the server reads it (one per line,
    blank lines and ``#`` comments skipped).

    Raises:
        StreamserError: unreadable file, or no token in it.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise StreamserError(f"cannot read token file {path}: {reason}") from err
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise StreamserError(f"token file {path} holds no token")


def start_message(clip: Clip, options: SendOptions) -> dict[str, Any]:
    """The ``start`` message declaring ``clip``'s format truthfully."""
    start: dict[str, Any] = {
        "type": "start",
        "sample_rate": clip.sample_rate,
        "encoding": "pcm_s16le",
        "channels": clip.channels,
        "language": options.language,
        "stream_id": None,
        "metadata": {"file": clip.name},
    }
    if options.channel_mode != "downmix" and clip.channels > 1:  # as ``run`` does
        start["channel_mode"] = options.channel_mode
        if options.channel_names:
            start["metadata"]["channels"] = list(options.channel_names)
    return start


@dataclass
class _Outcome:
    ended: StreamEnd | None = None
    fatal: str | None = None


def _reason(err: BaseException) -> str:
    if isinstance(err, InvalidStatus):
        response = err.response
        text = response.body.decode(errors="replace").strip() if response.body else ""
        hint = ""
        if response.status_code == 401:
            hint = " (give a token with --token-file)"
        elif "Retry-After" in response.headers:
            hint = f" (retry after {response.headers['Retry-After']} s)"
        return f"HTTP {response.status_code} {text or response.reason_phrase}{hint}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return str(err.strerror or err).lower()
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, ssl.SSLError):
        return f"TLS: {err.reason or err}"
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()
    return str(err) or type(err).__name__


async def _send_audio(ws: ClientConnection, clip: Clip, realtime: bool) -> None:
    step = max(1, clip.sample_rate * CHUNK_MS // 1000) * clip.frame_bytes
    began = time.monotonic()
    for offset in range(0, len(clip.pcm), step):
        await ws.send(clip.pcm[offset : offset + step])
        if realtime:
            sent_s = (offset + step) / clip.frame_bytes / clip.sample_rate
            await asyncio.sleep(max(0.0, began + sent_s - time.monotonic()))
    await ws.send(json.dumps({"type": "stop"}))


async def _read_events(
    ws: ClientConnection, clip: Clip, on_event: EventHandler, outcome: _Outcome
) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            text = message if isinstance(message, str) else message.decode()
            try:
                envelope: Envelope | None = Envelope.from_json(text)
            except ProtocolError:
                envelope = None  # a newer server's event: passed on as text
            on_event(clip.name, text, envelope)
            if envelope is None:
                continue
            body = envelope.body
            if isinstance(body, StreamEnd):
                outcome.ended = body
            elif isinstance(body, ErrorEvent) and body.fatal:
                outcome.fatal = f"{body.code}: {body.message}"


async def send_clip(clip: Clip, options: SendOptions, on_event: EventHandler) -> bool:
    """Stream one clip and pass on its events until the server closes.

    Returns:
        Whether the stream ended with ``stream.end`` and no fatal error (which is
        logged).

    Raises:
        ConnectError: the server cannot be reached or refused the connection.
    """
    url = options.url.rstrip("/") + "/v1/stream"
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
    outcome = _Outcome()
    try:
        ws = await connect(
            url,
            additional_headers=headers,
            max_size=None,
            open_timeout=OPEN_TIMEOUT_S,
            compression=None,
        )
    except InvalidURI as err:
        raise ConnectError(f"invalid URL {options.url}: {err.msg}") from err
    except (OSError, TimeoutError, InvalidHandshake) as err:
        raise ConnectError(f"cannot connect to {url}: {_reason(err)}") from err
    async with ws:
        await ws.send(json.dumps(start_message(clip, options)))
        reader = asyncio.create_task(_read_events(ws, clip, on_event, outcome))
        sender = asyncio.create_task(_send_audio(ws, clip, options.realtime))
        try:
            await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not isinstance(
                sender.exception(), ConnectionClosed | None
            ):
                sender.result()  # a failure of our own: raise it
            await reader  # until the server closes, after stream.end
        finally:
            for task in (sender, reader):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
    problem = _incomplete(clip, outcome, ws.close_code)
    if problem:
        _LOGGER.error("%s: %s", clip.name, problem)
        return False
    return True


COMPLETE_TOLERANCE_S: Final = 0.05
"""How much less audio than was sent ``stream.end`` may count (resampling)."""


def _incomplete(clip: Clip, outcome: _Outcome, close_code: int | None) -> str:
    """Why the call is not completely recognised, in one line; "" when it is."""
    if outcome.fatal is not None:
        return outcome.fatal
    end = outcome.ended
    if end is None:
        return (
            f"the connection closed (code {close_code}) before stream.end: the call "
            "is incomplete"
        )
    sent_s = len(clip.pcm) / clip.frame_bytes / clip.sample_rate
    if end.reason != "stop" or end.audio_seconds < sent_s - COMPLETE_TOLERANCE_S:
        why = {"shutdown": "the server shut down"}.get(end.reason, end.reason)
        return (
            f"the stream was cut ({why}): {end.audio_seconds:.1f} s of the "
            f"{sent_s:.1f} s sent were recognised, {end.utterances} utterance(s)"
        )
    return ""


async def send_files(
    paths: Sequence[str], options: SendOptions, on_event: EventHandler
) -> bool:
    """Stream each file in turn, each as its own stream; events come file by file.

    A file that cannot be read is logged and skipped; a connection failure stops
    there.

    Args:
        paths: audio files, in order; ``-`` reads standard input.
        options: the server and how to send.
        on_event: gets every event.

    Returns:
        Whether every file was read and got ``stream.end`` without a fatal error.

    Raises:
        ConnectError: the server cannot be reached or refused the connection.
    """
    if options.channel_mode not in CHANNEL_MODES:
        raise ValueError(f"channel_mode must be one of {CHANNEL_MODES}")
    ok = True
    for path in paths:
        try:
            clip = read_clip(path)
        except AudioSourceError as err:
            _LOGGER.error("%s", err)
            ok = False
            continue
        _LOGGER.debug(
            "Sending %s: %d Hz, %d channel(s), %.2f s",
            clip.name,
            clip.sample_rate,
            clip.channels,
            len(clip.pcm) / clip.frame_bytes / clip.sample_rate,
        )
        ok = await send_clip(clip, options, on_event) and ok
    return ok
