"""One stream through a real ``Engine`` and ``StreamSession``, in process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from streamser.audio.decode import read_audio_file
from streamser.audio.segmenter import SegmenterOptions
from streamser.config import Config
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.pipeline import Engine, StreamSession
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions


def speech(clips: list[Path], pause_s: float = 1.0) -> np.ndarray:
    """Clips (read at 16 kHz) joined by ``pause_s`` of silence, 1 s of silence
    around them."""
    parts = [np.zeros(16000, np.float32)]
    for clip in clips:
        parts += [read_audio_file(clip), np.zeros(int(pause_s * 16000), np.float32)]
    parts.append(np.zeros(16000, np.float32))
    return np.concatenate(parts)


async def run_stream(
    recognizer: Recognizer,
    audio: np.ndarray,
    language: str,
    segmenter: SegmenterOptions | None = None,
) -> tuple[list[dict[str, Any]], Metrics]:
    """Every event of one stream of ``audio`` (as dicts) and the engine's metrics.

    The audio goes in 200 ms chunks, each after the previous utterances are
    recognised: a lightly loaded host feeding at about real time (a stream adapting
    to its speaker speculates only then).
    """
    config = Config()
    metrics = Metrics()
    engine = Engine(
        recognizer,
        config.pipeline,
        config.vad,
        segmenter or config.segmenter,
        metrics,
    )
    events: list[dict[str, Any]] = []
    engine.add_sink(lambda envelope: events.append(envelope.to_dict()))
    session = StreamSession(engine, StartMessage(language=language), "s1")

    async def play() -> None:
        session.open()
        for offset in range(0, audio.size, 3200):
            session.feed_audio(audio[offset : offset + 3200])
            while engine.busy or session.pending_utterances:
                await asyncio.sleep(0.005)
        await session.close()

    try:
        await asyncio.wait_for(play(), 600)
    finally:
        engine.close()
    return events, metrics


def warm_recognizer(model_dir: Path) -> Recognizer:
    """A recognizer of the emotion models in ``model_dir``, warmed up."""
    recognizer = Recognizer(RecognizerOptions(EmotionOptions(model_dir=str(model_dir))))
    recognizer.warm_up()
    return recognizer
