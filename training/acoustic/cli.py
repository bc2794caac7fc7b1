"""Train and evaluate the acoustic emotion model speaker-independently.

``python -m training acoustic --data emodb:PATH --data ravdess:PATH [--arch attn]
[--protocol loso|kfold|loco] [--labels fold|union|mask] [--calibrate-with OOF.npz]
[--final] --out artifacts/acoustic [--json]``

Features are of the utterance the daemon's VAD and segmenter cut from each clip
(``--view daemon``, the default; ``training.daemon_path``). ``loco`` holds out one
corpus at a time. Held-out reports (``training.acoustic.report``) are per corpus;
out-of-fold predictions are saved as ``oof-PROTOCOL.npz``. The final checkpoint
carries the temperature (fit on this run's and ``--calibrate-with``'s out-of-fold
predictions) that export bakes into the graph. ``--final`` fits every seed on all
speakers for the median chosen epoch count and writes the checkpoint read by
``python -m export``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamser.recognition.features import FrontEnd
from training.acoustic.data import TrainingData, load_data, normalise_by_corpus
from training.acoustic.folds import cross_validate, fit_final
from training.acoustic.options import (
    DEFAULT_CONFIG,
    FEATURE_KIND,
    LABEL_MODES,
    TrainOptions,
)
from training.acoustic.report import METRIC_ROWS, pooled_temperature
from training.datasets import data_parser
from training.features_cache import VIEWS, AugmentOptions, front_end_of
from training.metrics import Scores, format_confusion

_LOGGER = logging.getLogger(__package__)  # "training.acoustic", as before the split


def _layer_list(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of layers: {text!r}") from None
    if not layers:
        raise argparse.ArgumentTypeError(f"not a list of layers: {text!r}")
    return layers  # the prefix graph checks them against the Whisper model


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = data_parser("acoustic", __doc__.split("\n")[0])
    _add_run_arguments(parser)
    _add_evaluation_arguments(parser)
    _add_feature_arguments(parser)
    _add_output_arguments(parser)
    return parser.parse_args(argv)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, the head, its settings and the evaluation protocol."""
    parser.add_argument(
        "--arch", default="stats", choices=sorted(FEATURE_KIND), help="default: stats"
    )
    parser.add_argument(
        "--config", default="{}", help="JSON overrides of the architecture config"
    )
    parser.add_argument("--train", default="{}", help="JSON overrides of TrainOptions")
    parser.add_argument(
        "--protocol",
        default="loso",
        choices=("loso", "kfold", "loco", "none"),
        help="evaluation (default loso; kfold: speaker-grouped folds over all "
        "corpora; loco: leave one corpus out; none: skip)",
    )
    parser.add_argument(
        "--folds", type=int, default=5, help="folds for --protocol kfold"
    )


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The final fit, parallel folds and the telephone channel."""
    parser.add_argument(
        "--final",
        action="store_true",
        help="fit on all speakers and write the checkpoint",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="final fit epochs (default: median chosen by the evaluation's inner validation, else 20)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="folds trained in parallel (default 2)"
    )
    parser.add_argument(
        "--no-telephone",
        action="store_true",
        help="do not also score held-out speakers through a telephone channel "
        "(8 kHz mu-law)",
    )


def _add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """Labels, the audio the features describe, and the front end."""
    parser.add_argument(
        "--labels",
        default="fold",
        choices=LABEL_MODES,
        help="fold: calm and boredom read as neutral (default); union: every "
        "corpus's labels; mask: union, each corpus's loss over its own labels only",
    )
    parser.add_argument(
        "--view",
        default="daemon",
        choices=VIEWS,
        help="train and score on the daemon's utterances (default) or whole clips",
    )
    parser.add_argument(
        "--score-view",
        default=None,
        choices=VIEWS,
        help="score the held-out utterances on this view (default: --view); "
        "daemon with --view clip scores a whole-clip model as the daemon runs it",
    )
    parser.add_argument(
        "--layers",
        type=_layer_list,
        default=None,
        help="Whisper encoder layers the stats/attn heads read, e.g. 2,3 (default: "
        "the shipped front end's); the exported graph runs Whisper up to the deepest",
    )
    parser.add_argument(
        "--mel-level",
        type=float,
        default=None,
        help="shift each utterance's log-mel to this level of its louder half of "
        "frames before the Whisper layers, as a gain normalisation (0 is about "
        "-20 dBFS speech; default: none)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Calibration and what is written."""
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="temperature baked into the exported graph (default: fit on the "
        "evaluation's out-of-fold predictions, else 1)",
    )
    parser.add_argument(
        "--calibrate-with",
        action="append",
        type=Path,
        default=[],
        help="out-of-fold predictions (oof-*.npz of earlier runs on the same data "
        "and labels, e.g. --protocol loco) that the temperature is fit on too, so "
        "it serves unseen speakers and unseen corpora alike (repeatable)",
    )
    parser.add_argument("--name", default="emotion-acoustic-v4", help="checkpoint name")
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts/acoustic"), help="output folder"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _train_options(args: argparse.Namespace) -> tuple[dict[str, Any], TrainOptions]:
    """``--config`` overrides and the ``TrainOptions`` of ``--train``.

    Raises:
        ValueError: bad JSON or an unknown option.
    """
    try:
        config_over = json.loads(args.config)
        train_over = json.loads(args.train)
        for key in ("seeds", "history_sizes", "history_mixes"):
            if key in train_over:
                train_over[key] = tuple(train_over[key])
        options = replace(TrainOptions(), **train_over)
        _augment_options(options)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"bad --config/--train JSON: {err}") from err
    return config_over, options


def _augment_options(options: TrainOptions) -> AugmentOptions:
    """How the augmented copies are made (``TrainOptions.augment``)."""
    return AugmentOptions(
        **{
            key: tuple(value) if isinstance(value, list) else value
            for key, value in options.augment.items()
        }
    )


def _evaluate(
    args: argparse.Namespace,
    data: TrainingData,
    config: dict[str, Any],
    options: TrainOptions,
) -> dict[str, Any]:
    """Cross-validate as ``--protocol`` says, logging each corpus's UA and WA."""
    evaluation = cross_validate(
        data, args.arch, config, options, args.protocol, args.folds, args.jobs
    )
    for key, channel in METRIC_ROWS:
        for corpus, s in evaluation.get(key, {}).items():
            _LOGGER.info(
                "%s %s%s: UA %.1f WA %.1f",
                args.protocol,
                corpus,
                channel,
                100 * s["ua"],
                100 * s["wa"],
            )
    return evaluation


def _save_oof(
    args: argparse.Namespace, data: TrainingData, oof: Any, protocol: str
) -> None:
    """Write the out-of-fold predictions to ``--out``/oof-PROTOCOL.npz."""
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out / f"oof-{protocol}.npz",
        probs=oof["probs"],
        affect=oof["affect"] if oof["affect"] is not None else np.zeros(0),
        y=data.y,
        ids=np.array([u.utt_id for u in data.utterances]),
        labels=np.array(data.labels),
    )


def _checkpoint(
    args: argparse.Namespace,
    data: TrainingData,
    config: dict[str, Any],
    options: TrainOptions,
    report: dict[str, Any],
    front_end: FrontEnd,
    command: str,
) -> dict[str, Any]:
    """Fit the final model (``--final``) and return its checkpoint."""
    evaluation = report.get("evaluation", {})
    chosen = evaluation.get("epochs_chosen")
    epochs = args.epochs or (int(np.median(chosen)) if chosen else 20)
    final_start = time.monotonic()
    states = fit_final(data, args.arch, config, options, epochs)
    report["final"] = {
        "epochs": epochs,
        "wall_s": round(time.monotonic() - final_start, 1),
    }
    checkpoint = {
        "kind": "acoustic",
        "name": args.name,
        "arch": args.arch,
        "config": config,
        "state_dict": states[0],
        "labels": data.labels,
        "front_end": front_end.to_dict(),
        "metrics": {
            f"{corpus}{suffix}": scores
            for key, suffix in METRIC_ROWS
            for corpus, scores in evaluation.get(key, {}).items()
        },
        "data": list(args.data),
        "protocol": evaluation.get("protocol", "none"),
        "command": command,
        "train": asdict(options),
        "final_epochs": epochs,
        "temperature": (
            args.temperature
            if args.temperature is not None
            else report["calibration"]["temperature"]
            if "calibration" in report
            else evaluation.get("temperature", 1.0)
        ),
        "label_mode": args.labels,
        "view": args.view,
        "held_out": evaluation.get("held_out"),
    }
    if len(states) > 1:
        checkpoint["ensemble"] = states
    return checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training acoustic``)."""
    args = _parse(argv)
    command = "python -m training acoustic " + " ".join(
        sys.argv[2:] if argv is None else argv
    )
    try:
        config_over, options = _train_options(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        front_end = front_end_of(FEATURE_KIND[args.arch], args.layers, args.mel_level)
        data = load_data(
            args.data,
            FEATURE_KIND[args.arch],
            options.copies,
            telephone=args.protocol != "none" and not args.no_telephone,
            labels_mode=args.labels,
            view=args.view,
            front_end=front_end,
            augment=_augment_options(options),
            score_view=args.score_view,
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if options.corpus_norm:
        if args.protocol == "none":
            print(
                "error: corpus_norm is a measurement under a protocol; the runtime "
                "has no per-corpus statistics to export",
                file=sys.stderr,
            )
            return 2
        try:
            normalise_by_corpus(data, options.corpus_norm)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    config = {**DEFAULT_CONFIG[args.arch], **config_over, "n_labels": len(data.labels)}
    config["input_dim"] = int(data.copies[0][0].shape[1])
    started = time.monotonic()
    report: dict[str, Any] = {
        "arch": args.arch,
        "config": config,
        "train": asdict(options),
        "labels": data.labels,
        "label_mode": args.labels,
        "view": args.view,
        "score_view": args.score_view or args.view,
    }
    if args.protocol != "none":
        report["evaluation"] = _evaluate(args, data, config, options)
    oof = report.get("evaluation", {}).pop("oof", None)
    if oof is not None and args.out:
        _save_oof(args, data, oof, report["evaluation"]["protocol"])
    if args.calibrate_with:
        report["calibration"] = pooled_temperature(
            args.calibrate_with, data, oof["probs"] if oof is not None else None
        )
    if args.final:
        checkpoint = _checkpoint(
            args, data, config, options, report, front_end, command
        )
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{args.name}.pt"
        torch.save(checkpoint, path)
        report["checkpoint"] = str(path)
        _LOGGER.info("wrote %s", path)
    report["wall_s"] = round(time.monotonic() - started, 1)
    _print(report, args.json)
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    """The report as one JSON object, or each corpus's scores and confusion."""
    if as_json:
        print(json.dumps(report))
    elif "evaluation" in report:
        for corpus, s in report["evaluation"]["per_corpus"].items():
            print(f"{corpus}: UA {100 * s['ua']:.1f} WA {100 * s['wa']:.1f} n {s['n']}")
            print(format_confusion(Scores(**s)))
