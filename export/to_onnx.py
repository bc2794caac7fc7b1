"""Checkpoint -> ONNX graph with streamser's metadata contract (as piper's export_onnx).

A checkpoint (``export.checkpoint.Checkpoint``) is rebuilt as its torch module and
exported with the input and output names of ``INPUTS``/``OUTPUTS`` (plus the baseline
inputs and pooled output of a graph that adapts to the speaker), dynamic batch and
time axes, and the contract of ``streamser.recognition.contract.ModelContract`` in its
``metadata_props``. An acoustic head trained on Whisper layer states is joined behind
the Whisper prefix graph (``training.whisper_prefix``), so the shipped graph reads
log-mel frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import onnx
import torch
from torch import nn

from export import card as card_module
from export import verify as verify_module
from export.checkpoint import Checkpoint, adapts, build_module, fusion_dims
from export.parity_inputs import real_batches
from streamser.recognition.contract import ModelContract
from streamser.recognition.models import OnnxModel
from training.features_cache import default_cache_dir
from training.onnx_export import OPSET, export_graph
from training.whisper_prefix import prefix_graph

_LOGGER = logging.getLogger(__name__)


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
AFFECT_OUTPUTS: Final = ("affect",)
"""Extra output of an acoustic graph with affect: [batch, 2] arousal, valence."""
DYNAMIC_AXES: Final[dict[str, dict[str, dict[int, str]]]] = {
    "acoustic": {
        "features": {0: "batch", 1: "time"},
        "lengths": {0: "batch"},
        "baseline": {0: "batch"},
        "baseline_count": {0: "batch"},
        "probs": {0: "batch"},
        "embedding": {0: "batch"},
        "pooled": {0: "batch"},
        "affect": {0: "batch"},
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
        for name in (
            *OUTPUTS["acoustic"],
            *ADAPTIVE_OUTPUTS,
            *AFFECT_OUTPUTS,
            *ADAPTIVE_INPUTS,
        )
    }
    for node in joined.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for value in (*joined.graph.input, *joined.graph.output):
        value.name = renamed.get(value.name, value.name)
    del joined.metadata_props[:]
    onnx.save(joined, str(out_path))


def example_inputs(
    module: nn.Module, checkpoint: Checkpoint
) -> tuple[torch.Tensor, ...]:
    """Seeded tracing inputs of the right shapes (two rows, the second padded)."""
    generator = torch.Generator().manual_seed(0)
    if checkpoint.kind == "acoustic":
        dim = checkpoint.head_input_dim
        features = torch.randn(2, 40, dim, generator=generator)
        features[1, 25:] = 0.0
        lengths = torch.tensor([40, 25], dtype=torch.int64)
        if not adapts(module):
            return features, lengths
        baseline = torch.randn(2, 2 * features.shape[2], generator=generator).abs()
        return features, lengths, baseline, torch.tensor([3.0, 0.0])
    if checkpoint.kind == "text":
        ids = torch.randint(220, 2000, (2, 12), generator=generator, dtype=torch.int64)
        ids[1, 7:] = 0
        return ids, torch.tensor([12, 7], dtype=torch.int64)
    acoustic_dim, text_dim = fusion_dims(module, checkpoint)
    return (
        torch.randn(2, acoustic_dim, generator=generator),
        torch.randn(2, text_dim, generator=generator),
        torch.tensor([1.0, 0.0]),
    )


def io_names(kind: str, module: nn.Module) -> tuple[list[str], list[str]]:
    """Input and output names of a module's graph."""
    inputs, outputs = list(INPUTS[kind]), list(OUTPUTS[kind])
    if adapts(module):
        inputs += ADAPTIVE_INPUTS
        outputs += ADAPTIVE_OUTPUTS
    if getattr(module, "affect", False) is True:
        outputs += AFFECT_OUTPUTS
    return inputs, outputs


def write_metadata(onnx_path: Path, contract: ModelContract) -> None:
    """Put the contract into the graph's ``metadata_props`` and run ``onnx.checker``."""
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value
    model.producer_name = "streamser-export"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(onnx_path))


def export_module(
    module: nn.Module,
    checkpoint: Checkpoint,
    onnx_path: Path,
    *,
    name: str,
) -> ExportResult:
    """Export a built module with the contract's names, axes and metadata."""
    kind = checkpoint.kind
    torch.manual_seed(0)
    module = module.eval()
    inputs = example_inputs(module, checkpoint)
    with torch.no_grad():
        outputs = module(*inputs)
    embedding_dim = int(outputs[1].shape[-1]) if kind != "fusion" else 0
    probs = outputs[0] if kind != "fusion" else outputs
    if probs.shape[-1] != len(checkpoint.labels):
        raise ValueError(
            f"{name}: model has {probs.shape[-1]} outputs but the checkpoint lists "
            f"{len(checkpoint.labels)} labels"
        )
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_graph(
        module,
        inputs,
        onnx_path,
        inputs=io_names(kind, module)[0],
        outputs=io_names(kind, module)[1],
        dynamic_axes=DYNAMIC_AXES[kind],
        opset=OPSET,
    )
    write_metadata(onnx_path, checkpoint.contract(name, embedding_dim))
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
        export.checkpoint.VerificationError: the graph disagrees with torch.
        streamser.errors.ModelError: the runtime loader rejects the result.
    """
    checkpoint = Checkpoint.load(checkpoint_path)
    module = build_module(checkpoint)
    name = name or checkpoint.default_name()
    onnx_path = Path(out_dir) / f"{name}.onnx"
    joined = checkpoint.runs_whisper_layers
    head_path = onnx_path.with_name(f"{name}.head.onnx") if joined else onnx_path
    result = export_module(module, checkpoint, head_path, name=name)
    verification = None
    if verify:
        batches, source = real_batches(
            checkpoint, module, out_dir=Path(out_dir), reference_graphs=reference_graphs
        )
        verification = verify_module.compare(head_path, module, batches)
        verification["inputs"] = source
    if joined:
        front_end = checkpoint.acoustic_front_end
        prefix_path = prefix_graph(front_end, default_cache_dir())
        join_prefix(prefix_path, head_path, onnx_path)
        write_metadata(onnx_path, checkpoint.contract(name, result.embedding_dim))
        if verification is not None:
            verification["joined"] = verify_module.compare_joined(
                onnx_path, prefix_path, head_path, front_end
            )
        head_path.unlink()
    command = export_command or f"python -m export {checkpoint_path} --out {out_dir}"
    card = card_module.build_card(
        onnx_path, checkpoint, export_command=command, verification=verification
    )
    card_module.write_card(onnx_path, card)
    OnnxModel(onnx_path, device="cpu")  # the runtime's own contract check
    return onnx_path
