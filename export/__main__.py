"""``python -m export CHECKPOINT... --out DIR``: ONNX graphs, parity checks and cards.

Acoustic and text checkpoints are exported before fusion ones, so a fusion graph is
verified on embeddings from the graphs just written. ``--int8`` (dynamic quantisation)
and ``--fp16`` write variants under ``DIR/variants/`` with their measured change
against the fp32 graph recorded in the card; they are not shipped by default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import onnx

from export.card import build_card, graph_contract, write_card
from export.checkpoint import Checkpoint, VerificationError, build_module
from export.parity_inputs import Batch, labelled_batches, real_batches
from export.to_onnx import export_checkpoint
from export.verify import accuracy_change, variant_change
from streamser.errors import ModelError
from streamser.recognition.contract import KINDS

_LOGGER = logging.getLogger("export")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "checkpoints", nargs="+", type=Path, help="training checkpoints"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--name", help="model name (one checkpoint only); default from it"
    )
    parser.add_argument(
        "--int8", action="store_true", help="also write an int8 variant"
    )
    parser.add_argument(
        "--fp16", action="store_true", help="also write an fp16 variant"
    )
    parser.add_argument(
        "--acoustic-model",
        type=Path,
        help="acoustic graph feeding fusion parity (default: in --out)",
    )
    parser.add_argument(
        "--text-model",
        type=Path,
        help="text graph feeding fusion parity (default: in --out)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line per model"
    )
    parser.add_argument("--debug", action="store_true", help="debug logging")
    return parser


def _copy_metadata(source: Path, target: Path, variant: str) -> None:
    """The source graph's contract, marked as ``variant``, into the target graph."""
    contract = dataclasses.replace(graph_contract(source), variant=variant)
    model = onnx.load(str(target))
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def _int8(onnx_path: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(target), weight_type=QuantType.QInt8)


def _fp16(onnx_path: Path, target: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Fails for graphs with ScatterElements(add) (the n-gram text model): no fp16
    # CPU kernel; the failure is recorded in the card, as fp16 is optional.
    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    _sort_nodes(model.graph)  # the converter appends its input casts at the end
    onnx.save(model, str(target))


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` topologically (Kahn's algorithm, stable)."""
    available = {item.name for item in graph.input} | {
        item.name for item in graph.initializer
    }
    available.add("")
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or a missing input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _variants(
    onnx_path: Path,
    batches: list[Batch],
    checkpoint: Checkpoint,
    *,
    int8: bool,
    fp16: bool,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if checkpoint.runs_whisper_layers:
        reason = "the graph's Whisper layers are int8 already"
        chosen = ["int8"] * int8 + ["fp16"] * fp16
        return {variant: {"skipped": reason} for variant in chosen}
    folder = onnx_path.parent / "variants"
    folder.mkdir(exist_ok=True)
    labelled = labelled_batches(checkpoint)
    makers = [("int8", _int8)] * int8 + [("fp16", _fp16)] * fp16
    for variant, make in makers:
        target = folder / onnx_path.name.replace(".onnx", f".{variant}.onnx")
        try:
            make(onnx_path, target)
            _copy_metadata(onnx_path, target, variant)
            results[variant] = variant_change(onnx_path, target, batches)
            if labelled is not None:
                rows, truth, source = labelled
                results[variant] |= accuracy_change(
                    onnx_path, target, rows, truth, list(checkpoint.labels)
                )
                results[variant]["accuracy_data"] = source
            results[variant]["file"] = f"variants/{target.name}"
        except Exception as err:  # a failed optional variant must not sink the export
            _LOGGER.warning("%s variant of %s failed: %s", variant, onnx_path.name, err)
            results[variant] = {"error": str(err)}
    return results


def main(argv: list[str] | None = None) -> int:
    """Export, verify and card every checkpoint; non-zero exit on any failure."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.name and len(args.checkpoints) > 1:
        print("error: --name needs exactly one checkpoint", file=sys.stderr)
        return 2
    command = "python -m export " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        checkpoints = [(path, Checkpoint.load(path)) for path in args.checkpoints]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    checkpoints.sort(key=lambda item: KINDS.index(item[1].kind))
    references = {
        key: value
        for key, value in (("acoustic", args.acoustic_model), ("text", args.text_model))
        if value is not None
    }
    status = 0
    for path, checkpoint in checkpoints:
        name = args.name or checkpoint.default_name()
        try:
            onnx_path = export_checkpoint(
                path,
                args.out,
                name=name,
                reference_graphs=references or None,
                export_command=command,
            )
            card_path = onnx_path.with_name(onnx_path.name + ".json")
            card = json.loads(card_path.read_text("utf-8"))
            if args.int8 or args.fp16:
                module = build_module(checkpoint)
                batches, _ = real_batches(
                    checkpoint,
                    module,
                    out_dir=args.out,
                    reference_graphs=references or None,
                )
                variants = _variants(
                    onnx_path, batches, checkpoint, int8=args.int8, fp16=args.fp16
                )
                card = build_card(
                    onnx_path,
                    checkpoint,
                    export_command=command,
                    verification=card["verification"],
                    variants=variants,
                )
                write_card(onnx_path, card)
        except (ValueError, VerificationError, ModelError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            status = 1
            continue
        summary = {
            "name": card["name"],
            "kind": card["kind"],
            "onnx": str(onnx_path),
            "size_bytes": card["size_bytes"],
            "sha256": card["sha256"],
            "max_abs_diff": (card["verification"] or {}).get("max_abs_diff"),
            "variants": card.get("variants"),
        }
        if args.json:
            print(json.dumps(summary))
        else:
            print(
                f"{summary['name']}: {onnx_path} ({summary['size_bytes']} bytes), "
                f"parity max abs diff {summary['max_abs_diff']:.3g}"
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
