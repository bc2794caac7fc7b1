"""Where a held-out corpus's clips go: the share of clips given each label next to its
true share, the share taken by labels the corpus does not have, and the precision of
anger (issue 22's flood check). Calm and boredom are read as neutral throughout
(``training.datasets.FOLD_TO_NEUTRAL``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from training.datasets import FOLD_TO_NEUTRAL

ALARM_LABEL = "anger"
"""The label every alert rule keys on: its precision is reported."""


def label_shares(reference: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """The flood figures of one corpus's predictions (labels of each clip).

    Returns:
        ``shares``: per label (true or predicted, folded) its ``true`` and
        ``predicted`` share of the clips; ``max_ratio``: the largest predicted share
        over true share among the corpus's own labels, and ``max_ratio_label``;
        ``foreign_share``: the share of clips given a label the corpus does not
        have; ``anger_precision``: the share of clips called anger that are anger
        (None when none is); ``anger_called``: how many clips are called anger.

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    if len(reference) != len(predicted) or not reference:
        raise ValueError(
            f"need as many predictions as references, at least one; got "
            f"{len(predicted)} and {len(reference)}"
        )
    ref = [FOLD_TO_NEUTRAL.get(k, k) for k in reference]
    pred = [FOLD_TO_NEUTRAL.get(k, k) for k in predicted]
    n = len(ref)
    true_counts, pred_counts = Counter(ref), Counter(pred)
    shares = {
        label: {
            "true": true_counts[label] / n,
            "predicted": pred_counts[label] / n,
        }
        for label in sorted(set(ref) | set(pred))
    }
    ratios = {k: pred_counts[k] / true_counts[k] for k in true_counts}
    worst = max(sorted(ratios), key=lambda k: ratios[k])
    called = [r for r, p in zip(ref, pred, strict=True) if p == ALARM_LABEL]
    return {
        "shares": shares,
        "max_ratio": ratios[worst],
        "max_ratio_label": worst,
        "foreign_share": sum(c for k, c in pred_counts.items() if k not in true_counts)
        / n,
        "anger_precision": (
            sum(r == ALARM_LABEL for r in called) / len(called) if called else None
        ),
        "anger_called": len(called),
    }
