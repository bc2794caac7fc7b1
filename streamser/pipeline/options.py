"""How streams are processed: ``PipelineOptions`` and the batching defaults by device."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Final

BATCH_DEFAULTS: Final[dict[str, tuple[int, int]]] = {
    "cpu": (8, 10),
    "cpu-1": (1, 0),
    "cuda": (32, 20),
}
"""``(max_batch, batch_wait_ms)`` by where Whisper runs. CPU with two or more cores:
8 per call, 10 ms wait (BENCHMARKS.md: 8 per call saved 13% of the per-utterance
time; under load batches stay near 1 and a shorter or no wait was within noise). One
core: batching off, as it does not pay there: on one Whisper thread 8 RAVDESS
utterances in one call took 1647 ms each against 1570 ms one at a time, 5% more
(``python -m benchmarks --parts gpu`` without a GPU, on a loaded 2-core host), and a
batch also waits for its members. CUDA: a GPU's cost per
call hardly grows with the batch, so batches are large and the wait a little longer;
provisional until ``python -m benchmarks --parts gpu`` has run on a GPU (its batch
sweep and capacity steps are what these numbers are to be chosen from)."""


@dataclass(frozen=True)
class PipelineOptions:
    """How streams are processed."""

    partial_interval_ms: int = 1000
    """Stream audio between two ``emotion.partial`` events of one utterance; 0 turns
    partials off."""
    partial_window_ms: int = 4000
    """The most recent speech a partial looks at."""
    max_pending_utterances: int = 8
    """Utterances a stream may queue for recognition before its source is paused
    (the server stops reading its socket: backpressure); a stream that cannot be
    paused and gets 4 times as far behind sheds with an ``overloaded`` error event
    (counted, logged as a bug)."""
    asr_max_lag_ms: int = 2000
    """An utterance of a live stream whose transcript would not be ready this long
    after its audio arrived (judged by the utterances queued ahead of it and what a
    transcription takes now) is recognised without ASR as soon as that is known (its
    emotion is never late; ``utterance.end`` says ``"asr": "skipped_overload"``).
    Streams that are not live (files, uploads, clients sending more than 1 s ahead
    of real time) wait behind the live ones (skipped only when one has waited 16 s
    with every worker busy, so that its unread connection does not time out) and get
    backpressure (``streamser.pipeline.asr_queue``)."""
    workers: int = 0
    """Recognition calls that may run at once; 0 for the device's default: one per
    core on CPU, Whisper's ``asr.num_workers`` on CUDA (so that utterances gather
    into large batches rather than many small ones)."""
    max_batch: int = 0
    """Utterances of concurrent streams recognised in one call; 0 for the device's
    default (``BATCH_DEFAULTS``)."""
    batch_wait_ms: int = -1
    """How long the first utterance of a batch waits for others; short, so that
    batching never costs a lone stream its latency; -1 for the device's default
    (``BATCH_DEFAULTS``)."""

    def __post_init__(self) -> None:
        if self.partial_interval_ms < 0 or self.partial_window_ms < 100:
            raise ValueError("partial_interval_ms >= 0 and partial_window_ms >= 100")
        if self.max_pending_utterances < 2 or self.workers < 0:
            raise ValueError("max_pending_utterances >= 2 and workers >= 0")
        if self.max_batch < 0 or self.batch_wait_ms < -1:
            raise ValueError(
                "max_batch >= 1 (0: by device) and batch_wait_ms >= 0 (-1: by device)"
            )
        if self.asr_max_lag_ms < 0:
            raise ValueError("asr_max_lag_ms >= 0")

    def for_device(
        self, device: str, cores: int | None = None, asr_workers: int = 2
    ) -> PipelineOptions:
        """These options with every "by device" setting (0 or -1) made concrete.

        Args:
            device: where Whisper runs, "cpu" or "cuda".
            cores: CPU cores (default ``os.cpu_count()``).
            asr_workers: Whisper's ``asr.num_workers``, the CUDA default of
                ``workers``.
        """
        cores = cores or os.cpu_count() or 1
        key = "cuda" if device == "cuda" else ("cpu" if cores > 1 else "cpu-1")
        max_batch, wait_ms = BATCH_DEFAULTS[key]
        workers = self.workers or (asr_workers if device == "cuda" else cores)
        return replace(
            self,
            workers=workers,
            max_batch=self.max_batch or max_batch,
            batch_wait_ms=wait_ms if self.batch_wait_ms < 0 else self.batch_wait_ms,
        )

    @property
    def shed_limit(self) -> int:
        """Queued utterances beyond which a stream that cannot be paused sheds."""
        return 4 * self.max_pending_utterances
