"""Words that say nothing emotional, in a language the text models were not trained on.

EMO-DB's ten German sentences are emotionally neutral by design, whatever emotion the
actor plays. Five clips per sentence (every emotion but disgust, spread over the
speakers) go through ``streamser run --jsonl`` with ASR on and the language left to
Whisper, as a user's German call would. Counted per utterance: the language Whisper
heard, the text model's label (``modalities.text``) and the words' ``sentiment``. The
target (issue 23) is at least 80% of the text labels neutral.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

import numpy as np

from .common import REPO, Section, markdown_table, model_dir, require_data

PER_SENTENCE: Final = 5


def _clips(quick: bool) -> list[Path]:
    """Five clips of each sentence (one of three sentences with ``quick``), no disgust."""
    root = require_data() / "emodb"
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["path"])
    sentences = sorted({r["sentence"] for r in rows})
    each = 1 if quick else PER_SENTENCE
    chosen = []
    for sentence in sentences[:3] if quick else sentences:
        mine = [
            r for r in rows if r["sentence"] == sentence and r["emotion"] != "disgust"
        ]
        picks = np.linspace(0, len(mine) - 1, each).round().astype(int)
        chosen += [root / mine[i]["path"] for i in picks]
    return chosen


def _share(counts: Counter[str], key: str, total: int) -> str:
    return f"{counts.get(key, 0)} of {total} ({100 * counts.get(key, 0) / max(1, total):.0f}%)"


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "-"


def run(quick: bool = False) -> Section:
    """``streamser run`` on the clips; the text labels of what Whisper heard."""
    models, models_note = model_dir()
    clips = _clips(quick)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamser",
            "run",
            "--jsonl",
            "--model-dir",
            str(models),
            *map(str, clips),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    ends = [
        event
        for event in (json.loads(line) for line in result.stdout.splitlines() if line)
        if event.get("type") == "utterance.end"
    ]
    heard = Counter(str(e.get("language")) for e in ends)
    texts = [e["modalities"]["text"] for e in ends if e["modalities"].get("text")]
    labels = Counter(t["label"] for t in texts)
    with_language = sum(bool(t.get("language")) for t in texts)
    sentiment = Counter(e["sentiment"]["label"] for e in ends if e.get("sentiment"))
    row = [
        len(clips),
        len(ends),
        _counts(heard),
        len(texts),
        _share(labels, "neutral", len(texts)),
        _counts(labels),
        _counts(sentiment),
        with_language,
    ]
    data: dict[str, Any] = {
        "models": models_note,
        "clips": len(clips),
        "utterances": len(ends),
        "heard": dict(heard),
        "text_labels": dict(labels),
        "neutral_share": labels.get("neutral", 0) / max(1, len(texts)),
        "sentiment": dict(sentiment),
        "with_language": with_language,
    }
    body = "\n".join(
        [
            f"EMO-DB's ten emotionally neutral German sentences, {PER_SENTENCE} clips "
            "each (every emotion but disgust), through `streamser run --jsonl`, ASR on, "
            "language detected by Whisper. Text label = `modalities.text.label` (the "
            "multilingual model for every language but English); target: at least 80% "
            "neutral.",
            "",
            markdown_table(
                [
                    "clips",
                    "utterances",
                    "language heard",
                    "with a text label",
                    "text label neutral",
                    "text labels",
                    "sentiment",
                    "with modalities.text.language",
                ],
                [row],
            ),
        ]
    )
    return Section("Neutral words in German", __file__, body, data)
