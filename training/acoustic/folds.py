"""Speaker-independent cross-validation of an acoustic head, and the final fit.

Each outer fold holds out speakers (or, with ``loco``, a corpus); inside it an inner
speaker-grouped validation split of the training speakers picks the epoch (early
stopping), never the test speakers. Several seeds form a soft-voting ensemble whose
held-out probabilities are kept per condition (each utterance alone, through a
telephone channel, and for a head that adapts to the speaker, as streams).
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from training.acoustic.data import (
    SHARED,
    TrainingData,
    calm_labels,
    share,
    summaries,
    use_summaries,
)
from training.acoustic.loop import train_one, validation_split
from training.acoustic.options import TrainOptions
from training.acoustic.predict import predict_outputs
from training.acoustic.report import evaluation_report
from training.acoustic.streams import (
    HISTORY_PROBE,
    history_baselines,
    pooled_vectors,
    stream_baselines,
)
from training.acoustic_models import build_model
from training.datasets import speaker_folds

Condition = tuple[str, list[npt.NDArray[np.float32]], Any]
"""(key, held-out features, their baselines, or None for every utterance alone)."""
FoldJob = tuple[int, Any, Any, str, dict[str, Any], TrainOptions]
"""(fold number, train indices, test indices, architecture, config, options)."""


def _conditions(
    test_idx: npt.NDArray[np.int64],
    arch: str,
    config: dict[str, Any],
    options: TrainOptions,
) -> list[Condition]:
    """How the held-out utterances of a fold are scored."""
    data: TrainingData = SHARED["data"]
    inputs = SHARED["summaries"] if use_summaries(arch, options) else data.copies
    scored = SHARED.get("scored_inputs") or inputs[0]
    test_feats = [scored[i] for i in test_idx]
    telephone = SHARED.get("telephone_inputs")
    telephone_feats = [telephone[i] for i in test_idx] if telephone else []
    window = int(config.get("adaptation_window", 0))
    test_utts = [data.utterances[i] for i in test_idx]
    conditions: list[Condition] = [("cold", test_feats, None)]
    if telephone_feats:
        conditions.append(("telephone_cold", telephone_feats, None))
    if window:
        pooled = pooled_vectors(test_feats)
        labels = data.y[test_idx]
        conditions += [
            # each held-out speaker as one stream, in a seeded order
            ("stream", test_feats, stream_baselines(test_utts, pooled, window)),
            # a history of 8 calm/neutral utterances, or of 8 in the same emotion
            ("history_calm", test_feats, history_baselines(
                test_utts, pooled, labels, calm_labels(data), HISTORY_PROBE)),
            ("history_same", test_feats, history_baselines(
                test_utts, pooled, labels, None, HISTORY_PROBE)),
        ]  # fmt: skip
        if telephone_feats:
            conditions.append(
                (
                    "telephone",
                    telephone_feats,
                    stream_baselines(
                        test_utts, pooled_vectors(telephone_feats), window
                    ),
                )
            )
    return conditions


def _run_fold(job: FoldJob) -> tuple[int, dict[str, Any], list[int], list[float]]:
    fold, train_idx, test_idx, arch, config, options = job
    torch.set_num_threads(SHARED.get("threads", 1))
    conditions = _conditions(test_idx, arch, config, options)
    probs: dict[str, list[Any]] = {key: [] for key, _, _ in conditions}
    epochs, val_uas = [], []
    for seed in options.seeds:
        inner_train, val = validation_split(
            train_idx, options.val_fraction, seed * 1000 + fold
        )
        if len(val) == 0:  # too few speakers to hold any out: no early stopping
            inner_train, val = train_idx, None
        state, epoch, val_ua = train_one(arch, config, inner_train, val, options, seed)
        model = build_model(arch, config)
        model.load_state_dict(state)
        for key, feats, baselines in conditions:
            p, affect = predict_outputs(model, feats, baselines=baselines)
            probs[key].append(p)
            if key == "cold" and affect is not None:
                probs.setdefault("affect", []).append(affect)
        epochs.append(epoch)
        val_uas.append(val_ua)
    return fold, {k: np.mean(v, axis=0) for k, v in probs.items()}, epochs, val_uas


def _run_folds(
    jobs_list: list[FoldJob], jobs: int
) -> list[tuple[int, dict[str, Any], list[int], list[float]]]:
    """Every fold's results, ``jobs`` folds at a time in forked processes."""
    if jobs <= 1:
        return [_run_fold(job) for job in tqdm(jobs_list, desc="folds")]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return list(
            tqdm(
                pool.imap_unordered(_run_fold, jobs_list),
                total=len(jobs_list),
                desc="folds",
            )
        )


def _held_out_inputs(
    feats: list[npt.NDArray[np.float32]], arch: str, options: TrainOptions
) -> list[npt.NDArray[np.float32]] | None:
    """What the head reads of extra held-out features (their summaries, for a head
    trained on summaries), or None without them."""
    if not feats:
        return None
    return summaries([feats])[0] if use_summaries(arch, options) else feats


def cross_validate(
    data: TrainingData,
    arch: str,
    config: dict[str, Any],
    options: TrainOptions,
    protocol: str = "loso",
    k: int = 5,
    jobs: int = 2,
) -> dict[str, Any]:
    """Speaker-independent evaluation; metrics per corpus of the pooled test predictions.

    Args:
        data: the dataset with its feature copies.
        arch: architecture name.
        config: constructor kwargs (``n_labels`` included).
        options: training settings.
        protocol: "loso" (one speaker out, all corpora together), "kfold" or "loco".
        k: folds for "kfold".
        jobs: folds trained in parallel (processes, one torch thread each).

    Returns:
        JSON-ready dict (``report.evaluation_report``): per-corpus metrics
        (``per_corpus``; ``per_corpus_telephone`` for the held-out speakers'
        telephone copies when ``data.telephone`` is set), chosen epochs, inner
        validation UA.
    """
    folds = speaker_folds(data.utterances, kind=protocol, k=k, seed=0)  # type: ignore[arg-type]
    share(data, arch, options, config)
    SHARED["telephone_inputs"] = _held_out_inputs(data.telephone, arch, options)
    SHARED["scored_inputs"] = _held_out_inputs(data.scored, arch, options)
    SHARED["threads"] = 1  # two threads thrash on a shared 2-core host
    jobs_list = [(i, tr, te, arch, config, options) for i, (tr, te) in enumerate(folds)]
    probs: dict[str, npt.NDArray[np.float32]] = {}
    epochs: list[int] = []
    val_uas: list[float] = []
    start = time.monotonic()
    for fold, fold_probs, fold_epochs, fold_val in _run_folds(jobs_list, jobs):
        for key, value in fold_probs.items():
            probs.setdefault(
                key,
                np.zeros((len(data.y), value.shape[1]), dtype=np.float32),
            )[folds[fold][1]] = value
        epochs += fold_epochs
        val_uas += fold_val
    return evaluation_report(
        data,
        probs,
        {
            "protocol": protocol if protocol in ("loso", "loco") else f"kfold{k}",
            "folds": len(folds),
            "epochs_chosen": epochs,
            "inner_val_ua": float(np.mean(val_uas)),
            "wall_s": round(time.monotonic() - start, 1),
        },
    )


def fit_final(
    data: TrainingData,
    arch: str,
    config: dict[str, Any],
    options: TrainOptions,
    epochs: int,
) -> list[dict[str, Any]]:
    """Train every seed on all utterances for ``epochs`` epochs; their state dicts."""
    share(data, arch, options, config)
    torch.set_num_threads(1)
    all_idx = np.arange(len(data.y), dtype=np.int64)
    states = []
    for seed in tqdm(options.seeds, desc="final fit"):
        state, _, _ = train_one(
            arch, config, all_idx, None, options, seed, epochs=epochs
        )
        states.append(state)
    return states
