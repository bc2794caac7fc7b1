"""Audio sources: clips (files, standard input, demo) and ``drive`` into a real
stream session (fixture models, no transcription)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from streamser.audio import sources
from streamser.audio.sources import (
    CHUNK_SAMPLES,
    AudioSource,
    ClipSource,
    demo_clip,
    demo_source,
    drive,
    open_clips,
    stdin_source,
)
from streamser.config import load_config
from streamser.events import Envelope, StreamEnd, StreamStart, UtteranceEnd
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.pipeline import Engine, StreamSession
from streamser.recognition.recognizer import Recognizer

from conftest import FIXTURE_MODELS


def _noise(seconds: float, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


async def _chunks(source: AudioSource) -> list[npt.NDArray[np.float32]]:
    async def collect() -> list[npt.NDArray[np.float32]]:
        return [chunk async for chunk in source]

    return await asyncio.wait_for(collect(), 30)


async def test_a_clip_yields_100_ms_chunks_of_the_whole_audio() -> None:
    audio = _noise(0.55)
    chunks = await _chunks(ClipSource(audio, "a", realtime=False))
    assert [c.shape[0] for c in chunks] == [CHUNK_SAMPLES] * 5 + [800]
    np.testing.assert_array_equal(np.concatenate(chunks), audio)


class _VirtualClock:
    """Time that moves only when the code under test sleeps (no wall clock)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def _arrival_times(source: ClipSource, clock: _VirtualClock) -> list[float]:
    return [round(clock.now - 1000.0, 6) async for _ in source]


@pytest.mark.parametrize("realtime", [False, True])
async def test_a_realtime_clip_is_paced_by_the_clock(
    monkeypatch: pytest.MonkeyPatch, realtime: bool
) -> None:
    clock = _VirtualClock()
    # the source module's own names only: the event loop keeps its real clock
    monkeypatch.setattr(sources, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(sources, "asyncio", SimpleNamespace(sleep=clock.sleep))
    times = await _arrival_times(ClipSource(_noise(0.5), "a", realtime=realtime), clock)
    if realtime:  # each 100 ms chunk when its audio is due, never early
        assert times == [0.0, 0.1, 0.2, 0.3, 0.4]
        assert clock.now - 1000.0 == pytest.approx(0.5)
    else:  # as fast as it is read: no sleeping at all
        assert times == [0.0] * 5
        assert clock.sleeps == []


def test_live_means_never_held_back() -> None:
    assert ClipSource(_noise(0.1), "a", realtime=True).live
    assert not ClipSource(_noise(0.1), "a", realtime=False).live
    demo = demo_source()
    assert demo.live and demo.name == "demo"
    np.testing.assert_array_equal(demo.audio, demo_clip())


def test_stdin_source_decodes_a_whole_file(tmp_path: Path) -> None:
    audio = _noise(0.3)
    encoded = io.BytesIO()
    sf.write(encoded, audio, 16000, format="FLAC", subtype="PCM_16")
    source = stdin_source(
        "stdin", realtime=False, stream=io.BytesIO(encoded.getvalue())
    )
    assert source.name == "stdin" and not source.live
    assert source.samples == audio.shape[0]

    async def decoded() -> np.ndarray:
        return np.concatenate([chunk async for chunk in source])

    np.testing.assert_allclose(asyncio.run(decoded()), audio, atol=1 / 32768)


def test_open_clips_keeps_order_names_streams_apart_and_reports_errors(
    tmp_path: Path,
) -> None:
    (tmp_path / "x").mkdir()
    paths = [tmp_path / "a.wav", tmp_path / "x" / "a.wav", tmp_path / "b.wav"]
    for index, path in enumerate(paths):
        sf.write(path, _noise(0.2, seed=index), 16000)
    missing = tmp_path / "missing.wav"
    sources, errors = open_clips([*paths, missing, paths[0]], realtime=False)
    assert [s.name for s in sources] == ["a.wav", "a.wav#2", "b.wav", "a.wav#3"]
    assert [str(e) for e in errors] == [f"file not found: {missing}"]


@pytest.fixture(scope="module")
def recognizer() -> Iterator[Recognizer]:
    config = load_config(
        None,
        {"emotion": {"model_dir": str(FIXTURE_MODELS)}, "asr": {"enabled": False}},
        environ={},
    )
    loaded = Recognizer(config.recognizer_options())
    loaded.warm_up()
    yield loaded


def _engine(recognizer: Recognizer, events: list[Envelope]) -> Engine:
    config = load_config(None, environ={})
    engine = Engine(
        recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    engine.add_sink(events.append)
    return engine


async def test_drive_feeds_a_whole_clip_from_start_to_end(
    recognizer: Recognizer,
) -> None:
    events: list[Envelope] = []
    engine = _engine(recognizer, events)
    source = ClipSource(demo_clip(), "demo.wav", realtime=False)
    session = StreamSession(engine, StartMessage(encoding="pcm_f32le"), source.name)
    try:
        await asyncio.wait_for(drive(source, session), 120)
    finally:
        engine.close()
    assert isinstance(events[0].body, StreamStart)
    assert sum(isinstance(e.body, UtteranceEnd) for e in events) == 3
    end = events[-1].body
    assert isinstance(end, StreamEnd)
    assert end.audio_seconds == pytest.approx(demo_clip().size / 16000, abs=1e-3)
    assert session.closed


async def test_drive_stops_a_live_source_and_still_ends_the_stream(
    recognizer: Recognizer,
) -> None:
    events: list[Envelope] = []
    engine = _engine(recognizer, events)
    source = ClipSource(demo_clip(), "demo", realtime=True)
    session = StreamSession(engine, StartMessage(encoding="pcm_f32le"), source.name)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    try:
        await asyncio.wait_for(drive(source, session, stop), 30)
    finally:
        engine.close()
    end = events[-1].body
    assert isinstance(end, StreamEnd)
    assert 0.4 <= end.audio_seconds <= 1.5
