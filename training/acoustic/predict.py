"""Class probabilities (and affect) of a trained acoustic head, in eval mode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from streamser.recognition.features import pad_batch


def pad(arrays: Sequence[npt.NDArray[np.float32]]) -> tuple[Any, Any]:
    """``pad_batch`` as torch tensors (features and lengths)."""
    features, lengths = pad_batch(arrays, np.float32)
    return torch.from_numpy(features), torch.from_numpy(lengths)


def predict(
    model: Any,
    feats: Sequence[npt.NDArray[np.float32]],
    batch_size: int = 64,
    baselines: tuple[Any, Any] | None = None,
) -> npt.NDArray[np.float32]:
    """Class probabilities of each utterance (eval mode, no gradients); with
    ``baselines`` ((baselines, counts) from ``stream_baselines``), adapted."""
    return predict_outputs(model, feats, batch_size, baselines)[0]


def predict_outputs(
    model: Any,
    feats: Sequence[npt.NDArray[np.float32]],
    batch_size: int = 64,
    baselines: tuple[Any, Any] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """``predict``'s probabilities and, for a head with affect, the [N, 2]
    (arousal, valence) of each utterance (else None)."""
    model.eval()
    order = np.argsort([f.shape[0] for f in feats])
    outs: dict[int, npt.NDArray[np.float32]] = {}
    affects: dict[int, npt.NDArray[np.float32]] = {}
    has_affect = getattr(model, "affect_head", None) is not None
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, lengths = pad([feats[i] for i in idx])
            if baselines is None:
                logits, embedding = model.logits(x, lengths)
                p = torch.softmax(logits, dim=-1)
                if has_affect:
                    for i, row in zip(
                        idx, model.affect_of(embedding).numpy(), strict=True
                    ):
                        affects[int(i)] = row
            else:
                logits, _ = model.logits(
                    x,
                    lengths,
                    torch.from_numpy(baselines[0][idx]),
                    torch.from_numpy(baselines[1][idx]),
                )
                p = torch.softmax(logits, dim=-1)
            for i, row in zip(idx, p.numpy(), strict=True):
                outs[int(i)] = row
    probs = np.stack([outs[i] for i in range(len(feats))])
    affect = np.stack([affects[i] for i in range(len(feats))]) if affects else None
    return probs, affect
