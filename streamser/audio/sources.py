"""Audio sources besides WebSocket clients: the microphone and the bundled demo clip.

The microphone needs sounddevice and the PortAudio library (Debian: ``libportaudio2``);
only ``streamser listen`` and ``streamser devices`` import it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamser.audio.decode import AudioDecoder, read_audio_file
from streamser.errors import AudioSourceError

_LOGGER = logging.getLogger(__name__)

_BLOCK_S = 0.05


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


async def microphone_chunks(
    device: str | None, stop: asyncio.Event
) -> AsyncIterator[npt.NDArray[np.float32]]:
    """Yield 16 kHz mono float32 blocks from the microphone until ``stop`` is set."""
    sd = _sounddevice()
    info = sd.query_devices(_device(device), kind="input")
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
        device=_device(device),
        channels=1,
        dtype="float32",
        callback=callback,
    )
    with stream:
        _LOGGER.info("Recording from %s at %d Hz", info["name"], rate)
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {getter, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                break
            yield decoder.decode(getter.result())


def demo_clip_path() -> Path:
    """The bundled demo clip (synthetic speech, made by tests/make_demo_clip.sh)."""
    return Path(str(resources.files("streamser") / "assets" / "demo.wav"))


def demo_clip() -> npt.NDArray[np.float32]:
    """The bundled demo clip as 16 kHz mono float32."""
    return read_audio_file(demo_clip_path())
