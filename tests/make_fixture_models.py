"""Write the tiny ONNX fixture graphs in tests/data/models (run: python tests/make_fixture_models.py).

They follow the real graphs' contract (inputs, outputs, metadata, card) with seeded
random weights, so models.py, emotion.py and the pipeline can be tested without the
trained models. Needs the ``onnx`` package (train extra); the output is committed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamser.labels import CANONICAL_LABELS
from streamser.recognition.contract import ModelContract
from streamser.recognition.features import WHISPER_ENCODER_TOP

OUT = Path(__file__).parent / "data" / "models"
OPSET = 17
EMBED = 8
FAULTY_MAX_FRAMES = 200
"""Encoder frames (50 per second) the faulty acoustic graph accepts: 4 s of speech."""
TEXT_LABELS = ["anger", "fear", "happiness", "neutral", "sadness", "surprise"]


def _masked_mean(inp: str, lengths: str, nodes: list, inits: list, prefix: str) -> str:
    """Mean over valid time steps of inp [B, T, D] -> [B, D]."""
    inits += [
        numpy_helper.from_array(np.array([1], np.int64), f"{prefix}_one"),
        numpy_helper.from_array(np.array(0, np.int64), f"{prefix}_zero"),
        numpy_helper.from_array(np.array(1, np.int64), f"{prefix}_step"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{prefix}_m1"),
        numpy_helper.from_array(np.array(1.0, np.float32), f"{prefix}_eps"),
    ]
    nodes += [
        helper.make_node("Shape", [inp], [f"{prefix}_shape"]),
        helper.make_node(
            "Gather", [f"{prefix}_shape", f"{prefix}_step"], [f"{prefix}_T"], axis=0
        ),
        helper.make_node(
            "Range",
            [f"{prefix}_zero", f"{prefix}_T", f"{prefix}_step"],
            [f"{prefix}_ar"],
        ),
        helper.make_node("Unsqueeze", [lengths, f"{prefix}_one"], [f"{prefix}_len2"]),
        helper.make_node(
            "Less", [f"{prefix}_ar", f"{prefix}_len2"], [f"{prefix}_maskb"]
        ),
        helper.make_node(
            "Cast", [f"{prefix}_maskb"], [f"{prefix}_mask"], to=TensorProto.FLOAT
        ),
        helper.make_node(
            "Unsqueeze", [f"{prefix}_mask", f"{prefix}_m1"], [f"{prefix}_mask3"]
        ),
        helper.make_node("Mul", [inp, f"{prefix}_mask3"], [f"{prefix}_masked"]),
        helper.make_node(
            "ReduceSum",
            [f"{prefix}_masked", f"{prefix}_one"],
            [f"{prefix}_sum"],
            keepdims=0,
        ),
        helper.make_node(
            "ReduceSum",
            [f"{prefix}_mask", f"{prefix}_one"],
            [f"{prefix}_cnt"],
            keepdims=1,
        ),
        helper.make_node("Max", [f"{prefix}_cnt", f"{prefix}_eps"], [f"{prefix}_cntc"]),
        helper.make_node(
            "Div", [f"{prefix}_sum", f"{prefix}_cntc"], [f"{prefix}_mean"]
        ),
    ]
    return f"{prefix}_mean"


def _head(
    x: str, dim: int, labels: int, nodes: list, inits: list, rng: np.random.Generator
) -> None:
    inits += [
        numpy_helper.from_array(
            rng.normal(0, 0.1, (dim, EMBED)).astype(np.float32), "w1"
        ),
        numpy_helper.from_array(
            rng.normal(0, 0.5, (EMBED, labels)).astype(np.float32), "w2"
        ),
    ]
    nodes += [
        helper.make_node("MatMul", [x, "w1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]


def _contract(name: str, kind: str, version: str, labels: list[str]) -> ModelContract:
    """A fixture's metadata: the acoustic graph reads Whisper encoder states, the
    text graph Persian transcripts; every embedding is ``EMBED`` wide."""
    return ModelContract(
        name=name,
        kind=kind,
        version=version,
        labels=tuple(labels),
        embedding_dim=EMBED,
        front_end=WHISPER_ENCODER_TOP if kind == "acoustic" else None,
        languages=("fa",) if kind == "text" else (),
    )


def _save(graph: onnx.GraphProto, contract: ModelContract, out: Path = OUT) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in contract.to_metadata().items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    name = contract.name
    path = out / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    card = {
        "format_version": contract.format_version,
        "name": name,
        "kind": contract.kind,
        "version": contract.version,
        "labels": list(contract.labels),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "training_data": "none: seeded random weights (test fixture)",
        "metrics": {},
    }
    (out / f"{name}.onnx.json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> None:
    write_set(OUT, "1", seed=0)
    # A second release of the same models (other weights, version 2): SIGHUP reload tests.
    write_set(OUT.with_name("models-v2"), "2", seed=1)
    write_faulty(OUT.with_name("models-faulty"))


def write_faulty(out: Path, max_frames: int = FAULTY_MAX_FRAMES) -> None:
    """An acoustic graph that loads and warms up but fails on inputs over 4 s.

    A Reshape of ``min(time, max_frames)`` elements to ``[time]`` only works while
    ``time <= max_frames``: short utterances are recognised, long ones raise inside
    onnxruntime at run time (the recognition_failed path, end to end).
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    labels = list(CANONICAL_LABELS)
    nodes: list = []
    inits: list = []
    pooled = _masked_mean("features", "lengths", nodes, inits, "p")
    inits += [
        numpy_helper.from_array(np.zeros(max_frames, np.float32), "f_pool"),
        numpy_helper.from_array(np.array([0], np.int64), "f_zero"),
        numpy_helper.from_array(np.array([1], np.int64), "f_one"),
        numpy_helper.from_array(np.array([2], np.int64), "f_two"),
        numpy_helper.from_array(np.array([0.0], np.float32), "f_scale"),
    ]
    nodes += [
        helper.make_node("Shape", ["features"], ["f_shape"]),
        helper.make_node("Slice", ["f_shape", "f_one", "f_two"], ["f_T"]),
        helper.make_node("Slice", ["f_pool", "f_zero", "f_T"], ["f_part"]),
        helper.make_node("Reshape", ["f_part", "f_T"], ["f_checked"]),
        helper.make_node("ReduceSum", ["f_checked"], ["f_sum"], keepdims=1),
        helper.make_node("Mul", ["f_sum", "f_scale"], ["f_nothing"]),
        helper.make_node("Add", [pooled, "f_nothing"], ["f_pooled"]),
    ]
    _head("f_pooled", WHISPER_ENCODER_TOP.dim, len(labels), nodes, inits, rng)
    graph = _acoustic_graph(nodes, "acoustic_faulty", len(labels), inits)
    _save(graph, _contract("emotion-acoustic-v1", "acoustic", "1", labels), out)


def _acoustic_graph(
    nodes: list, name: str, n_labels: int, inits: list
) -> onnx.GraphProto:
    """An acoustic graph of ``nodes``: encoder states and lengths in, probabilities
    and an embedding out."""
    return helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(
                "features",
                TensorProto.FLOAT,
                ["batch", "time", WHISPER_ENCODER_TOP.dim],
            ),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info(
                "probs", TensorProto.FLOAT, ["batch", n_labels]
            ),
            helper.make_tensor_value_info(
                "embedding", TensorProto.FLOAT, ["batch", EMBED]
            ),
        ],
        inits,
    )


def write_set(out: Path, version: str, seed: int) -> None:
    """The acoustic, text and fusion fixture graphs, seeded, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = list(CANONICAL_LABELS)
    # acoustic
    nodes: list = []
    inits: list = []
    pooled = _masked_mean("features", "lengths", nodes, inits, "p")
    _head(pooled, WHISPER_ENCODER_TOP.dim, len(labels), nodes, inits, rng)
    graph = _acoustic_graph(nodes, "acoustic", len(labels), inits)
    _save(graph, _contract("emotion-acoustic-v1", "acoustic", version, labels), out)
    # text: embedding lookup, masked mean
    nodes, inits = [], []
    inits.append(
        numpy_helper.from_array(rng.normal(0, 1, (1024, 4)).astype(np.float32), "emb")
    )
    inits.append(numpy_helper.from_array(np.array(1024, np.int64), "rows"))
    nodes.append(helper.make_node("Mod", ["token_ids", "rows"], ["row_ids"]))
    nodes.append(helper.make_node("Gather", ["emb", "row_ids"], ["tok"], axis=0))
    pooled = _masked_mean("tok", "lengths", nodes, inits, "p")
    _head(pooled, 4, len(TEXT_LABELS), nodes, inits, rng)
    graph = helper.make_graph(
        nodes,
        "text",
        [
            helper.make_tensor_value_info(
                "token_ids", TensorProto.INT64, ["batch", "tokens"]
            ),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info(
                "probs", TensorProto.FLOAT, ["batch", len(TEXT_LABELS)]
            ),
            helper.make_tensor_value_info(
                "embedding", TensorProto.FLOAT, ["batch", EMBED]
            ),
        ],
        inits,
    )
    _save(graph, _contract("emotion-text-fa-v1", "text", version, TEXT_LABELS), out)
    # fusion: concat(acoustic, text * present) -> head
    nodes, inits = [], []
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    nodes += [
        helper.make_node("Unsqueeze", ["text_present", "one"], ["present2"]),
        helper.make_node("Mul", ["text_embedding", "present2"], ["text_masked"]),
        helper.make_node(
            "Concat", ["acoustic_embedding", "text_masked"], ["both"], axis=1
        ),
    ]
    _head("both", 2 * EMBED, len(labels), nodes, inits, rng)
    graph = helper.make_graph(
        [n for n in nodes],
        "fusion",
        [
            helper.make_tensor_value_info(
                "acoustic_embedding", TensorProto.FLOAT, ["batch", EMBED]
            ),
            helper.make_tensor_value_info(
                "text_embedding", TensorProto.FLOAT, ["batch", EMBED]
            ),
            helper.make_tensor_value_info("text_present", TensorProto.FLOAT, ["batch"]),
        ],
        [
            helper.make_tensor_value_info(
                "probs", TensorProto.FLOAT, ["batch", len(labels)]
            )
        ],
        inits,
    )
    _save(graph, _contract("emotion-fusion-v1", "fusion", version, labels), out)


if __name__ == "__main__":
    main()
