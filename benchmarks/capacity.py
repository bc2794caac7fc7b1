"""Concurrent real-time streams a ``streamser serve`` sustains, stepped up until it fails.

Capacity depends on how much of each stream is speech, so each scenario names its
load: "sparse" streams play RAVDESS clips (about 3.7 s, speech in about 2 s of it)
separated by 1.5 s of silence, about one utterance per 5 s; "dense" streams play
EMO-DB clips (2 s of speech each) separated by 1 s, one utterance per 3 s. Streams
last about 25 s (seeded, different per stream), in real time, 100 ms pcm_s16le chunks,
starting spread over 3 s. A step passes when the p95 of end-of-speech to
``utterance.end`` (client side, so including the VAD hangover) is at most 1.5 s, no
utterance is shed or missed and no error event arrives; the server-side p95
(``latency_ms``) is judged too, and stepping stops at the first count failing it
(except for scenarios that must reach their last count). Under overload the server
labels utterances without transcripts rather than losing them: the table says what
share was transcribed. The naive peer (b) is the same server configured to batch and
share nothing: ``max_batch = 1``, ``workers = 1``, Whisper's 30 s window (what
faster-whisper pads to), one recognition at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from .client import Programme, StreamOutcome, play_all, programme, serve
from .common import (
    Section,
    emodb_clips,
    load_average,
    markdown_table,
    model_dir,
    percentile,
    ravdess_clips,
)

_LOGGER = logging.getLogger(__name__)

P95_LIMIT_S: Final = 1.5
STREAM_S: Final = 25.0
CHUNK_MS: Final = 100
STAGGER_S: Final = 3.0
SERVER_LIMITS: Final = {"max_streams": 1000, "max_streams_per_client": 1000}


SPARSE: Final = "sparse"
DENSE: Final = "dense"
GAP_S: Final = {SPARSE: 1.5, DENSE: 1.0}
"""Silence between clips in each load."""


@dataclass(frozen=True)
class Scenario:
    """One server configuration, its load and the stream counts to step through.

    Attributes:
        name: the row label.
        settings: TOML sections for ``streamser serve`` (model_dir is added).
        load: ``SPARSE`` (RAVDESS clips, 1.5 s gaps) or ``DENSE`` (2 s EMO-DB clips,
            1 s gaps).
        counts: stream counts, ascending.
        every_count: run every count even after one fails.
    """

    name: str
    settings: Mapping[str, Mapping[str, Any]]
    load: str
    counts: Sequence[int]
    every_count: bool = False


def scenarios(quick: bool) -> list[Scenario]:
    """streamser with ASR on and off under both loads, and the naive peer (b)."""
    no_asr = {"asr": {"enabled": False}}
    if quick:
        return [Scenario("streamser, ASR off", no_asr, DENSE, (2,))]
    return [
        Scenario("streamser, ASR on", {}, SPARSE, (4, 8, 12, 16)),
        Scenario("streamser, ASR on", {}, DENSE, (4, 8, 16), every_count=True),
        Scenario("streamser, ASR off", no_asr, SPARSE, (25, 50, 100, 150)),
        Scenario("streamser, ASR off", no_asr, DENSE, (16, 50, 100)),
        Scenario(
            "naive peer (b), ASR on",
            {
                "pipeline": {"max_batch": 1, "workers": 1},
                "asr": {"audio_context_s": 30.0},
            },
            SPARSE,
            (1, 2, 3, 4, 6),
        ),
    ]


@dataclass(frozen=True)
class Pool:
    """The clips one load draws from, with their language."""

    clips: Sequence[Any]
    audios: Sequence[Any]
    language: str
    gap_s: float


def _plans(count: int, stream_s: float, pool: Pool) -> list[Programme]:
    rng = np.random.default_rng(count)
    plans = []
    for _ in range(count):
        picks: list[int] = []
        total = 0.0
        while total < stream_s:
            picks.append(int(rng.integers(len(pool.clips))))
            total += pool.audios[picks[-1]].shape[0] / 16000 + pool.gap_s
        plans.append(
            programme(
                [pool.clips[i] for i in picks],
                [pool.audios[i] for i in picks],
                gap_s=pool.gap_s,
                language=pool.language,
            )
        )
    return plans


def _speech_fraction(plans: Sequence[Programme]) -> float:
    """Share of the streams' audio that is speech (clip start to end of speech)."""
    speech = sum(end - first for plan in plans for first, end, _ in plan.clip_spans)
    total = sum(plan.audio.shape[0] for plan in plans)
    return speech / total if total else 0.0


@dataclass
class StepResult:
    """One stream count under one scenario."""

    count: int
    utterances: int
    speech_fraction: float
    utterances_per_s: float
    transcribed: int
    client_p50_s: float
    client_p95_s: float
    server_p95_s: float
    shed: int
    missed: int
    errors: int
    client_max_lag_s: float
    mean_batch: float
    server_cpu_share: float

    @property
    def passed(self) -> bool:
        """Client p95 within the limit, nothing shed, missed or failed."""
        return self.client_p95_s <= P95_LIMIT_S and self.complete

    @property
    def passed_server(self) -> bool:
        """Server p95 (VAD close to event) within the limit, nothing lost."""
        return self.server_p95_s <= P95_LIMIT_S and self.complete

    @property
    def complete(self) -> bool:
        """Nothing shed, missed or failed."""
        return not self.shed and not self.missed and not self.errors


def _step(
    server: Any, count: int, plans: Sequence[Any], stagger_s: float = STAGGER_S
) -> StepResult:
    before = server.metrics()
    cpu_before = server.cpu_seconds()
    started = time.monotonic()
    outcomes: list[StreamOutcome] = asyncio.run(
        play_all(server.url, plans, chunk_ms=CHUNK_MS, stagger_s=stagger_s)
    )
    wall = time.monotonic() - started
    after = server.metrics()
    batches = after.get("streamser_batch_size_count", 0) - before.get(
        "streamser_batch_size_count", 0
    )
    batched = after.get("streamser_batch_size_sum", 0) - before.get(
        "streamser_batch_size_sum", 0
    )
    client = [v for o in outcomes for v in o.client_latency_s]
    server_side = [v for o in outcomes for v in o.server_latency_s]
    utterances = after.get("streamser_utterances_total", 0) - before.get(
        "streamser_utterances_total", 0
    )
    return StepResult(
        count=count,
        utterances=len(client),
        speech_fraction=_speech_fraction(plans),
        utterances_per_s=utterances / wall,
        transcribed=sum(o.transcribed for o in outcomes),
        client_p50_s=percentile(client, 50),
        client_p95_s=percentile(client, 95),
        server_p95_s=percentile(server_side, 95),
        shed=sum(o.shed for o in outcomes),
        missed=sum(o.missed for o in outcomes),
        errors=sum(len(o.errors) for o in outcomes),
        client_max_lag_s=max(o.max_lag_s for o in outcomes),
        mean_batch=batched / batches if batches else float("nan"),
        server_cpu_share=(server.cpu_seconds() - cpu_before) / wall,
    )


def run_scenario(
    scenario: Scenario,
    *,
    stream_s: float,
    pool: Pool,
    stagger_s: float = STAGGER_S,
) -> tuple[list[StepResult], float]:
    """Step through the counts until one fails; returns the steps and peak RSS."""
    models, _ = model_dir()
    settings = {key: dict(value) for key, value in scenario.settings.items()}
    settings.setdefault("emotion", {})["model_dir"] = str(models)
    settings.setdefault("server", {}).update(SERVER_LIMITS)
    steps = []
    with serve(settings) as server:
        for count in scenario.counts:
            _LOGGER.info("%s: %d streams", scenario.name, count)
            result = _step(server, count, _plans(count, stream_s, pool), stagger_s)
            steps.append(result)
            if not result.passed_server and not scenario.every_count:
                break
        rss = server.peak_rss_mb()
    return steps, rss


def _most(steps: Sequence[StepResult], criterion: str) -> int:
    """The largest count passing ``criterion`` with every smaller count passing too."""
    best = 0
    for step in steps:
        if not getattr(step, criterion):
            break
        best = step.count
    return best


def run(quick: bool = False) -> Section:
    """Every scenario, stepped up to its first failure."""
    _, models_note = model_dir()
    sparse = ravdess_clips(8 if quick else 60, seed=3)
    dense = emodb_clips(8 if quick else 60, seed=3)
    pools = {
        SPARSE: Pool(sparse, [c.audio() for c in sparse], "en", GAP_S[SPARSE]),
        DENSE: Pool(dense, [c.audio() for c in dense], "de", GAP_S[DENSE]),
    }
    stream_s = 4.0 if quick else STREAM_S
    stagger_s = 0.5 if quick else STAGGER_S
    rows = []
    summary = []
    data: dict[str, Any] = {"models": models_note, "load_before": load_average()}
    for scenario in scenarios(quick):
        steps, rss = run_scenario(
            scenario, stream_s=stream_s, pool=pools[scenario.load], stagger_s=stagger_s
        )
        best = _most(steps, "passed")
        best_server = _most(steps, "passed_server")
        label = f"{scenario.name}, {scenario.load}"
        summary.append([label, best, best_server, rss])
        data[label] = {
            "max_streams": best,
            "max_streams_server": best_server,
            "peak_rss_mb": rss,
            "steps": [s.__dict__ for s in steps],
        }
        for s in steps:
            rows.append(
                [
                    label,
                    s.count,
                    100 * s.speech_fraction,
                    s.utterances,
                    s.utterances_per_s,
                    100 * s.transcribed / max(1, s.utterances),
                    1000 * s.client_p50_s,
                    1000 * s.client_p95_s,
                    1000 * s.server_p95_s,
                    s.shed,
                    s.missed,
                    s.errors,
                    s.mean_batch,
                    s.server_cpu_share,
                    1000 * s.client_max_lag_s,
                    "pass" if s.passed else "FAIL",
                    "pass" if s.passed_server else "FAIL",
                ]
            )
    body = "\n".join(
        [
            f"Streams of ~{stream_s:.0f} s in real time, {CHUNK_MS} ms chunks, starts "
            f"spread over {stagger_s:g} s. Loads: sparse = RAVDESS clips with "
            f"{GAP_S[SPARSE]:g} s gaps; dense = 2 s EMO-DB clips with {GAP_S[DENSE]:g} s "
            "gaps; speech % = share of the stream audio that is speech; utt/s = "
            "utterances recognised per wall second across all streams; transcribed % = "
            "utterance.end events with a transcript (the rest were labelled without "
            "one to keep up). A count passes "
            f"when p95 <= {P95_LIMIT_S} s and nothing is shed, missed or failed; p95 "
            "client side (from the end of speech, including the VAD hangover) "
            "and server side (latency_ms, from VAD close) are both judged; stepping "
            "stops when the server-side criterion fails. "
            f"emotion graphs: {models_note}; the load generator runs on the same host. "
            "Naive peer (b) = `streamser serve` with pipeline.max_batch = 1, "
            "pipeline.workers = 1, asr.audio_context_s = 30. Server CPU = server "
            "CPU-seconds per wall second (2.0 = both cores).",
            "",
            markdown_table(
                [
                    "server, load",
                    "most streams, client p95 <= 1.5 s",
                    "most streams, server p95 <= 1.5 s",
                    "server peak RSS MiB",
                ],
                summary,
            ),
            "",
            markdown_table(
                [
                    "server, load",
                    "streams",
                    "speech %",
                    "utterances",
                    "utt/s",
                    "transcribed %",
                    "client p50 ms",
                    "client p95 ms",
                    "server p95 ms",
                    "shed",
                    "missed",
                    "errors",
                    "mean batch",
                    "server CPU",
                    "client max lag ms",
                    "client p95 <= 1.5 s",
                    "server p95 <= 1.5 s",
                ],
                rows,
            ),
        ]
    )
    return Section(
        "Capacity: concurrent real-time streams", "benchmarks/capacity.py", body, data
    )
