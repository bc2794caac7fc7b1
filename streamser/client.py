"""``streamser send``: stream audio files to a running daemon's ``/v1/stream``.

Each file goes as its own stream, one after another, read as it is sent (bounded
memory), in its own sample rate and channel count as ``pcm_s16le`` (decoded here to
16 kHz when those are beyond what a stream may declare): as fast as the server takes it (it applies
backpressure by not reading its socket) or paced at real time. A reader task runs
beside the sender from the first message to the close, so the client's events
never pile up on the server and keepalive pings are answered while audio goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt
import soundfile
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    AudioFileReader,
    spool,
)
from streamser.errors import AudioSourceError, ProtocolError, StreamserError
from streamser.events import Envelope, ErrorEvent, StreamEnd

_LOGGER = logging.getLogger(__name__)

DEFAULT_URL: Final = "ws://127.0.0.1:8765"
KEEPALIVE_TIMEOUT_S: Final = 120.0
"""How long ``send`` waits for the answer to a keepalive ping before it gives the
connection up (the server does not read while it applies backpressure)."""
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


SERVER_RATES: Final = (MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)
"""Sample rates a ``start`` may declare; a file outside them is sent at 16 kHz."""


class Clip:
    """An audio file opened for sending, read a block at a time (bounded memory).

    Sent in its own rate and channels as ``pcm_s16le`` when the protocol takes them
    (``MIN_SAMPLE_RATE_HZ`` to ``MAX_SAMPLE_RATE_HZ``, at most ``MAX_CHANNELS``);
    otherwise decoded here as ``streamser run`` decodes it (16 kHz; downmixed, or
    its channels kept apart), so ``send`` takes every file ``run`` takes.
    """

    def __init__(self, name: str, reader: AudioFileReader, *, native: bool) -> None:
        """Wrap an open reader (``read_clip`` makes one)."""
        self.name = name
        """The file's name ("stdin" for standard input)."""
        self.native = native
        self._reader = reader
        self.sample_rate = reader.sample_rate if native else SAMPLE_RATE_HZ
        """The rate it is sent at, in Hz."""
        self.channels = reader.channels if native else reader.lanes
        """The channels it is sent with."""
        self.frames = reader.frames if native else reader.samples
        """Its length in frames at ``sample_rate``."""

    @property
    def seconds(self) -> float:
        """Its length in seconds."""
        return self.frames / self.sample_rate

    def pcm_blocks(self) -> Iterator[bytes]:
        """Interleaved 16-bit little-endian frames, about 100 ms per block.

        Raises:
            AudioSourceError: the file cannot be decoded further.
        """
        if not self.native:
            for block in self._reader.blocks():
                yield _pcm16(block)
            return
        step = max(1, self.sample_rate * CHUNK_MS // 1000)
        sound = self._reader.sound
        while True:
            try:
                frames = sound.read(step, dtype="int16", always_2d=True)
            except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
                raise AudioSourceError(f"{self.name}: cannot read audio") from err
            if frames.shape[0]:
                yield np.ascontiguousarray(frames, dtype="<i2").tobytes()
            if frames.shape[0] < step:
                return

    def close(self) -> None:
        """Close the file."""
        self._reader.close()


def _pcm16(block: npt.NDArray[np.float32]) -> bytes:
    scaled = np.clip(np.round(block * 32767.0), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def read_clip(
    path: str, stdin: BinaryIO | None = None, *, separate: bool = False
) -> Clip:
    """Open an audio file (``-``: standard input, copied to a temporary file) for
    sending; it is read as it is sent.

    Args:
        path: a WAV, FLAC, OGG or MP3 file, or ``-``.
        stdin: where ``-`` reads (default: the process's standard input).
        separate: its channels will be kept apart (a file of more channels than the
            protocol takes is then refused, as ``run`` refuses it).

    Raises:
        AudioSourceError: missing, unreadable, not audio, or empty.
    """
    if path == "-":
        name, where = "stdin", "standard input"
        spooled = spool(stdin if stdin is not None else sys.stdin.buffer)
        try:
            reader = AudioFileReader(spooled, where, separate=separate)
        except AudioSourceError:
            spooled.close()
            raise
        reader.own(spooled)
    else:
        name = os.path.basename(path) or path
        reader = AudioFileReader(path, separate=separate)
    native = (
        SERVER_RATES[0] <= reader.sample_rate <= SERVER_RATES[1]
        and reader.channels <= MAX_CHANNELS
    )
    if not native:
        _LOGGER.info(
            "%s: %d Hz, %d channel(s) is beyond what a stream declares: sent as "
            "16 kHz, %s",
            name,
            reader.sample_rate,
            reader.channels,
            "channels apart" if separate and reader.channels > 1 else "mono",
        )
    return Clip(name, reader, native=native)


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
    began = time.monotonic()
    sent = 0
    for block in clip.pcm_blocks():
        await ws.send(block)
        if realtime:
            sent += len(block) // (2 * clip.channels)
            await asyncio.sleep(
                max(0.0, began + sent / clip.sample_rate - time.monotonic())
            )
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
            # A fast sender is paused by backpressure: the server does not read its
            # socket, pongs included, while its utterances wait for recognition
            # (longest for an upload beside live calls). Wait that out rather than
            # drop the stream after the default 20 s.
            ping_timeout=KEEPALIVE_TIMEOUT_S,
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
    sent_s = clip.seconds
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
    separate = options.channel_mode == "separate"
    for path in paths:
        try:
            clip = read_clip(path, separate=separate)
        except AudioSourceError as err:
            _LOGGER.error("%s", err)
            ok = False
            continue
        _LOGGER.debug(
            "Sending %s: %d Hz, %d channel(s), %.2f s",
            clip.name,
            clip.sample_rate,
            clip.channels,
            clip.seconds,
        )
        try:
            ok = await send_clip(clip, options, on_event) and ok
        finally:
            clip.close()
    return ok
