"""Export trained checkpoints to ONNX graphs that streamser serves, with cards.

``python -m export CHECKPOINT... --out DIR`` rebuilds each torch model from its
checkpoint, exports it (``to_onnx``), checks it against torch on real inputs
(``verify``) and writes its card (``card``). Imports torch and onnx; never imported by
the runtime.
"""

from export.to_onnx import (
    OPSET,
    ExportResult,
    build_module,
    export_checkpoint,
    load_checkpoint,
)

__all__ = [
    "OPSET",
    "ExportResult",
    "build_module",
    "export_checkpoint",
    "load_checkpoint",
]
