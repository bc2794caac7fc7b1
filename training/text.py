"""``python -m training text``: transcript emotion model on Whisper token ids.

Transcripts become token ids through ``streamser.recognition.features.TextTokenizer`` (the Whisper
tokenizer the runtime re-tokenises ASR output with). Evaluation is speaker-grouped
k-fold (``--protocol kfold5``) or LOSO; inside each outer fold, one speaker-grouped
inner split of the training speakers picks the epoch (early stopping) and compares
candidate configurations, so test speakers never steer a choice. The configuration
with the best mean inner-validation UA is reported on the test folds and then fit on
every speaker (an ensemble of seeds) for export as ``emotion-text-LANG-v1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from streamser.recognition.features import TextTokenizer
from streamser.recognition.whisper_model import default_whisper_dir
from training.command import (
    PROTOCOL_HELP,
    command_parser,
    protocol_folds,
    start_command,
)
from training.datasets import Utterance, load_dataset, speaker_folds
from training.metrics import Scores, score
from training.text_fit import (
    Candidate,
    TokenData,
    TrainSettings,
    fit,
    predict,
    tokenize,
    whisper_token_embeddings,
)

_LOGGER = logging.getLogger(__name__)


CANDIDATES: Final[tuple[Candidate, ...]] = (
    *(
        Candidate(
            name,
            "ngram",
            {"ngram": order, "buckets": 50000, "C": c},
            class_weight_power=1.0,
        )
        for name, order, c in (
            ("ngram-c1", 2, 1.0),
            ("ngram-c4", 2, 4.0),
            ("ngram3-c2", 3, 2.0),
        )
    ),
    Candidate(
        "bow",
        "bow",
        {"embedding_dim": 64, "hidden": 64, "token_dropout": 0.1},
        class_weight_power=1.0,
    ),
    Candidate(
        "cnn",
        "cnn",
        {"embedding_dim": 128, "filters": 64, "token_dropout": 0.1},
        class_weight_power=1.0,
    ),
    *(
        Candidate(  # Whisper base's decoder token embeddings, frozen
            f"{arch}-whisper",
            arch,
            {"embedding_dim": 512, width: 64, "token_dropout": 0.1},
            class_weight_power=1.0,
            pretrained=True,
            freeze_embeddings=True,
        )
        for arch, width in (("cnn", "filters"), ("gru", "hidden"))
    ),
)


def _inner_split(
    utterances: Sequence[Utterance], train: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One speaker-grouped (inner train, validation) split of the training speakers."""
    subset = [utterances[i] for i in train]
    k = min(4, len({utt.speaker for utt in subset}))
    inner_train, validation = speaker_folds(subset, kind="kfold", k=k, seed=seed)[0]
    return train[inner_train], train[validation]


def cross_validate(
    utterances: Sequence[Utterance],
    data: TokenData,
    labels: list[str],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    candidates: Sequence[Candidate],
    settings: TrainSettings,
    *,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Nested evaluation of every candidate on ``data`` (one row per utterance, its
    class the index of its label in ``labels``).

    Returns:
        Per candidate: ``inner_ua`` (mean inner-validation UA, the selection score),
        ``epochs`` (best epoch per fold and seed), ``predictions`` (pooled test-fold
        labels), ``scores`` (pooled test metrics).
    """
    results: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        started = time.monotonic()
        predicted = np.zeros(len(utterances), dtype=np.int64)
        inner, epochs = [], []
        for fold_index, (train, test) in enumerate(folds):
            inner_train, validation = _inner_split(
                utterances, np.asarray(train), seed + fold_index
            )
            probs = np.zeros((len(test), len(labels)))
            for member in range(settings.seeds):
                member_seed = seed + 100 * member
                _, _, best_epoch, best_ua = fit(
                    candidate,
                    data,
                    inner_train,
                    settings=settings,
                    seed=member_seed,
                    validation=validation,
                )
                inner.append(best_ua)
                epochs.append(best_epoch)
                # Refit on every training speaker for the epochs the inner split chose.
                model, _, _, _ = fit(
                    candidate,
                    data,
                    np.asarray(train),
                    settings=settings,
                    seed=member_seed,
                    epochs=max(1, best_epoch),
                )
                probs += predict(model, data.ids, np.asarray(test))
            predicted[test] = probs.argmax(1)
        scores = score(
            [utt.label for utt in utterances], [labels[i] for i in predicted], labels
        )
        results[candidate.name] = {
            "inner_ua": float(np.mean(inner)),
            "epochs": epochs,
            "scores": scores,
            "seconds": round(time.monotonic() - started, 1),
        }
        _LOGGER.info(
            "%s: inner-val UA %.3f | test WA %.3f UA %.3f F1 %.3f (%.0fs)",
            candidate.name,
            results[candidate.name]["inner_ua"],
            scores.wa,
            scores.ua,
            scores.macro_f1,
            results[candidate.name]["seconds"],
        )
    return results


def tfidf_baseline(
    utterances: Sequence[Utterance], folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> Scores:
    """TF-IDF character n-grams (2-5, word-bounded) + logistic regression, pooled.

    Settings fixed beforehand (C=10, balanced class weights), not tuned on test folds.
    """
    texts = [utt.text or "" for utt in utterances]
    reference = np.array([utt.label for utt in utterances], dtype=object)
    predicted = np.empty(len(utterances), dtype=object)
    for train, test in folds:
        vectoriser = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2
        )
        x_train = vectoriser.fit_transform([texts[i] for i in train])
        classifier = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced")
        classifier.fit(x_train, reference[train])
        predicted[test] = classifier.predict(
            vectoriser.transform([texts[i] for i in test])
        )
    return score(list(reference), list(predicted))


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "text",
        __doc__,
        data_help="KIND:PATH with transcripts (repeatable), e.g. shemo-text:FILE",
    )
    parser.add_argument("--protocol", default="kfold5", help=PROTOCOL_HELP)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--candidates",
        default=",".join(c.name for c in CANDIDATES),
        help="comma-separated candidate names (default: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="folds and init seed (default 0)"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="models per fold (default 1)"
    )
    parser.add_argument(
        "--final-seeds",
        type=int,
        default=3,
        help="models in the shipped ensemble (default 3)",
    )
    parser.add_argument("--max-epochs", type=int, default=30, help="default 30")
    parser.add_argument("--no-baseline", action="store_true", help="skip TF-IDF + LR")
    parser.add_argument("--no-final", action="store_true", help="evaluate only")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return parser


def _selection_metrics(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], best: Candidate
) -> dict[str, Any]:
    """The metrics file: protocol, the selected candidate's test scores, every
    candidate's inner and test scores."""
    return {
        "protocol": f"{args.protocol}, speaker-grouped, seed {args.seed}; "
        "inner speaker-grouped split for early stopping and selection",
        "selected": best.name,
        "selection": "highest mean inner-validation UA (test folds never used)",
        "test": results[best.name]["scores"].to_dict(),
        "candidates": {
            name: {
                "inner_ua": result["inner_ua"],
                "wa": result["scores"].wa,
                "ua": result["scores"].ua,
                "macro_f1": result["scores"].macro_f1,
                "seconds": result["seconds"],
            }
            for name, result in results.items()
        },
    }


def fit_final(
    best: Candidate,
    data: TokenData,
    *,
    epochs: int,
    settings: TrainSettings,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The shipped ensemble: ``best`` fit on every row of ``data`` for ``epochs`` (one
    model for n-grams, else ``settings.final_seeds``); its state dicts and config."""
    everyone = np.arange(len(data.ids))
    members, config = [], {}
    final_seeds = 1 if best.arch == "ngram" else settings.final_seeds
    for member in range(final_seeds):
        model, config, _, _ = fit(
            best,
            data,
            everyone,
            settings=settings,
            seed=seed + 100 * member,
            epochs=epochs,
        )
        members.append(model.state_dict())
    return members, config


def _load(
    args: argparse.Namespace,
) -> tuple[list[Candidate], list[Utterance], list[Any]]:
    """The chosen candidates, the utterances with transcripts and the folds.

    Raises:
        ValueError: an unknown candidate or protocol, or no transcripts.
    """
    by_name = {candidate.name: candidate for candidate in CANDIDATES}
    unknown = [n for n in args.candidates.split(",") if n and n not in by_name]
    if unknown:
        raise ValueError(
            f"unknown candidate {unknown[0]!r}; known: {', '.join(by_name)}"
        )
    chosen = [by_name[name] for name in args.candidates.split(",") if name]
    utterances = [utt for spec in args.data for utt in load_dataset(spec)]
    utterances = [utt for utt in utterances if utt.text]
    if not utterances:
        raise ValueError("no utterances with transcripts in " + ", ".join(args.data))
    return chosen, utterances, protocol_folds(utterances, args.protocol, args.seed)


def main(argv: list[str] | None = None) -> int:
    """Evaluate the candidates, fit the chosen one on every speaker, save a checkpoint."""
    args = _parser().parse_args(argv)
    command = start_command("python -m training text", argv)
    try:
        chosen, utterances, folds = _load(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    labels = sorted({utt.label for utt in utterances})
    data = TokenData(
        ids=tokenize(utterances, tokenizer),
        targets=np.array([labels.index(u.label) for u in utterances], dtype=np.int64),
        n_labels=len(labels),
        embeddings=whisper_token_embeddings()
        if any(c.pretrained for c in chosen)
        else None,
    )
    settings = TrainSettings(
        max_epochs=args.max_epochs, seeds=args.seeds, final_seeds=args.final_seeds
    )
    results = cross_validate(
        utterances, data, labels, folds, chosen, settings, seed=args.seed
    )
    best = max(chosen, key=lambda c: results[c.name]["inner_ua"])
    metrics = _selection_metrics(args, results, best)
    if not args.no_baseline:
        baseline = tfidf_baseline(utterances, folds)
        metrics["baseline_tfidf_char_lr"] = baseline.to_dict()
        _LOGGER.info("TF-IDF+LR baseline: WA %.3f UA %.3f", baseline.wa, baseline.ua)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(
        json.dumps(metrics, indent=2) + "\n", "utf-8"
    )
    if not args.no_final:
        epochs = int(np.median(results[best.name]["epochs"]))
        members, config = fit_final(
            best, data, epochs=epochs, settings=settings, seed=args.seed
        )
        checkpoint = {
            "kind": "text",
            "arch": best.arch,
            "config": config,
            "state_dict": members[0],
            "ensemble": members if len(members) > 1 else None,
            "labels": labels,
            "languages": sorted({u.language for u in utterances if u.language}),
            "metrics": metrics,
            "data": args.data,
            "protocol": metrics["protocol"],
            "command": command,
            "training": {**asdict(best), "epochs": epochs, "final_seeds": len(members)},
            "notes": "Empty transcript (lengths 0): uniform probabilities, zero embedding.",
        }
        torch.save(checkpoint, args.out / "text.pt")
        _LOGGER.info("saved %s", args.out / "text.pt")
    if args.json:
        print(json.dumps(metrics))
    return 0
