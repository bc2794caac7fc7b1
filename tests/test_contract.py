"""ModelContract: the one schema of a graph's metadata, written by export, read here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnxruntime as ort
import pytest

from streamser.errors import ModelError
from streamser.recognition.contract import ModelContract
from streamser.recognition.features import WHISPER_LAYERS
from streamser.recognition.models import bundled_model_dir

_REPO = Path(__file__).resolve().parents[1]
_GRAPHS = sorted(bundled_model_dir().glob("*.onnx")) + sorted(
    (_REPO / "tests" / "data").glob("*/*.onnx")
)


def _metadata(path: Path) -> dict[str, str]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _id(path: Path) -> str:
    return str(path.relative_to(_REPO))


@pytest.mark.parametrize("path", _GRAPHS, ids=_id)
def test_shipped_metadata_round_trips(path: Path) -> None:
    """Every shipped and fixture graph reads into a contract that writes it back."""
    meta = _metadata(path)
    assert ModelContract.from_metadata(meta, path).to_metadata() == meta


@pytest.mark.parametrize("path", _GRAPHS, ids=_id)
def test_shipped_metadata_order_is_the_written_order(path: Path) -> None:
    """Byte-identical too: the keys in the order ``to_metadata`` writes them."""
    onnx = pytest.importorskip("onnx")
    props = onnx.load(str(path), load_external_data=False).metadata_props
    meta = {entry.key: entry.value for entry in props}
    assert list(ModelContract.from_metadata(meta, path).to_metadata().items()) == [
        (entry.key, entry.value) for entry in props
    ]


def test_shipped_graphs_are_all_covered() -> None:
    names = {p.name for p in _GRAPHS}
    assert {"emotion-acoustic-v4.onnx", "emotion-text-multi-v1.onnx"} <= names
    assert {p.parent.name for p in _GRAPHS} >= {"models", "models-v2"}


def _acoustic() -> ModelContract:
    return ModelContract(
        name="emotion-acoustic-v4",
        kind="acoustic",
        version="3",
        labels=("anger", "neutral"),
        embedding_dim=16,
        front_end=WHISPER_LAYERS,
        adaptation_window=32,
    )


def test_optional_fields_round_trip() -> None:
    contract = dataclasses.replace(
        _acoustic(), variant="int8", affect=("arousal", "valence")
    )
    meta = contract.to_metadata()
    assert meta["streamser.affect"] == '["arousal", "valence"]'
    assert meta["streamser.adaptation_window"] == "32"
    assert meta["streamser.variant"] == "int8"
    assert ModelContract.from_metadata(meta, "x.onnx") == contract
    text = ModelContract("emotion-text-v1", "text", "1", ("anger",), 8)
    assert text.to_metadata()["streamser.languages"] == "[]"
    assert ModelContract.from_metadata(text.to_metadata(), "t.onnx") == text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format", "2", "field format is not 1"),
        ("kind", "video", "field kind"),
        ("labels", "[]", "field labels"),
        ("labels", '["rage"]', "field labels"),
        ("labels", "not json", "streamser.labels is not JSON"),
        ("sample_rate", "8000", "field sample_rate"),
        ("sample_rate", "fast", "field sample_rate"),
        ("embedding_dim", "-1", "field embedding_dim"),
        ("features", '{"type": "mfcc"}', "field features"),
        ("features", '{"type": "log-mel", "colour": 1}', "field features"),
        ("features", "[1]", "field features"),
        ("adaptation_window", "0", "field adaptation_window"),
        ("adaptation_window", "true", "field adaptation_window"),
        ("affect", '["mood"]', "field affect"),
        ("affect", "[]", "field affect"),
        ("affect", '["arousal", "arousal"]', "field affect"),
        ("affect", '"arousal"', "field affect"),
    ],
)
def test_bad_field_names_file_and_field(key: str, value: str, message: str) -> None:
    meta = _acoustic().to_metadata() | {f"streamser.{key}": value}
    with pytest.raises(ModelError, match=message) as caught:
        ModelContract.from_metadata(meta, "/models/m.onnx")
    assert str(caught.value).startswith("/models/m.onnx: ")


@pytest.mark.parametrize("key", ["format", "name", "version", "embedding_dim"])
def test_missing_field_is_named(key: str) -> None:
    meta = _acoustic().to_metadata()
    del meta[f"streamser.{key}"]
    with pytest.raises(ModelError, match=f"m.onnx: metadata field streamser.{key}"):
        ModelContract.from_metadata(meta, "m.onnx")


def test_cut_encoder_states_are_refused() -> None:
    cut = dataclasses.replace(WHISPER_LAYERS, type="whisper-encoder")
    meta = dataclasses.replace(_acoustic(), front_end=cut).to_metadata()
    with pytest.raises(ModelError, match="re-exporting"):
        ModelContract.from_metadata(meta, "m.onnx")


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        ModelContract("m", "video", "1", ("anger",), 0)
    with pytest.raises(ValueError, match="front end"):
        ModelContract("m", "acoustic", "1", ("anger",), 0)


def test_graphs_without_affect_still_load() -> None:
    """``affect`` is optional: metadata written before it reads as no affect."""
    meta = _acoustic().to_metadata()
    assert "streamser.affect" not in meta
    assert ModelContract.from_metadata(meta, "m.onnx").affect == ()
