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
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from streamser.recognition.features import TextTokenizer
from streamser.recognition.models import OnnxModel
from streamser.recognition.whisper_model import default_whisper_dir
from training.command import (
    PROTOCOL_HELP,
    check_protocol,
    command_parser,
    start_command,
)
from training.datasets import FOLD_TO_NEUTRAL, Utterance, load_dataset
from training.features_cache import graph_input_kind, kind_of, load_features
from training.fusion_fit import Embeddings, FusionSettings, run_graph, train_fusion
from training.fusion_folds import cross_validate

_LOGGER = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "fusion", __doc__, data_help="acoustic corpora KIND:PATH (repeatable)"
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
    parser.add_argument("--protocol", default="kfold5", help=PROTOCOL_HELP)
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


def _load(
    args: argparse.Namespace,
) -> tuple[OnnxModel, OnnxModel, list[Utterance], list[Utterance], list[str]]:
    """The acoustic and text graphs, the acoustic utterances (calm and boredom read
    as neutral where the graph does), the transcripts and the labels.

    Raises:
        ValueError, OSError, streamser.errors.ModelError: bad options, corpora or graphs.
    """
    if not args.no_eval and args.text_checkpoint is None:
        raise ValueError(
            "--text-checkpoint is needed for the evaluation (or --no-eval)"
        )
    check_protocol(args.protocol)
    acoustic_graph = OnnxModel(args.acoustic_model, device="cpu")
    text_graph = OnnxModel(args.text_model, device="cpu")
    utterances = [utt for spec in args.data for utt in load_dataset(spec)]
    texts = [utt for utt in load_dataset(args.text_data) if utt.text]
    labels = list(acoustic_graph.contract.labels)
    if "neutral" in labels:
        # an acoustic graph that reads calm and boredom as neutral (v3)
        utterances = [
            replace(u, label=FOLD_TO_NEUTRAL.get(u.label, u.label))
            if u.label not in labels
            else u
            for u in utterances
        ]
    unknown = sorted({utt.label for utt in utterances} - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not outputs of {args.acoustic_model}")
    return acoustic_graph, text_graph, utterances, texts, labels


def _features(
    utterances: Sequence[Utterance], acoustic_graph: OnnxModel, feature_kind: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The cached features the per-fold acoustic models read, and the rows the
    acoustic graph reads (the same unless the graph runs Whisper layers itself)."""
    front_end = acoustic_graph.contract.front_end
    features = load_features(
        utterances,
        kind=feature_kind,
        copy=0,
        front_end=front_end if feature_kind == "encoder" else None,
    )
    graph_kind = graph_input_kind(front_end)
    graph_rows = (
        features
        if graph_kind == feature_kind
        else load_features(utterances, kind=graph_kind, copy=0)
    )
    return features, graph_rows


def _graph_embeddings(
    acoustic_graph: OnnxModel,
    text_graph: OnnxModel,
    graph_rows: Sequence[np.ndarray],
    utterances: Sequence[Utterance],
    texts: Sequence[Utterance],
    tokenizer: TextTokenizer,
) -> Embeddings:
    """The shipped graphs' embeddings that the shipped fusion is fit against."""
    acoustic_probs, acoustic = run_graph(acoustic_graph, graph_rows, text=False)
    own_ids = [tokenizer.encode(utt.text or "") for utt in utterances]
    _, own_text = run_graph(text_graph, own_ids, text=True)
    pool_ids = [tokenizer.encode(utt.text or "") for utt in texts]
    pool_probs, pool_text = run_graph(text_graph, pool_ids, text=True)
    return Embeddings(
        acoustic=acoustic,
        acoustic_probs=acoustic_probs,
        own_text=own_text,
        pool_text=pool_text,
        pool_probs=pool_probs,
        pool_labels=[u.label for u in texts],
    )


NOTES: Final = (
    "Trained on RAVDESS + EMO-DB acoustic embeddings paired with no text, their "
    "own fixed sentences, or label-matched ShEMO transcripts (synthetic pairing "
    "across corpora: no corpus here has audio with emotional text). Fit against "
    "the embeddings of the acoustic and text graphs named in inputs; retrain it "
    "when either changes."
)
"""The notes of the fusion checkpoint (and so of its card)."""


def _held_out(
    args: argparse.Namespace,
    utterances: Sequence[Utterance],
    features: Sequence[np.ndarray],
    labels: list[str],
    texts: Sequence[Utterance],
    tokenizer: TextTokenizer,
    settings: FusionSettings,
    feature_kind: str,
) -> dict[str, Any]:
    """Scores on held-out speakers (``fusion_folds.cross_validate``), logged."""
    text_checkpoint = torch.load(
        args.text_checkpoint, map_location="cpu", weights_only=False
    )
    held_out = cross_validate(
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
    for name, result in held_out.items():
        _LOGGER.info(
            "%-17s WA %.3f UA %.3f F1 %.3f (n=%d)",
            name,
            result["wa"],
            result["ua"],
            result["macro_f1"],
            result["n"],
        )
    return held_out


def main(argv: list[str] | None = None) -> int:
    """Evaluate fusion on held-out speakers, then fit it on all and save a checkpoint."""
    args = _parser().parse_args(argv)
    command = start_command("python -m training fusion", argv)
    try:
        acoustic_graph, text_graph, utterances, texts, labels = _load(args)
    except Exception as err:  # ModelError and friends: one clear line
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        feature_kind = kind_of(acoustic_graph.contract.front_end)
    except ValueError as err:
        print(f"error: {args.acoustic_model}: {err}", file=sys.stderr)
        return 2
    features, graph_rows = _features(utterances, acoustic_graph, feature_kind)
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
        metrics["held_out"] = _held_out(
            args, utterances, features, labels, texts, tokenizer, settings, feature_kind
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_metrics.json").write_text(
        json.dumps(metrics, indent=2), "utf-8"
    )
    targets = np.array([labels.index(utt.label) for utt in utterances], dtype=np.int64)
    embeddings = _graph_embeddings(
        acoustic_graph, text_graph, graph_rows, utterances, texts, tokenizer
    )
    everyone = np.arange(len(utterances))
    model, config = train_fusion(
        embeddings, labels, targets, everyone, settings, seed=args.seed
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
        "notes": NOTES,
    }
    torch.save(checkpoint, args.out / "fusion.pt")
    _LOGGER.info("saved %s", args.out / "fusion.pt")
    if args.json:
        print(json.dumps(metrics))
    return 0
