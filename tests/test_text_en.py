"""The text graphs that bring their own front end: the English graph (emotion +
sentiment over MiniLM WordPiece ids) and the Persian character n-gram graph; their
contract fields, language routing, ``utterance.end``'s ``sentiment`` and
``training evaluate`` on MELD-form CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from _cli_helpers import run_command, usage_error

from streamser.errors import ModelError
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.contract import ModelContract
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.models import OnnxModel
from streamser.recognition.recognizer import Recognizer, RecognizerOptions
from streamser.recognition.text_front import CharNgramEncoder, char_wb_ngrams

from _pipeline_helpers import run_stream, speech
from _text_helpers import text_recognizer

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "streamser" / "models"
EN_GRAPH = MODELS / "emotion-text-en-v2.onnx"


def _contract(**fields: Any) -> ModelContract:
    return ModelContract(
        name="emotion-text-en-v2",
        kind="text",
        version="1",
        labels=("anger", "happiness", "neutral"),
        embedding_dim=4,
        languages=("en",),
        **fields,
    )


def test_contract_round_trips_tokenizer_and_sentiment_labels() -> None:
    contract = _contract(
        tokenizer="wordpiece:emotion-text-en-v2.tokenizer.json",
        sentiment_labels=("negative", "neutral", "positive"),
    )
    meta = contract.to_metadata()
    assert json.loads(meta["streamser.sentiment_labels"]) == [
        "negative",
        "neutral",
        "positive",
    ]
    assert ModelContract.from_metadata(meta, "x.onnx") == contract


def test_an_older_text_contract_has_no_tokenizer_and_no_sentiment() -> None:
    meta = _contract().to_metadata()
    assert "streamser.tokenizer" not in meta
    assert "streamser.sentiment_labels" not in meta
    read = ModelContract.from_metadata(meta, "x.onnx")
    assert read.tokenizer == "" and read.sentiment_labels == ()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tokenizer", "sentencepiece:x.model", "field tokenizer"),
        ("tokenizer", "wordpiece:../x.json", "field tokenizer"),
        ("tokenizer", "wordpiece:", "field tokenizer"),
        ("sentiment_labels", '["bad", "good"]', "field sentiment_labels"),
        ("sentiment_labels", "[]", "field sentiment_labels"),
        ("sentiment_labels", "positive", "not JSON"),
    ],
)
def test_bad_text_fields_are_model_errors(key: str, value: str, message: str) -> None:
    meta = _contract().to_metadata()
    meta["streamser." + key] = value
    with pytest.raises(ModelError, match=message):
        ModelContract.from_metadata(meta, "x.onnx")


def test_char_ngrams_cut_words_as_scikit_learn_does() -> None:
    sklearn = pytest.importorskip("sklearn.feature_extraction.text")
    text = "نمی‌دونم  از دست شما باید چی کار کنم. OK a"
    analyzer = sklearn.TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 5)
    ).build_analyzer()
    assert char_wb_ngrams(text, 1, 5) == analyzer(text)


def _shipped(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.name} is not shipped")
    return path


def test_the_english_graph_declares_its_tokenizer_and_sentiment() -> None:
    model = OnnxModel(_shipped(EN_GRAPH))
    assert model.contract.languages == ("en",)
    assert model.contract.tokenizer == "wordpiece:emotion-text-en-v2.tokenizer.json"
    assert model.contract.sentiment_labels == ("negative", "neutral", "positive")
    assert "happiness" in model.contract.labels and "joy" not in model.contract.labels
    assert (MODELS / "emotion-text-en-v2.tokenizer.json").is_file()


def test_sentiment_labels_and_output_must_come_together(tmp_path: Path) -> None:
    graph = onnx.load(str(_shipped(EN_GRAPH)))
    kept = [p for p in graph.metadata_props if p.key != "streamser.sentiment_labels"]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    path = tmp_path / "emotion-text-en-v9.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ModelError, match="sentiment_labels and the sentiment output"):
        OnnxModel(path)


def test_a_missing_tokenizer_file_is_a_model_error(tmp_path: Path) -> None:
    for name in ("emotion-acoustic-v2.onnx", "emotion-text-en-v2.onnx"):
        (tmp_path / name).write_bytes(_shipped(MODELS / name).read_bytes())
    with pytest.raises(ModelError, match="tokenizer file named by the text graph"):
        Recognizer(
            RecognizerOptions(
                EmotionOptions(model_dir=str(tmp_path)), AsrOptions(enabled=False)
            )
        )


@pytest.fixture(scope="module")
def text_only() -> Recognizer:
    """The shipped models without Whisper: text graphs with their own front ends."""
    _shipped(EN_GRAPH)
    return text_recognizer()


def test_english_text_gets_emotion_and_sentiment(text_only: Recognizer) -> None:
    texts = [
        "I love you, this is the best day of my life!",
        "Get out of here, I hate you!",
        "",
    ]
    got = text_only.text_outputs(texts, ["en", "en", "en"])
    happy, angry, empty = got
    assert empty is None
    assert happy is not None and angry is not None
    assert happy.sentiment is not None and angry.sentiment is not None
    assert happy.sentiment.label == "positive"
    assert angry.sentiment.label == "negative"
    assert sum(happy.scores.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(happy.sentiment.scores) == {"negative", "neutral", "positive"}


def test_char_ngram_ids_are_the_tfidf_columns(tmp_path: Path) -> None:
    text_module = pytest.importorskip("sklearn.feature_extraction.text")
    texts = [
        "دیگه نمی‌تونم تحمل کنم.",
        "نمی‌دونم از دست شما باید چی کار کنم.",
        "چی کار کنم",
    ]
    vec = text_module.TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), binary=True
    )
    vec.fit(texts[:2])
    vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
    path = tmp_path / "v.ngrams.json"
    path.write_text(
        json.dumps(
            {"ngram_range": [2, 4], "lowercase": True, "vocabulary": vocabulary}
        ),
        encoding="utf-8",
    )
    encoder = CharNgramEncoder(path)
    for text in texts:
        assert encoder.encode(text).tolist() == sorted(vec.transform([text]).indices)
    assert encoder.encode("").size == 0


def test_a_bad_char_ngram_vocabulary_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "v.ngrams.json"
    path.write_text('{"ngram_range": [3, 2], "vocabulary": []}', encoding="utf-8")
    with pytest.raises(ModelError, match="not a character n-gram vocabulary"):
        CharNgramEncoder(path)


def _clips(datasets: Path, pattern: str, count: int) -> list[Path]:
    clips = sorted(datasets.glob(pattern))[:count]
    if len(clips) < count:
        pytest.skip(f"no clips {pattern} under {datasets}")
    return clips


@pytest.fixture(scope="module")
def with_asr() -> Recognizer:
    _shipped(EN_GRAPH)
    options = RecognizerOptions(EmotionOptions(model_dir=str(MODELS)))
    return Recognizer(options)


@pytest.mark.data
async def test_english_speech_carries_sentiment_and_text(
    with_asr: Recognizer, datasets: Path
) -> None:
    clips = _clips(datasets, "ravdess/Actor_01/03-01-0[35]-02-*.flac", 2)
    events, _ = await run_stream(with_asr, speech(clips), "en")
    ends = [e for e in events if e["type"] == "utterance.end"]
    spoken = [e for e in ends if e["transcript"]]
    assert spoken, ends
    for event in spoken:
        assert event["language"] == "en"
        assert event["modalities"]["text"] is not None
        assert event["sentiment"]["label"] in ("negative", "neutral", "positive")
        assert sum(event["sentiment"]["scores"].values()) == pytest.approx(
            1.0, abs=1e-4
        )
        assert event["label"] == event["modalities"]["acoustic"]["label"]


@pytest.mark.data
async def test_german_speech_gets_the_multilingual_text_model(
    with_asr: Recognizer, emodb_clips: list[Path]
) -> None:
    events, _ = await run_stream(with_asr, speech(emodb_clips[:1]), "de")
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert ends and ends[0]["transcript"]
    assert ends[0]["modalities"]["text"]["language"] == "de"
    assert ends[0]["sentiment"]["label"] in ("negative", "neutral", "positive")


@pytest.mark.data
@pytest.mark.train
def test_evaluate_scores_meld_rows_with_sentiment(
    tmp_path: Path, datasets: Path
) -> None:
    _shipped(EN_GRAPH)
    source = datasets / "meld-text" / "dev.csv"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[:13]
    sample = tmp_path / "dev12.csv"
    with sample.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    done = run_command(
        *("training", "evaluate", "--data", f"meld-text:{sample}"),
        *("--models", MODELS, "--json"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == 12
    for part in (report, report["sentiment"]):
        assert {"weighted_f1", "ua", "wa", "n", "confusion"} <= set(part)
        assert 0.0 <= part["weighted_f1"] <= 1.0
    assert report["sentiment"]["n"] == 12
    assert set(report["sentiment"]["labels"]) <= {"negative", "neutral", "positive"}


@pytest.mark.data
@pytest.mark.train
def test_evaluate_rejects_meld_without_columns(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Utterance,Emotion\nhello,joy\n", encoding="utf-8")
    stderr = usage_error(
        *("training", "evaluate", "--data", f"meld-text:{bad}"),
        *("--models", MODELS, "--json"),
        timeout=300,
    )
    assert "lacks columns Speaker, Sentiment" in stderr


def test_text_cost_benchmark_times_the_english_graph() -> None:
    _shipped(EN_GRAPH)
    from benchmarks.text_cost import run

    section = run(quick=True)
    timing = section.data["emotion-text-en-v2 (en)"]
    assert timing["n"] > 0 and 0 < timing["p50_ms"] <= timing["p95_ms"]
