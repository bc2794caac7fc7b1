"""Tests for export/: tiny models trained on real clips, exported, verified, carded."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from _cli_helpers import run_command, usage_error  # noqa: E402

from export.card import graph_contract  # noqa: E402
from export.checkpoint import Checkpoint, VerificationError  # noqa: E402
from export.parity_inputs import real_batches  # noqa: E402
from export.to_onnx import OPSET, export_checkpoint, write_metadata  # noqa: E402
from export.verify import compare  # noqa: E402
from streamser.errors import ModelError  # noqa: E402
from streamser.recognition.features import LOG_MEL  # noqa: E402
from streamser.recognition.models import OnnxModel, sha256_file  # noqa: E402

from _export_helpers import EMODB as _EMODB  # noqa: E402
from _export_helpers import LABELS as _LABELS  # noqa: E402
from _export_helpers import train_tiny_acoustic  # noqa: E402

pytestmark = pytest.mark.train

_REPO_ROOT = Path(__file__).resolve().parents[1]

needs_data = pytest.mark.skipif(
    not _EMODB.is_dir(), reason=f"EMO-DB not found at {_EMODB} (set STREAMSER_DATA)"
)


@pytest.fixture(scope="module")
def acoustic_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, exported graph) of a tiny acoustic model."""
    if not _EMODB.is_dir():
        pytest.skip(f"EMO-DB not found at {_EMODB} (set STREAMSER_DATA)")
    folder = tmp_path_factory.mktemp("acoustic")
    checkpoint = folder / "tiny.pt"
    train_tiny_acoustic(checkpoint)
    onnx_path = export_checkpoint(
        checkpoint, folder / "out", name="emotion-acoustic-v1"
    )
    return checkpoint, onnx_path


def test_card_provenance_names_no_absolute_path() -> None:
    from export.card import portable

    corpus = f"{_REPO_ROOT.parent}/shared/datasets/shemo-text/shemo_text.jsonl"
    card = portable(
        {
            "data": [f"shemo-text:{corpus}"],
            "command": {
                "export": f"python -m export {_REPO_ROOT}/artifacts/a.pt --out /tmp/x/m"
            },
            "notes": "served over /v1/stream, 1/5/15",
        }
    )
    assert card == {
        "data": ["shemo-text:../shared/datasets/shemo-text/shemo_text.jsonl"],
        "command": {"export": "python -m export artifacts/a.pt --out m"},
        "notes": "served over /v1/stream, 1/5/15",
    }


@pytest.mark.data
@needs_data
def test_acoustic_export_parity_metadata_and_card(
    acoustic_export: tuple[Path, Path],
) -> None:
    _, onnx_path = acoustic_export
    card = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text("utf-8"))
    assert card["verification"]["max_abs_diff"] < 1e-4
    assert "real EMO-DB/RAVDESS clips" in card["verification"]["inputs"]
    assert card["sha256"] == sha256_file(onnx_path)
    assert card["opset"] == OPSET
    assert card["labels"] == _LABELS
    assert [item["name"] for item in card["inputs"]] == ["features", "lengths"]
    assert card["inputs"][0]["shape"] == ["batch", "time", 80]
    assert "RAVDESS" not in card["licence"] and "EMO-DB" in card["licence"]
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["streamser.format"] == "1"
    assert meta["streamser.kind"] == "acoustic"
    assert json.loads(meta["streamser.labels"]) == _LABELS
    assert json.loads(meta["streamser.features"]) == LOG_MEL.to_dict()
    assert meta["streamser.sample_rate"] == "16000"
    assert meta["streamser.embedding_dim"] == "16"
    model = OnnxModel(onnx_path, device="cpu")
    assert model.contract.name == "emotion-acoustic-v1"
    assert model.contract.front_end == LOG_MEL
    features = np.zeros((2, 30, 80), np.float32)
    out = model.run({"features": features, "lengths": np.array([30, 11], np.int64)})
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, atol=1e-5)
    assert out["embedding"].shape == (2, 16)


@pytest.mark.data
@needs_data
def test_verify_fails_on_a_different_model(acoustic_export: tuple[Path, Path]) -> None:
    from export.checkpoint import Checkpoint, build_module

    checkpoint_path, onnx_path = acoustic_export
    checkpoint = Checkpoint.load(checkpoint_path)
    batches, _ = real_batches(checkpoint, build_module(checkpoint))
    torch.manual_seed(1)
    other = build_module(
        dataclasses.replace(checkpoint, state_dict=_reinitialised(checkpoint))
    )
    with pytest.raises(VerificationError, match="differs from torch"):
        compare(onnx_path, other, batches)


def _reinitialised(checkpoint: Checkpoint) -> dict:
    from training.acoustic_models import build_model

    return build_model(checkpoint.arch, checkpoint.config).state_dict()


def _copy(onnx_path: Path, folder: Path) -> Path:
    folder.mkdir()
    target = folder / onnx_path.name
    shutil.copy(onnx_path, target)
    shutil.copy(
        onnx_path.with_name(onnx_path.name + ".json"), folder / (target.name + ".json")
    )
    return target


def _truncate(target: Path) -> None:
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _wrong_card_hash(target: Path) -> None:
    card_path = target.with_name(target.name + ".json")
    card = json.loads(card_path.read_text("utf-8"))
    card["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card), "utf-8")


def _three_labels_no_card(target: Path) -> None:
    contract = graph_contract(target)
    write_metadata(target, dataclasses.replace(contract, labels=tuple(_LABELS[:3])))
    target.with_name(target.name + ".json").unlink()  # no card: the graph alone


@pytest.mark.data
@needs_data
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, None),
        (_wrong_card_hash, "sha256"),
        (_three_labels_no_card, "labels"),
    ],
    ids=["corrupt-graph", "wrong-card-hash", "label-count-mismatch"],
)
def test_a_damaged_export_raises_model_error(
    acoustic_export: tuple[Path, Path],
    tmp_path: Path,
    damage: Callable[[Path], None],
    message: str | None,
) -> None:
    target = _copy(acoustic_export[1], tmp_path / "damaged")
    damage(target)
    with pytest.raises(ModelError, match=message):
        OnnxModel(target, device="cpu")


@pytest.mark.data
@needs_data
def test_cli_exports_int8_variant_and_reports_json(
    acoustic_export: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, _ = acoustic_export
    result = run_command(
        *("export", checkpoint, "--out", tmp_path, "--int8", "--fp16", "--json"),
        env=dict(os.environ, STREAMSER_TRAIN_CACHE=str(tmp_path / "cache")),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["max_abs_diff"] < 1e-4
    int8 = summary["variants"]["int8"]
    assert 0.0 <= int8["top1_agreement"] <= 1.0
    assert (tmp_path / int8["file"]).is_file()
    assert int8["accuracy_data"] == "EMO-DB, all clips"
    assert abs(int8["wa_change"]) <= 1.0
    assert "top1_agreement" in summary["variants"]["fp16"]
    OnnxModel(Path(summary["onnx"]), device="cpu")


def test_cli_rejects_missing_checkpoint(tmp_path: Path) -> None:
    stderr = usage_error("export", tmp_path / "missing.pt", "--out", tmp_path)
    assert "not found" in stderr


def _shipped_checkpoint(card: dict) -> Checkpoint:
    """A weightless checkpoint with what a shipped graph's card records of it."""
    return Checkpoint.from_dict(
        {
            "kind": card["kind"],
            "arch": card["arch"],
            "config": card["config"],
            "state_dict": {},
            "labels": card["labels"],
            "front_end": card["features"],
            "languages": card["languages"],
            "name": card["name"],
        }
    )


@pytest.mark.parametrize("name", ["emotion-acoustic-v4"])
def test_export_writes_the_shipped_graphs_metadata(name: str) -> None:
    """What export would write for a shipped model is, byte for byte, its metadata."""
    from streamser.recognition.models import bundled_model_dir

    onnx_path = bundled_model_dir() / f"{name}.onnx"
    card = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text("utf-8"))
    contract = _shipped_checkpoint(card).contract(name, card["embedding_dim"])
    props = onnx.load(str(onnx_path), load_external_data=False).metadata_props
    assert list(contract.to_metadata().items()) == [(p.key, p.value) for p in props]


def test_checkpoint_round_trips_and_rejects_bad_ones(tmp_path: Path) -> None:
    data = {
        "kind": "acoustic",
        "arch": "stats",
        "config": {"input_dim": 1024, "adaptation_window": 32},
        "state_dict": {"w": torch.ones(2)},
        "labels": ["anger", "neutral"],
        "front_end": LOG_MEL.to_dict(),
        "metrics": {"ua": 0.5},
        "final_epochs": 7,
    }
    checkpoint = Checkpoint.from_dict(data)
    assert checkpoint.front_end == LOG_MEL
    assert checkpoint.head_input_dim == 1024
    assert checkpoint.extra == {"final_epochs": 7}
    assert checkpoint.default_name() == "emotion-acoustic-v1"
    assert checkpoint.contract("emotion-acoustic-v4", 16).version == "4"
    assert checkpoint.contract("emotion-acoustic-v4", 16).adaptation_window == 32
    checkpoint.save(tmp_path / "c.pt")
    loaded = Checkpoint.load(tmp_path / "c.pt")
    assert loaded.to_dict().keys() == checkpoint.to_dict().keys()
    assert loaded.front_end == LOG_MEL and loaded.extra == {"final_epochs": 7}
    # the first checkpoints named no front end: the encoder's final states
    legacy = Checkpoint.from_dict({k: v for k, v in data.items() if k != "front_end"})
    assert legacy.front_end is not None and legacy.front_end.type == "whisper-encoder"
    for bad, message in (
        ({"labels": ["rage"]}, "canonical"),
        ({"kind": "video"}, "kind"),
        ({"front_end": "mfcc"}, "front end"),
    ):
        with pytest.raises(ValueError, match=message):
            Checkpoint.from_dict(data | bad)
    with pytest.raises(ValueError, match="lacks"):
        Checkpoint.from_dict({"kind": "text"})
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a dict"):
        Checkpoint.load(tmp_path / "list.pt")
