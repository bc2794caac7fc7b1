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
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.contract import FORMAT_VERSION, ModelContract
from streamser.recognition.cuda import onnx_providers

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
        self.contract = ModelContract.from_metadata(meta, path)
        """What the graph declares about itself."""
        self.card = _read_card(path)
        """The JSON card's contents (empty without a card)."""
        _check_card(path, self.card, self.contract, digest)
        self.sha256 = digest
        """Hash of the ONNX file."""
        self.contract.check(self.session, path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

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
