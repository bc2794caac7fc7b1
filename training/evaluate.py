"""Evaluate exported emotion graphs through streamser's own runtime code.

``python -m training evaluate --data KIND:PATH --models DIR --json [--plot FILE]
[--no-asr] [--streams clip|speaker] [--view daemon|clip]``

Every clip goes the daemon's way (``--view daemon``, the default): decoded as
``streamser run`` decodes a file, cut by the daemon's VAD and segmenter with their
default options (``training.daemon_path``), and each utterance recognised by
``streamser.recognition.recognizer.Recognizer`` (not the torch models), so the score
is that of the labels ``streamser run`` emits (ASR, text and fusion included;
``--no-asr`` for acoustic only). A clip the segmenter cuts into several utterances
is scored by the duration-weighted mean of its utterances' scores (its label: the
top of that mean; its confidence: that top's share); a clip in which the VAD finds
no utterance is counted (``no_utterance``) and scored as a miss with the predicted
label "none". ``--view clip`` hands the whole clip to the recogniser instead (how
models before v3 were scored; not what the daemon does). Transcript-only data is
scored on the text model.

Prints one JSON object (``wa``, ``ua``, ``macro_f1``, ``per_class_recall``,
``confusion``, ``labels``, ``n``, ``predicted``, ``ece``, ``folded`` (calm and
boredom counted as neutral), ``affect`` when the graph gives arousal and valence,
plus ``per_corpus``); ``--plot`` writes a confusion-matrix PNG. A reference label
the models cannot output still counts, as a miss.

Streams: by default each clip is its own stream, as ``streamser run a.wav b.wav``
runs them. ``--streams speaker`` makes each speaker's clips one stream, in a seeded
random order, as a caller's utterances reach the daemon; an acoustic model that
adapts to the speaker (``streamser.recognition.adaptation``) then reads each
utterance against the speaker's earlier ones, and the report adds ``cold``: the
acoustic model's scores with every utterance heard alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamser.errors import StreamserError
from streamser.labels import CANONICAL_LABELS
from streamser.recognition.adaptation import SpeakerBaseline
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import (
    Recognizer,
    RecognizerOptions,
    UtteranceRequest,
)
from training.affect import agreement
from training.daemon_path import daemon_audio, daemon_utterances
from training.datasets import (
    FOLD_TO_NEUTRAL,
    Utterance,
    data_parser,
    load_dataset,
    speaker_streams,
)
from training.metrics import (
    Scores,
    expected_calibration_error,
    format_confusion,
    score,
)

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
    parser = data_parser("evaluate", __doc__.split("\n")[0])
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
        choices=("clip", "speaker", "utterance"),
        default="clip",
        help="one stream per clip (default; 'utterance' is the same) or per "
        "speaker (seeded order)",
    )
    parser.add_argument(
        "--view",
        choices=("daemon", "clip"),
        default="daemon",
        help="the daemon's VAD-cut utterances (default) or whole clips",
    )
    return parser.parse_args(argv)


NO_UTTERANCE = "none"
"""The predicted label of a clip in which the VAD found no utterance."""


@dataclass
class ClipResult:
    """What the daemon made of one clip.

    Attributes:
        labels: the label of each utterance, as ``streamser run`` emits them.
        durations: each utterance's length in samples.
        scores: the clip's duration-weighted mean of its utterances' scores
            (empty without utterances).
        arousal: the same mean of the utterances' arousal (None without).
        valence: likewise for valence.
    """

    labels: list[str]
    durations: list[int]
    scores: dict[str, float]
    arousal: float | None = None
    valence: float | None = None

    @property
    def label(self) -> str:
        """The clip's label: the top of ``scores``, or ``NO_UTTERANCE``."""
        if not self.scores:
            return NO_UTTERANCE
        return max(self.scores, key=lambda k: self.scores[k])

    @property
    def confidence(self) -> float:
        """The top of ``scores`` (0 without utterances)."""
        return max(self.scores.values()) if self.scores else 0.0


def combine(recognitions: Sequence[Any], durations: Sequence[int]) -> ClipResult:
    """A clip's result from its utterances' ``Recognition``s (duration-weighted)."""
    if not recognitions:
        return ClipResult([], [], {})
    weights = np.asarray(durations, dtype=np.float64)
    weights = weights / weights.sum()
    scores: dict[str, float] = {}
    for w, r in zip(weights, recognitions, strict=True):
        for label, p in r.scores.items():
            scores[label] = scores.get(label, 0.0) + float(w) * p

    def mean(values: list[float | None]) -> float | None:
        if any(v is None for v in values):
            return None
        return float(np.dot(weights, np.asarray(values, dtype=np.float64)))

    return ClipResult(
        [r.label for r in recognitions],
        list(durations),
        scores,
        mean([r.arousal for r in recognitions]),
        mean([r.valence for r in recognitions]),
    )


def daemon_clip(
    recognizer: Any,
    path: Path,
    language: str | None,
    baseline: Any,
    view: str = "daemon",
) -> ClipResult:
    """Recognise a clip as ``streamser run`` does (``view`` "daemon"), or whole.

    ``baseline`` (a ``SpeakerBaseline``) is the stream's; each utterance is added.
    """
    audio = daemon_audio(path)
    pieces = daemon_utterances(audio) if view == "daemon" else [audio]
    recognitions = []
    for piece in pieces:
        request = UtteranceRequest(piece, language, baseline.snapshot())
        recognition = recognizer.recognize_batch([request])[0]
        baseline.add(recognition.pooled)
        recognitions.append(recognition)
    return combine(recognitions, [p.shape[0] for p in pieces])


def _clip_report(
    reference: list[str], results: list[ClipResult], order: list[str]
) -> dict[str, Any]:
    """Scores, predicted-label distribution, ECE, folded scores and affect."""
    predicted = [r.label for r in results]
    report: dict[str, Any] = score(reference, predicted, labels=order).to_dict()
    report["predicted"] = {
        k: predicted.count(k) for k in [*order, NO_UTTERANCE] if k in predicted
    }
    report["no_utterance"] = predicted.count(NO_UTTERANCE)
    report["several_utterances"] = sum(len(r.labels) > 1 for r in results)
    report["ece"] = expected_calibration_error(
        [r.confidence for r in results],
        [p == t for p, t in zip(predicted, reference, strict=True)],
    )
    folded_ref = [FOLD_TO_NEUTRAL.get(k, k) for k in reference]
    folded_scores = []
    for r in results:
        merged: dict[str, float] = {}
        for label, p in r.scores.items():
            key = FOLD_TO_NEUTRAL.get(label, label)
            merged[key] = merged.get(key, 0.0) + p
        folded_scores.append(merged)
    folded_pred = [
        max(m, key=lambda k: m[k]) if m else NO_UTTERANCE for m in folded_scores
    ]
    folded = score(
        folded_ref, folded_pred, labels=_label_order(folded_ref, folded_pred)
    ).to_dict()
    folded["ece"] = expected_calibration_error(
        [max(m.values()) if m else 0.0 for m in folded_scores],
        [p == t for p, t in zip(folded_pred, folded_ref, strict=True)],
    )
    report["folded"] = folded
    rows = [i for i, r in enumerate(results) if r.arousal is not None]
    if rows:
        affect = np.array(
            [[results[i].arousal, results[i].valence] for i in rows], np.float32
        )
        report["affect"] = agreement(affect, [reference[i] for i in rows])
    return report


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed CLI arguments.

    Raises:
        ValueError: bad dataset or models folder.
        StreamserError: a model fails to load.
    """

    if not args.models.is_dir():
        raise ValueError(f"models folder {args.models} does not exist")
    utterances = [u for spec in args.data for u in load_dataset(spec)]
    if args.limit > 0:
        utterances = utterances[: args.limit]
    text_only = all(u.path is None for u in utterances)
    asr = not args.no_asr or text_only
    recognizer = Recognizer(
        RecognizerOptions(
            EmotionOptions(model_dir=str(args.models), device="cpu"),
            AsrOptions(enabled=asr),
        )
    )
    if text_only:
        return evaluate_text(recognizer, utterances, args)
    by_speaker = args.streams == "speaker"
    results, cold = _recognise(recognizer, utterances, args, by_speaker)
    reference = [u.label for u in utterances]
    ordered = [results[i] for i in range(len(utterances))]
    predicted = [r.label for r in ordered]
    corpora = [u.corpus for u in utterances]
    order = _label_order(reference, predicted)
    report: dict[str, Any] = _clip_report(reference, ordered, order)
    report["streams"] = "speaker" if by_speaker else "clip"
    report["view"] = args.view
    report["scoring"] = (
        "one label per clip: the top of the duration-weighted mean of its "
        "utterances' scores; a clip without an utterance is predicted 'none'"
    )
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
        report["per_corpus"][corpus] = _clip_report(
            [reference[i] for i in rows], [ordered[i] for i in rows], order
        )
    report["models"] = recognizer.model_versions()
    report["asr"] = asr
    report["data"] = list(args.data)
    if args.plot is not None:
        plot_confusion(score(reference, predicted, labels=order), args.plot)
    return report


def _recognise(
    recognizer: Recognizer,
    utterances: Sequence[Utterance],
    args: argparse.Namespace,
    by_speaker: bool,
) -> tuple[dict[int, ClipResult], dict[int, str]]:
    """Each utterance's result, streams per clip or per speaker, and (for an acoustic
    model that adapts, per speaker) its acoustic label heard alone."""
    from tqdm import tqdm

    window = recognizer.adaptation_window if by_speaker else 0
    results: dict[int, ClipResult] = {}
    cold: dict[int, str] = {}
    streams = (
        speaker_streams(utterances)
        if by_speaker
        else [[i] for i in range(len(utterances))]
    )
    progress = tqdm(total=len(utterances), desc="evaluate", mininterval=5.0)
    for stream in streams:
        baseline = SpeakerBaseline(window)
        for i in stream:
            utt = utterances[i]
            language = None if args.detect_language else utt.language
            if utt.path is None:
                results[i] = _text_clip(recognizer, utt, language, args.models)
            else:
                results[i] = daemon_clip(
                    recognizer, utt.path, language, baseline, args.view
                )
                if window:
                    audio = daemon_audio(utt.path)
                    pieces = daemon_utterances(audio) if args.view == "daemon" else []
                    outs = recognizer.acoustic(pieces or [audio])
                    cold[i] = outs[0].scores.label if pieces else NO_UTTERANCE
            progress.update()
    progress.close()
    return results, cold


def _text_clip(
    recognizer: Recognizer, utt: Utterance, language: str | None, models: Path
) -> ClipResult:
    """The text model's result for an utterance without audio."""
    if not utt.text:
        raise ValueError(f"utterance {utt.utt_id} has neither audio nor text")
    result = recognizer.text_emotion(utt.text, language)
    if result is None:
        raise ValueError(f"no text model for language {language!r} in {models}")
    return ClipResult([result.label], [1], dict(result.scores))


TEXT_BATCH = 32
"""Transcripts per text-graph call in ``evaluate_text``."""


def evaluate_text(
    recognizer: Any, utterances: Sequence[Any], args: Any
) -> dict[str, Any]:
    """Score transcript-only data (``shemo-text``, ``meld-text``) on the text path.

    Every transcript goes through ``Recognizer.text_outputs`` (the runtime's own
    tokenizer and text graph for the utterance's language). The report has the
    emotion figures (``weighted_f1``, ``ua``, ``wa``, ``macro_f1``, confusion, ``n``)
    and, for data with sentiment labels (MELD), a ``sentiment`` object with the
    same figures.

    Raises:
        ValueError: an utterance has no text, or no text model reads its language.
    """
    from sklearn.metrics import f1_score

    emotions: list[str] = []
    sentiments: list[str | None] = []
    for start in range(0, len(utterances), TEXT_BATCH):
        batch = utterances[start : start + TEXT_BATCH]
        for utt in batch:
            if not utt.text:
                raise ValueError(f"utterance {utt.utt_id} has neither audio nor text")
        languages = [None if args.detect_language else u.language for u in batch]
        outputs = recognizer.text_outputs([u.text for u in batch], languages)
        for language, output in zip(languages, outputs, strict=True):
            if output is None:
                raise ValueError(
                    f"no text model for language {language!r} in {args.models}"
                )
            emotions.append(output.scores.label)
            sentiments.append(output.sentiment.label if output.sentiment else None)

    def figures(
        reference: list[str], predicted: list[str], order: list[str]
    ) -> dict[str, Any]:
        report = score(reference, predicted, labels=order).to_dict()
        report["weighted_f1"] = float(
            f1_score(
                reference, predicted, labels=order, average="weighted", zero_division=0
            )
        )
        return report

    reference = [u.label for u in utterances]
    report = figures(reference, emotions, _label_order(reference, emotions))
    with_sentiment = [i for i, u in enumerate(utterances) if u.sentiment is not None]
    if with_sentiment:
        if any(sentiments[i] is None for i in with_sentiment):
            raise ValueError(f"the text model in {args.models} gives no sentiment")
        ref = [str(utterances[i].sentiment) for i in with_sentiment]
        got = [str(sentiments[i]) for i in with_sentiment]
        order: list[str] = [
            s for s in ("negative", "neutral", "positive") if s in set(ref) | set(got)
        ]
        report["sentiment"] = figures(ref, got, order)
    report["models"] = recognizer.model_versions()
    report["asr"] = False
    report["data"] = list(args.data)
    if args.plot is not None:
        plot_confusion(score(reference, emotions, labels=report["labels"]), args.plot)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training evaluate``)."""
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
        print(f"predicted: {report['predicted']}  ECE {report['ece']:.3f}")
        print(format_confusion(Scores(**{k: report[k] for k in keys})))
    return 0
