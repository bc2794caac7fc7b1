"""Single-stream latency over the real protocol: end of speech to ``utterance.end``.

A ``streamser serve`` subprocess (default settings, ASR on) gets RAVDESS clips on one
stream and EMO-DB clips on another, each played in real time in 20 ms chunks with
1.5 s of silence between clips. End of speech is the moment the client sent the chunk
holding the clip's last speech (``common.speech_end_sample``: last 20 ms frame within
30 dB of the loudest), so the client latency includes the VAD's hangover. The
server's ``latency_ms`` (from the moment the VAD closed the utterance; recognition may
have started at the ``UtteranceEnding`` before it) is reported beside it.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from streamser.audio.segmenter import SegmenterOptions

from .client import play, programme, serve
from .common import (
    Section,
    emodb_clips,
    markdown_table,
    model_dir,
    percentile,
    ravdess_clips,
    word_errors,
)

_LOGGER = logging.getLogger(__name__)


def run(quick: bool = False) -> Section:
    """Play each corpus on its own stream, one after the other, and time every clip."""
    models, models_note = model_dir()
    corpora = [("RAVDESS", ravdess_clips(1 if quick else 12, seed=2), "en")]
    if not quick:
        corpora.append(("EMO-DB", emodb_clips(8, seed=2), "de"))
    rows = []
    data: dict[str, object] = {"models": models_note}
    with serve({"emotion": {"model_dir": str(models)}}) as server:
        for name, clips, language in corpora:
            plan = programme(clips, [c.audio() for c in clips], language=language)
            outcome = asyncio.run(play(server.url, plan, chunk_ms=20))
            client = outcome.client_latency_s
            server_side = outcome.server_latency_s
            errors = sum(
                word_errors(text, clip.reference, prefix=clip.truncated)[0]
                for clip, text in outcome.transcripts
            )
            words = sum(
                word_errors(text, clip.reference, prefix=clip.truncated)[1]
                for clip, text in outcome.transcripts
            )
            row = [
                name,
                len(clips),
                float(np.mean(outcome.clip_seconds)) if client else float("nan"),
                1000 * percentile(client, 50),
                1000 * percentile(client, 95),
                1000 * percentile(server_side, 50),
                1000 * percentile(server_side, 95),
                outcome.missed,
                100 * errors / words if words else float("nan"),
                1000 * outcome.max_lag_s,
            ]
            rows.append(row)
            data[name] = {
                "client_p50_ms": row[3],
                "client_p95_ms": row[4],
                "server_p50_ms": row[5],
                "server_p95_ms": row[6],
                "missed": outcome.missed,
                "client_latency_s": client,
            }
        data["server_peak_rss_mb"] = server.peak_rss_mb()
    segmenter = SegmenterOptions()
    body = "\n".join(
        [
            "One stream at a time, real-time pace, 20 ms pcm_s16le chunks, 1.5 s "
            "silence between clips, language given in the start message; server "
            f"defaults (ASR on, VAD hangover {segmenter.hangover_ms} ms, speculative "
            f"recognition after {segmenter.early_end_ms} ms of silence, partials every "
            f"1 s); emotion graphs: {models_note}. Client = send of the chunk holding "
            "the clip's end of speech (last 20 ms frame within 30 dB of its loudest) "
            "to receipt of its utterance.end, so it includes the VAD hangover; server "
            "= latency_ms (VAD close to event). WER from the transcripts the server "
            "sent; utterance s = mean length of the utterances the server cut.",
            "",
            markdown_table(
                [
                    "corpus",
                    "clips",
                    "utterance s",
                    "client p50 ms",
                    "client p95 ms",
                    "server p50 ms",
                    "server p95 ms",
                    "missed",
                    "WER %",
                    "client max lag ms",
                ],
                rows,
            ),
            "",
            f"Server peak RSS: {data['server_peak_rss_mb']:.0f} MiB.",
        ]
    )
    return Section("Single-stream latency", "benchmarks/latency.py", body, data)
