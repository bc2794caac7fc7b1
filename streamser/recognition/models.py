"""Loading the ONNX emotion models and checking each against its contract.

A model is ``NAME.onnx`` plus a card ``NAME.onnx.json``. The graph carries its contract
in ONNX ``metadata_props`` (``streamser.recognition.contract``), so the ONNX file alone
is enough to serve it; the card adds provenance and metrics and must agree with the
graph (format version, sha256, labels).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.contract import FORMAT_VERSION, ModelContract
from streamser.recognition.cuda import onnx_providers
from streamser.recognition.features import FrontEnd

if TYPE_CHECKING:
    import onnxruntime as ort

_LOGGER = logging.getLogger(__name__)


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
    """A loaded graph's contract, with its hash and card.

    The contract's fields are readable here too (``info.labels``...).
    """

    contract: ModelContract
    """What the graph's metadata declares."""
    sha256: str
    """Hash of the ONNX file."""
    card: dict[str, Any] = field(default_factory=dict, compare=False)
    """The JSON card's contents (empty without a card)."""

    @property
    def name(self) -> str:
        """E.g. ``emotion-acoustic-v2``."""
        return self.contract.name

    @property
    def kind(self) -> str:
        """acoustic, text or fusion."""
        return self.contract.kind

    @property
    def version(self) -> str:
        """Model version string."""
        return self.contract.version

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels in output order."""
        return self.contract.labels

    @property
    def sample_rate_hz(self) -> int:
        """Audio sample rate the features assume."""
        return self.contract.sample_rate_hz

    @property
    def front_end(self) -> FrontEnd | None:
        """Acoustic feature settings (None for text and fusion)."""
        return self.contract.front_end

    @property
    def languages(self) -> tuple[str, ...]:
        """ISO 639-1 codes a text model reads; empty for any."""
        return self.contract.languages

    @property
    def tokenizer(self) -> str:
        """Text only: the front end that makes ``token_ids`` ("" for Whisper's BPE)."""
        return self.contract.tokenizer

    @property
    def sentiment_labels(self) -> tuple[str, ...]:
        """Text only: labels of the ``sentiment`` output (empty without one)."""
        return self.contract.sentiment_labels

    @property
    def adaptation_window(self) -> int:
        """For an acoustic graph that adapts to a stream's speaker, how many earlier
        utterances its baseline averages; 0 when it does not adapt."""
        return self.contract.adaptation_window

    @property
    def affect(self) -> tuple[str, ...]:
        """Columns of an acoustic graph's ``affect`` output (empty: none)."""
        return self.contract.affect


def session_options(num_threads: int) -> ort.SessionOptions:
    """onnxruntime options for a small model shared by many streams."""
    # imported here: onnxruntime loads only with a model, so that ``streamser send``
    # and ``import streamser.cli`` stay light (issue 26)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def providers(device: str) -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda"), CPU last
    (``streamser.recognition.cuda.onnx_providers``)."""
    return onnx_providers(device)


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
        import onnxruntime as ort  # with the model only (``session_options``)

        try:
            self.session = ort.InferenceSession(
                str(path), session_options(num_threads), providers=providers(device)
            )
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path}: not a loadable ONNX graph ({err})") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        contract = ModelContract.from_metadata(meta, path)
        card = _read_card(path)
        _check_card(path, card, contract, digest)
        self.info = ModelInfo(contract, digest, card)
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
        if self.info.affect:
            by_name = {o.name: o for o in self.session.get_outputs()}
            affect = by_name.get("affect")
            columns = affect.shape[-1] if affect is not None else None
            if affect is None or (
                isinstance(columns, int) and columns != len(self.info.affect)
            ):
                raise ModelError(
                    f"{path}: field affect lists {list(self.info.affect)} but the "
                    "graph has no affect output of that width"
                )
        sentiment = self.info.sentiment_labels
        outputs = {o.name: o for o in self.session.get_outputs()}
        if bool(sentiment) != ("sentiment" in outputs):
            raise ModelError(
                f"{path}: field sentiment_labels and the sentiment output must come "
                "together"
            )
        sentiment_width = outputs["sentiment"].shape[-1] if sentiment else None
        if isinstance(sentiment_width, int) and sentiment_width != len(sentiment):
            raise ModelError(
                f"{path}: field sentiment_labels has {len(sentiment)} entries but "
                f"the output sentiment has {sentiment_width}"
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


def _check_card(
    path: Path, card: dict[str, Any], contract: ModelContract, digest: str
) -> None:
    """The card (if any) must be of this format and belong to this very graph."""
    if not card:
        return
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}.json: field format_version is not {FORMAT_VERSION}")
    if card.get("sha256") != digest:
        raise ModelError(
            f"{path}.json: field sha256 does not match the ONNX file "
            "(the card belongs to another build)"
        )
    if card.get("labels") != list(contract.labels):
        raise ModelError(f"{path}.json: field labels differs from the graph's")
