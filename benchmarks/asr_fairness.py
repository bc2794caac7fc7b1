"""Whether ASR is on time and fair under load (``streamser.pipeline.asr_queue``).

One ``streamser serve`` (ASR on, default settings), dense real-time streams (2 s
EMO-DB clips with 1 s gaps, as in ``capacity``), in one run:

- **on time**: at 16 and 24 streams, the p95 and max of the server's ``latency_ms``
  for utterances labelled without a transcript (``skipped_overload``) and for those
  transcribed; the promise is ``asr_max_lag_ms`` plus the acoustic cost for the
  skipped ones;
- **fair**: transcripts per live stream at 12 streams alone, then at 12 streams
  beside one ``streamser send`` of a 120 s call sent as fast as it goes (which gets
  backpressure rather than the live streams' transcripts). The two take turns,
  ``FAIR_ROUNDS`` times each with the same streams: under overload how many
  utterances get a transcript moves from run to run, and turns spread a drift in
  the host's load over both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import soundfile as sf

from .capacity import CHUNK_MS, GAP_S, SERVER_LIMITS, STAGGER_S, Pool, _plans
from .client import Programme, StreamOutcome, play_all, programme, serve
from .common import (
    REPO,
    Section,
    emodb_clips,
    load_average,
    markdown_table,
    model_dir,
    percentile,
)

_LOGGER = logging.getLogger(__name__)

STREAM_S: Final = 25.0
ON_TIME_COUNTS: Final = (16, 24)
FAIR_COUNT: Final = 12
FAIR_ROUNDS: Final = 3
UPLOAD_S: Final = 120.0
ASR_MAX_LAG_MS: Final = 2000  # the default of pipeline.asr_max_lag_ms


def _latency_row(
    label: str, count: int, outcomes: Sequence[StreamOutcome]
) -> list[Any]:
    pairs = [
        (a, s) for o in outcomes for a, s in zip(o.asr, o.server_latency_s, strict=True)
    ]
    skipped = [1000 * s for a, s in pairs if a == "skipped_overload"]
    ok = [1000 * s for a, s in pairs if a not in ("skipped_overload", "off")]
    if not skipped:  # ASR off: every label is "without a transcript"
        skipped = [1000 * s for a, s in pairs if a == "off"]
    return [
        label,
        count,
        len(pairs),
        len(skipped),
        percentile(skipped, 95) if skipped else float("nan"),
        max(skipped, default=float("nan")),
        percentile(ok, 95) if ok else float("nan"),
        max(ok, default=float("nan")),
        sum(o.missed + o.shed + len(o.errors) for o in outcomes),
    ]


async def _upload(url: str, path: Path, language: str) -> dict[str, Any]:
    """``streamser send`` of ``path`` as fast as it goes; its utterances and time."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamser",
        "send",
        str(path),
        "--url",
        url,
        "--jsonl",
        "--language",
        language,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    ends = [
        e
        for e in (json.loads(line) for line in out.decode().splitlines() if line)
        if e.get("type") == "utterance.end"
    ]
    return {
        "exit": process.returncode,
        "utterances": len(ends),
        "transcribed": sum(e.get("asr") == "ok" for e in ends),
        "asr": dict(Counter(str(e.get("asr")) for e in ends)),
        "seconds": time.monotonic() - started,
        "stderr_tail": err.decode(errors="replace")[-400:],
    }


async def _with_upload(
    url: str, plans: Sequence[Programme], path: Path, language: str
) -> tuple[list[StreamOutcome], dict[str, Any]]:
    live = asyncio.ensure_future(
        play_all(url, plans, chunk_ms=CHUNK_MS, stagger_s=STAGGER_S)
    )
    upload = await _upload(url, path, language)
    return await live, upload


def _upload_file(pool: Pool, folder: Path, seconds: float) -> Path:
    """A call of ``seconds`` of the pool's clips joined by its gaps, as a WAV."""
    rng = np.random.default_rng(7)
    picks: list[int] = []
    total = 0.0
    while total < seconds:
        picks.append(int(rng.integers(len(pool.clips))))
        total += pool.audios[picks[-1]].shape[0] / 16000 + pool.gap_s
    call = programme(
        [pool.clips[i] for i in picks],
        [pool.audios[i] for i in picks],
        gap_s=pool.gap_s,
    )
    path = folder / "upload.wav"
    sf.write(path, call.audio, 16000, subtype="PCM_16")
    return path


def _per_stream(outcomes: Sequence[StreamOutcome]) -> list[int]:
    return [o.transcribed for o in outcomes]


def run(quick: bool = False) -> Section:
    """The on-time and fairness measurements, in one server."""
    models, models_note = model_dir()
    clips = emodb_clips(8 if quick else 60, seed=3)
    pool = Pool(clips, [c.audio() for c in clips], "de", GAP_S["dense"])
    stream_s = 4.0 if quick else STREAM_S
    counts = (2,) if quick else ON_TIME_COUNTS
    fair = 2 if quick else FAIR_COUNT
    upload_s = 10.0 if quick else UPLOAD_S
    settings: dict[str, dict[str, Any]] = {
        "emotion": {"model_dir": str(models)},
        "server": dict(SERVER_LIMITS),
    }
    data: dict[str, Any] = {"models": models_note, "load": {}}
    latency_rows = []
    with tempfile.TemporaryDirectory() as tmp, serve(settings) as server:
        for count in counts:
            data["load"][f"{count} streams, before"] = load_average()
            outcomes = asyncio.run(
                play_all(
                    server.url,
                    _plans(count, stream_s, pool),
                    chunk_ms=CHUNK_MS,
                    stagger_s=STAGGER_S,
                )
            )
            latency_rows.append(_latency_row("dense", count, outcomes))
            data["load"][f"{count} streams, after"] = load_average()
        plans = _plans(fair, stream_s, pool)
        path = _upload_file(pool, Path(tmp), upload_s)
        alone: list[list[StreamOutcome]] = []
        beside: list[list[StreamOutcome]] = []
        uploads: list[dict[str, Any]] = []
        for turn in range(1 if quick else FAIR_ROUNDS):
            data["load"][f"fair alone {turn + 1}, before"] = load_average()
            alone.append(
                asyncio.run(
                    play_all(server.url, plans, chunk_ms=CHUNK_MS, stagger_s=STAGGER_S)
                )
            )
            data["load"][f"fair with upload {turn + 1}, before"] = load_average()
            live, upload = asyncio.run(_with_upload(server.url, plans, path, "de"))
            beside.append(live)
            uploads.append(upload)
        data["load"]["fair, after"] = load_average()
    # The floor this host sets: the same load with ASR off (labels only).
    with serve({**settings, "asr": {"enabled": False}}) as server:
        data["load"]["ASR off, before"] = load_average()
        outcomes = asyncio.run(
            play_all(
                server.url,
                _plans(counts[0], stream_s, pool),
                chunk_ms=CHUNK_MS,
                stagger_s=STAGGER_S,
            )
        )
        latency_rows.append(_latency_row("dense, ASR off", counts[0], outcomes))
        data["load"]["ASR off, after"] = load_average()
    data["latency"] = [dict(zip(_LATENCY_HEADER, r, strict=True)) for r in latency_rows]
    kept = [
        sum(_per_stream(b)) / max(1, sum(_per_stream(a)))
        for a, b in zip(alone, beside, strict=True)
    ]
    total_kept = sum(sum(_per_stream(b)) for b in beside) / max(
        1, sum(sum(_per_stream(a)) for a in alone)
    )
    data["fair"] = {
        "alone": [_per_stream(a) for a in alone],
        "with_upload": [_per_stream(b) for b in beside],
        "utterances_alone": [sum(len(o.asr) for o in a) for a in alone],
        "utterances_with_upload": [sum(len(o.asr) for o in b) for b in beside],
        "uploads": uploads,
        "kept_per_turn": kept,
        "kept": total_kept,
    }
    fair_rows = []
    for turn, (a, b, upload) in enumerate(zip(alone, beside, uploads, strict=True)):
        fair_rows += [
            [
                turn + 1,
                "alone",
                sum(len(o.asr) for o in a),
                sum(_per_stream(a)),
                " ".join(str(n) for n in _per_stream(a)),
                "-",
            ],
            [
                turn + 1,
                "+ upload",
                sum(len(o.asr) for o in b),
                sum(_per_stream(b)),
                " ".join(str(n) for n in _per_stream(b)),
                f"{upload['transcribed']} of {upload['utterances']} in "
                f"{upload['seconds']:.1f} s (exit {upload['exit']}; asr: "
                + ", ".join(f"{k} {v}" for k, v in sorted(upload["asr"].items()))
                + ")",
            ],
        ]
    loads = "; ".join(f"{k}: {v}" for k, v in data["load"].items())
    body = "\n".join(
        [
            f"One `streamser serve`, ASR on, default settings (asr_max_lag_ms = "
            f"{ASR_MAX_LAG_MS}); dense real-time streams of ~{stream_s:.0f} s (2 s "
            f"EMO-DB clips, {GAP_S['dense']:g} s gaps), {CHUNK_MS} ms chunks, starts "
            f"spread over {STAGGER_S:g} s; the load generator and the uploader run on "
            "the same host. Latency = the server's latency_ms (from VAD close); "
            "skipped = utterances labelled without a transcript (skipped_overload); "
            "lost = missed, shed or failed. The last row is a second server with ASR "
            "off under the first load: the labels alone, what this host allows.",
            "",
            markdown_table(_LATENCY_HEADER, latency_rows),
            "",
            f"Fairness: the same {fair} live streams alone, then beside one "
            f"`streamser send` of a {upload_s:.0f} s call (the same clips and gaps) "
            f"sent as fast as it goes, taking turns {len(alone)} times each. "
            "Transcripts per live stream, in stream order. Over all turns the live "
            f"streams kept {100 * total_kept:.1f}% of their transcripts (per turn: "
            + ", ".join(f"{100 * k:.1f}%" for k in kept)
            + ").",
            "",
            markdown_table(
                [
                    "turn",
                    "run",
                    "live utterances",
                    "live transcripts",
                    "per stream",
                    "upload transcribed",
                ],
                fair_rows,
            ),
            "",
            f"Load average (1/5/15 min) around each step: {loads}.",
        ]
    )
    return Section("ASR on time and fair under load", __file__, body, data)


_LATENCY_HEADER: Final = [
    "load",
    "streams",
    "utterances",
    "skipped",
    "skipped p95 ms",
    "skipped max ms",
    "transcribed p95 ms",
    "transcribed max ms",
    "lost",
]
