"""Tests for the fusion model: masking of missing text, pairing, training CLI, export."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from _cli_helpers import run_command, usage_error  # noqa: E402

from training.fusion_fit import Embeddings, sample_pairs  # noqa: E402
from training.fusion_models import build_model  # noqa: E402

from _export_helpers import train_tiny_acoustic  # noqa: E402
from conftest import REPO, data_root  # noqa: E402

pytestmark = pytest.mark.train

_DATA = data_root() or REPO.parent / "shared" / "datasets"
_EMODB = _DATA / "emodb"
_SHEMO = _DATA / "shemo-text" / "shemo_text.jsonl"
_CONFIG = {"n_labels": 4, "acoustic_dim": 12, "text_dim": 8, "dim": 16}

needs_data = pytest.mark.skipif(
    not (_EMODB.is_dir() and _SHEMO.is_file()),
    reason=f"EMO-DB or ShEMO transcripts not found under {_DATA}",
)


def test_missing_text_cannot_move_the_output() -> None:
    torch.manual_seed(0)
    model = build_model("attention", _CONFIG).eval()
    acoustic = torch.randn(3, 12)
    absent = torch.zeros(3)
    with torch.no_grad():
        first = model(acoustic, torch.randn(3, 8), absent)
        second = model(acoustic, torch.randn(3, 8) * 100, absent)
        present = model(acoustic, torch.randn(3, 8), torch.ones(3))
    torch.testing.assert_close(first, second, atol=1e-6, rtol=0)
    assert not torch.allclose(first, present, atol=1e-4)
    torch.testing.assert_close(first.sum(dim=1), torch.ones(3))


def test_unknown_fusion_architecture_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown fusion architecture"):
        build_model("concat", _CONFIG)


def test_sample_pairs_follows_the_modes() -> None:
    labels = ["anger", "boredom", "neutral"]
    embeddings = Embeddings(
        acoustic=np.zeros((4, 2), np.float32),
        acoustic_probs=np.zeros((4, 3), np.float32),
        own_text=np.full((4, 2), 7.0, np.float32),
        pool_text=np.array([[1, 1], [2, 2]], np.float32),
        pool_probs=np.zeros((2, 2), np.float32),
        pool_labels=["anger", "neutral"],
    )
    targets = np.array([0, 1, 2, 0])
    index = np.arange(4)
    rng = np.random.default_rng(0)
    text, present = sample_pairs(
        embeddings, labels, index, targets, rng, (1.0, 0.0, 0.0)
    )
    assert not present.any() and not text.any()
    text, present = sample_pairs(
        embeddings, labels, index, targets, rng, (0.0, 1.0, 0.0)
    )
    assert present.all() and np.all(text == 7.0)
    text, present = sample_pairs(
        embeddings, labels, index, targets, rng, (0.0, 0.0, 1.0)
    )
    assert present.all()
    # Labels the pool has get a transcript of that label; boredom falls back to its own.
    np.testing.assert_array_equal(text[:, 0], [1.0, 7.0, 2.0, 1.0])


def _manifest(folder: Path) -> Path:
    """A CSV manifest of 24 real EMO-DB clips of 4 speakers, with their sentences."""
    codes = {"W": "anger", "N": "neutral", "T": "sadness", "L": "boredom"}
    rows = []
    with (_EMODB / "manifest.csv").open(encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            code = Path(row["path"]).stem[5]
            if code in codes and row["speaker"] in ("03", "08", "09", "10", "11"):
                rows.append(row | {"label": codes[code]})
    picked = []
    for speaker in sorted({row["speaker"] for row in rows})[:4]:
        picked += [row for row in rows if row["speaker"] == speaker][:6]
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "speaker", "text", "language"])
        for row in picked:
            writer.writerow(
                [_EMODB / row["path"], row["label"], row["speaker"], row["text"], "de"]
            )
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    result = run_command(*args, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.data
@needs_data
def test_fusion_trains_evaluates_and_exports(tmp_path: Path) -> None:
    from export.to_onnx import export_checkpoint
    from streamser.recognition.models import OnnxModel

    graphs = tmp_path / "graphs"
    train_tiny_acoustic(tmp_path / "acoustic.pt")
    export_checkpoint(tmp_path / "acoustic.pt", graphs, name="emotion-acoustic-v1")
    small = tmp_path / "shemo.jsonl"
    rows = [json.loads(line) for line in _SHEMO.read_text("utf-8").splitlines()]
    speakers = sorted({row["speaker"] for row in rows})[:8]
    small.write_text(
        "\n".join(
            json.dumps(row, ensure_ascii=False)
            for row in rows
            if row["speaker"] in speakers
        )
    )
    _run(
        [
            "training",
            "text",
            "--data",
            f"shemo-text:{small}",
            "--protocol",
            "kfold2",
            "--candidates",
            "bow",
            "--max-epochs",
            "2",
            "--final-seeds",
            "1",
            "--no-baseline",
            "--out",
            str(tmp_path / "text"),
        ]
    )
    export_checkpoint(tmp_path / "text" / "text.pt", graphs)
    env = dict(os.environ, STREAMSER_TRAIN_CACHE=str(tmp_path / "cache"))
    stdout = _run(
        [
            "training",
            "fusion",
            "--data",
            f"csv:{_manifest(tmp_path)}",
            "--text-data",
            f"shemo-text:{small}",
            "--acoustic-model",
            str(graphs / "emotion-acoustic-v1.onnx"),
            "--text-model",
            str(graphs / "emotion-text-fa-v1.onnx"),
            "--text-checkpoint",
            str(tmp_path / "text" / "text.pt"),
            "--protocol",
            "kfold2",
            "--fold-epochs",
            "1",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "fusion"),
            "--json",
        ],
        env=env,
    )
    metrics = json.loads(stdout.strip().splitlines()[-1])
    held_out = metrics["held_out"]
    for name in (
        "acoustic",
        "fused_absent",
        "fused_own",
        "text_matched",
        "fused_matched",
    ):
        assert 0.0 <= held_out[name]["ua"] <= 1.0
    assert held_out["acoustic"]["n"] == 24
    onnx_path = export_checkpoint(tmp_path / "fusion" / "fusion.pt", graphs)
    card = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text("utf-8"))
    assert card["verification"]["max_abs_diff"] < 1e-4
    assert "embeddings of real clips" in card["verification"]["inputs"]
    acoustic_card = json.loads(
        (graphs / "emotion-acoustic-v1.onnx.json").read_text("utf-8")
    )
    assert card["fused_with"]["acoustic_sha256"] == acoustic_card["sha256"]
    model = OnnxModel(onnx_path, device="cpu")
    assert model.contract.kind == "fusion"
    assert (
        model.contract.labels
        == OnnxModel(graphs / "emotion-acoustic-v1.onnx").contract.labels
    )


def test_fusion_cli_rejects_a_missing_graph(tmp_path: Path) -> None:
    stderr = usage_error(
        *("training", "fusion", "--data", "emodb:/nonexistent"),
        *("--text-data", "shemo-text:/nonexistent", "--no-eval", "--out", tmp_path),
        *("--acoustic-model", tmp_path / "a.onnx", "--text-model", tmp_path / "t.onnx"),
    )
    assert "model file not found" in stderr
