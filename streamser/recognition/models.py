"""Loading the ONNX emotion models and checking each against its contract.

A model is ``NAME.onnx`` plus a card ``NAME.onnx.json``. The graph carries its contract
in ONNX ``metadata_props`` (keys below), so the ONNX file alone is enough to serve it;
the card adds provenance and metrics and must agree with the graph (sha256, labels).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy.typing as npt
import onnxruntime as ort

from streamser.errors import ModelError
from streamser.labels import CANONICAL_LABELS
from streamser.recognition.features import FrontEnd

_LOGGER = logging.getLogger(__name__)

CARD_FORMAT: Final = 1
KINDS: Final = ("acoustic", "text", "fusion")
META_PREFIX: Final = "streamser."
"""Metadata keys: format, name, kind, version, labels (JSON list in output order),
sample_rate, features (JSON object, acoustic), languages (JSON list, text: empty means
any), embedding_dim."""


def bundled_model_dir() -> Path:
    """The folder of the models shipped inside the package."""
    return Path(str(resources.files("streamser") / "models"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What a graph's metadata declares.

    Attributes:
        name: e.g. ``emotion-acoustic-v1``.
        kind: acoustic, text or fusion.
        version: model version string.
        labels: labels in output order.
        sample_rate_hz: audio sample rate the features assume.
        front_end: acoustic feature settings (None for text and fusion).
        languages: ISO 639-1 codes a text model reads; empty for any.
        sha256: hash of the ONNX file.
        adaptation_window: for an acoustic graph that adapts to a stream's speaker,
            how many earlier utterances its baseline averages
            (``streamser.recognition.adaptation``); 0 when it does not adapt.
        card: the JSON card's contents.
    """

    name: str
    kind: str
    version: str
    labels: tuple[str, ...]
    sample_rate_hz: int
    front_end: FrontEnd | None
    languages: tuple[str, ...]
    sha256: str
    card: dict[str, Any] = field(default_factory=dict, compare=False)
    adaptation_window: int = 0


def session_options(num_threads: int) -> ort.SessionOptions:
    """onnxruntime options for a small model shared by many streams."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def providers(device: str) -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda"), CPU last."""
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        _LOGGER.warning(
            "CUDA requested but onnxruntime has no CUDA provider; using CPU"
        )
    return ["CPUExecutionProvider"]


class OnnxModel:
    """One loaded emotion graph: its session and its contract.

    ``run`` may be called from several threads at once (onnxruntime sessions are
    thread-safe for inference).
    """

    def __init__(
        self, path: Path, *, num_threads: int = 1, device: str = "auto"
    ) -> None:
        """Load and check ``path``.

        Raises:
            ModelError: missing or corrupt file, bad metadata, card mismatch.
        """
        self.path = path
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        digest = sha256_file(path)
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(num_threads), providers=providers(device)
            )
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path}: not a loadable ONNX graph ({err})") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = _parse_metadata(path, meta, digest, _read_card(path))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.info.adaptation_window and not (
            {"baseline", "baseline_count"} <= set(self.input_names)
            and "pooled" in self.output_names
        ):
            raise ModelError(
                f"{path}: field adaptation_window is set but the graph lacks the "
                "baseline and baseline_count inputs or the pooled output"
            )
        probs = self.session.get_outputs()[0]
        width = probs.shape[-1]
        if isinstance(width, int) and width != len(self.info.labels):
            raise ModelError(
                f"{path}: field labels has {len(self.info.labels)} entries but the "
                f"output {probs.name!r} has {width}"
            )

    def run(self, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run the graph; returns every output by name."""
        outputs = self.session.run(None, inputs)
        return dict(zip(self.output_names, outputs, strict=True))


def _read_card(path: Path) -> dict[str, Any]:
    card_path = path.with_name(path.name + ".json")
    if not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{card_path}: unreadable card ({err})") from err
    if not isinstance(card, dict):
        raise ModelError(f"{card_path}: card is not a JSON object")
    return card


def _field(path: Path, meta: dict[str, str], key: str) -> str:
    try:
        return meta[META_PREFIX + key]
    except KeyError:
        raise ModelError(
            f"{path}: metadata field {META_PREFIX + key} missing"
        ) from None


def _json_field(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(_field(path, meta, key))
    except ValueError as err:
        raise ModelError(
            f"{path}: metadata field {META_PREFIX}{key} is not JSON"
        ) from err


def _parse_metadata(
    path: Path, meta: dict[str, str], digest: str, card: dict[str, Any]
) -> ModelInfo:
    if _field(path, meta, "format") != str(CARD_FORMAT):
        raise ModelError(f"{path}: field format is not {CARD_FORMAT}")
    kind = _field(path, meta, "kind")
    if kind not in KINDS:
        raise ModelError(f"{path}: field kind {kind!r} is not one of {KINDS}")
    labels = _json_field(path, meta, "labels")
    if (
        not isinstance(labels, list)
        or not labels
        or any(label not in CANONICAL_LABELS for label in labels)
    ):
        raise ModelError(f"{path}: field labels must list canonical labels: {labels!r}")
    front_end = None
    if kind == "acoustic":
        try:
            front_end = FrontEnd.from_dict(_json_field(path, meta, "features"))
        except (TypeError, ValueError) as err:
            raise ModelError(f"{path}: field features: {err}") from err
        if front_end.type not in ("log-mel", "whisper-encoder") or (
            front_end.type == "whisper-encoder" and front_end.encoder_layers
        ):
            raise ModelError(
                f"{path}: field features: front end {front_end.type!r} with encoder "
                f"layers {front_end.encoder_layers} is not one this runtime computes "
                "(graphs that read cut encoder states need re-exporting with the "
                "encoder layers inside the graph)"
            )
    languages = _json_field(path, meta, "languages") if kind == "text" else []
    window = 0
    if kind == "acoustic" and META_PREFIX + "adaptation_window" in meta:
        window = _json_field(path, meta, "adaptation_window")
        if not isinstance(window, int) or window < 1:
            raise ModelError(
                f"{path}: field adaptation_window must be a positive integer"
            )
    if card:
        if card.get("format_version") != CARD_FORMAT:
            raise ModelError(f"{path}.json: field format_version is not {CARD_FORMAT}")
        if card.get("sha256") != digest:
            raise ModelError(
                f"{path}.json: field sha256 does not match the ONNX file "
                "(the card belongs to another build)"
            )
        if card.get("labels") != labels:
            raise ModelError(f"{path}.json: field labels differs from the graph's")
    return ModelInfo(
        name=_field(path, meta, "name"),
        kind=kind,
        version=_field(path, meta, "version"),
        labels=tuple(labels),
        sample_rate_hz=int(_field(path, meta, "sample_rate")),
        front_end=front_end,
        languages=tuple(languages),
        sha256=digest,
        card=card,
        adaptation_window=window,
    )

