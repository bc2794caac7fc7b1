"""What an acoustic evaluation reports: per-corpus scores of each held-out condition,
and the calibration of out-of-fold predictions.

Held-out reports give, per corpus, UA/WA over the model's labels and restricted to the
corpus's own, the predicted-label distribution, ECE before and after temperature
scaling, and arousal/valence agreement for a head with ``{"affect": true}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from training.acoustic.data import TrainingData
from training.acoustic.label_shift import online_adaptation
from training.acoustic.offsets import fit_offsets
from training.acoustic.shares import label_shares
from training.acoustic.streams import HISTORY_PROBE
from training.affect import agreement
from training.datasets import FOLD_TO_NEUTRAL
from training.metrics import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    score,
    top_label_ece,
)

_REPORTED: Final = (
    ("per_corpus", "stream"),
    ("per_corpus_telephone", "telephone"),
    ("per_corpus_cold", "cold"),
    ("per_corpus_telephone_cold", "telephone_cold"),
    ("per_corpus_history_calm", "history_calm"),
    ("per_corpus_history_same", "history_same"),
)
"""Report keys of a model that adapts to the speaker, and the condition of each."""


_REPORTED_PLAIN: Final = (
    ("per_corpus", "cold"),
    ("per_corpus_telephone", "telephone_cold"),
)
"""The same for a model that does not (every utterance is heard alone)."""


METRIC_ROWS: Final = (
    ("per_corpus", ""),
    ("per_corpus_telephone", " telephone"),
    ("per_corpus_cold", " cold"),
    ("per_corpus_telephone_cold", " telephone cold"),
    ("per_corpus_history_calm", " after calm history"),
    ("per_corpus_history_same", " after same-emotion history"),
)
"""Evaluation keys and the suffixes of their checkpoint metric rows."""


def evaluation_report(
    data: TrainingData,
    probs: dict[str, npt.NDArray[np.float32]],
    head: dict[str, Any],
) -> dict[str, Any]:
    """The report of a cross-validation: ``head`` (protocol, folds, epochs...), then
    per-corpus scores of each condition in ``probs`` (out-of-fold probabilities by
    condition), and for a head that does not adapt, the held-out report and the
    out-of-fold predictions (``oof``)."""
    adaptive = "stream" in probs
    report = dict(head)
    if adaptive:
        report["streams"] = (
            "per_corpus, per_corpus_telephone: each held-out speaker's utterances as "
            "one stream (seeded order), adapted to the speaker; *_cold: every "
            f"utterance alone; per_corpus_history_calm / _same: {HISTORY_PROBE} "
            "earlier utterances of the speaker, all calm or neutral / all in the "
            "emotion being judged"
        )
    for key, condition in _REPORTED if adaptive else _REPORTED_PLAIN:
        if condition in probs:
            report[key] = per_corpus(data, probs[condition].argmax(1))
    if not adaptive and "cold" in probs:
        report.update(
            held_out_report(
                data,
                probs["cold"],
                probs.get("affect"),
                out_of_corpus=head.get("protocol") == "loco",
            )
        )
        report["oof"] = {"probs": probs["cold"], "affect": probs.get("affect")}
    return report


def held_out_report(
    data: TrainingData,
    probs: npt.NDArray[np.float32],
    affect: npt.NDArray[np.float32] | None,
    out_of_corpus: bool = False,
) -> dict[str, Any]:
    """``held_out_scores`` of ``data``'s out-of-fold predictions."""
    corpora = np.array([u.corpus for u in data.utterances])
    return held_out_scores(
        probs, data.y, data.labels, corpora, data.corpus_labels, affect, out_of_corpus
    )


def held_out_scores(
    probs: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    labels: Sequence[str],
    corpora: npt.NDArray[Any],
    corpus_labels: dict[str, list[str]],
    affect: npt.NDArray[np.float32] | None = None,
    out_of_corpus: bool = False,
    weighting: str = "balanced",
) -> dict[str, Any]:
    """Per corpus, of out-of-fold predictions: scores over the model's own labels
    and restricted to the corpus's classes, the predicted-label distribution, the
    label shares, foreign share and anger precision (``shares.label_shares``), ECE
    (10 bins) raw and after temperature scaling fit on the *other* corpora's rows,
    the same with calm and boredom read as neutral, and arousal/valence agreement.
    Also the temperature fit on all rows (what a final model ships).

    ``out_of_corpus`` (the rows are leave-one-corpus-out predictions): also each
    corpus's scores after a temperature and per-class offsets fit on the other
    corpora's rows (``with_offsets``), then with the class priors re-estimated
    online over the corpus's clips (``with_prior_shift``,
    ``label_shift.online_adaptation``), the scores after offsets fit on the scored
    corpus itself (``with_own_offsets``: how far calibration alone could go, a
    diagnosis and never a usable figure), and the offsets fit on all rows
    (``offsets``); ``weighting``: of the offsets' fit (``offsets.WEIGHTINGS``).
    """
    out: dict[str, Any] = {"held_out": {}}
    out["temperature"] = fit_temperature(probs, y)
    if out_of_corpus:
        out["offsets"] = fit_offsets(probs, y, corpora, weighting).to_dict()
    for corpus in sorted(set(corpora.tolist())):
        rows = np.flatnonzero(corpora == corpus)
        others = np.flatnonzero(corpora != corpus)
        # one corpus alone: no other corpora to fit on, so its own rows
        fit_rows = others if len(others) else rows
        t = fit_temperature(probs[fit_rows], y[fit_rows])
        reference = [labels[i] for i in y[rows]]
        cal = calibrate(probs[rows], t)
        entry = _scores(probs[rows], reference, labels, corpus_labels[corpus])
        folded_pred = [FOLD_TO_NEUTRAL.get(labels[i], labels[i]) for i in cal.argmax(1)]
        folded_correct = np.array(
            [
                FOLD_TO_NEUTRAL.get(a, a) == b
                for a, b in zip(reference, folded_pred, strict=True)
            ]
        )
        entry.update(
            ece_raw=top_label_ece(probs[rows], y[rows]),
            temperature_other_corpora=t,
            ece=top_label_ece(cal, y[rows]),
            ece_folded=_folded_ece(cal, folded_correct),
        )
        if out_of_corpus and len(others):
            fit = fit_offsets(probs[others], y[others], corpora[others], weighting)
            shifted = fit.apply(probs[rows])
            entry["offsets_other_corpora"] = fit.to_dict()
            # the corpus as traffic, in a fixed shuffled order
            adapted = online_adaptation(
                shifted,
                fit.apply(probs[others]).mean(0),
                np.random.default_rng(0).permutation(len(rows)),
            )
            # a diagnosis, not a usable figure: offsets fit on the scored corpus
            own_fit = fit_offsets(probs[rows], y[rows], corpora[rows], weighting)
            for key, p in (
                ("with_offsets", shifted),
                ("with_prior_shift", adapted),
                ("with_own_offsets", own_fit.apply(probs[rows])),
            ):
                entry[key] = {
                    **_scores(p, reference, labels, corpus_labels[corpus]),
                    "ece": top_label_ece(p, y[rows]),
                }
        if affect is not None:
            entry["affect"] = agreement(affect[rows], reference)
        out["held_out"][corpus] = entry
    return out


def _scores(
    probs: npt.NDArray[Any],
    reference: list[str],
    labels: Sequence[str],
    own: list[str],
) -> dict[str, Any]:
    """UA/WA over all ``labels`` (``own``), restricted to the corpus's labels,
    folded, the predicted-label counts and the label shares of one corpus's rows."""
    labels = list(labels)
    predicted = [labels[i] for i in probs.argmax(1)]
    mine = [labels.index(k) for k in own]
    restricted = [labels[mine[i]] for i in probs[:, mine].argmax(1)]
    folded_ref = [FOLD_TO_NEUTRAL.get(k, k) for k in reference]
    folded_pred = [FOLD_TO_NEUTRAL.get(k, k) for k in predicted]
    return {
        "own": score(reference, predicted, labels=labels).to_dict(),
        "restricted": score(reference, restricted, labels=labels).to_dict(),
        "folded": score(folded_ref, folded_pred).to_dict(),
        "predicted": {k: predicted.count(k) for k in labels if k in predicted},
        **label_shares(reference, predicted),
    }


def pooled_temperature(
    paths: Sequence[Path],
    data: TrainingData,
    own: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """The temperature fit on the out-of-fold predictions in ``paths`` (and this
    run's, ``own``), all rows pooled, and the ECE (10 bins) at that temperature of
    each set's rows per corpus: the calibration of the graph that ships it.

    Raises:
        ValueError: a file is missing, or its labels or utterances differ from
            ``data``'s.
    """
    ids = [u.utt_id for u in data.utterances]
    probs, ys = [], []
    for path in paths:
        if not path.is_file():
            raise ValueError(f"--calibrate-with: {path} not found")
        with np.load(path, allow_pickle=False) as oof:
            if [str(k) for k in oof["labels"]] != data.labels or [
                str(i) for i in oof["ids"]
            ] != ids:
                raise ValueError(
                    f"--calibrate-with: {path} is of other labels or utterances"
                )
            probs.append(oof["probs"])
            ys.append(oof["y"])
    if own is not None:
        probs.append(own)
        ys.append(data.y)
    temperature = fit_temperature(np.concatenate(probs), np.concatenate(ys))
    names = [p.name for p in paths] + (["this run"] if own is not None else [])
    corpora = np.array([u.corpus for u in data.utterances])
    ece = {
        name: {
            corpus: top_label_ece(
                calibrate(set_probs[corpora == corpus], temperature),
                set_y[corpora == corpus],
            )
            for corpus in sorted(set(corpora.tolist()))
        }
        for name, set_probs, set_y in zip(names, probs, ys, strict=True)
    }
    return {"temperature": temperature, "fit_on": names, "ece": ece}


def _folded_ece(probs: npt.NDArray[Any], correct: npt.NDArray[np.bool_]) -> float:
    """ECE of the top label's probability against correctness with calm and
    boredom read as neutral."""
    return expected_calibration_error(probs.max(1), correct)


def per_corpus(
    data: TrainingData, predicted: npt.NDArray[np.int64]
) -> dict[str, dict[str, Any]]:
    """Metrics of ``predicted`` (label index per utterance) for each corpus."""
    out = {}
    for corpus in sorted({u.corpus for u in data.utterances}):
        rows = [i for i, u in enumerate(data.utterances) if u.corpus == corpus]
        s = score(
            [data.labels[data.y[i]] for i in rows],
            [data.labels[predicted[i]] for i in rows],
            labels=data.labels,
        )
        out[corpus] = s.to_dict()
    return out
