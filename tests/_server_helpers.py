"""Running ``streamser serve`` as a subprocess and talking to it as a real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.serving import ServedDaemon


@contextlib.contextmanager
def serve(
    args: list[str], tmp: Path, env: dict[str, str] | None = None
) -> Iterator[ServedDaemon]:
    """Start ``streamser serve``, wait until /healthz says 200, stop it after."""
    with ServedDaemon.serve(
        args, tmp, env=env, ready_timeout_s=180, poll_timeout_s=10
    ) as server:
        yield server


def encode(audio: np.ndarray, rate: int, encoding: str, channels: int = 1) -> bytes:
    """16 kHz float audio -> bytes in a PROTOCOL.md encoding at ``rate``."""
    import audioop  # Python < 3.13: the reference G.711 encoder

    samples = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
    samples = np.clip(samples, -1.0, 1.0)
    if channels > 1:
        samples = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    if encoding == "pcm_f32le":
        return samples.astype("<f4").tobytes()
    pcm16 = (samples * 32767).astype("<i2").tobytes()
    if encoding == "pcm_s16le":
        return pcm16
    if encoding == "mulaw":
        return audioop.lin2ulaw(pcm16, 2)
    if encoding == "alaw":
        return audioop.lin2alaw(pcm16, 2)
    raise ValueError(encoding)


def speech_with_pauses(clips: list[Path]) -> np.ndarray:
    """Clips joined by 1 s of silence, with silence before and after."""
    silence = np.zeros(16000, np.float32)
    parts = [silence]
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32")
        assert rate == 16000
        parts += [audio, silence]
    return np.concatenate(parts)


@dataclass
class StreamResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


@contextlib.asynccontextmanager
async def started_stream(
    url: str,
    start: dict[str, Any],
    on_event: Callable[[dict[str, Any]], Any],
    headers: dict[str, str] | None = None,
) -> AsyncIterator[ClientConnection]:
    """A /v1/stream connection that has sent ``start``, each event it receives
    passed to ``on_event`` as it arrives; leaving waits until the server closes it."""
    async with connect(
        f"{url}/v1/stream", additional_headers=headers, max_size=None
    ) as ws:
        await ws.send(json.dumps({"type": "start", **start}))

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    on_event(json.loads(message))

        task = asyncio.create_task(reader())
        yield ws
        await task


async def stream_audio(
    url: str,
    payload: bytes,
    start: dict[str, Any],
    chunk_sizes: Iterator[int],
    *,
    frame_bytes: int,
    headers: dict[str, str] | None = None,
    stop: bool = True,
    timeout_s: float = 300,
) -> StreamResult:
    """Send a start message, audio in the given chunk sizes (whole frames), then stop;
    the whole conversation within ``timeout_s``."""
    result = StreamResult()

    async def converse() -> None:
        async with started_stream(url, start, result.events.append, headers) as ws:
            offset = 0
            while offset < len(payload):
                size = max(frame_bytes, next(chunk_sizes) // frame_bytes * frame_bytes)
                await ws.send(payload[offset : offset + size])
                offset += size
                await asyncio.sleep(0)
            if stop:
                await ws.send(json.dumps({"type": "stop"}))
        result.close_code = ws.close_code

    await asyncio.wait_for(converse(), timeout_s)
    return result


async def collect(
    url: str, query: str, until: int, timeout_s: float = 300
) -> list[dict[str, Any]]:
    """Subscribe to /v1/events and collect events until one with id >= until."""
    events: list[dict[str, Any]] = []

    async def read() -> None:
        async with connect(f"{url}/v1/events{query}", max_size=None) as ws:
            async for message in ws:
                events.append(json.loads(message))
                if events[-1]["id"] >= until:
                    return

    await asyncio.wait_for(read(), timeout_s)
    return events


def check_stream_events(events: list[dict[str, Any]]) -> None:
    """PROTOCOL.md invariants of one stream's events."""
    assert events, "no events"
    assert events[0]["type"] == "stream.start"
    assert events[-1]["type"] == "stream.end"
    assert [e["seq"] for e in events] == list(range(len(events)))
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stream_ids = {e["stream_id"] for e in events}
    assert len(stream_ids) == 1
    for event in events:
        assert {"type", "id", "stream_id", "seq", "time"} <= set(event)
        assert event["time"].endswith("Z")
    for event in events:
        if event["type"] == "utterance.end":
            assert abs(sum(event["scores"].values()) - 1.0) < 1e-4
            assert event["label"] == max(event["scores"], key=event["scores"].get)
            assert set(event["modalities"]) == {"acoustic", "text"}
            assert event["end"] > event["start"] >= 0
            assert event["latency_ms"] >= 0
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert events[-1]["utterances"] == len(ends)
