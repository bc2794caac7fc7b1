"""``python -m training text-en --fine-tune``: MiniLM and both heads trained end to
end on MELD train, the best dev epoch kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamser.recognition.features import pad_batch
from training.datasets.meld import SENTIMENTS
from training.text_en_features import EMOTIONS
from training.text_en_heads import LAYER_SETS, scores
from training.text_en_models import MiniLMTextModel, load_pretrained

_LOGGER = logging.getLogger(__name__)


def _padded(
    ids: Sequence[npt.NDArray[np.int64]], rows: Sequence[int] | npt.NDArray[Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``token_ids`` and ``lengths`` of ``rows``."""
    tokens, lengths = pad_batch([ids[i] for i in rows], np.int64)
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def length_batches(
    lengths: Sequence[int], size: int, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    """Batches of similar length (sorted with a little jitter), in random order."""
    keys = np.asarray(lengths, np.float64) + rng.uniform(0, 2, len(lengths))
    order = np.argsort(keys)
    out = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


def head_log_probs(
    model: MiniLMTextModel, ids: Sequence[npt.NDArray[np.int64]], batch: int = 128
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Emotion and sentiment log-probabilities of ``model``'s own heads (no n-grams)."""
    order = np.argsort([len(x) for x in ids])
    emotion = np.zeros((len(ids), model.emotion.out_features), np.float32)
    sentiment = np.zeros((len(ids), model.sentiment.out_features), np.float32)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            rows = order[start : start + batch]
            pooled = model.pooled(*_padded(ids, rows))
            emotion[rows] = torch.log_softmax(model.emotion(pooled), -1).numpy()
            sentiment[rows] = torch.log_softmax(model.sentiment(pooled), -1).numpy()
    return emotion, sentiment


def _class_weights(y: npt.NDArray[Any], n: int, power: float) -> torch.Tensor:
    counts = np.maximum(np.bincount(y, minlength=n), 1).astype(np.float64)
    return torch.tensor((len(y) / (n * counts)) ** power, dtype=torch.float32)


def _optimiser(
    model: MiniLMTextModel, settings: dict[str, Any], rows: int
) -> tuple[list[nn.Parameter], torch.optim.Optimizer, Any]:
    """Freeze all but the top ``tune_layers`` layers and the heads; AdamW over those
    (encoder at ``lr``, heads at ``head_lr``) with a linear warm-up (a tenth of the
    steps) and decay to zero. Returns the trained parameters, optimiser, schedule."""
    for p in model.parameters():
        p.requires_grad = False
    top = list(model.layers)[len(model.layers) - int(settings["tune_layers"]) :]
    encoder = [p for m in top for p in m.parameters()]
    heads = [*model.emotion.parameters(), *model.sentiment.parameters()]
    for p in encoder + heads:
        p.requires_grad = True
    optimiser = torch.optim.AdamW(
        [
            {"params": encoder, "lr": settings["lr"]},
            {"params": heads, "lr": settings["head_lr"]},
        ],
        weight_decay=0.01,
    )
    steps = settings["epochs"] * -(-rows // settings["batch"])
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))),
    )
    return encoder + heads, optimiser, schedule


def dev_weighted_f1(model: MiniLMTextModel, dev: dict[str, Any]) -> dict[str, float]:
    """Dev weighted F1 of ``model``'s emotion and sentiment heads."""
    emotion, sentiment = head_log_probs(model, dev["ids"])
    return {
        "emotion": scores(dev["emotion"], emotion.argmax(1), len(EMOTIONS))[
            "weighted_f1"
        ],
        "sentiment": scores(dev["sentiment"], sentiment.argmax(1), len(SENTIMENTS))[
            "weighted_f1"
        ],
    }


def fine_tune(
    train: dict[str, Any],
    dev: dict[str, Any],
    settings: dict[str, Any],
    seed: int = 0,
    on_epoch: Callable[[int, MiniLMTextModel], None] | None = None,
) -> tuple[MiniLMTextModel, list[dict[str, Any]]]:
    """Fine-tune MiniLM and both heads jointly (summed cross-entropies) on ``train``.

    ``train`` and ``dev`` hold ``ids`` (WordPiece rows), ``emotion`` and ``sentiment``.
    ``settings``: ``epochs``, ``lr`` (encoder; heads get ``head_lr``), ``tune_layers``
    (the top layers trained; the embeddings stay frozen), ``weight_power`` (class
    weights ``(n / (k * count)) ** power``), ``batch``. Returns the model whose
    epoch had the highest summed dev weighted F1 and the per-epoch history;
    ``on_epoch(epoch, model)`` is called after each epoch.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MiniLMTextModel(
        {
            "n_labels": len(EMOTIONS),
            "n_sentiments": len(SENTIMENTS),
            "pool_layers": list(LAYER_SETS["all"]),
        }
    )
    load_pretrained(model)
    lengths = [len(x) for x in train["ids"]]
    trained, optimiser, schedule = _optimiser(model, settings, len(lengths))
    loss_e = nn.CrossEntropyLoss(
        weight=_class_weights(train["emotion"], len(EMOTIONS), settings["weight_power"])
    )
    loss_s = nn.CrossEntropyLoss(
        weight=_class_weights(
            train["sentiment"], len(SENTIMENTS), settings["weight_power"]
        )
    )
    y_e, y_s = torch.from_numpy(train["emotion"]), torch.from_numpy(train["sentiment"])
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    for epoch in range(settings["epochs"]):
        start = time.monotonic()
        model.train()
        total = 0.0
        for rows in length_batches(lengths, settings["batch"], rng):
            pooled = model.dropout(model.pooled(*_padded(train["ids"], rows)))
            loss = loss_e(model.emotion(pooled), y_e[rows]) + loss_s(
                model.sentiment(pooled), y_s[rows]
            )
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(trained, 1.0)
            optimiser.step()
            schedule.step()
            total += loss.item() * len(rows)
        got = {
            "epoch": epoch + 1,
            "loss": total / len(lengths),
            "seconds": round(time.monotonic() - start, 1),
            **dev_weighted_f1(model, dev),
        }
        history.append(got)
        _LOGGER.info("fine-tune %s", got)
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
        if got["emotion"] + got["sentiment"] > best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = (got["emotion"] + got["sentiment"], state)
    model.load_state_dict(best[1])
    return model.eval(), history
