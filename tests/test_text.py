"""Tests for the transcript emotion model: architectures, export, empty text, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from _cli_helpers import run_command, usage_error  # noqa: E402

from export.to_onnx import export_checkpoint  # noqa: E402
from streamser.recognition.features import TextTokenizer  # noqa: E402
from streamser.recognition.models import OnnxModel  # noqa: E402
from streamser.recognition.whisper_model import default_whisper_dir  # noqa: E402
from training.text_models import ARCHS, WHISPER_VOCAB_SIZE, build_model  # noqa: E402

from conftest import REPO, data_root  # noqa: E402

pytestmark = pytest.mark.train

_DATA = data_root() or REPO.parent / "shared" / "datasets"
_SHEMO = _DATA / "shemo-text" / "shemo_text.jsonl"
_LABELS = ["anger", "fear", "happiness", "neutral", "sadness", "surprise"]

needs_shemo = pytest.mark.skipif(
    not _SHEMO.is_file(), reason=f"ShEMO transcripts not found at {_SHEMO}"
)


def _rows(count: int) -> list[dict]:
    lines = _SHEMO.read_text("utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return rows[:: max(1, len(rows) // count)][:count]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))


def _train_tiny(arch: str, tokenizer: TextTokenizer, path: Path) -> list[np.ndarray]:
    """A tiny text model trained for a few steps on real ShEMO transcripts."""
    from training.text_fit import token_batch, vocabulary_of

    torch.manual_seed(0)
    rows = _rows(60)
    ids = [tokenizer.encode(row["transcript"]) for row in rows]
    targets = torch.tensor([_LABELS.index(row["emotion"]) for row in rows])
    config = {
        "n_labels": 6,
        "vocabulary": vocabulary_of(ids),
        "embedding_dim": 16,
        "filters": 8,
        "hidden": 8,
    }
    if arch == "ngram":
        from training.text_fit import Candidate, fit_ngram

        candidate = Candidate("ngram", "ngram", {"ngram": 2, "buckets": 500, "C": 1.0})
        targets_np = targets.numpy()
        model, config = fit_ngram(candidate, ids, targets_np, np.arange(len(ids)), 6)
        _save(arch, config, model, path)
        return ids
    model = build_model(arch, config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    tokens, lengths = token_batch(ids, np.arange(len(ids)))
    model.train()
    for _ in range(3):
        logits, _ = model.logits(tokens, lengths)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    _save(arch, config, model, path)
    return ids


def _save(arch: str, config: dict, model: torch.nn.Module, path: Path) -> None:
    torch.save(
        {
            "kind": "text",
            "arch": arch,
            "config": config,
            "state_dict": model.state_dict(),
            "labels": _LABELS,
            "languages": ["fa"],
            "data": [f"shemo-text:{_SHEMO}"],
            "metrics": {},
            "protocol": "none (test)",
            "command": "pytest",
        },
        path,
    )


@pytest.mark.data
@needs_shemo
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_text_export_parity_and_empty_transcript(
    arch: str, tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    ids = _train_tiny(arch, tokenizer, tmp_path / "text.pt")
    onnx_path = export_checkpoint(tmp_path / "text.pt", tmp_path / "out")
    assert onnx_path.name == "emotion-text-fa-v1.onnx"
    card = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text("utf-8"))
    assert card["verification"]["max_abs_diff"] < 1e-4
    assert "real ShEMO transcripts (one empty)" in card["verification"]["inputs"]
    assert card["languages"] == ["fa"]
    assert "ShEMO" in card["licence"]
    model = OnnxModel(onnx_path, device="cpu")
    assert model.contract.languages == ("fa",)
    empty = model.run(
        {"token_ids": np.zeros((1, 0), np.int64), "lengths": np.zeros(1, np.int64)}
    )
    np.testing.assert_allclose(empty["probs"], 1.0 / 6, atol=1e-6)
    assert not np.any(empty["embedding"])
    # A row's output must not depend on the padding that follows it.
    row = ids[3]
    alone = model.run({"token_ids": row[None], "lengths": np.array([len(row)])})
    padded = np.concatenate([row, np.zeros(9, np.int64)])[None]
    with_pad = model.run({"token_ids": padded, "lengths": np.array([len(row)])})
    np.testing.assert_allclose(alone["probs"], with_pad["probs"], atol=1e-5)
    # Ids the training vocabulary never saw (and out-of-range ids) map to UNK.
    unseen = np.array([[50000, 60000, 5]], np.int64)
    out = model.run({"token_ids": unseen, "lengths": np.array([3])})
    np.testing.assert_allclose(out["probs"].sum(), 1.0, atol=1e-5)


@needs_shemo
def test_ngram_graph_features_match_the_training_features(
    tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    from training.text_fit import _tfidf, ngram_features, token_batch

    ids = _train_tiny("ngram", tokenizer, tmp_path / "text.pt")
    checkpoint = torch.load(tmp_path / "text.pt", weights_only=False)
    model = build_model("ngram", checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    idf = model.idf.numpy().astype(np.float64)
    counts = ngram_features(ids[:10], checkpoint["config"]["vocabulary"], 2, 500)
    expected = _tfidf(counts, idf).toarray()
    tokens, lengths = token_batch(ids, np.arange(10))
    with torch.no_grad():
        actual = model.tfidf(tokens, lengths).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_unknown_architecture_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown text architecture"):
        build_model("lstm9", {"n_labels": 6})


def test_whisper_token_embeddings_are_read_from_the_ct2_model() -> None:
    from training.text_fit import whisper_token_embeddings

    table = whisper_token_embeddings()
    assert table.shape == (WHISPER_VOCAB_SIZE, 512)
    assert np.all(np.isfinite(table))
    assert float(table.std()) > 0.0


@pytest.mark.data
@needs_shemo
def test_cli_trains_evaluates_and_saves_a_checkpoint(tmp_path: Path) -> None:
    subset = tmp_path / "shemo_small.jsonl"
    rows = [json.loads(line) for line in _SHEMO.read_text("utf-8").splitlines()]
    speakers = sorted({row["speaker"] for row in rows})[:6]
    keep = [row for row in rows if row["speaker"] in speakers][:240]
    subset.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in keep))
    result = run_command(
        *("training", "text", "--data", f"shemo-text:{subset}", "--json"),
        *("--protocol", "kfold3", "--candidates", "cnn,bow", "--max-epochs", "2"),
        *("--final-seeds", "2", "--out", tmp_path / "out"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["selected"] in ("cnn", "bow")
    assert set(metrics["test"]) >= {"wa", "ua", "macro_f1", "confusion", "labels"}
    assert metrics["test"]["n"] == len(keep)
    assert 0.0 <= metrics["baseline_tfidf_char_lr"]["ua"] <= 1.0
    checkpoint = torch.load(tmp_path / "out" / "text.pt", weights_only=False)
    assert len(checkpoint["ensemble"]) == 2
    onnx_path = export_checkpoint(tmp_path / "out" / "text.pt", tmp_path / "graphs")
    assert OnnxModel(onnx_path, device="cpu").contract.labels == tuple(
        checkpoint["labels"]
    )


def test_cli_rejects_unknown_candidate_and_missing_data(tmp_path: Path) -> None:
    for extra in (["--candidates", "nope"], []):
        missing = f"shemo-text:{tmp_path / 'missing.jsonl'}"
        stderr = usage_error(
            "training", "text", "--data", missing, "--out", tmp_path, *extra
        )
        assert "error:" in stderr
