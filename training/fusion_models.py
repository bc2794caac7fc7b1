"""Self-attention fusion of an acoustic and a text embedding (torch; exported to ONNX).

``forward(acoustic_embedding [B, Ea], text_embedding [B, Et], text_present [B]) ->
probs [B, C]``. Each embedding is normalised and projected to a token of width
``dim``; a learned query token attends over [query, acoustic, text] in ``layers``
pre-norm transformer blocks, and the text token is masked out of every attention
where ``text_present`` is 0, so a missing transcript cannot move the output. Modality
dropout (``text_dropout``) hides the text during training, so the model also learns
to decide from the acoustic token alone.
"""

from __future__ import annotations

from typing import Any, Final

import torch
from torch import nn

_NEG: Final = -1.0e4


class FusionBlock(nn.Module):
    """Pre-norm multi-head self-attention with a key mask, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        """Blocks of width ``dim`` with ``heads`` heads."""
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, 2 * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * dim, dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [B, N, D], key_mask [B, N] (1 keep, 0 hide) -> [B, N, D]."""
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q = q.reshape(batch, tokens, self.heads, head_dim).transpose(1, 2)
        k = k.reshape(batch, tokens, self.heads, head_dim).transpose(1, 2)
        v = v.reshape(batch, tokens, self.heads, head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / head_dim**0.5
        scores = scores + (1.0 - key_mask)[:, None, None, :] * _NEG
        attended = torch.softmax(scores, dim=-1) @ v
        attended = attended.transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.ffn(self.norm2(x)))


class AttentionFusion(nn.Module):
    """Query token attending over the acoustic and (maskable) text tokens."""

    def __init__(
        self,
        n_labels: int,
        acoustic_dim: int,
        text_dim: int,
        dim: int = 64,
        heads: int = 4,
        layers: int = 1,
        dropout: float = 0.2,
        text_dropout: float = 0.5,
    ) -> None:
        """Build the fusion head; arguments are stored in the checkpoint's config."""
        super().__init__()
        self.acoustic_dim = acoustic_dim
        self.text_dim = text_dim
        self.text_dropout = text_dropout
        self.acoustic_in = nn.Sequential(
            nn.LayerNorm(acoustic_dim), nn.Linear(acoustic_dim, dim)
        )
        self.text_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality = nn.Parameter(torch.zeros(1, 3, dim))
        nn.init.normal_(self.query, std=0.02)
        nn.init.normal_(self.modality, std=0.02)
        self.blocks = nn.ModuleList(
            FusionBlock(dim, heads, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, n_labels)

    def logits(
        self,
        acoustic_embedding: torch.Tensor,
        text_embedding: torch.Tensor,
        text_present: torch.Tensor,
    ) -> torch.Tensor:
        """Unnormalised class scores (training applies modality dropout here)."""
        present = text_present.reshape(-1).to(acoustic_embedding.dtype)
        if self.training and self.text_dropout > 0:
            keep = (torch.rand_like(present) >= self.text_dropout).to(present.dtype)
            present = present * keep
        acoustic = self.acoustic_in(acoustic_embedding)
        text = self.text_in(text_embedding) * present.unsqueeze(1)
        query = self.query.expand(acoustic.shape[0], -1, -1)
        x = torch.cat([query, acoustic.unsqueeze(1), text.unsqueeze(1)], dim=1)
        x = x + self.modality
        ones = torch.ones_like(present)
        key_mask = torch.stack([ones, ones, present], dim=1)
        for block in self.blocks:
            x = block(x, key_mask)
        return self.out(self.norm(x[:, 0]))

    def forward(
        self,
        acoustic_embedding: torch.Tensor,
        text_embedding: torch.Tensor,
        text_present: torch.Tensor,
    ) -> torch.Tensor:
        """-> probs [B, n_labels]."""
        return torch.softmax(
            self.logits(acoustic_embedding, text_embedding, text_present), -1
        )


def build_model(arch: str, config: dict[str, Any]) -> nn.Module:
    """Build a fusion model (the builder ``export`` calls for ``kind: fusion``).

    Args:
        arch: ``attention``.
        config: ``AttentionFusion`` keyword arguments (``n_labels``, ``acoustic_dim``,
            ``text_dim`` required).

    Raises:
        ValueError: unknown architecture.
    """
    if arch != "attention":
        raise ValueError(f"unknown fusion architecture {arch!r}; known: attention")
    return AttentionFusion(**config)
