"""training.baselines: the linear probes' folds, on synthetic utterance features."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from training.baselines import evaluate_linear  # noqa: E402
from training.datasets import Utterance  # noqa: E402

pytestmark = pytest.mark.train


def _corpus(
    name: str, labels: list[str], speakers: int, shift: float
) -> tuple[list[Utterance], list[np.ndarray]]:
    rng = np.random.default_rng(len(name))
    utts, rows = [], []
    for s in range(speakers):
        for i, label in enumerate(labels):
            for take in range(4):
                utts.append(
                    Utterance(
                        f"{name}:{s}-{label}-{take}", None, label, f"{name}:{s}", name
                    )
                )
                row = rng.normal(0.0, 0.3, 6)
                row[i] += 2.0  # the label's own direction
                row[-1] += shift  # a corpus offset the classifier must see past
                rows.append(row)
    return utts, rows


def test_loco_holds_out_whole_corpora_and_scores_each() -> None:
    utts, rows = [], []
    for name, labels, shift in (
        ("alpha", ["anger", "neutral", "sadness"], 0.0),
        ("beta", ["anger", "neutral", "sadness"], 1.0),
        ("gamma", ["anger", "neutral"], -1.0),
    ):
        u, r = _corpus(name, labels, speakers=3, shift=shift)
        utts += u
        rows += r
    x = np.array(rows, dtype=np.float32)
    result = evaluate_linear(utts, x, "lr", protocol="loco")
    assert set(result["per_corpus"]) == {"alpha", "beta", "gamma"}
    assert len(result["chosen_c"]) == 3  # one fold per corpus
    for scores in result["per_corpus"].values():
        assert scores["ua"] > 0.9  # the labels' directions carry across corpora
    # LOSO on the same rows: one fold per speaker (9).
    assert len(evaluate_linear(utts, x, "lr")["chosen_c"]) == 9
