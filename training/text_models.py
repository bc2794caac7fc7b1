"""Transcript emotion models over Whisper token ids (torch; exported to ONNX).

Every model maps raw Whisper token ids to a compact vocabulary seen in training (a
constant lookup table inside the graph: unseen ids become ``UNK``), so the graph
takes exactly what ``streamser.recognition.features.TextTokenizer`` produces. ``forward(token_ids
[B, T] int64, lengths [B] int64) -> (probs [B, C], embedding [B, E])``; positions at
or beyond ``lengths`` are ignored. A row of length 0 (empty transcript) gives uniform
probabilities and a zero embedding.

Architectures (``arch``):

- ``cnn``: token embeddings -> 1-D convolutions of several widths -> masked max
  pooling (Kim 2014, as the ShEMO linguistic baseline).
- ``bow``: fastText-style mean of unigram and hashed-bigram embeddings -> hidden layer.
- ``ngram``: TF-IDF of token uni- and hashed n-grams -> linear (logistic regression).
- ``gru``: bidirectional GRU (padding-invariant) -> masked attention pooling.
"""

from __future__ import annotations

from typing import Any, Final

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

WHISPER_VOCAB_SIZE: Final = 51865
PAD: Final = 0
UNK: Final = 1
_NEG: Final = -1.0e4
NGRAM_PRIME: Final = 1_000_003


def id_map_for(vocabulary: list[int]) -> torch.Tensor:
    """Whisper id -> compact id table: ``vocabulary[i]`` -> i + 2, others -> UNK."""
    table = torch.full((WHISPER_VOCAB_SIZE,), UNK, dtype=torch.int64)
    if vocabulary:
        table[torch.as_tensor(vocabulary, dtype=torch.int64)] = torch.arange(
            2, len(vocabulary) + 2, dtype=torch.int64
        )
    return table


class _TokenFrontEnd(nn.Module):
    """Raw ids -> compact ids (masked to PAD past ``lengths``) and the valid mask."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("id_map", id_map_for(list(config.get("vocabulary", []))))
        self.token_dropout = float(config.get("token_dropout", 0.0))
        self.min_tokens = int(config.get("min_tokens", 1))

    def forward(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Pad inside the graph so a [B, 0] input still has positions to convolve.
        ids = F.pad(token_ids, (0, self.min_tokens))
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        mask = positions < lengths.unsqueeze(1)
        compact = self.id_map[ids.clamp(0, WHISPER_VOCAB_SIZE - 1)]
        if self.training and self.token_dropout > 0:
            drop = torch.rand(compact.shape, device=compact.device) < self.token_dropout
            compact = torch.where(drop, torch.full_like(compact, UNK), compact)
        compact = compact * mask.long()
        return compact, mask


def _finish(
    logits: torch.Tensor, embedding: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax, with uniform probabilities and a zero embedding for empty rows."""
    present = (lengths > 0).unsqueeze(1)
    probs = torch.softmax(logits, dim=-1)
    uniform = torch.full_like(probs, 1.0 / probs.shape[-1])
    probs = torch.where(present, probs, uniform)
    embedding = torch.where(present, embedding, torch.zeros_like(embedding))
    return probs, embedding


class _TextModel(nn.Module):
    """Shared ``forward``: softmax of ``logits``, empty rows made uniform."""

    def forward(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(token_ids [B,T], lengths [B]) -> (probs [B,C], embedding [B,E])."""
        logits, embedding = self.logits(token_ids, lengths)
        return _finish(logits, embedding, lengths)

    def logits(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class CnnTextModel(_TextModel):
    """Embedding -> parallel convolutions -> masked max pooling -> linear."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        widths = list(config.get("kernel_widths", [1, 2, 3, 4]))
        config = {**config, "min_tokens": max(widths)}
        self.front = _TokenFrontEnd(config)
        vocab = len(config.get("vocabulary", [])) + 2
        dim = int(config.get("embedding_dim", 128))
        filters = int(config.get("filters", 64))
        self.embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.embed_dropout = nn.Dropout(float(config.get("embedding_dropout", 0.2)))
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, filters, width, padding=width // 2) for width in widths
        )
        self.dropout = nn.Dropout(float(config.get("dropout", 0.5)))
        self.out = nn.Linear(filters * len(widths), int(config["n_labels"]))

    def logits(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding (training uses these)."""
        compact, mask = self.front(token_ids, lengths)
        x = self.embed_dropout(self.embed(compact)).transpose(1, 2)
        steps = x.shape[2]
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(x))[:, :, :steps]
            h = h.masked_fill(~mask.unsqueeze(1), _NEG)
            pooled.append(h.max(dim=2).values)
        embedding = torch.cat(pooled, dim=1)
        embedding = torch.where(
            embedding <= _NEG / 2, torch.zeros_like(embedding), embedding
        )
        return self.out(self.dropout(embedding)), embedding


class BowTextModel(_TextModel):
    """fastText-style: mean of unigram and hashed-bigram embeddings -> hidden layer."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.front = _TokenFrontEnd({**config, "min_tokens": 1})
        vocab = len(config.get("vocabulary", [])) + 2
        dim = int(config.get("embedding_dim", 64))
        self.buckets = int(config.get("bigram_buckets", 20000))
        self.unigram = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.bigram = nn.Embedding(self.buckets + 1, dim, padding_idx=0)
        hidden = int(config.get("hidden", 64))
        self.hidden = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(float(config.get("dropout", 0.3)))
        self.out = nn.Linear(hidden, int(config["n_labels"]))

    def logits(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding (training uses these)."""
        compact, mask = self.front(token_ids, lengths)
        maskf = mask.float()
        count = maskf.sum(dim=1, keepdim=True).clamp(min=1.0)
        uni = (self.unigram(compact) * maskf.unsqueeze(2)).sum(dim=1) / count
        pair_mask = mask[:, 1:] & mask[:, :-1]
        hashed = (compact[:, :-1] * NGRAM_PRIME + compact[:, 1:]) % self.buckets + 1
        hashed = hashed * pair_mask.long()
        pair_count = pair_mask.float().sum(dim=1, keepdim=True).clamp(min=1.0)
        bi = (self.bigram(hashed) * pair_mask.float().unsqueeze(2)).sum(
            dim=1
        ) / pair_count
        embedding = torch.tanh(self.hidden(self.dropout(uni + bi)))
        return self.out(self.dropout(embedding)), embedding


class GruTextModel(_TextModel):
    """Embedding -> bidirectional GRU -> masked attention pooling -> linear."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.front = _TokenFrontEnd({**config, "min_tokens": 1})
        vocab = len(config.get("vocabulary", [])) + 2
        dim = int(config.get("embedding_dim", 128))
        hidden = int(config.get("hidden", 64))
        self.embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.embed_dropout = nn.Dropout(float(config.get("embedding_dropout", 0.2)))
        # Two GRUs instead of bidirectional=True: the backward one reads each row's
        # valid tokens reversed in place, so padding never precedes a row's tokens.
        self.gru_forward = nn.GRU(dim, hidden, batch_first=True)
        self.gru_backward = nn.GRU(dim, hidden, batch_first=True)
        self.attention = nn.Linear(2 * hidden, 1)
        self.dropout = nn.Dropout(float(config.get("dropout", 0.5)))
        self.out = nn.Linear(2 * hidden, int(config["n_labels"]))

    def logits(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores and the embedding (training uses these)."""
        compact, mask = self.front(token_ids, lengths)
        x = self.embed_dropout(self.embed(compact))
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        valid_lengths = lengths.unsqueeze(1)
        reverse = torch.where(
            positions < valid_lengths, valid_lengths - 1 - positions, positions
        )
        reverse = reverse.unsqueeze(2).expand(-1, -1, x.shape[2])
        forward_states, _ = self.gru_forward(x)
        backward_states, _ = self.gru_backward(x.gather(1, reverse))
        reverse = reverse[:, :, : backward_states.shape[2]]
        backward_states = backward_states.gather(1, reverse)
        states = torch.cat([forward_states, backward_states], dim=2)
        scores = self.attention(states).squeeze(2).masked_fill(~mask, _NEG)
        weights = torch.softmax(scores, dim=1) * mask.float()
        embedding = (states * weights.unsqueeze(2)).sum(dim=1)
        return self.out(self.dropout(embedding)), embedding


def ngram_indices(
    compact: torch.Tensor, mask: torch.Tensor, order: int, buckets: int, vocab: int
) -> torch.Tensor:
    """Feature index of every unigram and hashed 2..order-gram (0 where masked).

    Unigram ``i`` is feature ``i``; an n-gram hashes into ``vocab + bucket``.
    ``training.text_fit.ngram_features`` computes the same indices in numpy.
    """
    parts = [compact * mask.long()]
    for n in range(2, order + 1):
        steps = compact.shape[1] - n + 1
        code = compact[:, :steps]
        valid = mask[:, :steps]
        for offset in range(1, n):
            code = code * NGRAM_PRIME + compact[:, offset : offset + steps]
            valid = valid & mask[:, offset : offset + steps]
        hashed = torch.remainder(code, buckets) + vocab
        parts.append(hashed * valid.long())
    return torch.cat(parts, dim=1)


class NgramTextModel(_TextModel):
    """TF-IDF of token n-grams (sublinear tf, l2-normalised) -> linear classifier.

    The weights are fit by logistic regression (``training.text_fit``); the embedding is
    the class-score vector (a calibrated, low-dimensional summary for fusion).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.order = int(config.get("ngram", 2))
        self.front = _TokenFrontEnd({**config, "min_tokens": self.order})
        self.vocab = len(config.get("vocabulary", [])) + 2
        self.buckets = int(config.get("buckets", 50000))
        features = self.vocab + self.buckets
        self.register_buffer("idf", torch.zeros(features))
        self.out = nn.Linear(features, int(config["n_labels"]))

    def logits(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised class scores; the embedding is the same vector."""
        logits = self.out(self.tfidf(token_ids, lengths))
        return logits, logits

    def tfidf(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The l2-normalised TF-IDF vector [B, features] of each row."""
        compact, mask = self.front(token_ids, lengths)
        index = ngram_indices(compact, mask, self.order, self.buckets, self.vocab)
        counts = torch.zeros(
            index.shape[0], self.idf.shape[0], dtype=torch.float32, device=index.device
        ).scatter_add(1, index, torch.ones_like(index, dtype=torch.float32))
        tf = (counts > 0).float() * (1.0 + torch.log(counts.clamp(min=1.0)))
        x = tf * self.idf
        return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


ARCHS: Final[dict[str, type[nn.Module]]] = {
    "ngram": NgramTextModel,
    "cnn": CnnTextModel,
    "bow": BowTextModel,
    "gru": GruTextModel,
}


def build_model(arch: str, config: dict[str, Any]) -> nn.Module:
    """Build a text model (the builder ``export`` calls for ``kind: text``).

    Args:
        arch: one of ``ARCHS``.
        config: hyperparameters; ``n_labels`` and ``vocabulary`` (the Whisper ids kept,
            in compact order) are required for a trained model.

    Raises:
        ValueError: unknown architecture or missing ``n_labels``.
    """
    if arch not in ARCHS:
        raise ValueError(
            f"unknown text architecture {arch!r}; known: {', '.join(ARCHS)}"
        )
    if "n_labels" not in config:
        raise ValueError("text model config needs n_labels")
    return ARCHS[arch](config)
