"""One way to turn a torch module into an ONNX graph, for every graph made here."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import torch
from torch import nn

OPSET: Final = 17
"""The ONNX opset of every graph (onnxruntime 1.17 and later run it)."""


def export_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int = OPSET,
) -> None:
    """Trace ``module`` on ``example`` into ``path`` with the TorchScript exporter
    (``dynamo=False``: the torch.export path needs onnxscript and mis-handles masks),
    constants folded, without gradients; its warnings that it is legacy, about Slice
    folding and about tracing are silenced."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
