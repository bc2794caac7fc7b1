"""Decode PROTOCOL.md audio encodings and files into 16 kHz float32.

Everything downstream (VAD, segmenter, features) sees one format: 16 kHz, mono,
float32 in [-1, 1]. ``AudioDecoder`` converts a live stream chunk by chunk, keeping the
resampler state across chunks, so a stream cut into any chunk sizes decodes to the same
samples; ``AudioFileReader`` does the same for a file, block by block in bounded memory
(``read_audio_file`` and ``read_audio_bytes`` return a whole one at once). Channels are downmixed by their mean, or kept apart (``separate``: one mono
signal per channel, for calls recorded with one speaker per channel).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import AudioSourceError, ProtocolError

_LOGGER = logging.getLogger(__name__)

ENCODINGS: Final = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw")
"""Wire encodings of PROTOCOL.md."""
MIN_SAMPLE_RATE_HZ: Final = 8000
MAX_SAMPLE_RATE_HZ: Final = 48000
MIN_CHANNELS: Final = 1
MAX_CHANNELS: Final = 8
FILE_FORMATS: Final = ("WAV", "WAVEX", "RF64", "FLAC", "OGG") + (
    ("MP3",) if "MP3" in soundfile.available_formats() else ()
)
"""libsndfile container formats ``read_audio_file`` accepts (WAV, FLAC, OGG, and MP3
where libsndfile reads it: 1.1 and later)."""
_ACCEPTED: Final = (
    "WAV, FLAC, OGG or MP3" if "MP3" in FILE_FORMATS else "WAV, FLAC or OGG"
)

_BYTES_PER_SAMPLE: Final = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}
_RESAMPLE_QUALITY: Final = "HQ"


def _mulaw_table() -> npt.NDArray[np.float32]:
    """G.711 mu-law decoding table (ITU-T G.711, as Sun's g711.c), scaled to [-1, 1]."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    linear = np.where(sign != 0, -magnitude, magnitude)
    return (linear / 32768.0).astype(np.float32)


def _alaw_table() -> npt.NDArray[np.float32]:
    """G.711 A-law decoding table (ITU-T G.711, as Sun's g711.c), scaled to [-1, 1]."""
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    # In A-law a set sign bit means a positive sample (the opposite of mu-law).
    linear = np.where(sign != 0, magnitude, -magnitude)
    return (linear / 32768.0).astype(np.float32)


MULAW_TABLE: Final = _mulaw_table()
"""Decoded value of each of the 256 mu-law codes."""
ALAW_TABLE: Final = _alaw_table()
"""Decoded value of each of the 256 A-law codes."""


def _sanitize(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Replaces NaN and infinities by 0 and clips to [-1, 1], in place."""
    np.nan_to_num(audio, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def _resampled(audio: Any, lanes: int) -> npt.NDArray[np.float32]:
    """soxr's output as (samples, lanes) float32, clipped to [-1, 1] again: resampling
    a full-scale signal overshoots (a square wave by about a quarter)."""
    out = np.asarray(audio, dtype=np.float32).reshape(-1, lanes)
    return np.clip(out, -1.0, 1.0, out=out)


def whole_number_in(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) from ``low`` to ``high``."""
    return (
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    )


def _require_whole(
    code: str, what: str, value: object, bounds: tuple[int, int], unit: str = ""
) -> None:
    """Raise ``ProtocolError(code)`` (fatal) unless ``value`` is an integer within
    ``bounds``."""
    low, high = bounds
    if not whole_number_in(value, low, high):
        raise ProtocolError(
            code, f"{what} is not an integer from {low} to {high}{unit}", fatal=True
        )


class AudioDecoder:
    """Turns one stream's wire audio into 16 kHz mono float32, chunk by chunk.

    One decoder per stream: it holds the resampler state between chunks, so it is not
    thread-safe and must not be shared between streams.

    Attributes:
        encoding: one of ``ENCODINGS``.
        sample_rate_hz: the client's sample rate.
        channels: interleaved channels per frame.
        lanes: signals out: 1 (the channels downmixed by their mean) or
            ``channels`` (kept apart).
        samples_in: frames (samples per channel) decoded so far.
        samples_out: 16 kHz samples (per lane) returned so far (``decode`` and
            ``flush``).
    """

    def __init__(
        self,
        encoding: str,
        sample_rate_hz: int,
        channels: int,
        *,
        separate: bool = False,
    ) -> None:
        """Checks the stream format and prepares the resampler.

        Args:
            encoding: one of ``ENCODINGS``.
            sample_rate_hz: input rate, ``MIN_SAMPLE_RATE_HZ`` to ``MAX_SAMPLE_RATE_HZ``.
            channels: ``MIN_CHANNELS`` to ``MAX_CHANNELS``.
            separate: keep the channels apart (``decode_lanes``) instead of
                downmixing them.

        Raises:
            ProtocolError: ``unsupported_encoding``, ``unsupported_sample_rate`` or
                ``unsupported_channels`` (fatal).
        """
        if encoding not in ENCODINGS:
            raise ProtocolError(
                "unsupported_encoding",
                f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}",
                fatal=True,
            )
        _require_whole(
            "unsupported_sample_rate",
            f"sample rate {sample_rate_hz!r}",
            sample_rate_hz,
            (MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ),
            " Hz",
        )
        _require_whole(
            "unsupported_channels",
            f"channels {channels!r}",
            channels,
            (MIN_CHANNELS, MAX_CHANNELS),
        )
        self.encoding = encoding
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self.lanes = channels if separate else 1
        self.samples_in = 0
        self.samples_out = 0
        self._frame_bytes = _BYTES_PER_SAMPLE[encoding] * channels
        self._resampler = self._new_resampler()

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self.sample_rate_hz == SAMPLE_RATE_HZ:
            return None
        return soxr.ResampleStream(
            self.sample_rate_hz,
            SAMPLE_RATE_HZ,
            self.lanes,
            dtype="float32",
            quality=_RESAMPLE_QUALITY,
        )

    def _to_float(self, payload: bytes) -> npt.NDArray[np.float32]:
        """Decodes whole interleaved frames to float32, shape (frames, channels)."""
        if self.encoding == "pcm_s16le":
            ints = np.frombuffer(payload, dtype="<i2")
            audio = ints.astype(np.float32) / np.float32(32768.0)
        elif self.encoding == "pcm_f32le":
            audio = _sanitize(np.frombuffer(payload, dtype="<f4").astype(np.float32))
        else:
            table = MULAW_TABLE if self.encoding == "mulaw" else ALAW_TABLE
            audio = table[np.frombuffer(payload, dtype=np.uint8)]
        return audio.reshape(-1, self.channels)

    def decode(self, payload: bytes) -> npt.NDArray[np.float32]:
        """Decodes one binary message to the downmixed signal.

        Args:
            payload: whole frames of interleaved samples in the stream's encoding.

        Returns:
            The 16 kHz mono samples this chunk yields (the resampler may hold a few
            back until later chunks or ``flush``).

        Raises:
            ProtocolError: ``partial_sample`` (non-fatal) when ``payload`` is not a
                whole number of frames; the decoder state is left untouched.
            ValueError: the decoder keeps channels apart (use ``decode_lanes``).
        """
        return self._mono(self.decode_lanes(payload))

    def decode_lanes(self, payload: bytes) -> npt.NDArray[np.float32]:
        """Decodes one binary message to one signal per lane.

        Args:
            payload: whole frames of interleaved samples in the stream's encoding.

        Returns:
            The 16 kHz samples this chunk yields, shape (samples, ``lanes``).

        Raises:
            ProtocolError: ``partial_sample`` (non-fatal) when ``payload`` is not a
                whole number of frames; the decoder state is left untouched.
        """
        if len(payload) % self._frame_bytes:
            raise ProtocolError(
                "partial_sample",
                f"{len(payload)} bytes is not a whole number of {self._frame_bytes}-byte "
                f"frames ({self.encoding}, {self.channels} channel(s))",
                fatal=False,
            )
        frames = self._to_float(payload)
        self.samples_in += frames.shape[0]
        if self.lanes == self.channels:
            lanes = frames
        else:
            lanes = frames.mean(axis=1, keepdims=True)
        lanes = np.ascontiguousarray(lanes, dtype=np.float32)
        if self._resampler is not None:
            if lanes.shape[0] == 0:
                return np.zeros((0, self.lanes), dtype=np.float32)
            resampled = self._resampler.resample_chunk(self._soxr_shape(lanes))
            lanes = _resampled(resampled, self.lanes)
        self.samples_out += lanes.shape[0]
        return lanes

    def flush(self) -> npt.NDArray[np.float32]:
        """Drains the resampler at the end of the stream (downmixed signal).

        Returns:
            The last 16 kHz samples (empty when no resampling is needed). The decoder
            then starts afresh: a later ``decode`` begins a new resampler state.

        Raises:
            ValueError: the decoder keeps channels apart (use ``flush_lanes``).
        """
        return self._mono(self.flush_lanes())

    def flush_lanes(self) -> npt.NDArray[np.float32]:
        """Drains the resampler at the end of the stream, one signal per lane.

        Returns:
            The last 16 kHz samples, shape (samples, ``lanes``); no samples when no
            resampling is needed. The decoder then starts afresh.
        """
        if self._resampler is None:
            return np.zeros((0, self.lanes), dtype=np.float32)
        empty = self._soxr_shape(np.zeros((0, self.lanes), dtype=np.float32))
        tail = _resampled(self._resampler.resample_chunk(empty, last=True), self.lanes)
        self._resampler = self._new_resampler()
        self.samples_out += tail.shape[0]
        return tail

    def _soxr_shape(self, lanes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """soxr takes 1-D arrays for one channel, (samples, channels) for more."""
        return np.ascontiguousarray(lanes[:, 0]) if self.lanes == 1 else lanes

    def _mono(self, lanes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.lanes != 1:
            raise ValueError("this decoder keeps channels apart: use the *_lanes form")
        return np.ascontiguousarray(lanes[:, 0])


SPOOL_BLOCK_BYTES: Final = 1 << 20
"""Standard input is copied to a temporary file this much at a time."""


def spool(stream: BinaryIO) -> BinaryIO:
    """Copy ``stream`` (standard input: a pipe, which libsndfile cannot seek) into an
    anonymous temporary file, a block at a time, so memory stays bounded.

    Returns:
        The temporary file, rewound; it is deleted when closed.
    """
    spooled: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 (returned open)
    while block := stream.read(SPOOL_BLOCK_BYTES):
        spooled.write(block)
    spooled.seek(0)
    return spooled


class AudioFileReader:
    """A WAV, FLAC, OGG or MP3 file read block by block as 16 kHz float32.

    Memory stays bounded whatever the file's length: one block is decoded, mixed (or
    kept apart) and resampled at a time, the resampler keeping its state between
    blocks (the same samples as resampling the whole file at once). Close it (or use
    it as a context manager) when done.

    Attributes:
        name: what error messages call the file.
        sample_rate: the file's own rate in Hz.
        channels: the file's own channel count.
        lanes: signals out: 1 (downmixed by the channel mean) or ``channels``.
        frames: the file's length in frames at its own rate.
    """

    def __init__(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        name: str | None = None,
        *,
        separate: bool = False,
    ) -> None:
        """Open and check the file (the audio is read later, by ``blocks``).

        Args:
            file: a path, or an open binary file that can seek.
            name: what error messages call it (default: the path).
            separate: keep the channels apart.

        Raises:
            AudioSourceError: the file is missing, unreadable, empty, in another
                format, holds no audio or (``separate``) more than ``MAX_CHANNELS``
                channels; the message names the file and the reason.
        """
        self.name = name or os.fspath(file)  # type: ignore[arg-type]
        self._handle: BinaryIO | None = None
        if isinstance(file, str | os.PathLike):
            file = self._handle = _open(os.fspath(file))
        try:
            if _size(file) == 0:
                raise AudioSourceError(f"{self.name}: the file is empty")
            self._sound = soundfile.SoundFile(file)
        except AudioSourceError:
            self.close()
            raise
        except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
            self.close()
            raise AudioSourceError(
                f"{self.name}: cannot read audio ({_reason(err)}); use {_ACCEPTED}"
            ) from err
        sound = self._sound
        self.sample_rate = int(sound.samplerate)
        self.channels = int(sound.channels)
        self.frames = int(sound.frames)
        self.lanes = self.channels if separate else 1
        problem = ""
        if sound.format not in FILE_FORMATS:
            problem = (
                f"unsupported audio format {sound.format} ({sound.format_info}); "
                f"use {_ACCEPTED}"
            )
        elif self.frames == 0:
            problem = "the file contains no audio"
        elif separate and self.channels > MAX_CHANNELS:
            problem = (
                f"{self.channels} channels; at most {MAX_CHANNELS} can be kept apart"
            )
        if problem:
            self.close()
            raise AudioSourceError(f"{self.name}: {problem}")
        _LOGGER.debug(
            "Reading %s: %d Hz, %d channel(s), %.2f s",
            self.name,
            self.sample_rate,
            self.channels,
            self.frames / self.sample_rate,
        )

    @property
    def sound(self) -> soundfile.SoundFile:
        """The open file, to read it in its own rate and channels instead."""
        return self._sound

    @property
    def samples(self) -> int:
        """The file's length in 16 kHz samples (per lane)."""
        return round(self.frames * SAMPLE_RATE_HZ / self.sample_rate)

    def blocks(self, block_frames: int = 0) -> Iterator[npt.NDArray[np.float32]]:
        """The audio at 16 kHz, shape (samples, ``lanes``), a block at a time.

        Args:
            block_frames: frames of the file per block (default: 100 ms of it).

        Raises:
            AudioSourceError: the file cannot be decoded further (a corrupt block).
        """
        size = block_frames or max(1, self.sample_rate // 10)
        resampler = (
            None
            if self.sample_rate == SAMPLE_RATE_HZ
            else soxr.ResampleStream(
                self.sample_rate,
                SAMPLE_RATE_HZ,
                self.lanes,
                dtype="float32",
                quality=_RESAMPLE_QUALITY,
            )
        )
        while True:
            try:
                audio = self._sound.read(size, dtype="float32", always_2d=True)
            except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
                raise AudioSourceError(
                    f"{self.name}: cannot read audio ({_reason(err)})"
                ) from err
            last = audio.shape[0] < size
            if self.lanes == self.channels:
                lanes = audio
            else:
                lanes = audio.mean(axis=1, keepdims=True)
            lanes = _sanitize(np.ascontiguousarray(lanes, dtype=np.float32))
            if resampler is not None:
                shaped = lanes[:, 0].copy() if self.lanes == 1 else lanes
                lanes = _resampled(
                    resampler.resample_chunk(shaped, last=last), self.lanes
                )
            if lanes.shape[0]:
                yield lanes
            if last:
                return

    def own(self, file: BinaryIO) -> None:
        """Close ``file`` too when closing (a spooled standard input)."""
        self._handle = file

    def close(self) -> None:
        """Close the file (idempotent)."""
        sound = getattr(self, "_sound", None)
        if sound is not None:
            sound.close()
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> AudioFileReader:
        """Use as a context manager: closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the file."""
        self.close()


def _open(name: str) -> BinaryIO:
    try:
        return open(name, "rb")  # noqa: SIM115 (closed by its reader)
    except OSError as err:
        raise AudioSourceError(_unreadable(name, err)) from err


def _size(file: BinaryIO) -> int:
    """Bytes from the current position to the end of a seekable file."""
    here = file.tell()
    end = file.seek(0, io.SEEK_END)
    file.seek(here)
    return end - here


def _reason(err: BaseException) -> str:
    if isinstance(err, soundfile.LibsndfileError):
        return str(err.error_string)
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _whole(reader: AudioFileReader) -> npt.NDArray[np.float32]:
    """Every block of ``reader`` at once; mono as (samples,), else (samples, lanes)."""
    with reader:
        parts = list(reader.blocks())
    audio = np.concatenate(parts) if parts else np.zeros((0, reader.lanes), np.float32)
    return np.ascontiguousarray(audio[:, 0]) if reader.lanes == 1 else audio


def read_audio_file(
    path: str | os.PathLike[str], *, separate: bool = False
) -> npt.NDArray[np.float32]:
    """Reads a whole WAV, FLAC, OGG or MP3 file as 16 kHz float32.

    Args:
        path: the audio file.
        separate: keep the channels apart.

    Returns:
        The whole file, resampled to 16 kHz: downmixed by the channel mean, shape
        (samples,); or with ``separate``, shape (samples, channels).

    Raises:
        AudioSourceError: the file is missing, unreadable, in another format, empty
            or (``separate``) has more than ``MAX_CHANNELS`` channels; the message
            names the file and the reason.
    """
    return _whole(AudioFileReader(path, separate=separate))


def _unreadable(name: str, err: OSError) -> str:
    """Why the file ``name`` could not be read, in words."""
    if isinstance(err, FileNotFoundError):
        return f"file not found: {name}"
    if isinstance(err, IsADirectoryError):
        return f"{name}: is a directory, not an audio file"
    return f"{name}: cannot read ({err.strerror})"


def read_audio_bytes(
    data: bytes, name: str, *, separate: bool = False
) -> npt.NDArray[np.float32]:
    """Decodes a whole WAV, FLAC, OGG or MP3 file held in memory.

    Args:
        data: the encoded file.
        name: what error messages call it (a path, or "standard input").
        separate: keep the channels apart.

    Returns:
        The audio, resampled to 16 kHz: downmixed by the channel mean, shape
        (samples,); or with ``separate``, shape (samples, channels).

    Raises:
        AudioSourceError: ``data`` is empty, in another format, holds no audio or
            (``separate``) more than ``MAX_CHANNELS`` channels; the message names
            ``name`` and the reason.
    """
    return _whole(AudioFileReader(io.BytesIO(data), name, separate=separate))
