"""Low-rank adapters (LoRA; Hu et al., 2021) on frozen linear layers.

``x @ A.T @ B.T * alpha / rank`` is added to a frozen layer's output, with B starting
at zero, so an untrained adapter changes nothing. Used to fine-tune the e5 text
encoder (``training.e5_torch``) and one Whisper encoder layer
(``training.acoustic.layer3``) without touching their weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class AdaptedLinear(nn.Module):
    """A frozen linear layer, plus a low-rank adapter when ``rank`` > 0."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        rank: int = 0,
        alpha: float = 16.0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight)))
        self.register_buffer("bias", torch.from_numpy(np.ascontiguousarray(bias)))
        self.rank = rank
        self.scale = alpha / rank if rank else 0.0
        if rank:
            self.down = nn.Parameter(torch.randn(rank, weight.shape[1]) * 0.01)
            self.up = nn.Parameter(torch.zeros(weight.shape[0], rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.rank:
            y = y + F.linear(F.linear(x, self.down), self.up) * self.scale
        return y
