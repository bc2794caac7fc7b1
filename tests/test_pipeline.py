"""The in-process pipeline: speculative recognition during the hangover gives exactly
the events that recognition after the close gives (real Whisper, shipped graphs,
real EMO-DB speech)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from streamser.audio.segmenter import SegmenterOptions
from streamser.metrics import Metrics
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions

from _pipeline_helpers import run_stream, speech, warm_recognizer

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def recognizer(shipped_models: Path) -> Recognizer:
    return warm_recognizer(shipped_models)


def _ends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("utterance_id", "start", "end", "transcript", "label", "scores")
    return [
        {key: event[key] for key in keep}
        for event in events
        if event["type"] == "utterance.end"
    ]


def _assert_same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same utterances; scores to 1e-4, as an utterance batched with different
    neighbours (zero-padded rows) differs in the last float digits."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert {k: v for k, v in a.items() if k != "scores"} == {
            k: v for k, v in b.items() if k != "scores"
        }
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)


def _count(metrics: Metrics, outcome: str) -> float:
    return metrics.speculations.labels(outcome)._value.get()


async def test_speculation_gives_the_same_events(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    audio = speech(emodb_clips[:3], pause_s=1.0)
    speculative, metrics = await run_stream(
        recognizer, audio, "de", SegmenterOptions(early_end_ms=90)
    )
    plain, plain_metrics = await run_stream(
        recognizer, audio, "de", SegmenterOptions(early_end_ms=0)
    )
    assert len(_ends(plain)) == 3
    _assert_same(_ends(speculative), _ends(plain))
    assert _count(metrics, "used") == 3
    assert _count(plain_metrics, "used") == 0


async def test_speech_resuming_discards_the_speculation(
    recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    # 0.1 s pauses (plus the clips' own edges): past early_end_ms (90) but short of the hangover (400), so each
    # pause starts a speculation that the next clip makes stale.
    audio = speech(emodb_clips[10:13], pause_s=0.1)
    speculative, metrics = await run_stream(
        recognizer, audio, "de", SegmenterOptions(early_end_ms=90)
    )
    plain, _ = await run_stream(
        recognizer, audio, "de", SegmenterOptions(early_end_ms=0)
    )
    _assert_same(_ends(speculative), _ends(plain))
    assert _count(metrics, "discarded") >= 1
    assert _count(metrics, "used") == len(_ends(plain))


async def test_a_stream_adapts_to_its_speaker(
    recognizer: Recognizer, adaptive_models: Path, emodb_clips: list[Path]
) -> None:
    """An acoustic graph that adapts to the speaker reads a stream's utterances against
    the earlier ones: the first is heard alone, later ones differ from hearing them
    alone, speculation still gives the same events, and switching adaptation off hears
    every one alone."""
    emotion = EmotionOptions(model_dir=str(adaptive_models))
    adapting = Recognizer(RecognizerOptions(emotion))
    alone = Recognizer(
        RecognizerOptions(dataclasses.replace(emotion, speaker_adaptation=False))
    )
    assert adapting.adaptation_window == 32 and alone.adaptation_window == 0
    assert recognizer.adaptation_window == 0  # the shipped model does not adapt
    audio = speech(emodb_clips[:3], pause_s=1.0)
    adapted, metrics = await run_stream(
        adapting, audio, "de", SegmenterOptions(early_end_ms=90)
    )
    plain, _ = await run_stream(adapting, audio, "de", SegmenterOptions(early_end_ms=0))
    cold, _ = await run_stream(alone, audio, "de", SegmenterOptions(early_end_ms=90))
    adapted_ends, cold_ends = _ends(adapted), _ends(cold)
    assert len(adapted_ends) == len(cold_ends) == 3
    _assert_same(adapted_ends, _ends(plain))
    assert _count(metrics, "used") == 3
    assert adapted_ends[0]["scores"] == pytest.approx(cold_ends[0]["scores"], abs=1e-4)
    for a, c in zip(adapted_ends[1:], cold_ends[1:], strict=True):
        assert max(abs(a["scores"][k] - c["scores"][k]) for k in a["scores"]) > 1e-4
