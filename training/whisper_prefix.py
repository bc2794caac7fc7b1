"""Whisper's encoder, cut after its first layers, as an int8 ONNX graph.

The shipped acoustic model reads the states after layers 2 and 3 of Whisper base's six
encoder layers (``streamser.recognition.features.WHISPER_LAYERS``). CTranslate2 returns only an
encoder's final states, so getting two depths from it took two encoder passes; here the
encoder's first layers are rebuilt in torch from the weights in faster-whisper's
``model.bin``, exported to ONNX with every depth wanted as one output, and their
matrix products quantized to int8 (per channel, dynamic; the convolutions stay float:
int8 convolutions are slower in onnxruntime). One pass of that graph gives all depths.

Training computes its features with this graph through onnxruntime
(``training.features_cache``), and export joins the same graph in front of the trained
head (``export.to_onnx``), so the shipped acoustic graph reads log-mel frames and
computes exactly what training saw. It lives in training, which export imports, so
both reach it without an import cycle; it imports only streamser.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamser.recognition.features import FrontEnd
from streamser.recognition.whisper_model import default_whisper_dir
from training.onnx_export import export_graph

_LOGGER = logging.getLogger(__name__)

GRAPH_VERSION: Final = 1
"""Bumped whenever the graph this module writes changes (part of the cache key)."""
INPUTS: Final = ("features", "lengths")
OUTPUTS: Final = ("states", "state_lengths")
_FLOAT_TYPES: Final = {0: np.float32, 4: np.float16}
"""CTranslate2 dtype codes this reader converts (float32, float16)."""
_HEADS: Final = 8


def read_encoder_weights(model_bin: Path) -> dict[str, npt.NDArray[np.float32]]:
    """The encoder's float weights from a CTranslate2 Whisper ``model.bin``.

    Returns:
        Variable name (``encoder/...``) to float32 array.

    Raises:
        ValueError: not a CTranslate2 Whisper model, or its weights are quantized
            (convert the model with float16 or float32 weights).
    """
    return read_weights(model_bin, "encoder/")


def read_weights(
    model_bin: Path, prefix: str = ""
) -> dict[str, npt.NDArray[np.float32]]:
    """The float weights whose names start with ``prefix`` (e.g. ``"decoder/"``) from
    a CTranslate2 Whisper ``model.bin``; scalars are skipped.

    Raises:
        ValueError: not a CTranslate2 Whisper model, or a wanted weight is quantized.
    """
    return _read(memoryview(model_bin.read_bytes()), model_bin, prefix)


def _read(
    view: memoryview, path: Path, prefix: str
) -> dict[str, npt.NDArray[np.float32]]:
    position = 0

    def take(size: int) -> memoryview:
        nonlocal position
        if position + size > len(view):
            raise ValueError(f"{path} is truncated")
        chunk = view[position : position + size]
        position += size
        return chunk

    def string() -> str:
        (length,) = struct.unpack("<H", take(2))
        return bytes(take(length)[:-1]).decode("utf-8")

    (version,) = struct.unpack("<I", take(4))
    if version not in (5, 6) or string() != "WhisperSpec":
        raise ValueError(f"{path} is not a CTranslate2 Whisper model (v5/v6)")
    take(4)  # spec revision
    (count,) = struct.unpack("<I", take(4))
    weights: dict[str, npt.NDArray[np.float32]] = {}
    for _ in range(count):
        name = string()
        (rank,) = struct.unpack("<B", take(1))
        dims = struct.unpack(f"<{rank}I", take(4 * rank))
        (dtype,) = struct.unpack("<B", take(1))
        (size,) = struct.unpack("<I", take(4))
        raw = take(size)
        if not name.startswith(prefix) or rank == 0:
            continue
        if dtype not in _FLOAT_TYPES:
            raise ValueError(
                f"{path}: {name} has CTranslate2 type {dtype}; rebuilding Whisper "
                "in torch needs float16 or float32 weights"
            )
        array = np.frombuffer(raw, dtype=_FLOAT_TYPES[dtype]).reshape(dims)
        weights[name] = array.astype(np.float32)
    return weights


class EncoderLayer(nn.Module):
    """One pre-norm Whisper encoder layer (self-attention, then a GELU MLP)."""

    def __init__(self, weights: dict[str, npt.NDArray[np.float32]], index: int) -> None:
        super().__init__()
        prefix = f"encoder/layer_{index}/"

        def linear(name: str) -> nn.Linear:
            weight = torch.from_numpy(weights[prefix + name + "/weight"])
            layer = nn.Linear(weight.shape[1], weight.shape[0])
            layer.weight.data = weight
            layer.bias.data = torch.from_numpy(weights[prefix + name + "/bias"])
            return layer

        def norm(name: str) -> nn.LayerNorm:
            layer = nn.LayerNorm(weights[prefix + name + "/gamma"].shape[0])
            layer.weight.data = torch.from_numpy(weights[prefix + name + "/gamma"])
            layer.bias.data = torch.from_numpy(weights[prefix + name + "/beta"])
            return layer

        self.attention_norm = norm("self_attention/layer_norm")
        self.qkv = linear("self_attention/linear_0")
        self.attention_out = linear("self_attention/linear_1")
        self.mlp_norm = norm("ffn/layer_norm")
        self.mlp_in = linear("ffn/linear_0")
        self.mlp_out = linear("ffn/linear_1")

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, time, dim = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(dim, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, time, _HEADS, dim // _HEADS).transpose(1, 2)

        attended = nn.functional.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=mask
        )
        x = x + self.attention_out(attended.transpose(1, 2).reshape(batch, time, dim))
        return x + self.mlp_out(nn.functional.gelu(self.mlp_in(self.mlp_norm(x))))


class WhisperPrefix(nn.Module):
    """Whisper's encoder up to its deepest wanted layer, on unpadded log-mel frames.

    Input ``features`` (batch, frames, n_mels) and ``lengths`` (valid frames of each,
    even); output the states after each of ``layers`` layers, each through the encoder's
    final layer norm, side by side: (batch, frames / 2, dim * len(layers)), and their
    valid lengths. Padded frames are masked out of attention, so a padded batch gives
    each utterance the states of its own unpadded pass.
    """

    def __init__(
        self, weights: dict[str, npt.NDArray[np.float32]], layers: Sequence[int]
    ) -> None:
        super().__init__()
        self.layers_out = tuple(layers)
        available = sum(
            f"encoder/layer_{i}/ffn/linear_0/weight" in weights for i in range(64)
        )
        if (
            not self.layers_out
            or not 1 <= min(self.layers_out) <= max(self.layers_out) <= available
        ):
            raise ValueError(f"encoder layers {self.layers_out} outside 1..{available}")

        def conv(name: str, stride: int) -> nn.Conv1d:
            weight = torch.from_numpy(weights[f"encoder/{name}/weight"])
            layer = nn.Conv1d(weight.shape[1], weight.shape[0], 3, stride, padding=1)
            layer.weight.data = weight
            layer.bias.data = torch.from_numpy(weights[f"encoder/{name}/bias"])
            return layer

        self.conv1 = conv("conv1", 1)
        self.conv2 = conv("conv2", 2)
        self.register_buffer(
            "positions",
            torch.from_numpy(weights["encoder/position_encodings/encodings"]),
        )
        self.layers = nn.ModuleList(
            EncoderLayer(weights, i) for i in range(max(self.layers_out))
        )
        self.final_norm = nn.LayerNorm(self.positions.shape[1])
        self.final_norm.weight.data = torch.from_numpy(
            weights["encoder/layer_norm/gamma"]
        )
        self.final_norm.bias.data = torch.from_numpy(weights["encoder/layer_norm/beta"])

    def residuals(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The residual stream after each of ``layers_out`` (before the final layer
        norm), and the valid lengths."""
        x = nn.functional.gelu(self.conv1(features.transpose(1, 2)))
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        state_lengths = torch.div(lengths, 2, rounding_mode="floor")
        mask = attention_mask(state_lengths, x.shape[1])
        outputs = []
        for depth, layer in enumerate(self.layers, start=1):
            x = layer(x, mask)
            if depth in self.layers_out:
                outputs.append(x)
        return outputs, state_lengths

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, state_lengths = self.residuals(features, lengths)
        return torch.cat([self.final_norm(x) for x in outputs], dim=-1), state_lengths


def attention_mask(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """[batch, 1, 1, time] bool: which frames of each padded row attention may read."""
    valid = torch.arange(time)[None, :] < lengths[:, None]
    return valid[:, None, None, :]


@functools.lru_cache(maxsize=8)
def prefix_key(model_bin: Path, layers: tuple[int, ...]) -> str:
    """Hash of the model's bytes, the layers and ``GRAPH_VERSION`` (the model is
    hashed once per process: every feature cache lookup asks for it)."""
    digest = hashlib.sha256()
    with model_bin.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    blob = json.dumps(
        {"model": digest.hexdigest(), "layers": list(layers), "version": GRAPH_VERSION}
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def export_prefix(model_bin: Path, layers: Sequence[int], out_path: Path) -> Path:
    """Write the int8 prefix graph for ``layers`` of the Whisper in ``model_bin``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    module = WhisperPrefix(read_encoder_weights(model_bin), layers).eval()
    example = (torch.zeros(1, 400, module.conv1.in_channels), torch.tensor([400]))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "prefix-fp32.onnx"
        export_graph(
            module,
            example,
            float_path,
            inputs=INPUTS,
            outputs=OUTPUTS,
            dynamic_axes={
                "features": {0: "batch", 1: "time"},
                "lengths": {0: "batch"},
                "states": {0: "batch", 1: "state_time"},
                "state_lengths": {0: "batch"},
            },
        )
        quantize_dynamic(
            str(float_path),
            str(out_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": 1},  # float, where inference fails
        )
    return out_path


def prefix_graph(front_end: FrontEnd, cache_dir: Path) -> Path:
    """The int8 prefix graph of ``front_end`` (its ``encoder_layers`` of the bundled
    Whisper), written once into ``cache_dir`` and reused while model and code agree."""
    if not front_end.encoder_layers:
        raise ValueError(f"front end {front_end} names no encoder layers")
    model_bin = default_whisper_dir() / "model.bin"
    path = (
        cache_dir
        / f"whisper-prefix-{prefix_key(model_bin, tuple(front_end.encoder_layers))}.onnx"
    )
    if not path.exists():
        _LOGGER.info("building the Whisper prefix graph %s", path.name)
        partial = path.with_suffix(".partial")
        export_prefix(model_bin, front_end.encoder_layers, partial)
        partial.replace(path)
    return path


class PrefixRunner:
    """Runs a prefix graph with onnxruntime on CPU, one utterance at a time."""

    def __init__(self, graph: Path, num_threads: int = 2) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )

    def states(self, mel: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """States of one utterance's log-mel frames (frames, n_mels)."""
        batch = np.ascontiguousarray(mel[np.newaxis], dtype=np.float32)
        lengths = np.asarray([mel.shape[0]], dtype=np.int64)
        states, _ = self._session.run(None, {"features": batch, "lengths": lengths})
        return np.asarray(states[0], dtype=np.float32)
