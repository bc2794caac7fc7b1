"""Read WAV, FLAC, OGG and MP3 files into 16 kHz float32.

``AudioFileReader`` reads a file block by block in bounded memory, resampling as
``AudioDecoder`` does for a stream; ``read_audio_file`` and ``read_audio_bytes`` return a
whole one at once, and ``spool`` makes standard input seekable for them.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import (
    MAX_CHANNELS,
    RESAMPLE_QUALITY,
    resampler_output,
    sanitize,
)
from streamser.errors import AudioSourceError

_LOGGER = logging.getLogger(__name__)

FILE_FORMATS: Final = ("WAV", "WAVEX", "RF64", "FLAC", "OGG") + (
    ("MP3",) if "MP3" in soundfile.available_formats() else ()
)
"""libsndfile container formats ``read_audio_file`` accepts (WAV, FLAC, OGG, and MP3
where libsndfile reads it: 1.1 and later)."""
_ACCEPTED: Final = (
    "WAV, FLAC, OGG or MP3" if "MP3" in FILE_FORMATS else "WAV, FLAC or OGG"
)

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
                quality=RESAMPLE_QUALITY,
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
            lanes = sanitize(np.ascontiguousarray(lanes, dtype=np.float32))
            if resampler is not None:
                shaped = lanes[:, 0].copy() if self.lanes == 1 else lanes
                lanes = resampler_output(
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
