"""Building blocks of the acoustic heads, masked by ``lengths`` so that a row's output
does not depend on the padding that follows it (``training.acoustic_models``)."""

from __future__ import annotations

from typing import Final

import torch
from torch import nn
from torch.nn import functional as F

_NEG: Final = -1.0e4


def frame_mask(
    lengths: torch.Tensor, time: int | torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """[batch, time, 1] mask of valid frames (1.0) built from ``lengths``."""
    steps = torch.arange(time, device=lengths.device).unsqueeze(0)
    return (steps < lengths.unsqueeze(1)).to(dtype).unsqueeze(-1)


def pool_time(
    x: torch.Tensor, lengths: torch.Tensor, pool: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average frames in windows of ``pool`` (zero-padded), returning new lengths.

    The input is padded with ``pool - 1`` zeros so every window is full; padding of
    the row beyond its length is zero (masked by the caller), so a row's pooled
    frames do not depend on the padding that follows it.
    """
    if pool == 1:
        return x, lengths
    padded = F.pad(x.transpose(1, 2), (0, pool - 1))
    pooled = F.avg_pool1d(padded, kernel_size=pool, stride=pool).transpose(1, 2)
    return pooled, torch.div(lengths + (pool - 1), pool, rounding_mode="floor")


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over valid frames."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        """Score each frame with a small MLP of size ``hidden``."""
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool [B, T, D] with mask [B, T, 1] to [B, 2D]."""
        logits = self.score(x) * mask + (1.0 - mask) * _NEG
        weights = torch.softmax(logits, dim=1) * mask
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)
        mean = (weights * x).sum(dim=1)
        var = (weights * x * x).sum(dim=1) - mean * mean
        std = torch.sqrt(var.clamp_min(1e-5))
        return torch.cat([mean, std], dim=-1)


class ConvBlock(nn.Module):
    """Masked residual depthwise-separable conv block over time."""

    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        """Depthwise conv of width ``kernel``, pointwise MLP, dropout."""
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.pointwise = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, D]; padded frames stay zero."""
        h = self.norm(x) * mask
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)
        h = self.pointwise(F.gelu(h))
        return (x + self.dropout(h)) * mask


class InputScaler(nn.Module):
    """Per-dimension standardisation with statistics of the training frames.

    Whisper encoder states have a few dimensions of very large magnitude, which a
    per-frame LayerNorm lets dominate; a global scaler (as the linear baseline's
    StandardScaler) keeps every dimension informative. The statistics are buffers,
    so they travel in the state dict and the exported graph.
    """

    def __init__(self, dim: int) -> None:
        """Identity until ``set_statistics`` is called."""
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training frames' mean and standard deviation."""
        self.mean.copy_(mean)
        self.inv_std.copy_(1.0 / std.clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise [B, T, D]."""
        return (x - self.mean) * self.inv_std
