"""Fuzzing: hypothesis on the audio decoders (random bytes, encodings, rates,
channels), and thousands of random frames and control messages against a live
``streamser serve`` while a well-behaved stream runs beside them: the server stays
healthy and the good stream's results are the same as on a quiet server. (The
start/control parsers have their property tests in test_events.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamser.audio.decode import (
    ENCODINGS,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    AudioDecoder,
)
from streamser.errors import ProtocolError

from _ops_helpers import FAST, REPO, check_events, metric, pcm16, read_clip, run_stream
from _ops_helpers import running as serving

_FRAME_BYTES = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


def _check_audio(audio: np.ndarray) -> None:
    assert audio.dtype == np.float32 and audio.ndim in (1, 2)
    assert np.isfinite(audio).all()
    assert audio.size == 0 or float(np.abs(audio).max()) <= 1.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=12)),
    rate=st.one_of(
        st.integers(MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ),
        st.integers(-10, 200000),
    ),
    channels=st.integers(-1, MAX_CHANNELS + 2),
    chunks=st.lists(st.binary(max_size=3000), max_size=6),
    separate=st.booleans(),
)
# Full-scale float frames (2.0, clipped to 1.0) overshot to 1.27 once resampled.
@example(
    encoding="pcm_f32le",
    rate=8000,
    channels=2,
    chunks=[b"\x00\x00\x00\x00\x00\x00\x00@"] * 2,
    separate=True,
)
def test_decoder_takes_any_bytes(
    encoding: str, rate: int, channels: int, chunks: list[bytes], separate: bool
) -> None:
    try:
        decoder = AudioDecoder(encoding, rate, channels, separate=separate)
    except ProtocolError as err:
        assert err.fatal
        assert err.code in (
            "unsupported_encoding",
            "unsupported_sample_rate",
            "unsupported_channels",
        )
        return
    frame = _FRAME_BYTES[encoding] * channels
    frames_in = 0
    samples_out = 0
    lanes = channels if separate else 1
    for chunk in chunks:
        try:
            audio = decoder.decode_lanes(chunk)
        except ProtocolError as err:
            assert err.code == "partial_sample" and not err.fatal
            assert len(chunk) % frame
            continue
        assert len(chunk) % frame == 0
        frames_in += len(chunk) // frame
        assert audio.ndim == 2 and audio.shape[1] == lanes
        _check_audio(audio)
        samples_out += audio.shape[0]
    tail = decoder.flush_lanes()
    assert tail.ndim == 2 and tail.shape[1] == lanes
    _check_audio(tail)
    samples_out += tail.shape[0]
    expected = frames_in * 16000 / rate
    assert abs(samples_out - expected) <= 0.01 * expected + 64, (samples_out, expected)


@settings(max_examples=100, deadline=None)
@given(
    encoding=st.sampled_from(ENCODINGS),
    rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    data=st.binary(min_size=0, max_size=8000),
    cuts=st.lists(st.integers(0, 8000), max_size=5),
)
def test_decoder_output_does_not_depend_on_chunking(
    encoding: str, rate: int, data: bytes, cuts: list[int]
) -> None:
    frame = _FRAME_BYTES[encoding]
    data = data[: len(data) // frame * frame]
    whole = AudioDecoder(encoding, rate, 1)
    expected = np.concatenate([whole.decode(data), whole.flush()])
    pieces = AudioDecoder(encoding, rate, 1)
    bounds = sorted({min(c // frame * frame, len(data)) for c in cuts} | {0, len(data)})
    parts = [pieces.decode(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    got = np.concatenate([*parts, pieces.flush()])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


# -- a live server ------------------------------------------------------------------

DEMO = REPO / "streamser" / "assets" / "demo.wav"


def _rounded(value: Any) -> Any:
    # threads on a busy server may change the last float bits: compare at 1e-4
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # seq counts the partials too; check_events checks it has no gaps
    drop = {"id", "seq", "time", "latency_ms", "stream_id"}
    return [
        _rounded({k: v for k, v in e.items() if k not in drop})
        for e in events
        if e["type"] != "emotion.partial"  # cadence depends on the server's load
    ]


def _random_text(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.3:
        kinds = ["flush", "start", "dance", "stop ", "summary"]
        return json.dumps({"type": rng.choice(kinds)})
    if choice < 0.5:
        return json.dumps(
            {
                "type": "start",
                "sample_rate": rng.choice([0, 8000, 16000, 1e9, "x", None]),
                "encoding": rng.choice(["pcm_s16le", "mulaw", "mp3", 7]),
                "channels": rng.randint(-2, 12),
                "channel_mode": rng.choice(["downmix", "separate", "x", None, 2]),
                "stream_id": rng.choice([None, "../x", "ok", "a" * 200]),
                "metadata": rng.choice([{}, [], "x", {"k": "v" * 100}]),
            }
        )
    if choice < 0.7:
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 200)))
    return json.dumps([rng.random() for _ in range(rng.randint(0, 20))])


def _random_binary(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 2, 3, 5, 160, 321, 640, 2000, rng.randint(0, 5000)])
    return rng.randbytes(size)


async def _fuzz_connection(url: str, seed: int, messages: int) -> int:
    """Random traffic on one /v1/stream connection, reconnecting after a fatal close."""
    rng = random.Random(seed)
    sent = 0
    while sent < messages:
        with contextlib.suppress(ConnectionClosed, InvalidStatus):
            async with connect(
                f"{url}/v1/stream", max_size=None, open_timeout=30
            ) as ws:

                async def drain(ws: Any = ws) -> None:
                    with contextlib.suppress(ConnectionClosed):
                        async for _ in ws:
                            pass

                reader = asyncio.create_task(drain())
                if rng.random() < 0.8:
                    await ws.send(
                        json.dumps({"type": "start", "encoding": "pcm_s16le"})
                    )
                while sent < messages:
                    sent += 1
                    if rng.random() < 0.5:
                        await ws.send(_random_binary(rng))
                    else:
                        await ws.send(_random_text(rng))
                    if rng.random() < 0.002:
                        await ws.send(json.dumps({"type": "stop"}))
                        break
                    if sent % 50 == 0:
                        await asyncio.sleep(0)
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps({"type": "stop"}))
                await asyncio.wait_for(reader, 60)
    return sent


async def test_random_traffic_leaves_the_server_and_other_streams_alone(
    tmp_path: Path,
) -> None:
    good = pcm16(read_clip(DEMO))
    with serving(FAST, tmp_path) as server:
        quiet = await run_stream(server.url, good, {"language": "en"})
        check_events(quiet.events)
        fuzz = asyncio.gather(
            *(_fuzz_connection(server.url, seed, 1000) for seed in range(4))
        )
        busy = await run_stream(server.url, good, {"language": "en"})
        counts = await asyncio.wait_for(fuzz, 170)
        assert sum(counts) >= 4000
        # and once more after the storm
        after = await run_stream(server.url, good, {"language": "en"})
        assert server.http("/healthz")[0] == 200
        text = server.metrics()
        log = server.log()
    for result in (busy, after):
        check_events(result.events)
        assert result.close_code == 1000
        assert _comparable(result.events) == _comparable(quiet.events)
    assert metric(text, "streamser_active_streams") == 0
    assert metric(text, "streamser_errors_total", code="partial_sample") > 100
    assert "Traceback" not in log
