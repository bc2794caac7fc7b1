"""Model loading: the ONNX metadata contract and the card checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamser.errors import ModelError
from streamser.recognition.emotion import EmotionModels
from streamser.recognition.models import OnnxModel
from streamser.recognition.recognizer import RecognizerOptions


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        shutil.copy(path, dst / path.name)
    return dst


def test_fixture_graphs_load_with_their_contract(fixture_models: Path) -> None:
    models = EmotionModels.load(fixture_models, device="cpu")
    info = models.acoustic_model.contract
    assert info.kind == "acoustic"
    assert info.front_end is not None and info.front_end.type == "whisper-encoder"
    assert models.text_model_for("fa") is not None
    assert models.text_model_for("en") is None
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((n, 512)).astype(np.float32) for n in (7, 30)]
    outputs = models.acoustic(rows)
    for output in outputs:
        assert sum(output.scores.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert list(output.scores.scores) == list(info.labels)
    # padding must not change a row's result
    alone = models.acoustic(rows[:1])[0]
    assert alone.scores.scores == pytest.approx(outputs[0].scores.scores, abs=1e-5)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxModel(tmp_path / "emotion-acoustic-v1.onnx")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "emotion-acoustic-v1.onnx"
    path.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelError, match="not a loadable ONNX graph"):
        OnnxModel(path)


@pytest.mark.parametrize(
    ("graph", "field", "value", "message"),
    [
        ("emotion-acoustic-v1", "sha256", lambda card: "0" * 64, "sha256"),
        ("emotion-acoustic-v1", "format_version", lambda card: 99, "format_version"),
        ("emotion-text-fa-v1", "labels", lambda card: card["labels"][:-1], "labels"),
    ],
    ids=["hash-mismatch", "unknown-format", "labels-mismatch"],
)
def test_a_card_that_disagrees_with_its_graph_is_a_model_error(
    tmp_path: Path,
    fixture_models: Path,
    graph: str,
    field: str,
    value: Any,
    message: str,
) -> None:
    folder = _copy(fixture_models, tmp_path / "m")
    card_path = folder / f"{graph}.onnx.json"
    card = json.loads(card_path.read_text())
    card[field] = value(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message):
        OnnxModel(folder / f"{graph}.onnx")


def test_label_count_unequal_to_output(tmp_path: Path, fixture_models: Path) -> None:
    onnx = pytest.importorskip("onnx")
    folder = _copy(fixture_models, tmp_path / "m")
    path = folder / "emotion-acoustic-v1.onnx"
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "streamser.labels":
            prop.value = json.dumps(["anger", "neutral"])
    path.write_bytes(model.SerializeToString())
    (folder / "emotion-acoustic-v1.onnx.json").unlink()
    with pytest.raises(ModelError, match="output 'probs' has 9"):
        OnnxModel(path)


def test_graph_reading_cut_encoder_states_is_refused(
    tmp_path: Path, fixture_models: Path
) -> None:
    """v1's front end (CTranslate2 encoders cut after layers 2 and 3) is gone: such a
    graph gets a message, not wrong inputs."""
    onnx = pytest.importorskip("onnx")
    folder = _copy(fixture_models, tmp_path / "m")
    path = folder / "emotion-acoustic-v1.onnx"
    model = onnx.load(str(path))
    v1 = {"type": "whisper-encoder", "dim": 1024, "whisper": "whisper-base",
          "encoder_layers": [2, 3]}  # fmt: skip
    for prop in model.metadata_props:
        if prop.key == "streamser.features":
            prop.value = json.dumps(v1)
    path.write_bytes(model.SerializeToString())
    (folder / "emotion-acoustic-v1.onnx.json").unlink()
    with pytest.raises(ModelError, match="need re-exporting"):
        OnnxModel(path)


@pytest.mark.parametrize(
    ("window", "message"),
    [("32", "lacks the baseline"), ("0", "positive integer"), ("x", "is not JSON")],
)
def test_adaptation_window_needs_the_baseline_inputs(
    tmp_path: Path, fixture_models: Path, window: str, message: str
) -> None:
    """A graph that declares speaker adaptation must take a baseline and give its
    pooled vector; the fixture graph does neither."""
    onnx = pytest.importorskip("onnx")
    folder = _copy(fixture_models, tmp_path / "m")
    path = folder / "emotion-acoustic-v1.onnx"
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "streamser.adaptation_window", window
    path.write_bytes(model.SerializeToString())
    (folder / "emotion-acoustic-v1.onnx.json").unlink()
    with pytest.raises(ModelError, match=message):
        OnnxModel(path)


def test_declared_affect_needs_the_affect_output(
    tmp_path: Path, fixture_models: Path
) -> None:
    """A graph that declares arousal and valence must have the ``affect`` output."""
    onnx = pytest.importorskip("onnx")
    folder = _copy(fixture_models, tmp_path / "m")
    path = folder / "emotion-acoustic-v1.onnx"
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "streamser.affect", '["arousal", "valence"]'
    path.write_bytes(model.SerializeToString())
    (folder / "emotion-acoustic-v1.onnx.json").unlink()
    with pytest.raises(ModelError, match="no affect output"):
        OnnxModel(path)


def test_min_confidence_labels_uncertain_and_keeps_scores() -> None:
    from streamser.recognition.emotion import UNCERTAIN, EmotionScores

    scores = EmotionScores.from_probs(
        ("anger", "neutral", "sadness"), np.array([0.5, 0.3, 0.2], np.float32)
    )
    assert scores.uncertain_below(0.0) is scores
    assert scores.uncertain_below(0.45).label == "anger"
    doubtful = scores.uncertain_below(0.6)
    assert doubtful.label == UNCERTAIN
    assert doubtful.scores == scores.scores
    assert doubtful.confidence == pytest.approx(0.5)


def test_folder_without_acoustic_model(tmp_path: Path) -> None:
    tmp_path.joinpath("m").mkdir()
    with pytest.raises(ModelError, match="no emotion-acoustic"):
        EmotionModels.load(tmp_path / "m")
    with pytest.raises(ModelError, match="not found"):
        EmotionModels.load(tmp_path / "absent")


def test_fusion_refuses_an_acoustic_graph_it_was_not_fit_to(
    tmp_path: Path, fixture_models: Path
) -> None:
    folder = _copy(fixture_models, tmp_path / "m")
    card_path = folder / "emotion-fusion-v1.onnx.json"
    card = json.loads(card_path.read_text())
    card["fused_with"] = {"acoustic_sha256": "ab" * 32}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="retrain fusion"):
        EmotionModels.load(folder)


def _old_runtime_pad(rows: list, dtype: type) -> tuple:
    """``emotion._pad`` as it was (also ``training.fusion._pad``, ``text._batch``)."""
    lengths = np.asarray([row.shape[0] for row in rows], dtype=np.int64)
    width = max(1, int(lengths.max(initial=0)))
    batch = np.zeros((len(rows), width, *rows[0].shape[1:]), dtype=dtype)
    for i, row in enumerate(rows):
        batch[i, : row.shape[0]] = row
    return batch, lengths


def _old_verify_pad(rows: list, dtype: type) -> tuple:
    """``export.verify.pad_batch`` as it was; ``training.acoustic._pad`` too, whose
    rows are never empty (``log_mel`` gives at least 2 frames), so min_width 1 there
    changes nothing."""
    lengths = np.asarray([row.shape[0] for row in rows], dtype=np.int64)
    width = int(lengths.max()) if len(rows) else 0
    batch = np.zeros((len(rows), width, *rows[0].shape[1:]), dtype=dtype)
    for index, row in enumerate(rows):
        batch[index, : row.shape[0]] = row
    return batch, lengths


@pytest.mark.parametrize("empty", [False, True])
def test_pad_batch_matches_the_four_it_replaced(empty: bool) -> None:
    from streamser.recognition.features import pad_batch

    rng = np.random.default_rng(0)
    lengths = [0, 0] if empty else [5, 0, 17, 1]
    frames = [rng.standard_normal((n, 80)).astype(np.float32) for n in lengths]
    tokens = [rng.integers(0, 50000, n).astype(np.int64) for n in lengths]
    for rows, dtype in ((frames, np.float32), (tokens, np.int64)):
        for got, want in (
            (pad_batch(rows, dtype), _old_runtime_pad(rows, dtype)),
            (pad_batch(rows, dtype, min_width=0), _old_verify_pad(rows, dtype)),
        ):
            assert got[0].dtype == want[0].dtype and got[1].dtype == np.int64
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    assert pad_batch(tokens, np.int64)[0].shape == (len(lengths), 1 if empty else 17)
    assert pad_batch(tokens, np.int64, min_width=0)[0].shape[1] == (0 if empty else 17)


def test_min_confidence_setting_reaches_the_recognizer(fixture_models: Path) -> None:
    """``[emotion] min_confidence``: out of [0, 1] is refused; above every
    probability, each utterance is "uncertain" with its scores unchanged."""
    from dataclasses import replace

    from streamser.config import load_config
    from streamser.errors import ConfigError
    from streamser.recognition.recognizer import Recognizer

    with pytest.raises(ConfigError, match="min_confidence"):
        load_config(overrides={"emotion": {"min_confidence": 1.5}}, environ={})
    config = load_config(
        overrides={
            "emotion": {"min_confidence": 0.999, "model_dir": str(fixture_models)},
            "asr": {"enabled": False},
        },
        environ={},
    )
    recognizer = Recognizer(config.recognizer_options())
    audio = 0.1 * np.sin(np.arange(16000) * 0.05).astype(np.float32)
    recognition = recognizer.recognize(audio, "en")
    assert recognition.label == "uncertain"
    plain = Recognizer(
        RecognizerOptions(replace(config.emotion, min_confidence=0.0), config.asr)
    ).recognize(audio, "en")
    assert plain.label != "uncertain" and recognition.scores == plain.scores
    assert recognition.confidence == pytest.approx(max(recognition.scores.values()))
    assert recognizer.partial(audio).label == "uncertain"
