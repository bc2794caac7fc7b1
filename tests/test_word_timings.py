"""Word timings (``asr.word_timestamps``): real Whisper aligns the words of the
demo clip's utterances, and ``utterance.end`` carries them in stream time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamser.audio.decode import read_audio_file
from streamser.events import UtteranceEnd, WordTiming, event_from_dict
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions

from _pipeline_helpers import run_stream

DEMO = Path(__file__).resolve().parents[1] / "streamser" / "assets" / "demo.wav"


def _plain(text: str) -> list[str]:
    return re.sub(r"\s+", " ", text).strip().split(" ")


def test_words_are_read_and_left_out_when_absent() -> None:
    """``words`` round-trips through JSON, and is not in the JSON without timings
    (older readers and the behaviour lock see the same events as before)."""
    common = dict(
        utterance_id=0,
        start=1.0,
        end=2.0,
        transcript="Hi there.",
        language="en",
        label="neutral",
        confidence=0.9,
        scores={"neutral": 0.9, "happy": 0.1},
    )
    plain = UtteranceEnd(**common)  # type: ignore[arg-type]
    assert "words" not in plain.to_dict()
    timed = UtteranceEnd(
        **common,  # type: ignore[arg-type]
        words=(WordTiming("Hi", 1.1, 1.3, 0.9), WordTiming("there.", 1.3, 1.8, 0.8)),
    )
    data = {"type": "utterance.end", **timed.to_dict()}
    assert data["words"][1] == {
        "word": "there.",
        "start": 1.3,
        "end": 1.8,
        "probability": 0.8,
    }
    assert event_from_dict(data) == timed
    assert event_from_dict({"type": "utterance.end", **plain.to_dict()}) == plain


@pytest.mark.data
async def test_utterance_end_carries_aligned_words(shipped_models: Path) -> None:
    options = RecognizerOptions(
        EmotionOptions(model_dir=str(shipped_models)),
        AsrOptions(word_timestamps=True),
    )
    recognizer = Recognizer(options)
    events, _ = await run_stream(recognizer, read_audio_file(DEMO), "en")
    ends = [e for e in events if e["type"] == "utterance.end" and e["asr"] == "ok"]
    assert len(ends) == 3
    for end in ends:
        words = end["words"]
        assert [w["word"] for w in words] == _plain(end["transcript"])
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        for word in words:
            assert end["start"] <= word["start"] <= word["end"] <= end["end"] + 0.5
            assert 0.0 <= word["probability"] <= 1.0
