"""The English transcript features: MiniLM's WordPiece ids and the mean-pooled
states of every MiniLM layer for each MELD line, cached per split."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from streamser.recognition.features import pad_batch
from training.datasets import load_dataset
from training.datasets.meld import SENTIMENTS
from training.text_en_models import MiniLMTextModel, load_pretrained, minilm_dir

_LOGGER = logging.getLogger(__name__)

MAX_TOKENS: Final = 64
"""WordPiece tokens kept per line (99% of MELD lines have at most 38)."""


EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
"""MELD's 7 emotions on the canonical labels, in graph output order."""


def tokenizer() -> Any:
    """The MiniLM WordPiece tokenizer, unpadded, truncated to ``MAX_TOKENS``."""
    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def encode_pooled(
    model: MiniLMTextModel, ids: Sequence[Sequence[int]], batch: int = 64
) -> npt.NDArray[np.float32]:
    """Mean-pooled states of every layer (embeddings + 6), ``[n, 7, dim]``."""
    order = np.argsort([len(x) for x in ids])
    out = np.zeros(
        (len(ids), len(model.layers) + 1, model.words.weight.shape[1]), np.float32
    )
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            rows = order[start : start + batch]
            padded, counts = pad_batch([np.asarray(ids[i]) for i in rows], np.int64)
            tokens, lengths = torch.from_numpy(padded), torch.from_numpy(counts)
            mask = model.mask(tokens, lengths)
            x = model.embed(tokens)
            bias = ((1.0 - mask) * -1e4)[:, None, None, :]
            pooled = []
            for k in range(len(model.layers) + 1):
                if k:
                    x = model.layers[k - 1](x, bias)
                pooled.append(
                    (x * mask[..., None]).sum(1)
                    / mask.sum(1, keepdim=True).clamp(min=1)
                )
            out[rows] = torch.stack(pooled, 1).numpy()
            if start // batch % 20 == 0:
                _LOGGER.info("encoded %d/%d lines", start + len(rows), len(ids))
    return out


def graph_pooled(graph: Path, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """The ``embedding`` output (all 7 mean-pooled layers) of an exported English
    graph, ``[n, 7, dim]``: features as the shipped (e.g. int8) encoder computes them."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(graph), options, providers=["CPUExecutionProvider"]
    )
    ids = wordpiece_ids(texts)
    out = []
    for start in range(len(ids)):  # one per call, as the runtime runs them
        tokens, lengths = pad_batch(ids[start : start + 1], np.int64)
        names = [o.name for o in session.get_outputs()]
        result = dict(
            zip(
                names,
                session.run(None, {"token_ids": tokens, "lengths": lengths}),
                strict=True,
            )
        )
        out.append(result["embedding"])
    pooled = np.concatenate(out)
    return pooled.reshape(len(ids), -1, 384)


def cache_features(spec: str, cache: Path, graph: Path | None = None) -> dict[str, Any]:
    """Encode a MELD split once; later runs load ``cache`` (an ``.npz``).

    With ``graph`` (an exported graph whose heads read all 7 layers), the features are
    that graph's encoder outputs instead of the torch encoder's.
    """
    utterances = load_dataset(spec)
    if graph is not None:
        cache = cache.with_name(cache.stem + "." + graph.stem + ".npz")
    if cache.exists():
        data = dict(np.load(cache, allow_pickle=False))
        if len(data["emotion"]) == len(utterances):
            return data
    tok = tokenizer()
    ids = [tok.encode(u.text or "").ids for u in utterances]
    model = MiniLMTextModel(
        {"n_labels": len(EMOTIONS), "n_sentiments": len(SENTIMENTS)}
    )
    load_pretrained(model)
    start = time.monotonic()
    pooled = (
        graph_pooled(graph, [u.text or "" for u in utterances])
        if graph is not None
        else encode_pooled(model, ids)
    )
    _LOGGER.info("encoded %s in %.0f s", spec, time.monotonic() - start)
    data = {
        "pooled": pooled,
        "emotion": np.array([EMOTIONS.index(u.label) for u in utterances]),
        "sentiment": np.array(
            [SENTIMENTS.index(u.sentiment or "") for u in utterances]
        ),
        "dialogue": np.array([u.speaker for u in utterances]),
        "text": np.array([u.text or "" for u in utterances]),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)
    return data


def features(data: dict[str, Any], layers: Sequence[int]) -> npt.NDArray[np.float32]:
    """Concatenate the pooled states of ``layers``."""
    return np.concatenate([data["pooled"][:, k] for k in layers], axis=1)


def wordpiece_ids(texts: Sequence[str]) -> list[npt.NDArray[np.int64]]:
    """The runtime's WordPiece ids (``[CLS] ... [SEP]``) of each text."""
    tok = tokenizer()
    return [np.asarray(tok.encode(str(t)).ids, np.int64) for t in texts]
