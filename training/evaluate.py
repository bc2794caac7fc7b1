"""Evaluate exported emotion graphs through streamser's own runtime code.

``python -m training evaluate --data KIND:PATH --models DIR --json [--plot FILE]
[--no-asr]``

Audio utterances go through ``streamser.recognition.recognizer.Recognizer`` (not the torch
models), so the score is that of the label the daemon itself would emit (ASR, text and
fusion included; ``--no-asr`` for acoustic only). Transcript-only data is scored on the
text model. Prints one JSON object (``wa``, ``ua``, ``macro_f1``,
``per_class_recall``, ``confusion``, ``labels``, ``n``, plus ``per_corpus``);
``--plot`` writes a confusion-matrix PNG. A reference label the models cannot output
still counts, as a miss.

Streams: by default each speaker's utterances are one stream, in a seeded random
order, as a caller's or a microphone user's utterances reach the daemon; an acoustic
model that adapts to the speaker (``streamser.recognition.adaptation``) then reads each utterance
against the speaker's earlier ones, and the report adds ``cold``: the acoustic
model's scores with every utterance heard alone. ``--streams utterance`` makes every
utterance its own stream.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamser.labels import CANONICAL_LABELS
from training.metrics import Scores, format_confusion, score

_LOGGER = logging.getLogger(__name__)


def plot_confusion(scores: Scores, path: Path, title: str = "") -> None:
    """Write the confusion matrix (rows = reference, row-normalised colours) as PNG.

    Raises:
        RuntimeError: matplotlib is missing (it is in the ``train`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'streamser[train]'"
        ) from err
    import numpy as np

    rows = [i for i, r in enumerate(scores.confusion) if sum(r) > 0]
    matrix = np.array(scores.confusion, dtype=float)[rows]
    norm = matrix / matrix.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(scores.labels), 1 + 0.6 * len(rows)))
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(scores.labels)), scores.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [scores.labels[i] for i in rows])
    for r in range(len(rows)):
        for c in range(len(scores.labels)):
            color = "white" if norm[r, c] > 0.5 else "black"
            ax.text(
                c,
                r,
                int(matrix[r, c]),
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(
        title or f"UA {100 * scores.ua:.1f}  WA {100 * scores.wa:.1f}  n {scores.n}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_order(reference: Sequence[str], predicted: Sequence[str]) -> list[str]:
    used = set(reference) | set(predicted)
    return [label for label in CANONICAL_LABELS if label in used] + sorted(
        used - set(CANONICAL_LABELS)
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data", action="append", required=True, help="KIND:PATH (repeatable)"
    )
    parser.add_argument(
        "--models", type=Path, required=True, help="folder of exported graphs"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--plot", type=Path, default=None, help="write a confusion-matrix PNG"
    )
    parser.add_argument("--no-asr", action="store_true", help="acoustic model only")
    parser.add_argument(
        "--detect-language",
        action="store_true",
        help="let Whisper detect the language (default: the corpus's language)",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="first N utterances only (0: all)"
    )
    parser.add_argument(
        "--streams",
        choices=("speaker", "utterance"),
        default="speaker",
        help="one stream per speaker (default, seeded order) or per utterance",
    )
    return parser.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed CLI arguments.

    Raises:
        ValueError: bad dataset or models folder.
        StreamserError: a model fails to load.
    """
    from tqdm import tqdm

    from streamser.recognition.adaptation import SpeakerBaseline
    from streamser.recognition.recognizer import (
        Recognizer,
        RecognizerOptions,
        UtteranceRequest,
    )
    from training.acoustic import speaker_streams
    from training.datasets import load_audio, load_dataset

    if not args.models.is_dir():
        raise ValueError(f"models folder {args.models} does not exist")
    utterances = [u for spec in args.data for u in load_dataset(spec)]
    if args.limit > 0:
        utterances = utterances[: args.limit]
    text_only = all(u.path is None for u in utterances)
    asr = not args.no_asr or text_only
    recognizer = Recognizer(
        RecognizerOptions(model_dir=args.models, asr=asr, device="cpu")
    )
    window = recognizer.adaptation_window if args.streams == "speaker" else 0
    labels: dict[int, str] = {}
    cold: dict[int, str] = {}
    streams = (
        speaker_streams(utterances)
        if args.streams == "speaker"
        else [[i] for i in range(len(utterances))]
    )
    progress = tqdm(total=len(utterances), desc="evaluate", mininterval=5.0)
    for stream in streams:
        baseline = SpeakerBaseline(window)
        for i in stream:
            utt = utterances[i]
            language = None if args.detect_language else utt.language
            if utt.path is None:
                if not utt.text:
                    raise ValueError(
                        f"utterance {utt.utt_id} has neither audio nor text"
                    )
                result = recognizer.text_emotion(utt.text, language)
                if result is None:
                    raise ValueError(
                        f"no text model for language {language!r} in {args.models}"
                    )
                labels[i] = result.label
            else:
                audio = load_audio(utt.path)
                request = UtteranceRequest(audio, language, baseline.snapshot())
                recognition = recognizer.recognize_batch([request])[0]
                baseline.add(recognition.pooled)
                labels[i] = recognition.label
                if window:
                    cold[i] = recognizer.acoustic([audio])[0].scores.label
            progress.update()
    progress.close()
    reference = [u.label for u in utterances]
    predicted = [labels[i] for i in range(len(utterances))]
    corpora = [u.corpus for u in utterances]
    order = _label_order(reference, predicted)
    overall = score(reference, predicted, labels=order)
    report: dict[str, Any] = overall.to_dict()
    report["streams"] = args.streams
    if cold:
        rows = sorted(cold)
        report["cold"] = {
            "what": "the acoustic model with every utterance heard alone "
            "(no speaker adaptation)",
            **score(
                [reference[i] for i in rows],
                [cold[i] for i in rows],
                labels=_label_order(reference, list(cold.values())),
            ).to_dict(),
        }
    report["per_corpus"] = {}
    for corpus in sorted(set(corpora)):
        rows = [i for i, c in enumerate(corpora) if c == corpus]
        report["per_corpus"][corpus] = score(
            [reference[i] for i in rows], [predicted[i] for i in rows], labels=order
        ).to_dict()
    report["models"] = recognizer.model_versions()
    report["asr"] = asr
    report["data"] = list(args.data)
    if args.plot is not None:
        plot_confusion(overall, args.plot)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training evaluate``)."""
    from streamser.errors import StreamserError

    args = _parse(argv)
    try:
        report = evaluate(args)
    except (ValueError, OSError, RuntimeError, StreamserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"UA {100 * report['ua']:.1f}  WA {100 * report['wa']:.1f}  n {report['n']}"
        )
        keys = ("labels", "confusion", "wa", "ua", "macro_f1", "per_class_recall", "n")
        print(format_confusion(Scores(**{k: report[k] for k in keys})))
    return 0
