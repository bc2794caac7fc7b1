"""Export trained checkpoints to ONNX graphs that streamser serves, with cards.

``python -m export CHECKPOINT... --out DIR`` reads each checkpoint (``checkpoint``),
rebuilds and exports its torch model (``to_onnx``), checks it against torch on real
inputs (``verify``) and writes its card (``card``). Imports torch and onnx; never
imported by the runtime; imports training (model classes, corpora, the Whisper prefix
graph), never imported by it.
"""

from export.checkpoint import Checkpoint, VerificationError, build_module
from export.to_onnx import OPSET, ExportResult, export_checkpoint

__all__ = [
    "OPSET",
    "Checkpoint",
    "ExportResult",
    "VerificationError",
    "build_module",
    "export_checkpoint",
]
