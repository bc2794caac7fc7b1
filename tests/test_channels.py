"""Two-channel calls: each channel of a ``"channel_mode": "separate"`` stream gets its
own utterances, ``channel`` on every utterance event, a ``call.summary`` before
``stream.end`` and a ``call.alert`` when the agent stays angry. Real EMO-DB speech
(agent: anger clips, customer: sadness clips, taking turns), the shipped acoustic
model, in process and through a ``streamser serve --no-asr`` subprocess."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from benchmarks.serving import ServedDaemon
from streamser.audio.decode import AudioDecoder
from streamser.config import Config
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.pipeline import Engine, StreamSession
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions

from _server_helpers import check_stream_events, collect, serve, stream_audio
from conftest import SHIPPED_MODELS

# Measured first (the shipped acoustic model, no ASR, each clip alone on its channel
# with 1 s of silence around it): each of these is one utterance, the anger clips
# labelled anger (confidence 0.78 to 0.91) and the sadness clips sadness (0.82 to
# 0.95). 08a02Tb is left out: a pause inside it makes two utterances.
AGENT_CLIPS = ("03a01Wa.wav", "03a02Wb.wav", "03a02Wc.wav", "03a04Wc.wav")
CUSTOMER_CLIPS = ("08a04Tb.wav", "08a05Ta.wav", "08a07Ta.wav", "08a07Tb.wav")
NAMES = ["agent", "customer"]
UTTERANCE_EVENTS = ("speech.start", "emotion.partial", "utterance.end")


def _clip(datasets: Path, name: str) -> np.ndarray:
    path = datasets / "emodb" / "wav" / name
    if not path.is_file():
        pytest.skip(f"EMO-DB clip {name} not found")
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return audio


def conversation(datasets: Path) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """Stereo 16 kHz float audio, agent left and customer right, taking turns with
    1 s of silence between turns; and (channel, start s, end s) of each clip."""
    silence = np.zeros(16000, np.float32)
    left, right, turns = [silence], [silence], []
    position = 1.0
    for agent, customer in zip(AGENT_CLIPS, CUSTOMER_CLIPS, strict=True):
        for channel, audio in (
            (0, _clip(datasets, agent)),
            (1, _clip(datasets, customer)),
        ):
            quiet = np.zeros_like(audio)
            left += [audio if channel == 0 else quiet, silence]
            right += [quiet if channel == 0 else audio, silence]
            turns.append((channel, position, position + audio.size / 16000))
            position += audio.size / 16000 + 1.0
    return np.stack([np.concatenate(left), np.concatenate(right)], axis=1), turns


def pcm16(stereo: np.ndarray) -> bytes:
    """Interleaved 16-bit little-endian PCM."""
    return (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def recognizer(shipped_models: Path) -> Recognizer:
    options = RecognizerOptions(
        EmotionOptions(model_dir=str(shipped_models)), AsrOptions(enabled=False)
    )
    loaded = Recognizer(options)
    loaded.warm_up()
    return loaded


async def _session_events(
    recognizer: Recognizer, payload: bytes, chunk_frames: int
) -> list[dict[str, Any]]:
    config = Config()
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    events: list[dict[str, Any]] = []
    engine.add_sink(lambda envelope: events.append(envelope.to_dict()))
    start = StartMessage(
        channels=2, channel_mode="separate", metadata={"channels": NAMES}
    )
    session = StreamSession(engine, start, "call")

    async def play() -> None:
        session.open()
        step = chunk_frames * 4
        for offset in range(0, len(payload), step):
            session.feed(payload[offset : offset + step])
            await session.wait_for_room()
            await asyncio.sleep(0)
        await session.close()

    try:
        await asyncio.wait_for(play(), 120)
    finally:
        engine.close()
    return events


def check_call(events: list[dict[str, Any]], turns: list[tuple[int, float, float]]):
    """The two-channel invariants; returns the final call.summary."""
    check_stream_events(events)
    ends = [e for e in events if e["type"] == "utterance.end"]
    # One utterance.end per clip, on the clip's channel, within the clip's time.
    assert len(ends) == len(turns)
    for end in ends:
        channel, start, stop = min(
            turns,
            key=lambda t: abs((t[1] + t[2]) / 2 - (end["start"] + end["end"]) / 2),
        )
        assert end["channel"] == channel, (end, turns)
        assert start - 0.5 <= end["start"] and end["end"] <= stop + 0.5
    assert [sum(e["channel"] == c for e in ends) for c in (0, 1)] == [4, 4]
    # utterance_id: unique in the stream across channels, shared by the events of
    # one utterance, which all carry that utterance's channel.
    ids = [e["utterance_id"] for e in ends]
    assert sorted(ids) == list(range(len(ends)))
    channel_of = {e["utterance_id"]: e["channel"] for e in ends}
    for event in events:
        if event["type"] in UTTERANCE_EVENTS:
            assert event["channel"] == channel_of[event["utterance_id"]], event
    starts = [e["utterance_id"] for e in events if e["type"] == "speech.start"]
    assert starts == sorted(starts) and sorted(starts) == sorted(ids)
    # The measured labels: anger on the agent's channel, sadness on the customer's.
    assert [e["label"] for e in ends if e["channel"] == 0] == ["anger"] * 4
    assert [e["label"] for e in ends if e["channel"] == 1] == ["sadness"] * 4
    # call.summary right before stream.end, matching the events.
    assert [e["type"] for e in events[-2:]] == ["call.summary", "stream.end"]
    summary = events[-2]
    for channel, part in enumerate(summary["channels"]):
        mine = [e for e in ends if e["channel"] == channel]
        assert part["channel"] == channel and part["name"] == NAMES[channel]
        assert part["utterances"] == len(mine)
        counts: dict[str, int] = {}
        for end in mine:
            counts[end["label"]] = counts.get(end["label"], 0) + 1
        assert part["label_counts"] == counts
        talk = sum(e["end"] - e["start"] for e in mine)
        assert part["talk_seconds"] == pytest.approx(talk, abs=0.01)
        for field in ("arousal", "valence"):  # the shipped graph gives both
            values = [e[field] for e in mine]
            assert part[f"mean_{field}"] == pytest.approx(
                sum(values) / len(values), abs=1e-3
            )
    assert summary["overlap_seconds"] < 1.0  # turns; only the pads may touch
    assert 0.5 <= summary["longest_silence_s"] <= 1.5
    assert summary["duration_s"] == events[-1]["audio_seconds"]
    # The agent's anger raised one alert, on channel 0, after its second angry
    # utterance; it is in the summary too.
    alerts = [e for e in events if e["type"] == "call.alert"]
    assert [(a["rule"], a["channel"]) for a in alerts] == [("sustained_anger", 0)]
    agent_ids = [e["utterance_id"] for e in ends if e["channel"] == 0]
    assert alerts[0]["utterance_ids"] == agent_ids[:2]
    second = next(e for e in ends if e["utterance_id"] == agent_ids[1])
    assert alerts[0]["seq"] == second["seq"] + 1
    assert summary["alerts"] == [
        {k: a[k] for k in ("rule", "channel", "utterance_ids", "message")}
        for a in alerts
    ]
    return summary


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.data
async def test_two_channels_in_process_whatever_the_chunking(
    recognizer: Recognizer, datasets: Path
) -> None:
    stereo, turns = conversation(datasets)
    payload = pcm16(stereo)
    by_size = {
        frames: await _session_events(recognizer, payload, frames)
        for frames in (160, 16000)
    }
    for events in by_size.values():
        check_call(events, turns)
    # The same utterances, ids and channels (when each utterance.end comes
    # relative to the other channel's speech.start depends on timing).
    keep = ("type", "utterance_id", "channel", "start", "end", "label")
    same = [
        sorted(
            (tuple(str(e.get(k)) for k in keep))
            for e in events
            if e["type"] in ("speech.start", "utterance.end")
        )
        for events in by_size.values()
    ]
    assert same[0] == same[1]


def test_separate_decoding_keeps_channels_apart() -> None:
    rng = np.random.default_rng(7)
    stereo = (rng.standard_normal((8000, 2)) * 0.1).astype(np.float32)
    payload = (stereo * 32767).astype("<i2").tobytes()
    both = AudioDecoder("pcm_s16le", 8000, 2, separate=True)
    lanes = np.concatenate(
        [both.decode_lanes(payload[:4000]), both.decode_lanes(payload[4000:])]
        + [both.flush_lanes()]
    )
    assert lanes.shape == (16000, 2) and both.lanes == 2
    for channel in (0, 1):
        mono = (stereo[:, channel] * 32767).astype("<i2").tobytes()
        alone = AudioDecoder("pcm_s16le", 8000, 1)
        expected = np.concatenate([alone.decode(mono), alone.flush()])
        np.testing.assert_allclose(lanes[:, channel], expected, atol=1e-5)
    with pytest.raises(ValueError, match="keeps channels apart"):
        both.decode(payload)
    mixed = AudioDecoder("pcm_s16le", 16000, 2)
    assert mixed.lanes == 1 and mixed.decode(payload).shape == (8000,)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, datasets: Path):
    if not list(SHIPPED_MODELS.glob("emotion-acoustic-v*.onnx")):
        pytest.skip("no shipped acoustic model")
    tmp = tmp_path_factory.mktemp("serve-channels")
    with serve(["--model-dir", str(SHIPPED_MODELS), "--no-asr"], tmp) as process:
        yield process


@pytest.mark.data
async def test_two_channel_stream_over_websocket(
    server: ServedDaemon, datasets: Path
) -> None:
    stereo, turns = conversation(datasets)
    start = {
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "channels": 2,
        "channel_mode": "separate",
        "stream_id": "call-2ch",
        "metadata": {"channels": NAMES},
    }
    result = await stream_audio(
        server.url, pcm16(stereo), start, itertools.repeat(6400), frame_bytes=4
    )
    assert result.close_code == 1000
    summary = check_call(result.events, turns)
    # Subscribers get the call events too, and may filter on their types.
    last = result.events[-2]["id"]  # the call.summary
    seen = await collect(
        server.url,
        "?stream_id=call-2ch&types=call.summary,call.alert&after=0",
        last,
        60,
    )
    assert [e["type"] for e in seen] == ["call.alert", "call.summary"]
    assert seen[-1]["channels"] == summary["channels"]


@pytest.mark.data
async def test_summary_request_mid_stream(server: ServedDaemon, datasets: Path) -> None:
    stereo, turns = conversation(datasets)
    payload = pcm16(stereo)
    half = len(payload) // 2 // 4 * 4
    events: list[dict[str, Any]] = []

    async def converse() -> None:
        async with connect(f"{server.url}/v1/stream", max_size=None) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "start",
                        "channels": 2,
                        "channel_mode": "separate",
                        "metadata": {"channels": NAMES},
                    }
                )
            )
            await ws.send(payload[:half])
            await ws.send(json.dumps({"type": "summary"}))
            while not any(e["type"] == "call.summary" for e in events):
                events.append(json.loads(await ws.recv()))
            await ws.send(payload[half:])
            await ws.send(json.dumps({"type": "stop"}))
            async for message in ws:
                events.append(json.loads(message))

    await asyncio.wait_for(converse(), 300)
    summaries = [e for e in events if e["type"] == "call.summary"]
    assert len(summaries) == 2
    middle, final = summaries
    assert middle["duration_s"] == pytest.approx(stereo.shape[0] / 2 / 16000, abs=0.01)
    ends_before = [
        e for e in events if e["type"] == "utterance.end" and e["seq"] < middle["seq"]
    ]
    assert sum(c["utterances"] for c in middle["channels"]) == len(ends_before)
    assert [c["name"] for c in middle["channels"]] == NAMES
    assert final is events[-2] and events[-1]["type"] == "stream.end"
    assert sum(c["utterances"] for c in final["channels"]) == len(turns)


@pytest.mark.parametrize(
    ("start", "code"),
    [
        ({"channel_mode": "separate"}, "invalid_channel_mode"),
        ({"channels": 2, "channel_mode": "both"}, "invalid_channel_mode"),
    ],
)
async def test_bad_channel_mode_is_refused(
    server: ServedDaemon, start: dict[str, Any], code: str
) -> None:
    async with connect(f"{server.url}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", **start}))
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        await asyncio.wait_for(ws.wait_closed(), 30)
    assert (event["type"], event["code"], event["fatal"]) == ("error", code, True)
    assert "channel_mode" in event["message"]
    assert ws.close_code == 1008
