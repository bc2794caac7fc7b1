"""``streamser serve`` end to end: a real server process, real WebSocket clients,
real EMO-DB speech, the real Whisper model and the shipped emotion graphs (the tiny
fixture graphs stand in until trained ones are shipped)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import run_command
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.serving import ServedDaemon

from _server_helpers import (
    check_stream_events,
    collect,
    encode,
    serve,
    speech_with_pauses,
    stream_audio,
)
from conftest import FIXTURE_MODELS, SHIPPED_MODELS

pytestmark = [
    pytest.mark.data,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _model_dir() -> Path:
    if list(SHIPPED_MODELS.glob("emotion-acoustic-v*.onnx")):
        return SHIPPED_MODELS
    return FIXTURE_MODELS


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, datasets: Path
) -> Iterator[ServedDaemon]:
    tmp = tmp_path_factory.mktemp("serve")
    with serve(
        ["--model-dir", str(_model_dir()), "--jsonl-log", str(tmp / "events.jsonl")],
        tmp,
    ) as process:
        yield process


def _random_sizes(seed: int, low: int, high: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.randint(low, high)


ENCODINGS = [
    ("pcm_s16le", 16000, 1, 2),
    ("pcm_f32le", 44100, 2, 8),
    ("mulaw", 8000, 1, 1),
    ("alaw", 8000, 1, 1),
]


@pytest.mark.parametrize(("encoding", "rate", "channels", "frame_bytes"), ENCODINGS)
async def test_every_encoding_gives_transcribed_emotions(
    server: ServedDaemon,
    emodb_clips: list[Path],
    encoding: str,
    rate: int,
    channels: int,
    frame_bytes: int,
) -> None:
    clips = [emodb_clips[0], emodb_clips[200]]
    payload = encode(speech_with_pauses(clips), rate, encoding, channels)
    start = {
        "sample_rate": rate,
        "encoding": encoding,
        "channels": channels,
        "language": "de",
        "metadata": {"call_id": f"test-{encoding}"},
    }
    result = await stream_audio(
        server.url,
        payload,
        start,
        _random_sizes(len(encoding), 1, 40000),
        frame_bytes=frame_bytes,
    )
    assert result.close_code == 1000
    events = result.events
    check_stream_events(events)
    assert events[0]["metadata"] == {"call_id": f"test-{encoding}"}
    assert events[0]["encoding"] == encoding
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert len(ends) == 2, [e["type"] for e in events]
    for end in ends:
        assert end["transcript"].strip(), end
        assert end["language"] == "de"
    partials = [e for e in events if e["type"] == "emotion.partial"]
    assert partials, "no emotion.partial during 2 s utterances at a 1 s cadence"
    for partial in partials:
        end = next(e for e in ends if e["utterance_id"] == partial["utterance_id"])
        assert partial["seq"] < end["seq"]
        assert abs(sum(partial["scores"].values()) - 1.0) < 1e-4
    speech_starts = [e for e in events if e["type"] == "speech.start"]
    assert [e["utterance_id"] for e in speech_starts] == [
        e["utterance_id"] for e in ends
    ]


async def test_streams_at_once_reach_a_subscriber_and_replay_after(
    server: ServedDaemon, emodb_clips: list[Path]
) -> None:
    # a subscriber filtered to our streams, connected before they start
    names = [f"multi-{i}" for i in range(3)]
    query = "?" + "&".join(f"stream_id={n}" for n in names)
    async with connect(f"{server.url}/v1/events{query}") as subscriber:
        results = await asyncio.gather(
            *(
                stream_audio(
                    server.url,
                    encode(
                        speech_with_pauses([emodb_clips[10 + i]]), 16000, "pcm_s16le"
                    ),
                    {"stream_id": name, "language": "de"},
                    _random_sizes(i, 160, 16000),
                    frame_bytes=2,
                )
                for i, name in enumerate(names)
            )
        )
        expected = {e["id"] for r in results for e in r.events}
        seen: list[dict] = []
        while {e["id"] for e in seen} != expected:
            seen.append(json.loads(await asyncio.wait_for(subscriber.recv(), 60)))
    for result in results:
        check_stream_events(result.events)
        assert any(e["type"] == "utterance.end" for e in result.events)
    # a subscriber that comes back with after= gets what it missed, in order: every
    # retained event (transcript.partial is live only, PROTOCOL.md)
    retained = {
        e["id"] for r in results for e in r.events if e["type"] != "transcript.partial"
    }
    first_id = min(retained)
    replay = await collect(server.url, f"{query}&after={first_id}", max(retained))
    assert [e["id"] for e in replay] == sorted(i for i in retained if i > first_id)


async def test_bad_start_messages_are_refused_with_an_error(
    server: ServedDaemon,
) -> None:
    cases = [
        (b"\x00\x01", "unexpected_binary", 1003),
        ("{not json", "malformed_json", 1008),
        (
            json.dumps({"type": "start", "encoding": "mp3"}),
            "unsupported_encoding",
            1003,
        ),
        (
            json.dumps({"type": "start", "sample_rate": 96000}),
            "unsupported_sample_rate",
            1003,
        ),
        (json.dumps({"type": "flush"}), "unexpected_message", 1008),
    ]
    for first, code, close_code in cases:
        async with connect(f"{server.url}/v1/stream") as ws:
            await asyncio.wait_for(ws.send(first), 10)
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["type"] == "error" and event["code"] == code and event["fatal"]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == close_code


async def test_bad_frames_are_errors_and_the_stream_goes_on(
    server: ServedDaemon, emodb_clips: list[Path]
) -> None:
    audio = encode(speech_with_pauses([emodb_clips[5]]), 16000, "pcm_s16le")

    async def converse() -> list[dict]:
        async with connect(f"{server.url}/v1/stream", max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "language": "de"}))
            await ws.send(b"\x01\x02\x03")  # not whole samples
            await ws.send(b"\x00" * (2 << 20))  # over the 1 MiB message limit
            await ws.send("garbage control")
            await ws.send(json.dumps({"type": "dance"}))
            await ws.send(audio)
            await ws.send(json.dumps({"type": "stop"}))
            return [json.loads(m) async for m in ws]

    events = await asyncio.wait_for(converse(), 300)
    check_stream_events(events)
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert codes == [
        "partial_sample",
        "message_too_large",
        "malformed_json",
        "unexpected_message",
    ]
    assert all(not e["fatal"] for e in events if e["type"] == "error")
    assert any(e["type"] == "utterance.end" for e in events)


async def test_client_vanishing_mid_utterance_loses_nothing(
    server: ServedDaemon, emodb_clips: list[Path]
) -> None:
    audio = speech_with_pauses([emodb_clips[7], emodb_clips[8]])
    cut = int(16000 * 5.0)  # 1 s into the second clip's speech
    payload = encode(audio[:cut], 16000, "pcm_s16le")
    async with connect(f"{server.url}/v1/events?stream_id=vanish") as subscriber:
        ws = await connect(f"{server.url}/v1/stream", open_timeout=30)
        start = {"type": "start", "stream_id": "vanish", "language": "de"}
        await asyncio.wait_for(ws.send(json.dumps(start)), 30)
        await asyncio.wait_for(ws.send(payload), 30)
        await asyncio.sleep(1.0)  # let the bytes reach the server before vanishing
        ws.transport.abort()  # no close frame: the client just disappears
        events = []
        while not events or events[-1]["type"] != "stream.end":
            events.append(json.loads(await asyncio.wait_for(subscriber.recv(), 120)))
    check_stream_events(events)
    assert len([e for e in events if e["type"] == "utterance.end"]) == 2
    assert server.http("/healthz")[0] == 200


def test_health_metrics_and_unknown_paths(server: ServedDaemon) -> None:
    assert server.http("/healthz")[:2] == (200, "ok\n")
    status, text, _ = server.http("/metrics")
    assert status == 200
    assert "streamser_utterances_total" in text
    assert "streamser_end_of_speech_latency_seconds_bucket" in text
    assert server.http("/nope")[0] == 404
    assert server.http("/v1/events?after=x")[0] == 400


async def test_run_jsonl_matches_serve(
    server: ServedDaemon, emodb_clips: list[Path], tmp_path: Path
) -> None:
    import soundfile as sf

    audio = speech_with_pauses([emodb_clips[3], emodb_clips[300]])
    wav = tmp_path / "pair.wav"
    sf.write(wav, audio, 16000)
    result = await stream_audio(
        server.url,
        encode(audio, 16000, "pcm_f32le"),
        {"encoding": "pcm_f32le", "language": "de", "stream_id": "pair.wav"},
        itertools.repeat(16000 * 4),
        frame_bytes=4,
    )
    run = run_command(
        *("streamser", "run", wav, "--jsonl", "--language", "de"),
        *("--model-dir", _model_dir()),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    offline = [json.loads(line) for line in run.stdout.splitlines()]

    def comparable(events: list[dict]) -> list[dict]:
        drop = {"id", "time", "latency_ms", "sample_rate", "encoding", "origin"}
        out = []
        for event in events:
            if event["type"] == "emotion.partial":
                continue  # cadence depends on the client's chunking and timing
            kept = {k: v for k, v in event.items() if k not in drop}
            if "scores" in kept:
                kept["scores"] = {k: round(v, 2) for k, v in kept["scores"].items()}
                kept.pop("confidence")
                kept.pop("modalities")
            kept.pop("seq")
            out.append(kept)
        return out

    assert comparable(offline) == comparable(result.events)


def test_models_command_checks_each_model() -> None:
    run = run_command(
        "streamser", "models", "--model-dir", _model_dir(), "--no-asr", timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "emotion-acoustic-v" in run.stdout and "load: ok" in run.stdout


def test_corrupt_model_fails_at_start_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "emotion-acoustic-v1.onnx").write_bytes(b"not onnx at all")
    run = run_command(
        "streamser", "serve", "--port", "0", "--model-dir", folder, timeout=120
    )
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and "not a loadable ONNX graph" in lines[0]
    assert "Traceback" not in run.stderr
