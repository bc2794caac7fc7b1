"""Feature selection by (modified) differential evolution over openSMILE functionals.

A candidate is a real vector in [0, 1]^d; features whose value exceeds 0.5 are kept.
DE/rand/1/bin with the modifications commonly used for binary selection: opposition-
based initialisation (each random vector and its opposite 1 - x), a dithered scale
factor F drawn per generation from [0.5, 1.0], and a fitness that rewards inner UA
and lightly penalises the share of kept features. Fitness is the UA of a
class-balanced ridge classifier (closed form, fast) on an inner speaker-grouped
split of the training speakers only, so the test speaker is never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from training.datasets import Utterance, speaker_folds

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeOptions:
    """Differential-evolution settings.

    Attributes:
        population: candidates per generation.
        generations: generations to run.
        crossover: binomial crossover rate CR.
        size_penalty: fitness cost per share of kept features.
        inner_folds: speaker-grouped folds for the fitness.
        seed: random seed.
    """

    population: int = 24
    generations: int = 20
    crossover: float = 0.2
    size_penalty: float = 0.02
    inner_folds: int = 3
    seed: int = 0


def _fitness_fn(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[Any],
    utts: Sequence[Utterance],
    options: DeOptions,
) -> Callable[[npt.NDArray[np.bool_]], float]:
    from sklearn.linear_model import RidgeClassifier

    n_speakers = len({u.speaker for u in utts})
    folds = speaker_folds(
        utts, kind="kfold", k=min(options.inner_folds, n_speakers), seed=options.seed
    )
    mean, std = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / std
    classes = np.unique(y)

    def fitness(mask: npt.NDArray[np.bool_]) -> float:
        if not mask.any():
            return -1.0
        predicted = np.empty(len(y), dtype=y.dtype)
        for train, test in folds:
            clf = RidgeClassifier(alpha=10.0, class_weight="balanced")
            clf.fit(z[train][:, mask], y[train])
            predicted[test] = clf.predict(z[test][:, mask])
        ua = float(np.mean([np.mean(predicted[y == c] == c) for c in classes]))
        return ua - options.size_penalty * float(mask.mean())

    return fitness


def differential_evolution_mask(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[Any],
    utts: Sequence[Utterance],
    options: DeOptions | None = None,
) -> npt.NDArray[np.bool_]:
    """Select features of ``x`` by DE on inner speaker-grouped UA.

    Args:
        x: training features (n, d).
        y: training labels.
        utts: the training utterances (for speaker grouping).
        options: DE settings.

    Returns:
        Boolean mask of kept columns (at least one).
    """
    options = options or DeOptions()
    rng = np.random.default_rng(options.seed)
    fitness = _fitness_fn(x, y, utts, options)
    dim = x.shape[1]
    half = rng.random((options.population, dim))
    candidates = np.concatenate([half, 1.0 - half])  # opposition-based initialisation
    scores = np.array([fitness(c > 0.5) for c in candidates])
    keep = np.argsort(-scores)[: options.population]
    pop, pop_scores = candidates[keep], scores[keep]
    for _ in range(options.generations):
        scale = rng.uniform(0.5, 1.0)  # dither
        for i in range(options.population):
            a, b, c = rng.choice(
                [j for j in range(options.population) if j != i], 3, replace=False
            )
            mutant = np.clip(pop[a] + scale * (pop[b] - pop[c]), 0.0, 1.0)
            cross = rng.random(dim) < options.crossover
            cross[rng.integers(dim)] = True
            trial = np.where(cross, mutant, pop[i])
            trial_score = fitness(trial > 0.5)
            if trial_score >= pop_scores[i]:
                pop[i], pop_scores[i] = trial, trial_score
    best = pop[int(np.argmax(pop_scores))] > 0.5
    _LOGGER.debug(
        "DE kept %d of %d features, fitness %.3f", best.sum(), dim, pop_scores.max()
    )
    return best if best.any() else np.ones(dim, dtype=bool)


def de_selector(kind: str, options: DeOptions | None = None) -> Callable[..., Any]:
    """A ``fit_transform`` for ``training.baselines.evaluate_linear`` using DE.

    Args:
        kind: the downstream classifier (unused by the fitness, kept for logging).
        options: DE settings.

    Returns:
        ``(x_train, y_train, utts_train) -> column mask``.
    """

    def select(
        x: npt.NDArray[np.float32], y: npt.NDArray[Any], utts: Sequence[Utterance]
    ) -> Any:
        mask = differential_evolution_mask(x, y, utts, options)
        _LOGGER.info(
            "DE (%s): kept %d of %d features", kind, int(mask.sum()), mask.size
        )
        return mask

    return select
