"""The JSON card beside each graph (``NAME.onnx.json``): contract, provenance, metrics.

``streamser.recognition.models.OnnxModel`` checks the card's format version, sha256 and labels
against the graph; the rest is for people (data, protocol, metrics, licence, the
command that reproduces the model).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tomllib
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final

import onnx

from export.checkpoint import Checkpoint
from streamser.recognition.contract import FORMAT_VERSION, ModelContract
from streamser.recognition.models import sha256_file

_LOGGER = logging.getLogger(__name__)

_REPO_ROOT: Final = Path(__file__).resolve().parent.parent
_EXACT_FIELDS: Final = frozenset(
    {"format_version", "name", "kind", "version", "labels"}
)
"""Card fields that the runtime checks against the graph: never rewritten."""

CORPUS_LICENCES: Final[dict[str, str]] = {
    "ravdess": "RAVDESS: CC BY-NC-SA 4.0 (Livingstone & Russo 2018)",
    "emodb": "EMO-DB: academic research corpus (Burkhardt et al. 2005)",
    "ased": (
        "ASED: no licence stated by its authors, research use (Retta et al., "
        "ACM TALLIP 2023)"
    ),
    "shemo": (
        "ShEMO transcripts: academic research corpus, use under its authors' terms "
        "(Mohamad Nezami et al. 2019)"
    ),
}


def streamser_version() -> str:
    """The installed streamser version, else pyproject.toml's, else "unknown"."""
    try:
        return importlib_metadata.version("streamser")
    except importlib_metadata.PackageNotFoundError:
        pass
    pyproject = _REPO_ROOT / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def git_commit() -> str:
    """HEAD commit of the repository (suffix ``-dirty`` when it has changes), or ""."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("-dirty" if dirty else "")


_ABSOLUTE_PATH: Final = re.compile(r"(?<![\w./~-])/(?=[\w.])[^\s`'\",;:)\]|]*")


def portable_path(path: str) -> str:
    """An absolute path as a card may publish it: relative to the repository when
    inside it, ``../...`` when beside it (the corpora's documented place is
    ``../shared/datasets``), ``$STREAMSER_DATA/...`` for another corpus path (one
    through a ``datasets`` folder), else the file name. Relative paths are kept."""
    if not path.startswith("/"):
        return path
    absolute = Path(path)
    for base, prefix in ((_REPO_ROOT, ""), (_REPO_ROOT.parent, "../")):
        try:
            return prefix + (str(absolute.relative_to(base)) or ".")
        except ValueError:
            pass
    parts = absolute.parts
    if "datasets" in parts:
        after = parts[len(parts) - parts[::-1].index("datasets") :]
        return "/".join(("$STREAMSER_DATA", *after))
    return absolute.name or path


def portable(value: Any) -> Any:
    """``value`` (a card or part of one) with every absolute file path in its strings
    made portable (``portable_path``), so that a card names no folder of the machine
    that trained or exported the model (``--data emodb:/abs/emodb``, ``--out /abs``).
    Only paths whose first component exists at the file-system root count, so URL
    paths such as ``/v1/stream`` stay."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            top = found.split("/")[1]
            return portable_path(found) if top and Path("/", top).exists() else found

        return _ABSOLUTE_PATH.sub(replace, value)
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    return value


def corpora_of(data: Any) -> list[str]:
    """Corpus names mentioned by a checkpoint's ``data`` field (specs or dicts)."""
    text = json.dumps(data, default=str).lower()
    return [corpus for corpus in CORPUS_LICENCES if corpus in text]


def licence_for(data: Any) -> str:
    """Licence statement for a model trained on ``data``.

    Every corpus here is non-commercial/research-only, so the weights are too; the
    share-alike terms of RAVDESS carry over to models trained on it.
    """
    corpora = corpora_of(data)
    notes = "; ".join(CORPUS_LICENCES[corpus] for corpus in corpora)
    if "ravdess" in corpora:
        return f"CC BY-NC-SA 4.0 (trained on {notes})"
    if corpora:
        return f"Non-commercial research use only (trained on {notes})"
    return "Non-commercial research use only (training data not recorded)"


def _shape(value_info: onnx.ValueInfoProto) -> list[str | int]:
    dims = value_info.type.tensor_type.shape.dim
    return [dim.dim_param or dim.dim_value for dim in dims]


def _elem_type(value_info: onnx.ValueInfoProto) -> str:
    return str(
        onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)
    )


def graph_io(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Inputs and outputs (name, dtype, shape) and the opset of a graph."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = [
        {"name": vi.name, "dtype": _elem_type(vi), "shape": _shape(vi)}
        for vi in model.graph.input
    ]
    outputs = [
        {"name": vi.name, "dtype": _elem_type(vi), "shape": _shape(vi)}
        for vi in model.graph.output
    ]
    opset = next(
        (
            entry.version
            for entry in model.opset_import
            if entry.domain in ("", "ai.onnx")
        ),
        0,
    )
    return inputs, outputs, opset


def graph_contract(onnx_path: Path) -> ModelContract:
    """The contract in a graph's ``metadata_props``.

    Raises:
        streamser.errors.ModelError: it is missing or malformed.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {entry.key: entry.value for entry in model.metadata_props}
    return ModelContract.from_metadata(props, onnx_path)


def graph_card(
    onnx_path: Path,
    *,
    provenance: dict[str, Any],
    licence: str,
    commands: dict[str, str],
    files: Sequence[Path] = (),
) -> dict[str, Any]:
    """The card of an exported graph, the one builder every export uses.

    Args:
        onnx_path: the graph; its contract (``metadata_props``), inputs, outputs,
            hash and size go into the card.
        provenance: how it was made, in card order (arch, config, ensemble_size,
            data, protocol, metrics, notes, verification, ...).
        licence: the licence statement of the weights.
        commands: the commands that trained (``train``) and exported (``export``) it.
        files: front-end files shipped beside the graph (a text graph's tokenizer),
            each listed with its hash and size.
    """
    contract = graph_contract(onnx_path)
    inputs, outputs, opset = graph_io(onnx_path)
    front_end = contract.front_end if contract.kind == "acoustic" else None
    own_front_end = (
        {
            "sentiment_labels": list(contract.sentiment_labels) or None,
            "tokenizer": contract.tokenizer,
        }
        if contract.tokenizer
        else {}
    )
    graph = {
        "inputs": inputs,
        "outputs": outputs,
        "opset": opset,
        "sha256": sha256_file(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
    }
    if files:
        graph["files"] = {
            p.name: {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
            for p in files
        }
    card: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": contract.name,
        "kind": contract.kind,
        "version": contract.version,
        "labels": list(contract.labels),
        **own_front_end,
        "sample_rate": contract.sample_rate_hz,
        "features": front_end.to_dict() if front_end is not None else None,
        "languages": list(contract.languages) if contract.kind == "text" else None,
        "embedding_dim": contract.embedding_dim,
        **graph,
        **provenance,
        "streamser_version": streamser_version(),
        "git_commit": git_commit(),
        "licence": licence,
        "command": commands,
    }
    # Provenance (data specs, commands, notes) may hold the trainer's absolute paths.
    return {
        key: value if key in _EXACT_FIELDS else portable(value)
        for key, value in card.items()
    }


def build_card(
    onnx_path: Path,
    checkpoint: Checkpoint,
    *,
    export_command: str,
    verification: dict[str, Any] | None = None,
    variants: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of a graph exported from a training checkpoint (``graph_card``).

    Args:
        onnx_path: the graph (its metadata and hash go into the card).
        checkpoint: the training checkpoint (data, protocol, metrics, command).
        export_command: the command line that exported it.
        verification: torch-vs-onnxruntime parity results.
        variants: optional fp16/int8 variants and their measured change.
    """
    temperature = checkpoint.extra.get("temperature")
    provenance = {
        "arch": checkpoint.arch,
        "config": checkpoint.config,
        "ensemble_size": len(checkpoint.ensemble) or 1,
        "data": checkpoint.data,
        "protocol": checkpoint.protocol,
        "metrics": checkpoint.metrics,
        "notes": checkpoint.notes,
        "fused_with": checkpoint.inputs,
        "calibration": (
            {"temperature": temperature, "in_graph": True}
            if temperature is not None
            else None
        ),
        "label_mode": checkpoint.extra.get("label_mode"),
        "view": checkpoint.extra.get("view"),
        "held_out": checkpoint.extra.get("held_out"),
        "verification": verification,
        "variants": variants,
    }
    return graph_card(
        onnx_path,
        provenance=provenance,
        licence=licence_for(checkpoint.data),
        commands={"train": checkpoint.command, "export": export_command},
    )


def write_card(onnx_path: Path, card: dict[str, Any]) -> Path:
    """Write ``NAME.onnx.json`` beside the graph; returns its path."""
    card_path = onnx_path.with_name(onnx_path.name + ".json")
    card_path.write_text(
        json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n", "utf-8"
    )
    _LOGGER.info("wrote card %s", card_path)
    return card_path
