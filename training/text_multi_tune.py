"""``python -m training text-multi-tune``: does fine-tuning e5 lift Persian emotions?

A measurement, not a shipped model. ShEMO on the speaker-grouped 5 folds of
``training text-multi`` (seed 0); in each fold a linear emotion head on the
L2-normalised e5 vector (times 10) is trained together with low-rank adapters on the
encoder's linear layers (``training.e5_torch``; ``--rank 0`` trains the head alone on
the frozen encoder, the same loop's baseline). Class weights are balanced to the power
``--class-power``; AdamW with a one-cycle schedule. The test folds are pooled and
scored as the card's Persian table is (WA, UA over ShEMO's labels).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamser.recognition.e5_onnx import E5File, E5Tokenizer, package_model_file
from training.datasets import load_dataset, speaker_folds
from training.e5_torch import LINEARS, E5Encoder
from training.text_fa import score

_LOGGER = logging.getLogger(__name__)

MAX_TOKENS = 64
"""Tokens kept per transcript (``<s>``/``</s>`` included); ShEMO lines are shorter."""


def token_ids(tokenizer: E5Tokenizer, text: str) -> list[int]:
    """``passage: text`` as the runtime tokenises it, cut to ``MAX_TOKENS``."""
    content = tokenizer.content_ids("passage: " + " ".join(text.split()))
    return [tokenizer.bos, *content[: MAX_TOKENS - 2], tokenizer.eos]


def fold_probabilities(
    model: E5File,
    ids: list[list[int]],
    targets: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    args: argparse.Namespace,
    classes: int,
) -> np.ndarray:
    """Train adapters and head on ``train``; the softmax of ``test``."""
    torch.manual_seed(args.seed)
    encoder = E5Encoder(model, args.rank, args.targets)
    head = nn.Linear(model.hidden, classes)
    params = encoder.adapters() + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps = args.epochs * int(np.ceil(len(train) / args.batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, args.lr, total_steps=steps, pct_start=0.1
    )
    counts = np.maximum(np.bincount(targets[train], minlength=classes), 1)
    weight = torch.tensor(
        (len(train) / (classes * counts)) ** args.class_power, dtype=torch.float32
    )

    def logits(rows: np.ndarray) -> torch.Tensor:
        pooled = encoder([ids[i] for i in rows])
        return head(10.0 * F.normalize(pooled, dim=1))

    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        order = rng.permutation(train)
        total = 0.0
        for start in range(0, len(order), args.batch):
            rows = order[start : start + args.batch]
            loss = F.cross_entropy(
                logits(rows), torch.from_numpy(targets[rows]), weight=weight
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        _LOGGER.info("epoch %d: training loss %.3f", epoch, total / len(train))
    with torch.no_grad():
        parts = [
            torch.softmax(logits(test[i : i + 64]), 1).numpy()
            for i in range(0, len(test), 64)
        ]
    return np.concatenate(parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training text-multi-tune")
    p.add_argument("--shemo", required=True, help="shemo-text:FILE")
    p.add_argument("--rank", type=int, default=8, help="adapter rank; 0: head only")
    p.add_argument(
        "--targets", nargs="+", choices=LINEARS, default=["q", "v"], metavar="LAYER"
    )
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--class-power", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for report.json and probs.npy")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the folds; print and save the pooled report."""
    args = _parser().parse_args(argv)
    shemo = load_dataset(args.shemo)
    model = E5File(package_model_file())
    tokenizer = E5Tokenizer(model)
    ids = [token_ids(tokenizer, u.text or "") for u in shemo]
    labels = sorted({str(u.label) for u in shemo})
    targets = np.array([labels.index(str(u.label)) for u in shemo])
    probs = np.zeros((len(shemo), len(labels)))
    started = time.monotonic()
    folds = list(speaker_folds(shemo, kind="kfold", k=5, seed=0))
    for number, (train, test) in enumerate(folds):
        probs[test] = fold_probabilities(
            model, ids, targets, np.asarray(train), np.asarray(test), args, len(labels)
        )
        _LOGGER.info("fold %d of %d done", number + 1, len(folds))
    reference = np.array(labels, dtype=object)[targets]
    predicted = np.array(labels, dtype=object)[probs.argmax(1)]
    report: dict[str, Any] = score(reference, predicted, labels)
    report["settings"] = {
        k: v for k, v in vars(args).items() if k not in ("shemo", "out", "json")
    }
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
        np.save(args.out / "probs.npy", probs)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"ShEMO hidden speakers: WA {report['wa']:.3f} UA {report['ua']:.3f}")
    return 0
