"""Where a stream's audio comes from: the ``AudioSource`` protocol and its sources.

A source yields 16 kHz float32 chunks (mono, or one column per channel when a file's
channels are kept apart); ``drive`` feeds one into a ``StreamSession`` (``streamser
run`` and ``streamser listen``). The sources: an audio file or standard input
(``FileSource``, decoded as it plays, in bounded memory, in real time or as fast as
recognition keeps up), audio in memory (``ClipSource``), the microphone (``MicrophoneSource``) and the bundled demo clip. ``ProgressBar`` shows how
far ``streamser run`` has got, on a terminal.

WebSocket clients are not an ``AudioSource``: their socket carries wire-encoded bytes
interleaved with ``flush`` and ``stop`` commands and per-message errors, and the server
applies backpressure by not reading the socket, so ``serve.server`` feeds the session
bytes (``StreamSession.feed``) itself; forcing that through float32 chunks would lose
the commands and the per-message error events.

The microphone needs sounddevice and the PortAudio library (Debian: ``libportaudio2``);
only ``streamser listen`` and ``streamser devices`` import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol, TextIO

import numpy as np
import numpy.typing as npt

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import (
    AudioDecoder,
    AudioFileReader,
    read_audio_file,
    spool,
)
from streamser.errors import AudioSourceError

_LOGGER = logging.getLogger(__name__)

_BLOCK_S: Final = 0.05
CHUNK_SAMPLES: Final = SAMPLE_RATE_HZ // 10
"""Samples per chunk a ``ClipSource`` yields (100 ms)."""


class Session(Protocol):
    """What ``drive`` needs of a stream session (``pipeline.StreamSession``; the
    pipeline uses audio/, not the other way round)."""

    def open(self) -> None:
        """Announce the stream."""

    def feed_audio(self, audio: npt.NDArray[np.float32]) -> None:
        """Segment 16 kHz mono audio."""

    async def wait_for_room(self) -> None:
        """Wait until recognition has room (backpressure)."""

    async def close(self) -> None:
        """Finish the pending utterances and end the stream."""


class AudioSource(Protocol):
    """Something that yields 16 kHz mono float32 chunks, then ends (or never does).

    Attributes:
        name: the stream id its events carry.
        live: paced by a clock (a microphone, real-time playback): it is never held
            back; under overload its utterances lose their transcripts, not their
            emotion. A source that is not live waits for recognition between chunks
            (backpressure), losing nothing.
    """

    name: str
    live: bool

    def __aiter__(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        """The chunks, in order."""
        ...


async def drive(
    source: AudioSource,
    session: Session,
    stop: asyncio.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Feed ``source`` into ``session`` from ``stream.start`` to ``stream.end``.

    Opens the session, feeds every chunk (waiting for room between chunks when the
    source is not live), and closes it, finishing its pending utterances, when the
    source ends, when ``stop`` is set or when this coroutine is cancelled.

    Args:
        source: where the audio comes from.
        session: a stream session not opened yet.
        stop: ends the stream early when set (SIGINT in ``streamser listen``).
        progress: called with the number of samples of each chunk fed.

    Raises:
        AudioSourceError: the source failed (the session is still closed).
    """
    session.open()
    try:
        feeding = asyncio.create_task(_feed(source, session, progress))
        waiting: asyncio.Future[Any] = (
            asyncio.ensure_future(stop.wait())
            if stop is not None
            else asyncio.get_running_loop().create_future()
        )
        try:
            await asyncio.wait({feeding, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not feeding.done():
                feeding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeding
        if not feeding.cancelled():
            feeding.result()  # re-raise what the source raised
    finally:
        await session.close()


async def _feed(
    source: AudioSource,
    session: Session,
    progress: Callable[[int], None] | None,
) -> None:
    async for chunk in source:
        session.feed_audio(chunk)
        if progress is not None:
            progress(chunk.shape[0])
        if not source.live:
            await session.wait_for_room()
            await asyncio.sleep(0)  # let the other streams of ``run`` move too


class ClipSource:
    """Audio held in memory (the demo clip, tests), in 100 ms chunks.

    Played in real time (``live``), or as fast as recognition keeps up.
    """

    def __init__(
        self, audio: npt.NDArray[np.float32], name: str, *, realtime: bool
    ) -> None:
        """Wrap decoded audio.

        Args:
            audio: 16 kHz float32, mono (1-D) or one column per channel.
            name: the stream id.
            realtime: pace the chunks by the clock.
        """
        self.audio = audio
        self.name = name
        self.live = realtime

    @property
    def channels(self) -> int:
        """Channels kept apart in the chunks (1 for mono)."""
        return 1 if self.audio.ndim == 1 else int(self.audio.shape[1])

    @property
    def samples(self) -> int:
        """Length of the clip in 16 kHz samples."""
        return int(self.audio.shape[0])

    def __aiter__(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        """The chunks, each yielded when due when playing in real time."""
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        began = time.monotonic()
        for offset in range(0, self.audio.shape[0], CHUNK_SAMPLES):
            yield self.audio[offset : offset + CHUNK_SAMPLES]
            if self.live:
                due = began + (offset + CHUNK_SAMPLES) / SAMPLE_RATE_HZ
                await asyncio.sleep(max(0.0, due - time.monotonic()))


class FileSource:
    """An audio file (or standard input, spooled to a temporary file) decoded a block
    at a time: memory stays bounded however long it is (``streamser run``).

    Played in real time (``live``), or as fast as recognition keeps up.
    """

    def __init__(self, reader: AudioFileReader, name: str, *, realtime: bool) -> None:
        """Wrap an open reader (closed once its blocks are all read).

        Args:
            reader: the file, opened and checked.
            name: the stream id.
            realtime: pace the chunks by the clock.
        """
        self.reader = reader
        self.name = name
        self.live = realtime

    @property
    def channels(self) -> int:
        """Channels kept apart in the chunks (1 for mono)."""
        return self.reader.lanes

    @property
    def samples(self) -> int:
        """Length of the file in 16 kHz samples."""
        return self.reader.samples

    def __aiter__(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        """The chunks, each yielded when due when playing in real time."""
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        began = time.monotonic()
        done = 0
        with self.reader:
            for block in self.reader.blocks():
                done += block.shape[0]
                yield _squeeze(block)
                if self.live:
                    due = began + done / SAMPLE_RATE_HZ
                    await asyncio.sleep(max(0.0, due - time.monotonic()))


def file_source(
    path: Path, name: str, *, realtime: bool, separate: bool = False
) -> FileSource:
    """A WAV, FLAC, OGG or MP3 file, opened and checked now, decoded as it plays.

    Args:
        path: the file.
        name: the stream id.
        realtime: pace the chunks by the clock.
        separate: keep its channels apart (mono when it has one).

    Raises:
        AudioSourceError: the file is missing, unreadable or not audio.
    """
    return FileSource(AudioFileReader(path, separate=separate), name, realtime=realtime)


def stdin_source(
    name: str,
    *,
    realtime: bool,
    stream: BinaryIO | None = None,
    separate: bool = False,
) -> FileSource:
    """An audio file piped to standard input (``streamser run -``): copied to a
    temporary file a block at a time (libsndfile needs to seek), then decoded as it
    plays.

    Args:
        name: the stream id.
        realtime: pace the chunks by the clock.
        stream: where to read (default: the process's standard input).
        separate: keep its channels apart (mono when it has one).

    Raises:
        AudioSourceError: nothing on standard input, or not audio.
    """
    spooled = spool(stream if stream is not None else sys.stdin.buffer)
    try:
        reader = AudioFileReader(spooled, "standard input", separate=separate)
    except AudioSourceError:
        spooled.close()
        raise
    reader.own(spooled)
    return FileSource(reader, name, realtime=realtime)


def _squeeze(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """One channel kept apart is plain mono."""
    return audio[:, 0].copy() if audio.ndim == 2 and audio.shape[1] == 1 else audio


def open_clips(
    paths: Sequence[Path], *, realtime: bool, separate: bool = False
) -> tuple[list[FileSource], list[AudioSourceError]]:
    """Open and check every file now (``-``: standard input), named for ``streamser
    run``; each is decoded as it plays.

    A source is named by its file name ("stdin" for ``-``); a name given before gets
    ``#2``, ``#3``..., so stream ids differ.

    Args:
        paths: audio files, in order; ``-`` at most once.
        realtime: pace the chunks by the clock.
        separate: keep each file's channels apart (``run --channels separate``).

    Returns:
        The sources of the files that could be read, in order, and an error for each
        one that could not (missing, unreadable, not audio).
    """
    sources: list[FileSource] = []
    errors: list[AudioSourceError] = []
    seen: Counter[str] = Counter()
    for path in paths:
        stdin = str(path) == "-"
        name = "stdin" if stdin else path.name
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        try:
            if stdin:
                sources.append(stdin_source(name, realtime=realtime, separate=separate))
            else:
                sources.append(
                    file_source(path, name, realtime=realtime, separate=separate)
                )
        except AudioSourceError as err:
            errors.append(err)
    return sources, errors


class ProgressBar:
    """A one-line text progress bar on a terminal (``streamser run`` on long files).

    Redrawn at most every ``interval_s``; ``clear`` removes it so other output can be
    printed, and the next update draws it again.
    """

    WIDTH: Final = 30

    def __init__(
        self, total_samples: int, stream: TextIO, interval_s: float = 0.2
    ) -> None:
        """A bar for ``total_samples`` of 16 kHz audio, drawn on ``stream``."""
        self.total_samples = max(1, total_samples)
        self.done_samples = 0
        self._stream = stream
        self._interval_s = interval_s
        self._drawn_at = -interval_s
        self._shown = False

    def advance(self, samples: int) -> None:
        """Count ``samples`` more as done; redraw when due."""
        self.done_samples = min(self.total_samples, self.done_samples + samples)
        now = time.monotonic()
        if now - self._drawn_at >= self._interval_s or (
            self.done_samples == self.total_samples
        ):
            self._drawn_at = now
            self.draw()

    def draw(self) -> None:
        """Draw the bar in place of the current line."""
        fraction = self.done_samples / self.total_samples
        filled = round(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(
            f"\r[{bar}] {fraction * 100:3.0f}%  "
            f"{self.done_samples / SAMPLE_RATE_HZ:.1f}/"
            f"{self.total_samples / SAMPLE_RATE_HZ:.1f} s"
        )
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the bar (before other output on the terminal, and at the end)."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def demo_source() -> ClipSource:
    """The bundled demo clip, played in real time (``streamser listen --demo``)."""
    return ClipSource(demo_clip(), "demo", realtime=True)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError as err:
        raise AudioSourceError(
            "the microphone needs the 'mic' extra: pip install 'streamser[mic]'"
        ) from err
    except OSError as err:
        raise AudioSourceError(
            "the PortAudio library is missing (Debian/Ubuntu: apt install libportaudio2)"
        ) from err
    return sounddevice


def list_input_devices() -> list[str]:
    """One line per audio input device: index, name, default sample rate."""
    sd = _sounddevice()
    lines = []
    for index, device in enumerate(sd.query_devices()):
        if device["max_input_channels"] > 0:
            rate = int(device["default_samplerate"])
            lines.append(f"{index:3d}  {device['name']}  ({rate} Hz)")
    return lines or ["no audio input device found"]


def _device(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def check_microphone(device: str | None) -> None:
    """Fail early, in one line, when there is no usable input device.

    Raises:
        AudioSourceError: no PortAudio, no sounddevice or no such input device.
    """
    sd = _sounddevice()
    try:
        sd.query_devices(_device(device), kind="input")
    except (ValueError, sd.PortAudioError) as err:
        raise AudioSourceError(
            f"no usable microphone ({err}); try 'streamser devices', or --demo"
        ) from err


class MicrophoneSource:
    """An input device through PortAudio, resampled to 16 kHz; live, never ends."""

    def __init__(self, device: str | None, name: str = "microphone") -> None:
        """Choose the device (opened when iterated).

        Args:
            device: input device name or index; None for the default.
            name: the stream id.
        """
        self.device = device
        self.name = name
        self.live = True

    def __aiter__(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        """Blocks of 50 ms from the device, until the iteration is cancelled."""
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[npt.NDArray[np.float32]]:
        sd = _sounddevice()
        info = sd.query_devices(_device(self.device), kind="input")
        rate = int(info["default_samplerate"])
        decoder = AudioDecoder("pcm_f32le", rate, 1)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=200)

        def callback(data: Any, frames: int, time: Any, status: Any) -> None:
            if status:
                _LOGGER.debug("Microphone status: %s", status)
            payload = bytes(data)

            def put() -> None:
                if queue.full():
                    _LOGGER.warning("Microphone audio dropped: processing fell behind")
                    return
                queue.put_nowait(payload)

            loop.call_soon_threadsafe(put)

        stream = sd.RawInputStream(
            samplerate=rate,
            blocksize=int(rate * _BLOCK_S),
            device=_device(self.device),
            channels=1,
            dtype="float32",
            callback=callback,
        )
        with stream:
            _LOGGER.info("Recording from %s at %d Hz", info["name"], rate)
            while True:
                yield decoder.decode(await queue.get())


def demo_clip_path() -> Path:
    """The bundled demo clip (synthetic speech, made by tests/make_demo_clip.sh)."""
    return Path(str(resources.files("streamser") / "assets" / "demo.wav"))


def demo_clip() -> npt.NDArray[np.float32]:
    """The bundled demo clip as 16 kHz mono float32."""
    return read_audio_file(demo_clip_path())
