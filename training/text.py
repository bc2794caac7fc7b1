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
import shlex
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamser.recognition.features import TextTokenizer, pad_batch
from streamser.recognition.whisper_model import default_whisper_dir
from training.datasets import Utterance, load_dataset, speaker_folds
from training.metrics import Scores, score
from training.text_models import NGRAM_PRIME as _PRIME
from training.text_models import UNK, WHISPER_VOCAB_SIZE, build_model

_LOGGER = logging.getLogger(__name__)

_CT2_DTYPES: Final = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: architecture, model config and optimiser settings."""

    name: str
    """Short id used in reports."""
    arch: str
    """``cnn``, ``bow`` or ``gru`` (see ``training.text_models``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Model hyperparameters (without ``n_labels``/``vocabulary``)."""
    lr: float = 2e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    class_weight_power: float = 0.5
    """Loss weight of a class = (1 / frequency) ** power, normalised."""
    pretrained: bool = False
    """Initialise token embeddings from Whisper base's decoder embeddings."""
    freeze_embeddings: bool = False
    """Keep the (pretrained) token embeddings fixed during training."""


CANDIDATES: Final[tuple[Candidate, ...]] = (
    Candidate(
        "ngram-c1",
        "ngram",
        {"ngram": 2, "buckets": 50000, "C": 1.0},
        class_weight_power=1.0,
    ),
    Candidate(
        "ngram-c4",
        "ngram",
        {"ngram": 2, "buckets": 50000, "C": 4.0},
        class_weight_power=1.0,
    ),
    Candidate(
        "ngram3-c2",
        "ngram",
        {"ngram": 3, "buckets": 50000, "C": 2.0},
        class_weight_power=1.0,
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
    Candidate(
        "cnn-whisper",
        "cnn",
        {"embedding_dim": 512, "filters": 64, "token_dropout": 0.1},
        class_weight_power=1.0,
        pretrained=True,
        freeze_embeddings=True,
    ),
    Candidate(
        "gru-whisper",
        "gru",
        {"embedding_dim": 512, "hidden": 64, "token_dropout": 0.1},
        class_weight_power=1.0,
        pretrained=True,
        freeze_embeddings=True,
    ),
)


@dataclass(frozen=True)
class TrainSettings:
    """Loop settings shared by every candidate."""

    max_epochs: int = 30
    patience: int = 6
    batch_size: int = 32
    seeds: int = 1
    """Models per fold (soft-voting ensemble of seeds)."""
    final_seeds: int = 3
    """Models in the shipped ensemble."""


def whisper_token_embeddings(model_dir: Path | None = None) -> npt.NDArray[np.float32]:
    """Whisper base's decoder token embeddings [51865, 512] read from the CT2 model.

    Reads ``model.bin`` of the default Whisper model (CTranslate2 format, version 6)
    without loading the model.

    Raises:
        ValueError: the file has no ``decoder/embeddings/weight`` variable.
    """
    path = (model_dir or default_whisper_dir()) / "model.bin"
    with path.open("rb") as handle:

        def u32() -> int:
            return int(struct.unpack("<I", handle.read(4))[0])

        def text() -> str:
            size = struct.unpack("<H", handle.read(2))[0]
            return handle.read(size).rstrip(b"\0").decode()

        u32()  # binary version
        text()  # spec name
        u32()  # spec revision
        for _ in range(u32()):
            name = text()
            dims = [u32() for _ in range(handle.read(1)[0])]
            dtype = _CT2_DTYPES.get(handle.read(1)[0])
            size = u32()
            if name == "decoder/embeddings/weight" and dtype is not None:
                data = np.frombuffer(handle.read(size), dtype=dtype)
                return data.reshape(dims).astype(np.float32)
            handle.seek(size, 1)
    raise ValueError(f"{path}: no decoder/embeddings/weight")


def tokenize(
    utterances: Sequence[Utterance], tokenizer: TextTokenizer
) -> list[np.ndarray]:
    """Token ids of each utterance's transcript (empty for none)."""
    return [tokenizer.encode(utt.text or "") for utt in utterances]


def vocabulary_of(ids: Sequence[np.ndarray]) -> list[int]:
    """Sorted Whisper ids occurring in ``ids``."""
    seen = set()
    for row in ids:
        seen.update(int(token) for token in row)
    return sorted(token for token in seen if 0 <= token < WHISPER_VOCAB_SIZE)


def _batch(
    ids: Sequence[np.ndarray], index: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, lengths = pad_batch([ids[i] for i in index], np.int64)
    return torch.from_numpy(batch), torch.from_numpy(lengths)


def _class_weights(targets: np.ndarray, n_labels: int, power: float) -> torch.Tensor:
    counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
    weights = (1.0 / np.maximum(counts, 1.0)) ** power
    weights *= n_labels / weights.sum()
    return torch.tensor(weights, dtype=torch.float32)


def build(
    candidate: Candidate,
    vocabulary: list[int],
    n_labels: int,
    embeddings: npt.NDArray[np.float32] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model of ``candidate`` (embeddings initialised when pretrained)."""
    config = {**candidate.config, "n_labels": n_labels, "vocabulary": vocabulary}
    model = build_model(candidate.arch, config)
    if candidate.pretrained:
        if embeddings is None:
            raise ValueError(f"{candidate.name} needs the Whisper token embeddings")
        table = model.embed.weight.data
        rows = torch.from_numpy(embeddings[np.asarray(vocabulary, dtype=np.int64)])
        scale = float(rows.std()) or 1.0
        table[2:] = rows / scale  # unit scale; PAD row stays zero, UNK keeps its init
        table[0] = 0.0
    if candidate.freeze_embeddings:
        model.embed.weight.requires_grad_(False)
    return model, config


def predict(
    model: nn.Module, ids: Sequence[np.ndarray], index: np.ndarray
) -> np.ndarray:
    """Probabilities [len(index), C] in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(index), 256):
            tokens, lengths = _batch(ids, index[start : start + 256])
            out.append(model(tokens, lengths)[0].numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def ngram_features(
    ids: Sequence[np.ndarray], vocabulary: list[int], order: int, buckets: int
) -> Any:
    """Sparse n-gram counts [N, vocab + 2 + buckets], as ``NgramTextModel`` indexes them."""
    from scipy import sparse

    lookup = {token: index + 2 for index, token in enumerate(vocabulary)}
    vocab = len(vocabulary) + 2
    rows, cols = [], []
    for row_index, row in enumerate(ids):
        compact = np.array([lookup.get(int(t), UNK) for t in row], dtype=np.int64)
        found = [compact]
        for n in range(2, order + 1):
            steps = len(compact) - n + 1
            if steps <= 0:
                continue
            code = compact[:steps].copy()
            for offset in range(1, n):
                code = code * _PRIME + compact[offset : offset + steps]
            found.append(np.remainder(code, buckets) + vocab)
        columns = np.concatenate(found)
        rows.append(np.full(len(columns), row_index))
        cols.append(columns)
    row_ids = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col_ids = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = np.ones(len(row_ids), dtype=np.float64)
    shape = (len(ids), vocab + buckets)
    return sparse.csr_matrix((data, (row_ids, col_ids)), shape=shape)


def _tfidf(counts: Any, idf: np.ndarray) -> Any:
    from sklearn.preprocessing import normalize

    tf = counts.copy()
    tf.data = 1.0 + np.log(tf.data)
    return normalize(tf.multiply(idf[None, :]).tocsr(), norm="l2")


def _fit_ngram(
    candidate: Candidate,
    ids: Sequence[np.ndarray],
    targets: np.ndarray,
    train: np.ndarray,
    n_labels: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Logistic regression on TF-IDF token n-grams, copied into ``NgramTextModel``."""
    from sklearn.linear_model import LogisticRegression

    vocabulary = vocabulary_of([ids[i] for i in train])
    config = {**candidate.config, "n_labels": n_labels, "vocabulary": vocabulary}
    model = build_model("ngram", config)
    counts = ngram_features(
        [ids[i] for i in train], vocabulary, model.order, model.buckets
    )
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    idf = np.where(df > 0, np.log((1 + len(train)) / (1 + df)) + 1.0, 0.0)
    idf[0] = 0.0  # PAD
    weights = _class_weights(targets[train], n_labels, candidate.class_weight_power)
    classifier = LogisticRegression(
        C=float(candidate.config.get("C", 1.0)),
        max_iter=3000,
        class_weight=dict(enumerate(weights.tolist())),
    )
    classifier.fit(_tfidf(counts, idf), targets[train])
    coef = np.zeros((n_labels, idf.shape[0]), np.float32)
    bias = np.full(n_labels, -30.0, np.float32)  # a class absent from training
    coef[classifier.classes_] = classifier.coef_
    bias[classifier.classes_] = classifier.intercept_
    with torch.no_grad():
        model.idf.copy_(torch.from_numpy(idf.astype(np.float32)))
        model.out.weight.copy_(torch.from_numpy(coef))
        model.out.bias.copy_(torch.from_numpy(bias))
    return model.eval(), config


def fit(
    candidate: Candidate,
    ids: Sequence[np.ndarray],
    targets: np.ndarray,
    train: np.ndarray,
    *,
    n_labels: int,
    settings: TrainSettings,
    seed: int,
    validation: np.ndarray | None = None,
    epochs: int | None = None,
    embeddings: npt.NDArray[np.float32] | None = None,
) -> tuple[nn.Module, dict[str, Any], int, float]:
    """Train one model; early-stops on ``validation`` UA when given.

    Returns:
        (model at its best epoch, its config, best epoch count, best validation UA).
    """
    if candidate.arch == "ngram":
        model, config = _fit_ngram(candidate, ids, targets, train, n_labels)
        if validation is None:
            return model, config, 0, float("nan")
        probs = predict(model, ids, validation)
        return model, config, 0, _ua(targets[validation], probs.argmax(1), n_labels)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocabulary = vocabulary_of([ids[i] for i in train])
    model, config = build(candidate, vocabulary, n_labels, embeddings)
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=candidate.lr,
        weight_decay=candidate.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss(
        weight=_class_weights(targets[train], n_labels, candidate.class_weight_power)
    )
    max_epochs = epochs or settings.max_epochs
    best = (-1.0, 0, {k: v.clone() for k, v in model.state_dict().items()})
    stale = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = rng.permutation(train)
        for start in range(0, len(order), settings.batch_size):
            tokens, lengths = _batch(ids, order[start : start + settings.batch_size])
            logits, _ = model.logits(tokens, lengths)
            loss = loss_fn(
                logits,
                torch.from_numpy(targets[order[start : start + settings.batch_size]]),
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if validation is None:
            continue
        probs = predict(model, ids, validation)
        ua = _ua(targets[validation], probs.argmax(1), n_labels)
        if ua > best[0]:
            best = (ua, epoch, {k: v.clone() for k, v in model.state_dict().items()})
            stale = 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if validation is not None:
        model.load_state_dict(best[2])
        return model.eval(), config, best[1], best[0]
    return model.eval(), config, max_epochs, float("nan")


def _ua(reference: np.ndarray, predicted: np.ndarray, n_labels: int) -> float:
    recalls = [
        float(np.mean(predicted[reference == label] == label))
        for label in range(n_labels)
        if np.any(reference == label)
    ]
    return float(np.mean(recalls))


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
    ids: Sequence[np.ndarray],
    labels: list[str],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    candidates: Sequence[Candidate],
    settings: TrainSettings,
    *,
    embeddings: npt.NDArray[np.float32] | None,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Nested evaluation of every candidate.

    Returns:
        Per candidate: ``inner_ua`` (mean inner-validation UA, the selection score),
        ``epochs`` (best epoch per fold and seed), ``predictions`` (pooled test-fold
        labels), ``scores`` (pooled test metrics).
    """
    targets = np.array([labels.index(utt.label) for utt in utterances], dtype=np.int64)
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
                _, _, best_epoch, best_ua = fit(
                    candidate,
                    ids,
                    targets,
                    inner_train,
                    n_labels=len(labels),
                    settings=settings,
                    seed=seed + 100 * member,
                    validation=validation,
                    embeddings=embeddings,
                )
                inner.append(best_ua)
                epochs.append(best_epoch)
                # Refit on every training speaker for the epochs the inner split chose.
                model, _, _, _ = fit(
                    candidate,
                    ids,
                    targets,
                    np.asarray(train),
                    n_labels=len(labels),
                    settings=settings,
                    seed=seed + 100 * member,
                    epochs=max(1, best_epoch),
                    embeddings=embeddings,
                )
                probs += predict(model, ids, np.asarray(test))
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
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

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


def _folds(utterances: Sequence[Utterance], protocol: str, seed: int) -> list[Any]:
    if protocol == "loso":
        return speaker_folds(utterances, kind="loso")
    if protocol.startswith("kfold") and protocol[5:].isdigit():
        return speaker_folds(utterances, kind="kfold", k=int(protocol[5:]), seed=seed)
    raise ValueError(f"unknown protocol {protocol!r}; use kfoldN (e.g. kfold5) or loso")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training text", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="KIND:PATH with transcripts (repeatable), e.g. shemo-text:FILE",
    )
    parser.add_argument(
        "--protocol", default="kfold5", help="kfoldN or loso (default kfold5)"
    )
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


def main(argv: list[str] | None = None) -> int:
    """Evaluate the candidates, fit the chosen one on every speaker, save a checkpoint."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m training text " + shlex.join(
        sys.argv[2:] if argv is None else argv
    )
    by_name = {candidate.name: candidate for candidate in CANDIDATES}
    try:
        chosen = [by_name[name] for name in args.candidates.split(",") if name]
        utterances = [utt for spec in args.data for utt in load_dataset(spec)]
        utterances = [utt for utt in utterances if utt.text]
        if not utterances:
            raise ValueError(
                "no utterances with transcripts in " + ", ".join(args.data)
            )
        folds = _folds(utterances, args.protocol, args.seed)
    except KeyError as err:
        print(
            f"error: unknown candidate {err}; known: {', '.join(by_name)}",
            file=sys.stderr,
        )
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    ids = tokenize(utterances, tokenizer)
    labels = sorted({utt.label for utt in utterances})
    languages = sorted({utt.language for utt in utterances if utt.language})
    embeddings = (
        whisper_token_embeddings() if any(c.pretrained for c in chosen) else None
    )
    settings = TrainSettings(
        max_epochs=args.max_epochs, seeds=args.seeds, final_seeds=args.final_seeds
    )
    results = cross_validate(
        utterances,
        ids,
        labels,
        folds,
        chosen,
        settings,
        embeddings=embeddings,
        seed=args.seed,
    )
    best = max(chosen, key=lambda c: results[c.name]["inner_ua"])
    metrics: dict[str, Any] = {
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
        targets = np.array(
            [labels.index(utt.label) for utt in utterances], dtype=np.int64
        )
        everyone = np.arange(len(utterances))
        members, config = [], {}
        final_seeds = 1 if best.arch == "ngram" else settings.final_seeds
        for member in range(final_seeds):
            model, config, _, _ = fit(
                best,
                ids,
                targets,
                everyone,
                n_labels=len(labels),
                settings=settings,
                seed=args.seed + 100 * member,
                epochs=epochs,
                embeddings=embeddings,
            )
            members.append(model.state_dict())
        checkpoint = {
            "kind": "text",
            "arch": best.arch,
            "config": config,
            "state_dict": members[0],
            "ensemble": members if len(members) > 1 else None,
            "labels": labels,
            "languages": languages,
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
