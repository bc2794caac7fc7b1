"""Checkpoint -> ONNX graph with streamser's metadata contract (as piper's export_onnx).

A checkpoint is a ``torch.save``d dict: ``kind`` (acoustic, text or fusion), ``arch``,
``config``, ``state_dict``, ``labels`` (output order), and, as applicable,
``front_end`` (acoustic: ``FrontEnd.to_dict()``), ``languages`` (text), ``metrics``,
``data``, ``protocol``, ``command``, ``version`` and ``ensemble`` (a list of member
state dicts, or of dicts with ``state_dict`` and optional ``arch``/``config``, averaged
by soft voting). The graph's inputs and outputs follow the contract in
``streamser/models.py`` and HELPERS.md, with dynamic batch and time axes.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import torch
from torch import nn

from streamser.labels import CANONICAL_LABELS
from streamser.recognition.features import LOG_MEL, WHISPER_ENCODER_TOP, FrontEnd
from streamser.recognition.models import META_PREFIX

_LOGGER = logging.getLogger(__name__)

OPSET: Final = 17
FORMAT: Final = "1"
KINDS: Final = ("acoustic", "text", "fusion")

INPUTS: Final[dict[str, tuple[str, ...]]] = {
    "acoustic": ("features", "lengths"),
    "text": ("token_ids", "lengths"),
    "fusion": ("acoustic_embedding", "text_embedding", "text_present"),
}
OUTPUTS: Final[dict[str, tuple[str, ...]]] = {
    "acoustic": ("probs", "embedding"),
    "text": ("probs", "embedding"),
    "fusion": ("probs",),
}
ADAPTIVE_INPUTS: Final = ("baseline", "baseline_count")
"""Extra inputs of an acoustic graph that adapts to a stream's speaker."""
ADAPTIVE_OUTPUTS: Final = ("pooled",)
"""Extra output of such a graph: the vector the stream's baseline averages."""
DYNAMIC_AXES: Final[dict[str, dict[str, dict[int, str]]]] = {
    "acoustic": {
        "features": {0: "batch", 1: "time"},
        "lengths": {0: "batch"},
        "baseline": {0: "batch"},
        "baseline_count": {0: "batch"},
        "probs": {0: "batch"},
        "embedding": {0: "batch"},
        "pooled": {0: "batch"},
    },
    "text": {
        "token_ids": {0: "batch", 1: "tokens"},
        "lengths": {0: "batch"},
        "probs": {0: "batch"},
        "embedding": {0: "batch"},
    },
    "fusion": {
        "acoustic_embedding": {0: "batch"},
        "text_embedding": {0: "batch"},
        "text_present": {0: "batch"},
        "probs": {0: "batch"},
    },
}
_BUILDERS: Final[dict[str, str]] = {
    "acoustic": "training.acoustic_models",
    "text": "training.text_models",
    "fusion": "training.fusion_models",
}
_REQUIRED: Final = ("kind", "arch", "config", "state_dict", "labels")


@dataclass(frozen=True)
class ExportResult:
    """What one export wrote.

    Attributes:
        onnx_path: the graph.
        name: model name (``emotion-acoustic-v1``...).
        kind: acoustic, text or fusion.
        embedding_dim: width of the ``embedding`` output (0 for fusion).
    """

    onnx_path: Path
    name: str
    kind: str
    embedding_dim: int


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a training checkpoint.

    Raises:
        ValueError: missing file, not a checkpoint dict, missing keys, unknown kind or
            non-canonical labels.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises pickle/zip errors of many types
        raise ValueError(f"checkpoint {path} is not readable: {err}") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint {path} is not a dict")
    missing = [key for key in _REQUIRED if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}")
    if checkpoint["kind"] not in KINDS:
        raise ValueError(
            f"checkpoint {path}: kind {checkpoint['kind']!r} not in {KINDS}"
        )
    labels = list(checkpoint["labels"])
    if not labels or any(label not in CANONICAL_LABELS for label in labels):
        raise ValueError(f"checkpoint {path}: labels must be canonical: {labels}")
    return checkpoint


def head_input_dim(checkpoint: dict[str, Any]) -> int:
    """Width of the frames the trained module reads (the Whisper states for a front
    end with layers in the graph, else the graph input)."""
    dim = checkpoint.get("config", {}).get("input_dim")
    return int(dim) if dim else front_end_of(checkpoint).dim


def join_prefix(prefix_path: Path, head_path: Path, out_path: Path) -> None:
    """Write one graph: the Whisper prefix (log-mel ``features`` and ``lengths`` in,
    ``training.whisper_prefix``), its states feeding the head's inputs, and the head's
    outputs under their own names."""
    prefix = onnx.load(str(prefix_path))
    head = onnx.compose.add_prefix(onnx.load(str(head_path)), "head/")
    head.ir_version = prefix.ir_version = max(prefix.ir_version, head.ir_version)
    joined = onnx.compose.merge_models(
        prefix,
        head,
        io_map=[("states", "head/features"), ("state_lengths", "head/lengths")],
    )
    renamed = {
        f"head/{name}": name
        for name in (*OUTPUTS["acoustic"], *ADAPTIVE_OUTPUTS, *ADAPTIVE_INPUTS)
    }
    for node in joined.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for value in (*joined.graph.input, *joined.graph.output):
        value.name = renamed.get(value.name, value.name)
    del joined.metadata_props[:]
    onnx.save(joined, str(out_path))


def front_end_of(checkpoint: dict[str, Any]) -> FrontEnd:
    """The acoustic front end a checkpoint was trained on.

    Accepts a ``FrontEnd``, its dict, or the type name ("whisper-encoder", "log-mel";
    none: the whole encoder's final states, as in the first checkpoints).
    """
    value = checkpoint.get("front_end")
    if isinstance(value, FrontEnd):
        return value
    if isinstance(value, dict):
        return FrontEnd.from_dict(value)
    if value in (None, WHISPER_ENCODER_TOP.type):
        return WHISPER_ENCODER_TOP
    if value == LOG_MEL.type:
        return LOG_MEL
    raise ValueError(f"unknown front end {value!r}")


class SoftVotingEnsemble(nn.Module):
    """Averages member probabilities; the embedding is the members' concatenated.

    Members are independently trained, so their embeddings live in different spaces:
    concatenating keeps each intact for a downstream fusion model.
    """

    def __init__(self, members: list[nn.Module], *, has_embedding: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.has_embedding = has_embedding

    def forward(self, *inputs: torch.Tensor) -> Any:  # noqa: D102
        outputs = [member(*inputs) for member in self.members]
        if not self.has_embedding:
            return torch.stack(outputs).mean(dim=0)
        probs = torch.stack([out[0] for out in outputs]).mean(dim=0)
        embedding = torch.cat([out[1] for out in outputs], dim=-1)
        return probs, embedding


def _builder(checkpoint: dict[str, Any]) -> Any:
    """``build_model(arch, config)`` of the checkpoint's kind, or ``builder`` if named.

    ``builder`` ("package.module:function") lets a checkpoint name its own builder.
    """
    spec = checkpoint.get("builder") or f"{_BUILDERS[checkpoint['kind']]}:build_model"
    module_name, _, function = spec.partition(":")
    return getattr(importlib.import_module(module_name), function or "build_model")


def build_module(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the torch module of a checkpoint (ensembles included), in eval mode."""
    kind = checkpoint["kind"]
    build = _builder(checkpoint)
    members_spec = checkpoint.get("ensemble") or []
    if not members_spec:
        module = build(checkpoint["arch"], checkpoint["config"])
        module.load_state_dict(checkpoint["state_dict"])
    else:
        members = []
        for spec in members_spec:
            state = spec.get("state_dict", spec) if isinstance(spec, dict) else spec
            arch = (
                spec.get("arch", checkpoint["arch"]) if isinstance(spec, dict) else None
            )
            config = (
                spec.get("config", checkpoint["config"])
                if isinstance(spec, dict)
                else None
            )
            member = build(arch or checkpoint["arch"], config or checkpoint["config"])
            member.load_state_dict(state)
            members.append(member)
        module = SoftVotingEnsemble(members, has_embedding=kind != "fusion")
    if kind == "acoustic":
        from training.acoustic_models import AdaptiveHead, adaptation_window

        if adaptation_window(module) > 0:
            module = AdaptiveHead(module)
    return module.eval()


def example_inputs(
    kind: str, module: nn.Module, checkpoint: dict[str, Any]
) -> tuple[torch.Tensor, ...]:
    """Seeded tracing inputs of the right shapes (two rows, the second padded)."""
    generator = torch.Generator().manual_seed(0)
    if kind == "acoustic":
        features = torch.randn(2, 40, head_input_dim(checkpoint), generator=generator)
        features[1, 25:] = 0.0
        lengths = torch.tensor([40, 25], dtype=torch.int64)
        if not adapts(module):
            return features, lengths
        baseline = torch.randn(2, 2 * features.shape[2], generator=generator).abs()
        return features, lengths, baseline, torch.tensor([3.0, 0.0])
    if kind == "text":
        ids = torch.randint(220, 2000, (2, 12), generator=generator, dtype=torch.int64)
        ids[1, 7:] = 0
        return ids, torch.tensor([12, 7], dtype=torch.int64)
    acoustic_dim, text_dim = fusion_dims(module, checkpoint)
    return (
        torch.randn(2, acoustic_dim, generator=generator),
        torch.randn(2, text_dim, generator=generator),
        torch.tensor([1.0, 0.0]),
    )


def adapts(module: nn.Module) -> bool:
    """Whether a built module takes speaker baselines (an acoustic ``AdaptiveHead``)."""
    from training.acoustic_models import AdaptiveHead

    return isinstance(module, AdaptiveHead)


def io_names(kind: str, module: nn.Module) -> tuple[list[str], list[str]]:
    """Input and output names of a module's graph."""
    inputs, outputs = list(INPUTS[kind]), list(OUTPUTS[kind])
    if adapts(module):
        inputs += ADAPTIVE_INPUTS
        outputs += ADAPTIVE_OUTPUTS
    return inputs, outputs


def fusion_dims(module: nn.Module, checkpoint: dict[str, Any]) -> tuple[int, int]:
    """Acoustic and text embedding widths a fusion model expects."""
    inner = module.members[0] if isinstance(module, SoftVotingEnsemble) else module
    config = checkpoint["config"]
    acoustic_dim = getattr(inner, "acoustic_dim", None) or config["acoustic_dim"]
    text_dim = getattr(inner, "text_dim", None) or config["text_dim"]
    return int(acoustic_dim), int(text_dim)


def default_name(checkpoint: dict[str, Any]) -> str:
    """``emotion-KIND[-LANG]-vN`` from the checkpoint."""
    if checkpoint.get("name"):
        return str(checkpoint["name"])
    kind = checkpoint["kind"]
    version = str(checkpoint.get("version", "1"))
    languages = list(checkpoint.get("languages") or [])
    if kind == "text" and len(languages) == 1:
        return f"emotion-text-{languages[0]}-v{version}"
    return f"emotion-{kind}-v{version}"


def version_of(name: str, checkpoint: dict[str, Any]) -> str:
    """Model version: the checkpoint's, else the ``-vN`` suffix of the name."""
    if checkpoint.get("version"):
        return str(checkpoint["version"])
    suffix = name.rsplit("-v", 1)
    return suffix[1] if len(suffix) == 2 and suffix[1].isdigit() else "1"


def metadata(
    name: str, checkpoint: dict[str, Any], embedding_dim: int
) -> dict[str, str]:
    """The ``metadata_props`` contract of the graph (keys without the prefix)."""
    kind = checkpoint["kind"]
    meta = {
        "format": FORMAT,
        "name": name,
        "kind": kind,
        "version": version_of(name, checkpoint),
        "labels": json.dumps(list(checkpoint["labels"])),
        "sample_rate": "16000",
        "embedding_dim": str(embedding_dim),
    }
    if kind == "acoustic":
        meta["features"] = json.dumps(front_end_of(checkpoint).to_dict())
        window = int(checkpoint.get("config", {}).get("adaptation_window", 0))
        if window and checkpoint.get("arch") == "stats":
            meta["adaptation_window"] = str(window)
    if kind == "text":
        meta["languages"] = json.dumps(list(checkpoint.get("languages") or []))
    return meta


def write_metadata(onnx_path: Path, meta: dict[str, str]) -> None:
    """Put ``meta`` into the graph's ``metadata_props`` and run ``onnx.checker``."""
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = META_PREFIX + key
        entry.value = value
    model.producer_name = "streamser-export"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(onnx_path))


def export_module(
    module: nn.Module,
    checkpoint: dict[str, Any],
    onnx_path: Path,
    *,
    name: str,
) -> ExportResult:
    """Export a built module with the contract's names, axes and metadata."""
    kind = checkpoint["kind"]
    torch.manual_seed(0)
    module = module.eval()
    inputs = example_inputs(kind, module, checkpoint)
    with torch.no_grad():
        outputs = module(*inputs)
    embedding_dim = int(outputs[1].shape[-1]) if kind != "fusion" else 0
    probs = outputs[0] if kind != "fusion" else outputs
    if probs.shape[-1] != len(checkpoint["labels"]):
        raise ValueError(
            f"{name}: model has {probs.shape[-1]} outputs but the checkpoint lists "
            f"{len(checkpoint['labels'])} labels"
        )
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is legacy, and about Slice folding.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            inputs,
            str(onnx_path),
            input_names=io_names(kind, module)[0],
            output_names=io_names(kind, module)[1],
            dynamic_axes=DYNAMIC_AXES[kind],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,  # the torch.export path needs onnxscript and mis-handles masks
        )
    write_metadata(onnx_path, metadata(name, checkpoint, embedding_dim))
    _LOGGER.info("exported %s (%s) to %s", name, kind, onnx_path)
    return ExportResult(
        onnx_path=onnx_path, name=name, kind=kind, embedding_dim=embedding_dim
    )


def export_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    verify: bool = True,
    reference_graphs: dict[str, Path] | None = None,
    export_command: str | None = None,
) -> Path:
    """Export one checkpoint to ``OUT_DIR/NAME.onnx``, verify it and write its card.

    Args:
        checkpoint_path: a file written by ``python -m training ...``.
        out_dir: destination folder (created).
        name: model name; default ``emotion-KIND[-LANG]-vN`` from the checkpoint.
        verify: compare onnxruntime with torch on real inputs (``export.verify``).
        reference_graphs: for fusion, the ``acoustic`` and ``text`` graphs whose
            embeddings feed the parity check; default: found in ``out_dir`` or the
            bundled models.
        export_command: recorded in the card; default ``python -m export PATH``.

    Returns:
        The path of the ONNX file; ``NAME.onnx.json`` lies beside it.

    Raises:
        ValueError: bad checkpoint.
        export.verify.VerificationError: the graph disagrees with torch.
        streamser.errors.ModelError: the runtime loader rejects the result.
    """
    from export import card as card_module
    from export import verify as verify_module
    from streamser.recognition.models import OnnxModel

    checkpoint = load_checkpoint(checkpoint_path)
    module = build_module(checkpoint)
    name = name or default_name(checkpoint)
    onnx_path = Path(out_dir) / f"{name}.onnx"
    joined = (
        checkpoint["kind"] == "acoustic"
        and front_end_of(checkpoint).runs_whisper_layers
    )
    head_path = onnx_path.with_name(f"{name}.head.onnx") if joined else onnx_path
    result = export_module(module, checkpoint, head_path, name=name)
    verification = None
    if verify:
        batches, source = verify_module.real_batches(
            checkpoint, module, out_dir=Path(out_dir), reference_graphs=reference_graphs
        )
        verification = verify_module.compare(head_path, module, batches)
        verification["inputs"] = source
    if joined:
        from training.features_cache import default_cache_dir
        from training.whisper_prefix import prefix_graph

        prefix_path = prefix_graph(front_end_of(checkpoint), default_cache_dir())
        join_prefix(prefix_path, head_path, onnx_path)
        write_metadata(onnx_path, metadata(name, checkpoint, result.embedding_dim))
        if verification is not None:
            verification["joined"] = verify_module.compare_joined(
                onnx_path, prefix_path, head_path, front_end_of(checkpoint)
            )
        head_path.unlink()
    command = export_command or f"python -m export {checkpoint_path} --out {out_dir}"
    card = card_module.build_card(
        onnx_path, checkpoint, export_command=command, verification=verification
    )
    card_module.write_card(onnx_path, card)
    OnnxModel(onnx_path, device="cpu")  # the runtime's own contract check
    return onnx_path


def to_numpy(value: torch.Tensor) -> np.ndarray:
    """Detached float/int array of a tensor."""
    return value.detach().cpu().numpy()
