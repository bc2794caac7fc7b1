"""Linear baselines on utterance-level features, evaluated speaker-independently.

``python -m training baselines --data KIND:PATH ... [--features ...] [--json]``

Features, all of the utterance the daemon cuts from each clip (``training.daemon_path``):
openSMILE functionals (``egemaps``: eGeMAPSv02, 88; ``compare``: ComParE_2016, 6373;
openSMILE is under audEERING's research licence, which bars commercial use, so no
shipped model reads them), mean+std pooled Whisper-base encoder states (``whisper``,
1024: the whole int8 encoder on the unpadded utterance, via
``training.features_cache``; ``whisper-layers``, 2048: the shipped front end, states
after layers 2 and 3), ``compare+whisper``, ``egemaps+whisper-layers``, and the
librosa prosodic functionals (``prosody``: pitch, energy, voicing, spectral slope, rate;
``training.prosody``) alone and beside the shipped front end's layers. Classifier:
standardisation then a linear SVM (openSMILE alone) or logistic regression (with
Whisper), class-balanced; C chosen per outer fold by an inner speaker-grouped 3-fold
split of the training speakers (nested, never the test speaker). Each corpus is
evaluated on its own (LOSO) unless ``--joint`` trains on the union of the corpora and
scores each corpus's held-out speakers; ``--protocol loco`` trains on the other
corpora and scores each whole corpus, with calm and boredom read as neutral.
``--select de`` adds differential-evolution feature selection
(``training.selection``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.recognition.features import FrontEnd
from training.daemon_path import daemon_audio, daemon_view
from training.datasets import (
    Utterance,
    data_parser,
    fold_to_neutral,
    load_dataset,
    speaker_folds,
)
from training.features_cache import default_cache_dir, front_end_of, load_features
from training.metrics import Scores, format_confusion, score
from training.prosody import prosodic_functionals
from training.selection import de_selector

_LOGGER = logging.getLogger(__name__)

FEATURES: Final = (
    "egemaps",
    "compare",
    "whisper",
    "compare+whisper",
    "whisper-layers",
    "egemaps+whisper-layers",
    "prosody",
    "prosody+whisper-layers",
)
C_GRID: Final = {
    "svm": (1e-4, 1e-3, 1e-2, 1e-1),
    "lr": (1e-3, 1e-2, 1e-1),
}


def opensmile_functionals(
    utterances: Sequence[Utterance], feature_set: str
) -> npt.NDArray[np.float32]:
    """openSMILE functionals of the daemon's utterance of each clip, cached per corpus.

    Args:
        utterances: utterances with audio.
        feature_set: "egemaps" (eGeMAPSv02) or "compare" (ComParE_2016).

    Returns:
        Array (n_utterances, n_features).
    """
    import opensmile

    sets = {
        "egemaps": opensmile.FeatureSet.eGeMAPSv02,
        "compare": opensmile.FeatureSet.ComParE_2016,
    }
    smile = opensmile.Smile(
        feature_set=sets[feature_set], feature_level=opensmile.FeatureLevel.Functionals
    )
    return daemon_functionals(
        utterances,
        f"opensmile-{feature_set}",
        lambda audio: smile.process_signal(audio, 16000).to_numpy()[0],
    )


def daemon_functionals(
    utterances: Sequence[Utterance],
    name: str,
    functionals: Callable[[npt.NDArray[np.float32]], npt.NDArray[Any]],
) -> npt.NDArray[np.float32]:
    """``functionals`` of the daemon's utterance of each clip (the whole clip when
    the segmenter cuts none), cached per corpus as ``CORPUS-NAME-daemon.npz``."""
    from tqdm import tqdm

    folder = default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    found: dict[str, npt.NDArray[np.float32]] = {}
    for corpus in sorted({u.corpus for u in utterances}):
        path = folder / f"{corpus}-{name}-daemon.npz"
        cached: dict[str, npt.NDArray[np.float32]] = {}
        if path.is_file():
            with np.load(path) as data:
                cached = dict(zip(data["ids"].tolist(), data["values"], strict=True))
        missing = [
            u for u in utterances if u.corpus == corpus and u.utt_id not in cached
        ]
        for utt in tqdm(missing, desc=f"{name} {corpus}", mininterval=5.0):
            audio = daemon_view(daemon_audio(utt.path))  # type: ignore[arg-type]
            cached[utt.utt_id] = np.asarray(functionals(audio), dtype=np.float32)
        if missing:
            ids = sorted(cached)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, ids=np.array(ids), values=np.stack([cached[i] for i in ids]))
            os.replace(tmp, path)
        found.update(cached)
    return np.stack([found[u.utt_id] for u in utterances])


def whisper_pooled(
    utterances: Sequence[Utterance],
    kind: str = "encoder-top",
    front_end: FrontEnd | None = None,
) -> npt.NDArray[np.float32]:
    """Mean and standard deviation over time of Whisper encoder states: the whole
    encoder's ("encoder-top") or the shipped front end's layers ("encoder"; or
    ``front_end``'s)."""
    states = load_features(utterances, kind, front_end=front_end)
    return np.stack([np.concatenate([s.mean(0), s.std(0)]) for s in states])


def utterance_features(
    utterances: Sequence[Utterance], name: str, front_end: FrontEnd | None = None
) -> npt.NDArray[np.float32]:
    """Utterance-level features by name (see ``FEATURES``); ``front_end``: of
    ``whisper-layers``."""
    if name == "whisper":
        return whisper_pooled(utterances)
    if name == "whisper-layers":
        return whisper_pooled(utterances, "encoder", front_end)
    if name in ("egemaps", "compare"):
        return opensmile_functionals(utterances, name)
    if name == "prosody":
        return daemon_functionals(utterances, "prosody", prosodic_functionals)
    if "+" in name and name in FEATURES:
        return np.concatenate(
            [
                utterance_features(utterances, part, front_end)
                for part in name.split("+")
            ],
            axis=1,
        )
    raise ValueError(f"unknown features {name!r}; known: {', '.join(FEATURES)}")


def make_classifier(kind: str, c_value: float) -> Any:
    """Standardisation + class-balanced linear SVM ("svm") or logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind == "svm":
        model = SVC(kernel="linear", C=c_value, class_weight="balanced")
    elif kind == "lr":
        model = LogisticRegression(C=c_value, class_weight="balanced", max_iter=2000)
    else:
        raise ValueError(f"unknown classifier {kind!r}")
    return make_pipeline(StandardScaler(), model)


def _balanced_accuracy(
    reference: npt.NDArray[Any], predicted: npt.NDArray[Any]
) -> float:
    recalls = [np.mean(predicted[reference == c] == c) for c in np.unique(reference)]
    return float(np.mean(recalls))


def choose_c(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[Any],
    utterances: Sequence[Utterance],
    kind: str,
    seed: int = 0,
) -> float:
    """Pick C by UA on an inner speaker-grouped 3-fold split of the training data."""
    n_speakers = len({u.speaker for u in utterances})
    folds = speaker_folds(utterances, kind="kfold", k=min(3, n_speakers), seed=seed)
    best, best_ua = C_GRID[kind][0], -1.0
    for c_value in C_GRID[kind]:
        predicted = np.empty(len(y), dtype=object)
        for train, test in folds:
            clf = make_classifier(kind, c_value).fit(x[train], y[train])
            predicted[test] = clf.predict(x[test])
        ua = _balanced_accuracy(y, predicted)
        _LOGGER.debug("C=%g inner UA %.3f", c_value, ua)
        if ua > best_ua:
            best, best_ua = c_value, ua
    return best


def evaluate_linear(
    utterances: Sequence[Utterance],
    x: npt.NDArray[np.float32],
    kind: str,
    fit_transform: Callable[..., Any] | None = None,
    protocol: str = "loso",
) -> dict[str, Any]:
    """Nested LOSO (or LOCO) of a linear classifier; scores per corpus of the held-out
    speakers (or corpora).

    Args:
        utterances: the dataset (one or more corpora).
        x: utterance features, one row per utterance.
        kind: "svm" or "lr".
        fit_transform: optional ``(x_train, y_train, utts_train) -> column mask``
            applied before the classifier (feature selection), fit on the
            training speakers only.
        protocol: "loso" (one speaker out) or "loco" (one corpus out).

    Returns:
        {"per_corpus": {corpus: Scores.to_dict() + "chosen_c"}, ...}.
    """
    from tqdm import tqdm

    y = np.array([u.label for u in utterances], dtype=object)
    predicted = np.empty(len(y), dtype=object)
    chosen = []
    for train, test in tqdm(
        speaker_folds(utterances, kind=protocol),  # type: ignore[arg-type]
        desc=protocol.upper(),
        mininterval=5.0,
    ):
        train_utts = [utterances[i] for i in train]
        columns = slice(None)
        if fit_transform is not None:
            columns = fit_transform(x[train], y[train], train_utts)
        xt = x[:, columns]
        c_value = choose_c(xt[train], y[train], train_utts, kind)
        chosen.append(c_value)
        clf = make_classifier(kind, c_value).fit(xt[train], y[train])
        predicted[test] = clf.predict(xt[test])
    result: dict[str, Any] = {"per_corpus": {}, "chosen_c": chosen}
    for corpus in sorted({u.corpus for u in utterances}):
        rows = [i for i, u in enumerate(utterances) if u.corpus == corpus]
        scores = score(list(y[rows]), list(predicted[rows]))
        result["per_corpus"][corpus] = scores.to_dict()
    return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = data_parser("baselines", __doc__.split("\n")[0])
    parser.add_argument(
        "--features",
        nargs="+",
        default=list(FEATURES),
        choices=FEATURES,
        help="feature sets to evaluate (default: all)",
    )
    parser.add_argument(
        "--joint",
        action="store_true",
        help="train on the union of the corpora (LOSO over all speakers)",
    )
    parser.add_argument(
        "--protocol",
        choices=("loso", "loco"),
        default="loso",
        help="loco: train on the other corpora, score each whole corpus (labels "
        "folded: calm and boredom as neutral)",
    )
    parser.add_argument(
        "--select",
        choices=("de",),
        default=None,
        help="differential-evolution feature selection before the classifier",
    )
    parser.add_argument(
        "--mel-level",
        type=float,
        default=None,
        help="whisper-layers: log-mel brought to this level first, as "
        "`training acoustic --mel-level` (default: none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training baselines``)."""
    args = _parse(argv)
    try:
        corpora = [load_dataset(spec) for spec in args.data]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.protocol == "loco":
        corpora = [fold_to_neutral(c) for c in corpora]
    joint = args.joint or args.protocol == "loco"
    groups = [[u for c in corpora for u in c]] if joint else corpora
    report: dict[str, Any] = {}
    for name in args.features:
        kind = "lr" if "whisper" in name else "svm"
        fit_transform = None
        if args.select == "de":
            fit_transform = de_selector(kind)
        key = name + ("+de" if args.select else "")
        report[key] = {}
        for utts in groups:
            x = utterance_features(
                utts, name, front_end_of("encoder", None, args.mel_level)
            )
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            result = evaluate_linear(utts, x, kind, fit_transform, args.protocol)
            for corpus, scores in result["per_corpus"].items():
                report[key][corpus] = scores
                _LOGGER.info(
                    "%s %s: UA %.1f WA %.1f (C %s)",
                    key,
                    corpus,
                    100 * scores["ua"],
                    100 * scores["wa"],
                    result["chosen_c"],
                )
    if args.json:
        print(json.dumps(report))
    else:
        for key, per_corpus in report.items():
            for corpus, s in per_corpus.items():
                print(
                    f"{key:<22} {corpus:<8} UA {100 * s['ua']:.1f}  WA {100 * s['wa']:.1f}  n {s['n']}"
                )
                print(format_confusion(Scores(**s)))
    return 0
