"""streamser on a CUDA GPU: placement, batching, one stream, many streams, memory, peer.

One prepared run (under 8 minutes on a GPU):

- **placement**: where each model runs (onnxruntime providers, CTranslate2 device);
- **batch sweep**: ``Recognizer.recognize_batch`` per-utterance time on the same
  RAVDESS utterances at several batch sizes, which is what ``pipeline.max_batch``'s
  CUDA default is to be chosen from (``streamser.pipeline.BATCH_DEFAULTS``);
- **peer**: plain faster-whisper ``transcribe`` on the same GPU, same utterances,
  one at a time, and the ratio of streamser's whole pipeline to it;
- **single stream**: one ``streamser serve`` on CUDA, RAVDESS clips played in real
  time on one stream, end of speech to ``utterance.end``;
- **capacity**: the same server, real-time streams stepped up to 300 under the
  dense (2 s EMO-DB clips, 1 s gaps) and sparse (RAVDESS clips, 1.5 s gaps) loads of
  ``benchmarks/capacity.py``, judged at p95 <= 1 s, ASR on;
- **GPU memory**: nvidia-smi's total in use before loading, with the server loaded,
  and the most seen at the end of any capacity step.

Without a CUDA device (or without onnxruntime's CUDA provider) the GPU parts are
reported as absent with the reason, and only a CPU batch sweep on one Whisper thread
runs: the measurement behind batching being off on one core. The raw numbers also go
to ``artifacts/gpu-benchmark.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.console import provider_line
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.cuda import (
    CUDA_PROVIDER,
    cuda_device_count,
    onnxruntime_conflict,
)
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import (
    Recognizer,
    RecognizerOptions,
    UtteranceRequest,
)

from .capacity import DENSE, GAP_S, SERVER_LIMITS, SPARSE, Pool, _plans, _step
from .client import play, programme, serve
from .common import (
    REPO,
    Section,
    emodb_clips,
    gpu_description,
    gpu_memory_used_mb,
    markdown_table,
    model_dir,
    percentile,
    ravdess_clips,
)
from .whisper import faster_whisper_transcribe

_LOGGER = logging.getLogger(__name__)

P95_LIMIT_S: Final = 1.0
COUNTS: Final = (50, 100, 200, 300)
STREAM_S: Final = 15.0
STAGGER_S: Final = 3.0
CHUNK_MS: Final = 100
BATCH_SIZES: Final = (1, 8, 16, 32, 64)
SWEEP_UTTERANCES: Final = 64
JSON_PATH: Final = REPO / "artifacts" / "gpu-benchmark.json"
_DEVICE = "cuda"
"""Where the GPU path runs; a smoke test of this module sets "cpu"."""
TITLE: Final = "GPU: placement, batching, latency, capacity at p95 <= 1 s, memory"


def cuda_status() -> tuple[bool, str]:
    """Whether the GPU parts can run, and a line saying what was found."""
    import onnxruntime as ort

    devices = cuda_device_count()
    providers = ort.get_available_providers()
    line = (
        f"CTranslate2 CUDA devices: {devices}; onnxruntime providers: "
        f"{provider_line(providers)}; nvidia-smi: {gpu_description()}"
    )
    if conflict := onnxruntime_conflict():
        line += f"; {conflict}"
    return devices > 0 and CUDA_PROVIDER in providers, line


def _timed_batches(
    recognizer: Recognizer,
    audios: Sequence[npt.NDArray[np.float32]],
    language: str,
    size: int,
) -> float:
    """Mean ms per utterance recognising ``audios`` in batches of ``size``."""
    started = time.perf_counter()
    for first in range(0, len(audios), size):
        recognizer.recognize_batch(
            [UtteranceRequest(a, language) for a in audios[first : first + size]]
        )
    return 1000 * (time.perf_counter() - started) / len(audios)


def batch_sweep(
    recognizer: Recognizer,
    audios: Sequence[npt.NDArray[np.float32]],
    sizes: Sequence[int],
    warm_up: bool = True,
) -> list[dict[str, float]]:
    """Per-utterance ms at each batch size (after one warm-up batch of each, which
    on a GPU settles the kernels and the allocator for that shape)."""
    rows = []
    for size in sizes:
        if warm_up:
            recognizer.recognize_batch(
                [UtteranceRequest(a, "en") for a in audios[:size]]
            )
        ms = _timed_batches(recognizer, audios, "en", size)
        rows.append({"batch": size, "ms_per_utterance": ms})
        _LOGGER.info("batch %d: %.1f ms per utterance", size, ms)
    return rows


def _sweep_table(rows: Sequence[dict[str, float]]) -> str:
    base = rows[0]["ms_per_utterance"]
    return markdown_table(
        ["batch", "ms per utterance", "vs batch 1"],
        [
            [r["batch"], r["ms_per_utterance"], r["ms_per_utterance"] / base]
            for r in rows
        ],
    )


def _cpu_only(reason: str, quick: bool) -> Section:
    """What runs without a GPU: the one-core batch sweep."""
    clips = ravdess_clips(2 if quick else 8, seed=5)
    audios = [c.audio() for c in clips]
    models, models_note = model_dir()
    recognizer = Recognizer(
        RecognizerOptions(
            EmotionOptions(model_dir=str(models), device="cpu"),
            AsrOptions(device="cpu", num_threads=1, num_workers=1),
        )
    )
    recognizer.warm_up()
    rows = batch_sweep(recognizer, audios, (1, len(audios)), warm_up=False)
    data: dict[str, Any] = {
        "gpu": None,
        "absent": reason,
        "cpu_one_thread_sweep": rows,
        "models": models_note,
    }
    body = "\n".join(
        [
            f"**GPU parts absent**: no usable CUDA device ({reason}). Single-stream "
            "latency, capacity at p95 <= 1 s, GPU memory and the faster-whisper ratio "
            "on a GPU were not measured in this run.",
            "",
            f"CPU batch sweep instead: {len(audios)} RAVDESS utterances through "
            "`Recognizer.recognize_batch` (ASR on, language given, Whisper base int8 "
            f"on one thread, emotion graphs: {models_note}), one at a time vs all in "
            "one call; the basis of batching being off on one core.",
            "",
            _sweep_table(rows),
        ]
    )
    return Section(TITLE, "benchmarks/gpu.py", body, data)


def _placement(recognizer: Recognizer) -> list[list[str]]:
    rows = [
        [m.contract.name, provider_line(m.session.get_providers())]
        for m in recognizer.models.all_models
    ]
    if recognizer.asr is not None:
        asr = recognizer.asr
        rows.append([asr.name, f"CTranslate2 {asr.device} ({asr.compute_type})"])
    return rows


def _peer(
    recognizer: Recognizer, audios: Sequence[npt.NDArray[np.float32]], best: int
) -> dict[str, float]:
    """faster-whisper ``transcribe`` one at a time vs streamser's whole pipeline."""
    if recognizer.asr is None:
        raise RuntimeError("the GPU run needs Whisper loaded (ASR on)")
    faster_whisper_transcribe(recognizer.asr, audios[0], "en")  # warm-up
    started = time.perf_counter()
    for audio in audios:
        faster_whisper_transcribe(recognizer.asr, audio, "en")
    peer_ms = 1000 * (time.perf_counter() - started) / len(audios)
    single = _timed_batches(recognizer, audios, "en", 1)
    batched = _timed_batches(recognizer, audios, "en", best)
    return {
        "faster_whisper_ms": peer_ms,
        "streamser_batch1_ms": single,
        "streamser_batched_ms": batched,
        "best_batch": best,
        "ratio_batch1": single / peer_ms,
        "ratio_batched": batched / peer_ms,
    }


def _capacity(
    server: Any, pools: dict[str, Pool], counts: Sequence[int]
) -> list[dict[str, Any]]:
    """Step each load up through ``counts`` until the server-side p95 fails."""
    results = []
    for load in (DENSE, SPARSE):
        for count in counts:
            _LOGGER.info("%s: %d streams", load, count)
            step = _step(server, count, _plans(count, STREAM_S, pools[load]), STAGGER_S)
            entry = dict(step.__dict__)
            entry["load"] = load
            entry["gpu_memory_mb"] = gpu_memory_used_mb()
            entry["passed_client"] = step.client_p95_s <= P95_LIMIT_S and step.complete
            entry["passed_server"] = step.server_p95_s <= P95_LIMIT_S and step.complete
            results.append(entry)
            if not entry["passed_server"]:
                break
    return results


def _most(steps: Sequence[dict[str, Any]], load: str, key: str) -> int:
    best = 0
    for step in (s for s in steps if s["load"] == load):
        if not step[key]:
            break
        best = step["count"]
    return best


def _single_stream(url: str, quick: bool) -> dict[str, float]:
    clips = ravdess_clips(2 if quick else 10, seed=2)
    plan = programme(clips, [c.audio() for c in clips], language="en")
    outcome = asyncio.run(play(url, plan, chunk_ms=20))
    return {
        "clips": len(clips),
        "client_p50_ms": 1000 * percentile(outcome.client_latency_s, 50),
        "client_p95_ms": 1000 * percentile(outcome.client_latency_s, 95),
        "server_p50_ms": 1000 * percentile(outcome.server_latency_s, 50),
        "server_p95_ms": 1000 * percentile(outcome.server_latency_s, 95),
        "missed": outcome.missed,
    }


def _gpu(quick: bool) -> tuple[str, dict[str, Any]]:
    models, models_note = model_dir()
    data: dict[str, Any] = {"gpu": gpu_description(), "models": models_note}
    data["memory_idle_mb"] = gpu_memory_used_mb()
    clips = ravdess_clips(8 if quick else SWEEP_UTTERANCES, seed=5)
    audios = [c.audio() for c in clips]
    recognizer = Recognizer(
        RecognizerOptions(
            EmotionOptions(model_dir=str(models), device=_DEVICE),
            AsrOptions(device=_DEVICE),
        )
    )
    recognizer.warm_up()
    placement = _placement(recognizer)
    data["placement"] = placement
    sizes = (1, 4, 8) if quick else BATCH_SIZES
    sweep = batch_sweep(recognizer, audios, sizes)
    data["batch_sweep"] = sweep
    best = min(sweep, key=lambda r: r["ms_per_utterance"])
    # The smallest batch within 10% of the best throughput: larger ones only add wait.
    chosen = next(
        r["batch"]
        for r in sweep
        if r["ms_per_utterance"] <= 1.1 * best["ms_per_utterance"]
    )
    data["suggested_max_batch"] = chosen
    data["peer"] = peer = _peer(recognizer, audios, int(best["batch"]))
    del recognizer
    sparse = ravdess_clips(8 if quick else 60, seed=3)
    dense = emodb_clips(8 if quick else 60, seed=3)
    pools = {
        SPARSE: Pool(sparse, [c.audio() for c in sparse], "en", GAP_S[SPARSE]),
        DENSE: Pool(dense, [c.audio() for c in dense], "de", GAP_S[DENSE]),
    }
    settings = {
        "emotion": {"model_dir": str(models), "device": _DEVICE},
        "asr": {"device": _DEVICE},
        "server": dict(SERVER_LIMITS),
    }
    with serve(settings) as server:
        data["memory_loaded_mb"] = gpu_memory_used_mb()
        data["single_stream"] = single = _single_stream(server.url, quick)
        steps = _capacity(server, pools, (4, 8) if quick else COUNTS)
        data["capacity"] = steps
        data["server_peak_rss_mb"] = server.peak_rss_mb()
    memories = [s["gpu_memory_mb"] for s in steps if s["gpu_memory_mb"] is not None]
    data["memory_peak_mb"] = max(memories) if memories else None
    most = {
        load: (
            _most(steps, load, "passed_client"),
            _most(steps, load, "passed_server"),
        )
        for load in (DENSE, SPARSE)
    }
    data["max_streams"] = most

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f} MiB"

    body = [
        f"GPU: {data['gpu']}; emotion graphs: {models_note}; Whisper base, "
        "CTranslate2 float16 on CUDA, beam 1.",
        "",
        "Where each model runs:",
        "",
        markdown_table(["model", "runs on"], placement),
        "",
        f"Batch sweep: {len(audios)} RAVDESS utterances through "
        "`Recognizer.recognize_batch` (ASR on, language given), per-utterance time "
        f"at each batch size; smallest batch within 10% of the best: {chosen}.",
        "",
        _sweep_table(sweep),
        "",
        f"Plain faster-whisper `transcribe` on the same GPU and utterances (float16, "
        f"beam 1, language given, one at a time): {peer['faster_whisper_ms']:.1f} ms "
        f"per utterance; streamser's whole pipeline {peer['streamser_batch1_ms']:.1f} "
        f"ms at batch 1 ({peer['ratio_batch1']:.2f}x) and "
        f"{peer['streamser_batched_ms']:.1f} ms at batch {peer['best_batch']} "
        f"({peer['ratio_batched']:.2f}x).",
        "",
        f"Single stream ({single['clips']} RAVDESS clips, real time, 20 ms chunks): "
        f"end of speech to `utterance.end` p50 {single['client_p50_ms']:.0f} ms, p95 "
        f"{single['client_p95_ms']:.0f} ms (server `latency_ms` p50 "
        f"{single['server_p50_ms']:.0f}, p95 {single['server_p95_ms']:.0f}).",
        "",
        f"GPU memory in use (nvidia-smi, all processes): {mb(data['memory_idle_mb'])} "
        f"before loading, {mb(data['memory_loaded_mb'])} with the server loaded, "
        f"{mb(data['memory_peak_mb'])} at most after a capacity step.",
        "",
        f"Capacity: streams of ~{STREAM_S:.0f} s in real time, {CHUNK_MS} ms chunks, "
        f"starts spread over {STAGGER_S:g} s, ASR on, default settings on CUDA; dense "
        "= 2 s EMO-DB clips with 1 s gaps, sparse = RAVDESS clips with 1.5 s gaps. A "
        f"count passes when p95 <= {P95_LIMIT_S:g} s and nothing is shed, missed or "
        "failed; stepping stops when the server-side p95 fails.",
        "",
        markdown_table(
            [
                "load",
                "most streams, client p95 <= 1 s",
                "most streams, server p95 <= 1 s",
            ],
            [[load, c, s] for load, (c, s) in most.items()],
        ),
        "",
        markdown_table(
            [
                "load",
                "streams",
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
                "GPU MiB",
            ],
            [
                [
                    s["load"],
                    s["count"],
                    s["utterances"],
                    s["utterances_per_s"],
                    100 * s["transcribed"] / max(1, s["utterances"]),
                    1000 * s["client_p50_s"],
                    1000 * s["client_p95_s"],
                    1000 * s["server_p95_s"],
                    s["shed"],
                    s["missed"],
                    s["errors"],
                    s["mean_batch"],
                    "n/a" if s["gpu_memory_mb"] is None else s["gpu_memory_mb"],
                ]
                for s in steps
            ],
        ),
    ]
    return "\n".join(body), data


def run(quick: bool = False) -> Section:
    """The GPU run, or the CPU sweep with the GPU parts reported absent."""
    usable, status = cuda_status()
    _LOGGER.info("%s", status)
    if usable:
        body, data = _gpu(quick)
        data["status"] = status
        section = Section(TITLE, "benchmarks/gpu.py", body, data)
    else:
        section = _cpu_only(status, quick)
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(section.data, indent=1, default=str))
    _LOGGER.info("raw numbers written to %s", JSON_PATH)
    return section
