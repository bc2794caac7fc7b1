"""What the text graphs with their own front end share: export with parity, int8,
the front-end file beside the graph, and the card.

Both graphs read ``token_ids`` and ``lengths`` like the Whisper-BPE text graphs; the
runtime makes the ids with the file the contract names
(``streamser.recognition.text_front``).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from export.card import graph_card, write_card
from export.to_onnx import write_metadata
from streamser.recognition.contract import ModelContract
from streamser.recognition.features import pad_batch
from training.onnx_export import export_graph

TOLERANCE: Final = 1e-4
EMPTY_TRANSCRIPT: Final = (
    "Empty transcript (lengths 0): uniform probabilities, zero embedding. "
)
"""The first sentence of every text card's notes."""


def encode_rows(encoder: Any, texts: Sequence[str]) -> list[npt.NDArray[np.int64]]:
    """Token ids of each text by a front end (``encoder.encode``)."""
    return [encoder.encode(t) for t in texts]


def export_text_graph(
    module: nn.Module,
    contract: ModelContract,
    onnx_path: Path,
    rows: Sequence[npt.NDArray[np.int64]],
) -> dict[str, Any]:
    """Export ``module`` (``forward(token_ids, lengths)``), write ``contract`` into it
    and compare torch with onnxruntime on ``rows`` (singly and as one padded batch).

    Returns the verification record for the card.

    Raises:
        ValueError: an output differs by more than ``TOLERANCE``.
    """
    module = module.eval()
    outputs = ["probs", "embedding"]
    if contract.sentiment_labels:
        outputs = ["probs", "sentiment", "embedding"]
    example = tuple(torch.from_numpy(a) for a in pad_batch(rows[:2], np.int64))
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    axes: dict[str, dict[int, str]] = {
        "token_ids": {0: "batch", 1: "tokens"},
        "lengths": {0: "batch"},
    }
    axes.update({name: {0: "batch"} for name in outputs})
    export_graph(
        module,
        example,
        onnx_path,
        inputs=["token_ids", "lengths"],
        outputs=outputs,
        dynamic_axes=axes,
    )
    write_metadata(onnx_path, contract)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = {name: 0.0 for name in outputs}
    batches = [[r] for r in rows] + [list(rows)]
    for batch in batches:
        ids, lengths = pad_batch(batch, np.int64)
        got = session.run(None, {"token_ids": ids, "lengths": lengths})
        with torch.no_grad():
            want = module(torch.from_numpy(ids), torch.from_numpy(lengths))
        for name, g, w in zip(outputs, got, want, strict=True):
            worst[name] = max(worst[name], float(np.abs(g - w.numpy()).max()))
    if max(worst.values()) > TOLERANCE:
        raise ValueError(f"{onnx_path}: torch and onnxruntime differ: {worst}")
    return {
        "max_abs_diff": max(worst.values()),
        "per_output": worst,
        "batches": len(batches),
        "tolerance": TOLERANCE,
    }


def quantise_int8(onnx_path: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMul and Gather weights, keeping the metadata."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Only the encoder's weight MatMuls (inputs of width 384 or 1536): the heads read
    # thousands of features with widely spread weights, and int8 there flips decisions.
    graph = onnx.load(str(onnx_path))
    widths = {i.name: i.dims[0] for i in graph.graph.initializer if len(i.dims) == 2}
    heads = [
        node.name
        for node in graph.graph.node
        if node.op_type == "Gemm"
        or (node.op_type == "MatMul" and widths.get(node.input[1]) not in (384, 1536))
    ]
    # onnxruntime splits a Gemm into "<name>_MatMul" + Add before quantising.
    heads += [f"{name}_MatMul" for name in heads]
    quantize_dynamic(
        str(onnx_path),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        nodes_to_exclude=heads,
    )
    source = onnx.load(str(onnx_path))
    model = onnx.load(str(target))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(target))


def copy_beside(source: Path, onnx_path: Path, name: str) -> Path:
    """Copy a front-end file next to the graph as ``name``."""
    target = onnx_path.with_name(name)
    shutil.copyfile(source, target)
    return target


def predict_labels(
    onnx_path: Path, rows: Sequence[npt.NDArray[np.int64]], batch: int = 1
) -> dict[str, npt.NDArray[Any]]:
    """Arg-max of every output but ``embedding``, over ``rows``."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got: dict[str, list[Any]] = {n: [] for n in names if n != "embedding"}
    for start in range(0, len(rows), batch):
        ids, lengths = pad_batch(rows[start : start + batch], np.int64)
        out = dict(
            zip(
                names,
                session.run(None, {"token_ids": ids, "lengths": lengths}),
                strict=True,
            )
        )
        for name in got:
            got[name].append(out[name].argmax(1))
    return {n: np.concatenate(v) for n, v in got.items()}


def write_text_card(
    target: Path,
    checkpoint: dict[str, Any],
    args: argparse.Namespace,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
    licence: str,
    verification: dict[str, Any],
    notes: str,
    files: Sequence[Path],
) -> dict[str, Any]:
    """Build (``export.card.graph_card``) and write the card of a text graph."""
    provenance = {
        "arch": checkpoint["arch"],
        "config": config,
        "ensemble_size": 1,
        "data": checkpoint["data"],
        "protocol": checkpoint["metrics"]["protocol"],
        "metrics": metrics,
        "notes": EMPTY_TRANSCRIPT + notes,
        "verification": verification,
    }
    card = graph_card(
        target,
        provenance=provenance,
        licence=licence,
        commands={"train": args.train_command, "export": args.export_command},
        files=files,
    )
    write_card(target, card)
    return card
