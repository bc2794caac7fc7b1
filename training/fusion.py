"""``python -m training fusion``: attention fusion of acoustic and text embeddings.

No corpus here has both audio and emotionally informative text: ShEMO's audio is
absent, and RAVDESS/EMO-DB speak fixed, emotion-neutral sentences. So the fusion model
is trained on RAVDESS + EMO-DB acoustic embeddings, each paired per epoch with one of:

- no text (``text_present`` 0: another language, ASR off, empty transcript);
- its own sentence through the text model (present but uninformative);
- for labels the text model knows, a ShEMO transcript of the same label through the
  text model (label-matched pairing across corpora; synthetic agreement).

Evaluation (``--protocol kfold5``): speaker-grouped folds over the acoustic corpora.
Per fold, a small acoustic model is trained on the training speakers (the shipped
acoustic model has seen every speaker, so its embeddings cannot be evaluated on
held-out speakers), and a text model of the shipped configuration is trained on a
fixed 80% of ShEMO speakers; held-out utterances are paired with transcripts of the
other 20%. Acoustic-only, text-only and fused scores are reported side by side. The
shipped fusion model is then fit on every speaker against the shipped acoustic and
text graphs' embeddings.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamser.recognition.features import TextTokenizer, pad_batch
from streamser.recognition.models import OnnxModel
from streamser.recognition.whisper_model import default_whisper_dir
from training.datasets import Utterance, load_dataset, speaker_folds
from training.fusion_models import build_model
from training.metrics import score

_LOGGER = logging.getLogger(__name__)

MODES: Final = ("absent", "own", "matched")
"""How an acoustic utterance's text is chosen in a training epoch."""


@dataclass(frozen=True)
class FusionSettings:
    """Training settings of the fusion head."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    mode_probabilities: tuple[float, float, float] = (0.3, 0.2, 0.5)
    """Chance of absent / own-sentence / label-matched text per utterance and epoch."""
    dim: int = 64
    text_dropout: float = 0.2
    """Modality dropout inside the model, on top of the absent mode."""


@dataclass
class Embeddings:
    """Embeddings of one model setting (a fold's models or the shipped ones)."""

    acoustic: npt.NDArray[np.float32]
    """[N, Ea] of the acoustic utterances."""
    acoustic_probs: npt.NDArray[np.float32]
    """[N, C] acoustic model probabilities (acoustic labels)."""
    own_text: npt.NDArray[np.float32]
    """[N, Et] text-model embeddings of each utterance's own sentence."""
    pool_text: npt.NDArray[np.float32]
    """[M, Et] text-model embeddings of the ShEMO transcripts in the pairing pool."""
    pool_probs: npt.NDArray[np.float32]
    """[M, Ct] text-model probabilities of the pool (text labels)."""
    pool_labels: list[str]
    """Labels of the pool transcripts."""


def run_graph(
    model: OnnxModel, rows: Sequence[np.ndarray], *, text: bool, batch_size: int = 32
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(probs, embedding) of an exported acoustic or text graph over variable rows
    (one row per call for a graph with int8 Whisper layers, as the runtime runs it;
    an acoustic graph that adapts to the speaker hears every row alone)."""
    names = ("token_ids", "lengths") if text else ("features", "lengths")
    width = next(
        (i.shape[-1] for i in model.session.get_inputs() if i.name == "baseline"), 0
    )
    front_end = model.contract.front_end
    if front_end is not None and front_end.runs_whisper_layers:
        batch_size = 1
    probs, embeddings = [], []
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        values, lengths = pad_batch(chunk, np.int64 if text else np.float32)
        inputs = {names[0]: values, names[1]: lengths}
        if width:
            inputs["baseline"] = np.zeros((len(chunk), width), np.float32)
            inputs["baseline_count"] = np.zeros(len(chunk), np.float32)
        out = model.run(inputs)
        probs.append(out["probs"])
        embeddings.append(out["embedding"])
    return np.concatenate(probs), np.concatenate(embeddings)


def run_module(
    module: nn.Module, rows: Sequence[np.ndarray], *, text: bool, batch_size: int = 32
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(probs, embedding) of a torch acoustic or text model over variable rows."""
    module.eval()
    probs, embeddings = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = list(rows[start : start + batch_size])
            values, lengths = pad_batch(chunk, np.int64 if text else np.float32)
            p, e = module(torch.from_numpy(values), torch.from_numpy(lengths))
            probs.append(p.numpy())
            embeddings.append(e.numpy())
    return np.concatenate(probs), np.concatenate(embeddings)


def train_acoustic_fold(
    features: Sequence[np.ndarray],
    targets: np.ndarray,
    train: np.ndarray,
    *,
    arch: str,
    config: dict[str, Any],
    epochs: int,
    seed: int,
) -> nn.Module:
    """A small acoustic model of ``training.acoustic_models`` trained on ``train``."""
    from training.acoustic_models import build_model as build_acoustic

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_acoustic(arch, config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    counts = np.bincount(targets[train], minlength=config["n_labels"]).astype(float)
    weights = torch.tensor(
        (1.0 / np.maximum(counts, 1)) / (1.0 / np.maximum(counts, 1)).mean(),
        dtype=torch.float32,
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(train)
        for start in range(0, len(order), 32):
            index = order[start : start + 32]
            values, lengths = pad_batch([features[i] for i in index], np.float32)
            logits, _ = model.logits(
                torch.from_numpy(values), torch.from_numpy(lengths)
            )
            loss = loss_fn(logits, torch.from_numpy(targets[index]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def sample_pairs(
    embeddings: Embeddings,
    labels: list[str],
    index: np.ndarray,
    targets: np.ndarray,
    rng: np.random.Generator,
    probabilities: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text embedding and presence for each acoustic utterance of ``index`` (one epoch)."""
    by_label: dict[str, np.ndarray] = {
        label: np.flatnonzero(np.asarray(embeddings.pool_labels) == label)
        for label in set(embeddings.pool_labels)
    }
    width = embeddings.pool_text.shape[1]
    text = np.zeros((len(index), width), np.float32)
    present = np.zeros(len(index), np.float32)
    modes = rng.choice(len(MODES), size=len(index), p=probabilities)
    for row, (utt, mode) in enumerate(zip(index, modes, strict=True)):
        pool = by_label.get(labels[targets[utt]], np.zeros(0, np.int64))
        if MODES[mode] == "matched" and len(pool):
            text[row] = embeddings.pool_text[rng.choice(pool)]
            present[row] = 1.0
        elif MODES[mode] in ("own", "matched"):
            text[row] = embeddings.own_text[utt]
            present[row] = 1.0
    return text, present


def train_fusion(
    embeddings: Embeddings,
    labels: list[str],
    targets: np.ndarray,
    train: np.ndarray,
    settings: FusionSettings,
    *,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fit the fusion head on ``train`` utterances with freshly paired text each epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = {
        "n_labels": len(labels),
        "acoustic_dim": int(embeddings.acoustic.shape[1]),
        "text_dim": int(embeddings.pool_text.shape[1]),
        "dim": settings.dim,
        "text_dropout": settings.text_dropout,
    }
    model = build_model("attention", config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-3)
    counts = np.bincount(targets[train], minlength=len(labels)).astype(float)
    inverse = 1.0 / np.maximum(counts, 1)
    loss_fn = nn.CrossEntropyLoss(
        weight=torch.tensor(inverse / inverse.mean(), dtype=torch.float32)
    )
    for _ in range(settings.epochs):
        model.train()
        order = rng.permutation(train)
        text, present = sample_pairs(
            embeddings, labels, order, targets, rng, settings.mode_probabilities
        )
        for start in range(0, len(order), settings.batch_size):
            part = slice(start, start + settings.batch_size)
            logits = model.logits(
                torch.from_numpy(embeddings.acoustic[order[part]]),
                torch.from_numpy(text[part]),
                torch.from_numpy(present[part]),
            )
            loss = loss_fn(logits, torch.from_numpy(targets[order[part]]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval(), config


def fused_probs(
    model: nn.Module, acoustic: np.ndarray, text: np.ndarray, present: np.ndarray
) -> np.ndarray:
    """Fusion probabilities in eval mode."""
    with torch.no_grad():
        return model(
            torch.from_numpy(acoustic),
            torch.from_numpy(text),
            torch.from_numpy(present),
        ).numpy()


def _text_candidate(text_checkpoint: dict[str, Any]) -> Any:
    from training.text import Candidate

    info = dict(text_checkpoint.get("training") or {})
    fields = set(Candidate.__dataclass_fields__)
    return Candidate(**{key: value for key, value in info.items() if key in fields})


def _shemo_split(
    texts: Sequence[Utterance], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed speaker-grouped 80/20 split of the ShEMO transcripts (pool A, pool B)."""
    train, test = speaker_folds(texts, kind="kfold", k=5, seed=seed)[0]
    return np.asarray(train), np.asarray(test)


def _matched_pairs(
    labels: list[str],
    targets: np.ndarray,
    index: np.ndarray,
    pool_labels: Sequence[str],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """For utterances of ``index`` whose label the pool has: (those utterances, pool rows)."""
    by_label: dict[str, np.ndarray] = {
        label: np.flatnonzero(np.asarray(pool_labels) == label)
        for label in set(pool_labels)
    }
    rows, picks = [], []
    for utt in index:
        pool = by_label.get(labels[targets[utt]])
        if pool is not None and len(pool):
            rows.append(utt)
            picks.append(int(rng.choice(pool)))
    return np.asarray(rows, np.int64), np.asarray(picks, np.int64)


def cross_validate(
    utterances: Sequence[Utterance],
    features: Sequence[np.ndarray],
    labels: list[str],
    texts: Sequence[Utterance],
    text_checkpoint: dict[str, Any],
    tokenizer: TextTokenizer,
    settings: FusionSettings,
    *,
    protocol: str,
    fold_epochs: int,
    feature_kind: str,
    seed: int,
) -> dict[str, Any]:
    """Acoustic-only, text-only and fused scores on held-out speakers (see module doc)."""
    from training.text import TrainSettings, fit, whisper_token_embeddings

    targets = np.array([labels.index(utt.label) for utt in utterances], dtype=np.int64)
    text_labels = list(text_checkpoint["labels"])
    text_ids = [tokenizer.encode(utt.text or "") for utt in texts]
    own_ids = [tokenizer.encode(utt.text or "") for utt in utterances]
    pool_a, pool_b = _shemo_split(texts, seed)
    candidate = _text_candidate(text_checkpoint)
    text_targets = np.array([text_labels.index(utt.label) for utt in texts], np.int64)
    epochs = int(text_checkpoint.get("training", {}).get("epochs", 10))
    embeddings = whisper_token_embeddings() if candidate.pretrained else None
    text_model, _, _, _ = fit(
        candidate,
        text_ids,
        text_targets,
        pool_a,
        n_labels=len(text_labels),
        settings=TrainSettings(),
        seed=seed,
        epochs=epochs,
        embeddings=embeddings,
    )
    a_probs, a_text = run_module(text_model, [text_ids[i] for i in pool_a], text=True)
    b_probs, b_text = run_module(text_model, [text_ids[i] for i in pool_b], text=True)
    _, own_text = run_module(text_model, own_ids, text=True)
    b_labels = [texts[i].label for i in pool_b]
    kind, k = ("loso", 0) if protocol == "loso" else ("kfold", int(protocol[5:]))
    folds = speaker_folds(utterances, kind=kind, k=k or 5, seed=seed)
    arch = "cnn" if feature_kind == "mel" else "attn"
    dim = int(features[0].shape[1])
    names = (
        "acoustic",
        "fused_absent",
        "fused_own",
        "text_matched",
        "acoustic_matched",
        "fused_matched",
    )
    predicted: dict[str, list[int]] = {name: [] for name in names}
    reference: dict[str, list[int]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for fold_index, (train, test) in enumerate(folds):
        started = time.monotonic()
        acoustic_model = train_acoustic_fold(
            features,
            targets,
            np.asarray(train),
            arch=arch,
            config={"n_labels": len(labels), "input_dim": dim},
            epochs=fold_epochs,
            seed=seed + fold_index,
        )
        probs, acoustic = run_module(acoustic_model, features, text=False)
        fold_embeddings = Embeddings(
            acoustic=acoustic,
            acoustic_probs=probs,
            own_text=own_text,
            pool_text=a_text,
            pool_probs=a_probs,
            pool_labels=[texts[i].label for i in pool_a],
        )
        fusion, _ = train_fusion(
            fold_embeddings, labels, targets, np.asarray(train), settings, seed=seed
        )
        test = np.asarray(test)
        zeros = np.zeros((len(test), own_text.shape[1]), np.float32)
        outputs = {
            "acoustic": probs[test],
            "fused_absent": fused_probs(
                fusion, acoustic[test], zeros, np.zeros(len(test), np.float32)
            ),
            "fused_own": fused_probs(
                fusion, acoustic[test], own_text[test], np.ones(len(test), np.float32)
            ),
        }
        for name, value in outputs.items():
            predicted[name] += value.argmax(1).tolist()
            reference[name] += targets[test].tolist()
        rows, picks = _matched_pairs(labels, targets, test, b_labels, rng)
        if len(rows):
            # Text-only: the text model's best label among those the acoustic one has.
            shared = np.array([label in labels for label in text_labels])
            best = np.where(shared, b_probs[picks], -1.0).argmax(1)
            text_pred = [labels.index(text_labels[i]) for i in best]
            fused = fused_probs(
                fusion, acoustic[rows], b_text[picks], np.ones(len(rows), np.float32)
            )
            for name, value in (
                ("text_matched", text_pred),
                ("acoustic_matched", probs[rows].argmax(1).tolist()),
                ("fused_matched", fused.argmax(1).tolist()),
            ):
                predicted[name] += list(value)
                reference[name] += targets[rows].tolist()
        _LOGGER.info(
            "fusion fold %d/%d done (%.0fs)",
            fold_index + 1,
            len(folds),
            time.monotonic() - started,
        )
    results: dict[str, Any] = {}
    for name in names:
        if reference[name]:
            results[name] = score(
                [labels[i] for i in reference[name]],
                [labels[i] for i in predicted[name]],
                labels,
            ).to_dict()
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training fusion", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="acoustic corpora KIND:PATH (repeatable)",
    )
    parser.add_argument(
        "--text-data", required=True, help="ShEMO transcripts KIND:PATH"
    )
    parser.add_argument(
        "--acoustic-model",
        type=Path,
        required=True,
        help="exported acoustic graph (.onnx) the fusion is fit against",
    )
    parser.add_argument(
        "--text-model",
        type=Path,
        required=True,
        help="exported text graph (.onnx) the fusion is fit against",
    )
    parser.add_argument(
        "--text-checkpoint",
        type=Path,
        help="text checkpoint (its configuration is retrained per fold); "
        "required unless --no-eval",
    )
    parser.add_argument(
        "--protocol", default="kfold5", help="kfoldN or loso (default kfold5)"
    )
    parser.add_argument(
        "--fold-epochs",
        type=int,
        default=12,
        help="epochs of each fold's acoustic model (default 12)",
    )
    parser.add_argument(
        "--epochs", type=int, default=40, help="fusion epochs (default 40)"
    )
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-eval", action="store_true", help="skip cross-validation")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate fusion on held-out speakers, then fit it on all and save a checkpoint."""
    from training.features_cache import graph_input_kind, kind_of, load_features

    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m training fusion " + shlex.join(
        sys.argv[2:] if argv is None else argv
    )
    try:
        if not args.no_eval and args.text_checkpoint is None:
            raise ValueError(
                "--text-checkpoint is needed for the evaluation (or --no-eval)"
            )
        if args.protocol != "loso" and not (
            args.protocol.startswith("kfold") and args.protocol[5:].isdigit()
        ):
            raise ValueError(f"unknown protocol {args.protocol!r}; use kfoldN or loso")
        acoustic_graph = OnnxModel(args.acoustic_model, device="cpu")
        text_graph = OnnxModel(args.text_model, device="cpu")
        utterances = [utt for spec in args.data for utt in load_dataset(spec)]
        texts = [utt for utt in load_dataset(args.text_data) if utt.text]
        labels = list(acoustic_graph.contract.labels)
        if "neutral" in labels:
            # an acoustic graph that reads calm and boredom as neutral (v3)
            from dataclasses import replace

            from training.acoustic import FOLD_TO_NEUTRAL

            utterances = [
                replace(u, label=FOLD_TO_NEUTRAL.get(u.label, u.label))
                if u.label not in labels
                else u
                for u in utterances
            ]
        unknown = sorted({utt.label for utt in utterances} - set(labels))
        if unknown:
            raise ValueError(
                f"labels {unknown} are not outputs of {args.acoustic_model}"
            )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # ModelError and friends: one clear line
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        feature_kind = kind_of(acoustic_graph.contract.front_end)
    except ValueError as err:
        print(f"error: {args.acoustic_model}: {err}", file=sys.stderr)
        return 2
    features = load_features(
        utterances,
        kind=feature_kind,
        copy=0,
        front_end=acoustic_graph.contract.front_end
        if feature_kind == "encoder"
        else None,
    )
    graph_kind = graph_input_kind(acoustic_graph.contract.front_end)
    graph_rows = (
        features
        if graph_kind == feature_kind
        else load_features(utterances, kind=graph_kind, copy=0)
    )
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    settings = FusionSettings(epochs=args.epochs)
    metrics: dict[str, Any] = {
        "protocol": f"{args.protocol} speaker-grouped over "
        + ", ".join(args.data)
        + f" (seed {args.seed}); per-fold acoustic model ({args.fold_epochs} epochs) and "
        "a text model of the shipped configuration trained on 80% of ShEMO speakers; "
        "matched text drawn from the other 20%",
    }
    if not args.no_eval:
        text_checkpoint = torch.load(
            args.text_checkpoint, map_location="cpu", weights_only=False
        )
        metrics["held_out"] = cross_validate(
            utterances,
            features,
            labels,
            texts,
            text_checkpoint,
            tokenizer,
            settings,
            protocol=args.protocol,
            fold_epochs=args.fold_epochs,
            feature_kind=feature_kind,
            seed=args.seed,
        )
        for name, result in metrics["held_out"].items():
            _LOGGER.info(
                "%-17s WA %.3f UA %.3f F1 %.3f (n=%d)",
                name,
                result["wa"],
                result["ua"],
                result["macro_f1"],
                result["n"],
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_metrics.json").write_text(
        json.dumps(metrics, indent=2), "utf-8"
    )
    targets = np.array([labels.index(utt.label) for utt in utterances], dtype=np.int64)
    acoustic_probs, acoustic = run_graph(acoustic_graph, graph_rows, text=False)
    own_ids = [tokenizer.encode(utt.text or "") for utt in utterances]
    _, own_text = run_graph(text_graph, own_ids, text=True)
    pool_ids = [tokenizer.encode(utt.text or "") for utt in texts]
    pool_probs, pool_text = run_graph(text_graph, pool_ids, text=True)
    embeddings = Embeddings(
        acoustic=acoustic,
        acoustic_probs=acoustic_probs,
        own_text=own_text,
        pool_text=pool_text,
        pool_probs=pool_probs,
        pool_labels=[u.label for u in texts],
    )
    model, config = train_fusion(
        embeddings,
        labels,
        targets,
        np.arange(len(utterances)),
        settings,
        seed=args.seed,
    )
    checkpoint = {
        "kind": "fusion",
        "arch": "attention",
        "config": config,
        "state_dict": model.state_dict(),
        "labels": labels,
        "metrics": metrics,
        "data": [*args.data, args.text_data],
        "protocol": metrics["protocol"],
        "command": command,
        "inputs": {
            "acoustic_model": acoustic_graph.contract.name,
            "acoustic_sha256": acoustic_graph.sha256,
            "text_model": text_graph.contract.name,
            "text_sha256": text_graph.sha256,
        },
        "notes": (
            "Trained on RAVDESS + EMO-DB acoustic embeddings paired with no text, their "
            "own fixed sentences, or label-matched ShEMO transcripts (synthetic pairing "
            "across corpora: no corpus here has audio with emotional text). Fit against "
            "the embeddings of the acoustic and text graphs named in inputs; retrain it "
            "when either changes."
        ),
    }
    torch.save(checkpoint, args.out / "fusion.pt")
    _LOGGER.info("saved %s", args.out / "fusion.pt")
    if args.json:
        print(json.dumps(metrics))
    return 0
