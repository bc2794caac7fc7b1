"""PyTorch acoustic emotion models with the ONNX I/O contract of ``streamser.recognition.models``.

Every model maps ``features`` float32 [batch, time, dim] (zero-padded rows) and
``lengths`` int64 [batch] to ``(probs [batch, labels], embedding [batch, E])``.
Masks come from ``arange(time) < lengths`` comparisons only (no Python loops over
lengths, no boolean indexing), so the graphs export with dynamic batch and time axes
and a row's output does not depend on how much padding follows it.

Architectures (``build_model(arch, config)``):

- ``attn``: for Whisper encoder states. Frames are averaged in windows of ``pool``,
  normalised, projected, passed through ``blocks`` masked depthwise-separable conv
  blocks, and pooled by attentive statistics (weighted mean and standard deviation).
- ``stats``: for Whisper encoder states: masked mean and standard deviation over
  time of globally standardised states, then an MLP (the linear baseline's input,
  with a non-linear classifier); optionally adapted to the stream's speaker
  (``StatsHead``, ``AdaptiveHead``).
- ``cnn``: for log-mel frames. 2-D conv stack over (time, mel) with time pooling,
  then the same attentive statistics pooling.
- ``cnn-lstm``: the ``cnn`` stack followed by a BiLSTM (packed-free: padded frames
  are zeroed and excluded from pooling; the backward direction starts on padding,
  so outputs may shift slightly with padding; see ``PADDING_INVARIANT``).
- ``ensemble``: averages member probabilities, concatenates member embeddings.
"""

from __future__ import annotations

from typing import Any, Final

import torch
from torch import nn
from torch.nn import functional as F

from training.acoustic_layers import (
    AttentiveStatsPool,
    ConvBlock,
    InputScaler,
    frame_mask,
    pool_time,
)


class EmotionHead(nn.Module):
    """A head whose ``logits`` the training loss reads and whose ``forward`` is the
    exported contract: (features [B,T,D], lengths [B]) -> (probs [B,L], embedding [B,E])."""

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities (softmax of ``logits``) and the embedding."""
        logits, embedding = self.logits(features, lengths)
        return torch.softmax(logits, dim=-1), embedding

    def logits(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding."""
        raise NotImplementedError


class StatsHead(EmotionHead):
    """``stats``: masked mean and standard deviation of standardised states, then an MLP.

    With ``adaptation_window`` > 0 (opt-in; the shipped model does not) the head also
    adapts to the speaker of a stream. ``raw_pooled(features, lengths)`` is an
    utterance's raw frame mean and standard deviation (no parameters: every ensemble
    member agrees on it). The runtime keeps the pooled vectors of a stream's last
    ``adaptation_window`` utterances and passes their mean as ``baseline`` with their
    number as ``baseline_count``. The MLP then reads the utterance twice: centred on
    the training population's mean, as without adaptation, and centred on that
    baseline, shrunk towards the population mean by ``adaptation_shrink``
    pseudo-utterances (how this speaker, on this channel, has sounded so far). With
    ``baseline_count`` 0 both halves are the unadapted reading.
    """

    def __init__(
        self,
        n_labels: int,
        input_dim: int = 512,
        hidden: int = 256,
        embedding: int = 128,
        dropout: float = 0.3,
        adaptation_window: int = 0,
        adaptation_shrink: float = 2.0,
        affect: bool = False,
        pooled_norm: str = "none",
    ) -> None:
        """Build the head; arguments are stored in the checkpoint's config.

        ``pooled_norm`` normalises each utterance's standardised statistics before
        the MLP: "none"; "layer": the mean half and the standard-deviation half each
        to zero mean and unit variance across dimensions; "std": the mean half is
        dropped (as if each utterance's states were centred over time).
        ``affect`` adds ``affect_head``: (arousal, valence) in [-1, 1] from the
        embedding (``affect_of``), trained on the labels' circumplex coordinates
        (``training.affect``)."""
        super().__init__()
        if pooled_norm not in ("none", "layer", "std"):
            raise ValueError(f"unknown pooled_norm {pooled_norm!r}")
        if pooled_norm != "none" and adaptation_window:
            raise ValueError("pooled_norm needs adaptation_window 0")
        self.pooled_norm = pooled_norm
        self.affect_head = nn.Linear(embedding, 2) if affect else None
        self.adaptation_window = adaptation_window
        self.adaptation_shrink = adaptation_shrink
        self.scaler = InputScaler(input_dim)
        self.pooled_scaler = InputScaler(2 * input_dim)
        self.input_dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(
                (4 if adaptation_window else 1 if pooled_norm == "std" else 2)
                * input_dim,
                hidden,
            ),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embedding),
            nn.GELU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(embedding, n_labels)

    def _standardised(self, pooled: torch.Tensor) -> torch.Tensor:
        """Raw [mean, std] to the mean and std of the standardised frames."""
        dim = self.scaler.mean.shape[0]
        mean, std = pooled[..., :dim], pooled[..., dim:]
        inv_std = self.scaler.inv_std
        return torch.cat([(mean - self.scaler.mean) * inv_std, std * inv_std], dim=-1)

    def _normalised(self, scaled: torch.Tensor) -> torch.Tensor:
        """Apply ``pooled_norm`` to [B, 2D] standardised statistics."""
        if self.pooled_norm == "none":
            return scaled
        dim = self.scaler.mean.shape[0]
        if self.pooled_norm == "std":
            return scaled[..., dim:]
        halves = (scaled[..., :dim], scaled[..., dim:])
        return torch.cat([F.layer_norm(h, (dim,)) for h in halves], dim=-1)

    def logits(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        baseline: torch.Tensor | None = None,
        baseline_count: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding (``baseline``: see class doc)."""
        mask = frame_mask(lengths, features.shape[1], features.dtype)
        x = self.scaler(features) * mask
        count = mask.sum(dim=1).clamp_min(1.0)
        mean = x.sum(dim=1) / count
        var = (x * x).sum(dim=1) / count - mean * mean
        pooled = torch.cat([mean, torch.sqrt(var.clamp_min(1e-5))], dim=-1)
        scaled = self.pooled_scaler(pooled)
        scaled = self._normalised(scaled)
        if self.adaptation_window:
            relative = scaled
            if baseline is not None and baseline_count is not None:
                n = baseline_count.to(pooled.dtype).unsqueeze(-1)
                shrink = self.adaptation_shrink
                centre = (
                    n * self._standardised(baseline) + shrink * self.pooled_scaler.mean
                ) / (n + shrink)
                relative = (pooled - centre) * self.pooled_scaler.inv_std
            scaled = torch.cat([scaled, relative], dim=-1)
        embedding = self.mlp(self.input_dropout(scaled))
        return self.classify(self.dropout(embedding)), embedding

    def affect_of(self, embedding: torch.Tensor) -> torch.Tensor:
        """[B, 2] (arousal, valence) in [-1, 1] of an embedding (``affect`` heads)."""
        if self.affect_head is None:
            raise ValueError("this head was built without affect")
        return torch.tanh(self.affect_head(embedding))


class CalibratedHead(nn.Module):
    """The exported contract of a calibrated (and optionally affect-reading) head:
    (features, lengths) -> (probs, embedding[, affect]).

    ``probs`` are the members' mean probabilities with temperature scaling applied
    (``softmax(log p / temperature)``, the temperature fit on out-of-fold
    predictions), so the runtime's ``confidence`` is the calibrated probability;
    ``affect`` is the members' mean (arousal, valence).
    """

    def __init__(self, model: nn.Module, temperature: float, affect: bool) -> None:
        """Wrap a ``StatsHead`` or an ensemble of them."""
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.affect = affect

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Calibrated probabilities, the embedding and (with affect) the affect."""
        members = members_of(self.model)
        outputs = [m.logits(features, lengths) for m in members]
        probs, embedding = _soft_vote(outputs)
        calibrated = torch.softmax(
            torch.log(probs.clamp_min(1e-12)) / self.temperature, dim=-1
        )
        if not self.affect:
            return calibrated, embedding
        affect = torch.stack(
            [m.affect_of(e) for m, (_, e) in zip(members, outputs, strict=True)]
        )
        return calibrated, embedding, affect.mean(0)


def raw_pooled(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, 2D] masked mean and standard deviation of raw frames (the adaptation's
    ``pooled`` output; see ``StatsHead``)."""
    mask = frame_mask(lengths, features.shape[1], features.dtype)
    count = mask.sum(dim=1).clamp_min(1.0)
    mean = (features * mask).sum(dim=1) / count
    centred = (features - mean.unsqueeze(1)) * mask
    var = (centred * centred).sum(dim=1) / count
    return torch.cat([mean, torch.sqrt(var.clamp_min(0.0))], dim=-1)


class AdaptiveHead(nn.Module):
    """The exported contract of a speaker-adapting head or ensemble:
    (features, lengths, baseline [B,2D], baseline_count [B]) ->
    (probs, embedding, pooled [B,2D])."""

    def __init__(self, model: nn.Module) -> None:
        """Wrap a ``StatsHead`` with ``adaptation_window`` > 0 or an ensemble of them."""
        super().__init__()
        self.model = model

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        baseline: torch.Tensor,
        baseline_count: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Adapted probabilities, embedding, and this utterance's pooled vector."""
        outputs = [
            m.logits(features, lengths, baseline, baseline_count)
            for m in members_of(self.model)
        ]
        probs, embedding = _soft_vote(outputs)
        return probs, embedding, raw_pooled(features, lengths)


def adaptation_window(model: nn.Module) -> int:
    """Utterances of a stream a model adapts to (0: it does not adapt)."""
    return int(getattr(members_of(model)[0], "adaptation_window", 0))


def members_of(model: nn.Module) -> list[nn.Module]:
    """The members of an ``Ensemble``, or the model alone."""
    return list(getattr(model, "members", None) or [model])


def _soft_vote(
    outputs: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Members' (logits, embedding) -> mean probabilities, concatenated embeddings."""
    probs = torch.stack([torch.softmax(lg, dim=-1) for lg, _ in outputs]).mean(0)
    return probs, torch.cat([e for _, e in outputs], dim=-1)


class AttentionHead(EmotionHead):
    """``attn``: head on Whisper encoder states (see module docstring)."""

    def __init__(
        self,
        n_labels: int,
        input_dim: int = 512,
        hidden: int = 256,
        embedding: int = 128,
        blocks: int = 1,
        kernel: int = 5,
        pool: int = 2,
        dropout: float = 0.3,
    ) -> None:
        """Build the head; arguments are stored in the checkpoint's config."""
        super().__init__()
        self.pool = pool
        self.scaler = InputScaler(input_dim)
        self.project = nn.Linear(input_dim, hidden)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConvBlock(hidden, kernel, dropout) for _ in range(blocks)
        )
        self.stats = AttentiveStatsPool(hidden)
        self.embed = nn.Sequential(nn.Linear(2 * hidden, embedding), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(embedding, n_labels)

    def logits(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding (training uses these)."""
        x = features * frame_mask(lengths, features.shape[1], features.dtype)
        x, lengths = pool_time(x, lengths, self.pool)
        mask = frame_mask(lengths, x.shape[1], x.dtype)
        x = self.input_dropout(F.gelu(self.project(self.scaler(x)))) * mask
        for block in self.blocks:
            x = block(x, mask)
        embedding = self.embed(self.stats(x, mask))
        return self.classify(self.dropout(embedding)), embedding


class MelCnn(EmotionHead):
    """``cnn`` / ``cnn-lstm``: head on log-mel frames (see module docstring)."""

    def __init__(
        self,
        n_labels: int,
        input_dim: int = 80,
        channels: tuple[int, ...] | list[int] = (32, 64, 96),
        embedding: int = 128,
        lstm: int = 0,
        dropout: float = 0.3,
    ) -> None:
        """Conv2d blocks, each halving time and mel; optional BiLSTM of size ``lstm``."""
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch in channels:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 3, padding=1),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(),
                )
            )
            in_ch = out_ch
        self.convs = nn.ModuleList(layers)
        self.down = 2 ** len(channels)
        feat = in_ch * (input_dim // self.down)
        self.lstm = (
            nn.LSTM(feat, lstm, batch_first=True, bidirectional=True) if lstm else None
        )
        width = 2 * lstm if lstm else feat
        self.stats = AttentiveStatsPool(width)
        self.embed = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * width, embedding), nn.GELU()
        )
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(embedding, n_labels)

    def logits(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding."""
        x = features * frame_mask(lengths, features.shape[1], features.dtype)
        # Pad time to a multiple of the downsampling so pooling never drops frames.
        x = F.pad(x, (0, 0, 0, self.down - 1)).unsqueeze(1)
        for conv in self.convs:
            # Zero padded frames before max pooling (ReLU output is >= 0, so a
            # window half in the padding keeps its valid maximum).
            x = conv(x) * frame_mask(lengths, x.shape[2], x.dtype).unsqueeze(1)
            x = F.max_pool2d(x, 2)
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            x = x * frame_mask(lengths, x.shape[2], x.dtype).unsqueeze(1)
        b, c, t, m = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, c * m)
        mask = frame_mask(lengths, t, x.dtype)
        if self.lstm is not None:
            x, _ = self.lstm(x)
            x = x * mask
        embedding = self.embed(self.stats(x, mask))
        return self.classify(self.dropout(embedding)), embedding


class Ensemble(nn.Module):
    """Soft voting: mean of member probabilities, concatenated member embeddings."""

    def __init__(self, members: list[nn.Module]) -> None:
        """Wrap trained members (all with the same labels and input)."""
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, lengths) -> (mean probs [B,L], concatenated embeddings)."""
        outputs = [member(features, lengths) for member in self.members]
        probs = torch.stack([p for p, _ in outputs]).mean(dim=0)
        return probs, torch.cat([e for _, e in outputs], dim=-1)


ARCHS: Final = {
    "attn": AttentionHead,
    "stats": StatsHead,
    "cnn": MelCnn,
    "cnn-lstm": MelCnn,
}
PADDING_INVARIANT: Final = {"attn": True, "stats": True, "cnn": True, "cnn-lstm": False}
"""Whether extra zero padding leaves a row's output unchanged (BiLSTM: not exactly)."""


def build_model(arch: str, config: dict[str, Any]) -> nn.Module:
    """Build an untrained model from its architecture name and constructor kwargs.

    Args:
        arch: "attn", "stats", "cnn" or "cnn-lstm".
        config: constructor keyword arguments (``n_labels`` included), as stored in
            the checkpoint's ``config``.

    Returns:
        The module (call ``load_state_dict`` for trained weights).

    Raises:
        ValueError: unknown architecture.
    """
    if arch not in ARCHS:
        raise ValueError(
            f"unknown acoustic architecture {arch!r}; known: {', '.join(ARCHS)}"
        )
    kwargs = dict(config)
    if arch == "cnn-lstm":
        kwargs.setdefault("lstm", 96)
    return ARCHS[arch](**kwargs)


def load_checkpoint_model(checkpoint: dict[str, Any]) -> nn.Module:
    """The eval-mode model of a checkpoint (an ``Ensemble`` when it holds several)."""
    states = checkpoint.get("ensemble") or [checkpoint["state_dict"]]
    members = []
    for state in states:
        model = build_model(checkpoint["arch"], checkpoint["config"])
        model.load_state_dict(state)
        members.append(model.eval())
    model = members[0] if len(members) == 1 else Ensemble(members)
    return model.eval()
