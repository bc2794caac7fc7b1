"""Check an exported graph against its torch model on real inputs.

The inputs come from ``export.parity_inputs``. Where the graph runs Whisper's first
encoder layers itself, the trained head is checked on the states of the prefix graph,
and the joined graph against prefix-then-head on log-mel frames. Fails above
``TOLERANCE`` max abs difference in fp32, and runs ``onnx.checker``; also measures
how much an fp16/int8 variant changes the probabilities and the accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export.checkpoint import VerificationError
from export.parity_inputs import (
    Batch,
    acoustic_batches,
    acoustic_rows,
    data_root,
    with_baselines,
)
from streamser.recognition.features import FrontEnd

_LOGGER = logging.getLogger(__name__)

TOLERANCE: Final = 1e-4


def compare_joined(
    joined_path: Path, prefix_path: Path, head_path: Path, front_end: FrontEnd
) -> dict[str, Any]:
    """Check the joined graph against the prefix graph then the head graph, on log-mel
    frames of real clips (seeded noise when the corpora are absent).

    Raises:
        VerificationError: they differ by more than ``TOLERANCE``.
    """
    root = data_root()
    if root is not None:
        mels, source = acoustic_rows(front_end, root), "real EMO-DB/RAVDESS clips"
    else:
        generator = np.random.default_rng(0)
        mels = [
            generator.standard_normal((n, front_end.dim)).astype(np.float32)
            for n in (2, 14, 100, 300)
        ]
        source = "synthetic log-mel (corpora absent)"
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    prefix = ort.InferenceSession(str(prefix_path), providers=["CPUExecutionProvider"])
    joined = ort.InferenceSession(str(joined_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    outputs = [o.name for o in head.get_outputs()]
    adaptive = _takes_baseline(head_path)
    for batch in acoustic_batches(mels):
        states, state_lengths = prefix.run(None, batch)
        head_batch = {"features": states, "lengths": state_lengths}
        if adaptive:
            head_batch = with_baselines(head_batch, states)
            batch = {
                **batch,
                **{k: head_batch[k] for k in ("baseline", "baseline_count")},
            }
        want = head.run(outputs, head_batch)
        got = joined.run(outputs, batch)
        for a, b in zip(want, got, strict=True):
            worst = max(worst, float(np.max(np.abs(a - b))))
    if worst > TOLERANCE:
        raise VerificationError(
            f"{joined_path}: the joined graph differs from prefix then head by "
            f"{worst:.3g} (tolerance {TOLERANCE:g})"
        )
    _LOGGER.info("%s: joined parity max abs diff %.3g", joined_path.name, worst)
    return {"max_abs_diff": worst, "inputs": f"{len(mels)} {source}"}


def _takes_baseline(onnx_path: Path) -> bool:
    """Whether a graph takes a speaker baseline (``baseline`` input)."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return any(i.name == "baseline" for i in session.get_inputs())


def compare(
    onnx_path: Path,
    module: nn.Module,
    batches: list[Batch],
    *,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Run torch and onnxruntime on the same batches; raise above ``tolerance``.

    Returns:
        ``{"max_abs_diff": float, "per_output": {...}, "batches": n, "tolerance": t}``.

    Raises:
        VerificationError: onnx.checker fails or any output differs by more.
    """
    try:
        onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    except onnx.checker.ValidationError as err:
        raise VerificationError(f"{onnx_path}: onnx.checker failed: {err}") from err
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    worst: dict[str, float] = dict.fromkeys(names, 0.0)
    module = module.eval()
    for batch in batches:
        with torch.no_grad():
            expected = module(*(torch.from_numpy(value) for value in batch.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = session.run(names, batch)
        for name, want, got in zip(names, expected, actual, strict=True):
            if not np.all(np.isfinite(got)):
                raise VerificationError(f"{onnx_path}: output {name} is not finite")
            diff = float(np.max(np.abs(want.numpy() - got))) if got.size else 0.0
            worst[name] = max(worst[name], diff)
    result = {
        "max_abs_diff": max(worst.values()),
        "per_output": worst,
        "batches": len(batches),
        "tolerance": tolerance,
    }
    if result["max_abs_diff"] > tolerance:
        raise VerificationError(
            f"{onnx_path}: onnxruntime differs from torch by {result['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:g}): {worst}"
        )
    _LOGGER.info(
        "%s: parity max abs diff %.3g over %d batches",
        onnx_path.name,
        result["max_abs_diff"],
        len(batches),
    )
    return result


def variant_change(
    reference_path: Path, variant_path: Path, batches: list[Batch]
) -> dict[str, Any]:
    """How much a quantised/fp16 variant changes the probabilities on ``batches``.

    Returns:
        Max abs probability difference, top-1 agreement with the fp32 graph, sizes.
    """
    reference = ort.InferenceSession(
        str(reference_path), providers=["CPUExecutionProvider"]
    )
    variant = ort.InferenceSession(
        str(variant_path), providers=["CPUExecutionProvider"]
    )
    diffs, agree, total = [], 0, 0
    for batch in batches:
        want = reference.run(["probs"], batch)[0]
        feed = {
            item.name: batch[item.name].astype(np.float16)
            if item.type == "tensor(float16)"
            else batch[item.name]
            for item in variant.get_inputs()
        }
        got = variant.run(["probs"], feed)[0].astype(np.float32)
        diffs.append(float(np.max(np.abs(want - got))))
        agree += int(np.sum(want.argmax(-1) == got.argmax(-1)))
        total += want.shape[0]
    return {
        "max_abs_prob_diff": max(diffs),
        "top1_agreement": agree / total,
        "rows": total,
        "size_bytes": variant_path.stat().st_size,
    }


def accuracy_change(
    reference_path: Path,
    variant_path: Path,
    batches: list[Batch],
    truth: list[str],
    labels: list[str],
) -> dict[str, float]:
    """Accuracy (WA) of the fp32 graph and of a variant on the same labelled rows."""
    scores = {}
    for key, path in (("fp32", reference_path), ("variant", variant_path)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        predicted = np.concatenate(
            [session.run(["probs"], b)[0].argmax(1) for b in batches]
        )
        scores[key] = float(
            np.mean([labels[i] == t for i, t in zip(predicted, truth, strict=True)])
        )
    return {
        "wa_fp32": scores["fp32"],
        "wa_variant": scores["variant"],
        "wa_change": scores["variant"] - scores["fp32"],
    }
