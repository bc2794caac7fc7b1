"""Batching across streams changes no event: the same real speech on four concurrent
streams through the real pipeline (real Whisper, shipped graphs, EMO-DB) gives the
same ``utterance.end`` events with ``max_batch = 8`` as with ``max_batch = 1``; and the
batching defaults follow the device."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from streamser.config import Config
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.pipeline import BATCH_DEFAULTS, Engine, PipelineOptions, StreamSession
from streamser.recognition.recognizer import Recognizer

from _pipeline_helpers import warm_recognizer

STREAMS = 4


@pytest.fixture(scope="module")
def recognizer(shipped_models: Path) -> Recognizer:
    return warm_recognizer(shipped_models)


def _speech(clips: list[Path]) -> np.ndarray:
    """Clips joined by 1 s of silence, 1 s of silence around them."""
    parts = [np.zeros(16000, np.float32)]
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32")
        assert rate == 16000
        parts += [audio, np.zeros(16000, np.float32)]
    return np.concatenate(parts)


async def _run(
    recognizer: Recognizer, audios: list[np.ndarray], max_batch: int
) -> tuple[dict[str, list[dict[str, Any]]], Metrics]:
    """Feed every stream at once, chunk by chunk, as fast as possible: utterances of
    different streams close together and wait for the one worker together."""
    config = Config()
    options = dataclasses.replace(
        config.pipeline,
        max_batch=max_batch,
        batch_wait_ms=50,
        workers=1,
        partial_interval_ms=0,  # partials are skipped when busy: timing-dependent
        asr_max_lag_ms=600_000,  # never skip ASR: both runs transcribe everything
    )
    metrics = Metrics()
    engine = Engine(recognizer, options, config.vad, config.segmenter, metrics)
    events: list[dict[str, Any]] = []
    engine.add_sink(lambda envelope: events.append(envelope.to_dict()))
    sessions = [
        StreamSession(engine, StartMessage(language="de"), f"s{i}")
        for i in range(len(audios))
    ]

    async def play() -> None:
        for session in sessions:
            session.open()
        longest = max(a.size for a in audios)
        for offset in range(0, longest, 3200):  # 200 ms chunks
            for session, audio in zip(sessions, audios, strict=True):
                if offset < audio.size:
                    session.feed_audio(audio[offset : offset + 3200])
        await asyncio.gather(*(session.close() for session in sessions))

    try:
        await asyncio.wait_for(play(), 600)
    finally:
        engine.close()
    keep = ("utterance_id", "start", "end", "transcript", "language", "label", "asr")
    ends: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["type"] == "utterance.end":
            entry = {key: event.get(key) for key in keep}
            entry["scores"] = event["scores"]
            ends.setdefault(event["stream_id"], []).append(entry)
    return ends, metrics


def _batches(metrics: Metrics) -> tuple[float, float]:
    """(batches, utterances in them) from the batch-size histogram."""
    count = total = 0.0
    for family in metrics.batch_size.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return count, total


@pytest.mark.data
async def test_batched_streams_give_the_same_events_as_unbatched(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    audios = [
        _speech(emodb_clips[3 * i : 3 * i + 3]) for i in range(STREAMS)
    ]  # 4 streams, 3 different utterances each
    batched, batched_metrics = await _run(recognizer, audios, max_batch=8)
    single, single_metrics = await _run(recognizer, audios, max_batch=1)
    assert sorted(single) == [f"s{i}" for i in range(STREAMS)]
    for stream, expected in single.items():
        got = batched[stream]
        assert len(got) == len(expected) == 3
        for a, b in zip(got, expected, strict=True):
            assert a["asr"] == "ok" and a["transcript"]
            assert {k: v for k, v in a.items() if k != "scores"} == {
                k: v for k, v in b.items() if k != "scores"
            }
            # Zero-padded neighbours change the last float digits, nothing more.
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
    count, total = _batches(batched_metrics)
    assert total == 3 * STREAMS and count < total  # some calls did carry a batch
    assert _batches(single_metrics) == (3 * STREAMS, 3 * STREAMS)


def test_batching_defaults_follow_the_device() -> None:
    options = PipelineOptions()
    assert (options.max_batch, options.batch_wait_ms) == (0, -1)  # by device
    cpu = options.for_device("cpu", cores=2)
    assert (cpu.max_batch, cpu.batch_wait_ms, cpu.workers) == (
        *BATCH_DEFAULTS["cpu"],
        2,
    )
    one = options.for_device("cpu", cores=1)
    assert (one.max_batch, one.batch_wait_ms, one.workers) == (1, 0, 1)
    gpu = options.for_device("cuda", cores=16, asr_workers=2)
    assert (gpu.max_batch, gpu.batch_wait_ms, gpu.workers) == (
        *BATCH_DEFAULTS["cuda"],
        2,
    )
    assert gpu.max_batch > cpu.max_batch
    # What is set explicitly stays, on any device.
    fixed = PipelineOptions(max_batch=3, batch_wait_ms=0, workers=5)
    assert fixed.for_device("cuda") == fixed
    with pytest.raises(ValueError, match="max_batch"):
        PipelineOptions(batch_wait_ms=-2)
