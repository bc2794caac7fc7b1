"""Text emotion on one CPU core: one transcript through the shipped text path.

The budget (issue 13) is 5 ms per utterance on one core. Measured here with
onnxruntime pinned to one thread, one transcript per call (as a stream's utterance
reaches it): the graph's own front end (WordPiece for English, character n-grams for
Persian, the multilingual-e5-small sentence vector for the any-language graph), then
the text graph. Transcripts are MELD dev lines (English) and ShEMO transcripts
(Persian; also for the any-language graph) where the corpora are present, else a few
fixed sentences. The memory the models add is the process's resident set after
loading them, less before. "CPU" is the calling thread's CPU time per transcript (the
engine and onnxruntime run on it with one thread), which other processes on a loaded
host inflate less than wall time.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Final

from .common import Section, data_root, markdown_table, model_dir, percentile

_LOGGER = logging.getLogger(__name__)

FALLBACK: Final = {
    "en": [
        "Oh my God, he's lost it. He's totally lost it.",
        "I can't believe you did that, that's amazing!",
        "Okay.",
        "Listen, I really need to talk to you about what happened last night at the party.",
    ],
    "fa": ["دیگه نمی‌تونم تحمل کنم.", "نمی‌دونم از دست شما باید چی کار کنم."],
}


def _transcripts(language: str, count: int) -> tuple[list[str], str]:
    root = data_root()
    if root is not None and language == "en" and (root / "meld-text/dev.csv").is_file():
        with (root / "meld-text/dev.csv").open(encoding="utf-8", newline="") as handle:
            rows = [r["Utterance"] for r in csv.DictReader(handle)]
        return rows[:: max(1, len(rows) // count)][:count], "MELD dev lines"
    if root is not None and language == "fa":
        path = root / "shemo-text/shemo_text.jsonl"
        if path.is_file():
            lines = path.read_text("utf-8").splitlines()
            rows = [json.loads(line)["transcript"] for line in lines if line.strip()]
            return rows[:: max(1, len(rows) // count)][:count], "ShEMO transcripts"
    return FALLBACK.get(language, []), "fixed sentences"


def run(quick: bool = False) -> Section:
    """Time the text path per transcript on one thread, per language."""
    from streamser.recognition.emotion import ANY_LANGUAGE, EmotionModels

    models, models_note = model_dir()
    before_mb = _resident_mb()
    emotion = EmotionModels.load(models, device="cpu", num_threads=1)
    loaded_mb = _resident_mb() - before_mb
    rows = []
    data = {}
    for language in sorted(emotion.text_models):
        model = emotion.text_models[language]
        encoder = emotion.text_encoder_for(language)
        if encoder is None:
            _LOGGER.info(
                "skipping %s: its graph reads Whisper BPE ids", model.contract.name
            )
            continue
        texts, source = _transcripts(
            "fa" if language == ANY_LANGUAGE else language, 20 if quick else 300
        )
        encode_s, graph_s, cpu_s = [], [], []
        for warm in (True, False):
            for text in texts[:2] if warm else texts:
                cpu = time.thread_time()
                started = time.perf_counter()
                ids = encoder.encode(text)
                middle = time.perf_counter()
                emotion.text([ids], language)
                done = time.perf_counter()
                if not warm:
                    encode_s.append(middle - started)
                    graph_s.append(done - middle)
                    cpu_s.append(time.thread_time() - cpu)
        totals = [a + b for a, b in zip(encode_s, graph_s, strict=True)]
        key = f"{model.contract.name} ({language})"
        row = [
            key,
            len(texts),
            1000 * percentile(encode_s, 50),
            1000 * percentile(graph_s, 50),
            1000 * percentile(totals, 50),
            1000 * percentile(totals, 95),
            1000 * percentile(cpu_s, 50),
        ]
        rows.append(row)
        data[key] = {
            "n": len(texts),
            "source": source,
            "p50_ms": row[4],
            "p95_ms": row[5],
            "cpu_p50_ms": row[6],
        }
    body = "\n".join(
        [
            f"One transcript per call, onnxruntime 1 thread; graphs: {models_note}. "
            "Sources: "
            + "; ".join(f"{k}: {v['source']}" for k, v in data.items())
            + f". Resident memory added by loading the models: {loaded_mb:.0f} MB. "
            "CPU: the calling thread's CPU time per transcript.",
            "",
            markdown_table(
                [
                    "graph",
                    "n",
                    "front end p50 ms",
                    "graph p50 ms",
                    "total p50 ms",
                    "total p95 ms",
                    "CPU p50 ms",
                ],
                rows,
            ),
        ]
    )
    data["loaded_mb"] = {"resident": round(loaded_mb, 1)}
    return Section("Text emotion on one core", "benchmarks/text_cost.py", body, data)


def _resident_mb() -> float:
    """This process's resident set (Linux ``/proc``; 0 elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
