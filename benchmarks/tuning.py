"""Thread and batching levers, each measured under the same fixed load.

Every setting runs a fresh ``streamser serve`` (ASR on) with the same concurrent
real-time streams (``capacity``'s client), changing one lever from the defaults:
CTranslate2 threads per call (``asr.num_threads``) and concurrent calls
(``asr.num_workers``), recognition calls at once (``pipeline.workers``), batching
(``pipeline.max_batch``, ``pipeline.batch_wait_ms``) and onnxruntime threads
(``emotion.num_threads``).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from .capacity import GAP_S, SERVER_LIMITS, SPARSE, Pool, _plans, _step
from .client import serve
from .common import Section, markdown_table, model_dir, ravdess_clips

_LOGGER = logging.getLogger(__name__)

SETTINGS: Final[tuple[tuple[str, dict[str, dict[str, Any]]], ...]] = (
    ("defaults", {}),
    ("asr.num_threads = 1", {"asr": {"num_threads": 1}}),
    (
        "asr.num_workers = 1, pipeline.workers = 1",
        {"asr": {"num_workers": 1}, "pipeline": {"workers": 1}},
    ),
    (
        "asr.num_threads = 1, pipeline.workers = 1",
        {"asr": {"num_threads": 1}, "pipeline": {"workers": 1}},
    ),
    ("pipeline.max_batch = 1", {"pipeline": {"max_batch": 1}}),
    ("pipeline.batch_wait_ms = 0", {"pipeline": {"batch_wait_ms": 0}}),
    ("pipeline.batch_wait_ms = 50", {"pipeline": {"batch_wait_ms": 50}}),
    ("emotion.num_threads = 2", {"emotion": {"num_threads": 2}}),
)


def run(quick: bool = False, streams: int = 8) -> Section:
    """Run every setting under ``streams`` concurrent streams of ~15 s."""
    models, models_note = model_dir()
    clips = ravdess_clips(8 if quick else 40, seed=4)
    pool = Pool(clips, [c.audio() for c in clips], "en", GAP_S[SPARSE])
    count = 1 if quick else streams
    plans = _plans(count, 4.0 if quick else 15.0, pool)
    chosen = SETTINGS[:1] if quick else SETTINGS
    rows = []
    data: dict[str, Any] = {"streams": count, "models": models_note}
    for name, overrides in chosen:
        settings: dict[str, dict[str, Any]] = {
            key: dict(value) for key, value in overrides.items()
        }
        settings.setdefault("emotion", {})["model_dir"] = str(models)
        settings.setdefault("server", {}).update(SERVER_LIMITS)
        _LOGGER.info("tuning: %s", name)
        with serve(settings) as server:
            step = _step(server, count, plans, 0.0 if quick else 3.0)
            rss = server.peak_rss_mb()
        row = [
            name,
            1000 * step.client_p50_s,
            1000 * step.client_p95_s,
            1000 * step.server_p95_s,
            step.shed + step.missed + step.errors,
            step.mean_batch,
            step.server_cpu_share,
            rss,
        ]
        rows.append(row)
        data[name] = dict(
            zip(
                (
                    "client_p50_ms",
                    "client_p95_ms",
                    "server_p95_ms",
                    "lost",
                    "mean_batch",
                    "server_cpu",
                    "peak_rss_mb",
                ),
                row[1:],
                strict=True,
            )
        )
    body = "\n".join(
        [
            f"{count} concurrent real-time streams of ~{4 if quick else 15} s RAVDESS "
            "(same streams for every row), ASR on, one lever changed from the "
            f"defaults per row; emotion graphs: {models_note}. Lost = shed + missed "
            "+ errors.",
            "",
            markdown_table(
                [
                    "setting",
                    "client p50 ms",
                    "client p95 ms",
                    "server p95 ms",
                    "lost",
                    "mean batch",
                    "server CPU",
                    "peak RSS MiB",
                ],
                rows,
            ),
        ]
    )
    return Section("Levers under a fixed load", "benchmarks/tuning.py", body, data)
