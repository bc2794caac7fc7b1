"""``Engine``: what every stream shares (the recogniser, its executors, batching,
the ASR skip rule, event ids and the fan-out to sinks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from streamser.analytics.rules import AnalyticsOptions
from streamser.audio.segmenter import (
    SegmenterOptions,
)
from streamser.audio.vad import VadOptions
from streamser.events import (
    ASR_OFF,
    ASR_OK,
    ASR_REJECTED,
    ASR_SKIPPED_OVERLOAD,
    ASR_SKIPPED_SHUTDOWN,
    Envelope,
    ErrorEvent,
    EventSequencer,
)
from streamser.metrics import Metrics
from streamser.pipeline.asr_queue import AsrQueue
from streamser.pipeline.options import PipelineOptions
from streamser.recognition.adaptation import NO_BASELINE, Baseline
from streamser.recognition.recognizer import Recognition, Recognizer, UtteranceRequest

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

TRANSCRIPTION_STAGES = frozenset({"recognize", "partial_asr"})
"""The ``Engine.run`` stages that run Whisper (the others are short)."""
PARTIAL_REST = 3.0
"""After a partial transcript, later partials (of utterances that have text) wait this
many times as long as it took: they keep at most a quarter of a worker busy, and a
final that comes meanwhile mostly has the CPU to itself."""
PARTIAL_OVERLOAD_S = 3.0
"""Partials stop this long after a live utterance went without a transcript: under
sustained overload that keeps them off; after one late utterance (a burst of finals)
they come back with the next utterances."""
LIVE_ACTIVE_S = 30.0
"""Live streams count as active this long after one sent audio or queued an
utterance for transcription: bulk transcription then takes one utterance at a
time."""
LIVE_OVERLOAD_S = 10.0
"""Live streams count as in overload this long after one of their utterances went
without a transcript: bulk transcription then waits."""


class Engine:
    """What all streams share. Create and use it on one event loop."""

    def __init__(
        self,
        recognizer: Recognizer,
        options: PipelineOptions,
        vad: VadOptions,
        segmenter: SegmenterOptions,
        metrics: Metrics,
        analytics: AnalyticsOptions | None = None,
    ) -> None:
        """Wrap a loaded recogniser; sinks (``add_sink``) get every event in ``id``
        order.

        Settings left to the device (``PipelineOptions.for_device``) follow where
        the recogniser's Whisper runs.
        """
        self.recognizer = recognizer
        self.analytics_options = (
            analytics if analytics is not None else (AnalyticsOptions())
        )
        options = _for_recognizer(options, recognizer)
        self.options = options
        self.vad_options = vad
        self.segmenter_options = segmenter
        self.metrics = metrics
        self.sequencer = EventSequencer()
        self._sinks: list[Callable[[Envelope], None]] = []
        workers = options.workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="recognize")
        # Utterances whose transcription was skipped run here, beside the workers,
        # so their emotion does not wait behind transcriptions.
        self._acoustic_executor = ThreadPoolExecutor(
            workers, thread_name_prefix="acoustic"
        )
        self._outbox: deque[Envelope] = deque()
        self._in_flight = 0
        self._transcriptions = 0
        """Runs of ``TRANSCRIPTION_STAGES`` in flight."""
        self._partials_rest_until = -math.inf
        """Later partial transcripts wait until then (``room_for_more_text``)."""
        self._queue: AsrQueue[_Request] = AsrQueue(
            workers, options.max_batch, per_utterance=_device(recognizer) != "cuda"
        )
        self._batches: list[tuple[float, int]] = []
        """(start time, size) of each transcription batch running."""
        self._bulk_batches = 0
        self._last_live = -math.inf
        """When a live stream last sent audio or queued an utterance."""
        self._last_live_skip = -math.inf
        """When a live utterance was last labelled without a transcript (overload)."""
        self._acoustic_pending = 0
        self._wake = asyncio.Event()
        self._free_slots = workers
        self._asr_cutoff: float | None = None
        self._transcription_s = 0.0
        """What a transcription takes now (moving average): per utterance where a
        batch's cost grows with its size (CPU), else per batch."""
        self._batcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._awaiting_text: dict[Hashable, Callable[[], bool]] = {}
        """Open utterances in line for their first partial text, oldest first."""

    def add_sink(
        self, sink: Callable[[Envelope], None], *, first: bool = False
    ) -> None:
        """Have ``sink`` get every event from now on, after the sinks added before
        it, or before them with ``first`` (the server's routing to its clients)."""
        self._sinks.insert(0 if first else len(self._sinks), sink)

    @property
    def sinks(self) -> tuple[Callable[[Envelope], None], ...]:
        """The sinks, in the order they get each event."""
        return tuple(self._sinks)

    def emit(self, stream_id: str, body: Any) -> Envelope:
        """Stamp an event with id, seq and time and hand it to every sink.

        An event emitted by a sink while it handles another (the JSONL sink reporting
        a full disk) is delivered after that one, so every sink sees ``id`` order.
        """
        envelope = self.sequencer.stamp(stream_id, body)
        if isinstance(body, ErrorEvent):
            self.metrics.errors.labels(body.code).inc()
        self._outbox.append(envelope)
        if len(self._outbox) == 1:
            while self._outbox:
                for sink in self._sinks:
                    try:
                        sink(self._outbox[0])
                    except Exception:  # one broken sink must not stop the others
                        _LOGGER.exception("Event sink failed")
                self._outbox.popleft()
        return envelope

    async def run(self, stage: str, func: Callable[..., _T], *args: Any) -> _T:
        """Run blocking ``func`` in the recognition executor, timing it as ``stage``."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        acoustic_only = stage == "acoustic"
        transcription = stage in TRANSCRIPTION_STAGES
        executor = self._acoustic_executor if acoustic_only else self._executor
        self._in_flight += not acoustic_only
        self._transcriptions += transcription
        try:
            return await loop.run_in_executor(executor, func, *args)
        finally:
            self._in_flight -= not acoustic_only
            self._transcriptions -= transcription
            if stage == "partial_asr":
                now = time.perf_counter()
                self._partials_rest_until = now + PARTIAL_REST * (now - started)
            self.metrics.stage_seconds.labels(stage).observe(
                time.perf_counter() - started
            )

    @property
    def busy(self) -> bool:
        """Whether every recognition worker is taken or utterances wait for one.

        Partials are skipped then (and counted): they are a preview, and under load
        the workers belong to the utterances whose ``utterance.end`` is owed.
        """
        return self._in_flight >= self.options.workers or bool(self._queue.live_waiting)

    def overloaded(self, within_s: float = LIVE_OVERLOAD_S) -> bool:
        """Whether live streams are in overload: one of their utterances went
        without a transcript in the last ``within_s``. Bulk transcription waits
        ``LIVE_OVERLOAD_S`` then, partials ``PARTIAL_OVERLOAD_S``."""
        return time.monotonic() - self._last_live_skip < within_s

    def note_live(self) -> None:
        """A live stream's audio arrived now: for ``LIVE_ACTIVE_S`` bulk
        transcription takes one utterance at a time."""
        self._last_live = time.monotonic()

    @property
    def room_for_more_text(self) -> bool:
        """Whether an utterance with partial text may get more now: the engine is
        idle, none waits for its first partial text, and the engine has rested
        ``PARTIAL_REST`` times as long as the last partial transcript took."""
        return (
            self.idle
            and time.perf_counter() >= self._partials_rest_until
            and self.next_for_text is None
        )

    @property
    def idle(self) -> bool:
        """Whether no transcription runs (final or partial) and no utterance waits
        for one; short emotion partials may run."""
        return not self._transcriptions and not self._queue

    def await_text(self, key: Hashable, waiting: Callable[[], bool]) -> None:
        """Put an open utterance that wants its first partial text in line for it
        (``key``: the utterance's, ``waiting``: whether it still does); it leaves
        the line when ``waiting`` turns false."""
        self._awaiting_text.setdefault(key, waiting)

    @property
    def next_for_text(self) -> Hashable | None:
        """The open utterance that has waited longest for its first partial text
        (its ``await_text`` key), or None. Until none waits, the later partials of
        others wait: every utterance gets some text before any gets more."""
        for key, waiting in list(self._awaiting_text.items()):
            if waiting():
                return key
            del self._awaiting_text[key]
        return None

    def stop_asr_at(self, when: float) -> None:
        """From ``time.monotonic()`` ``when`` on, start no transcription (shutdown):
        what waits then is recognised without ASR (``skipped_shutdown``)."""
        self._asr_cutoff = when
        self._wake.set()

    async def recognize(
        self,
        audio: npt.NDArray[np.float32],
        language: str | None,
        baseline: Baseline = NO_BASELINE,
        arrived: float | None = None,
        stream: str = "",
        *,
        transcribe: bool = True,
        patient: bool = False,
    ) -> Recognized:
        """Recognise one utterance, batched with those of other streams.

        Args:
            audio: the utterance, 16 kHz mono.
            language: its language, or None to detect.
            baseline: the stream's speaker baseline.
            arrived: ``time.monotonic()`` at which its audio arrived (default: now);
                its transcription is skipped if it cannot start within
                ``asr_max_lag_ms`` of that. Infinity for a bulk stream (a file, an
                upload, a client sending faster than real time): it is transcribed
                after the live streams and skipped only as a last resort (``AsrQueue``).
            stream: the stream it belongs to (ASR goes round-robin by stream).
            transcribe: False to recognise it from the voice only at once, without
                waiting for ASR (``asr`` "off").
            patient: a bulk utterance of a source with no connection to keep
                alive (a file): it waits for ASR however long it takes.
        """
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._batch_loop(), name="batcher")
        arrived = time.monotonic() if arrived is None else arrived
        due = arrived + self.options.asr_max_lag_ms / 1000
        request = _Request(
            UtteranceRequest(audio, language, baseline, transcribe=transcribe),
            asyncio.get_running_loop().create_future(),
            bulk=math.isinf(due),
        )
        if not transcribe:
            self._spawn(self._recognize_acoustic([request]))
            return await request.result
        now = time.monotonic()
        if not request.bulk:
            self._last_live = now
        self._queue.add(request, stream, due, now, patient=patient)
        self._wake.set()
        return await request.result

    async def _batch_loop(self) -> None:
        """Gather requests into batches; run up to ``workers`` batches at once.

        A live request whose transcript could not be ready by its due time (or
        that waits past the shutdown cutoff) is taken out as soon as that is known
        and recognised without ASR, so the emotion of every utterance keeps up even
        when transcription cannot. Labels come first: no transcription starts while
        utterances skipped wait for their acoustic emotion. Bulk utterances get
        what the live streams leave (``_bulk_size``).
        """
        while True:
            self._skip_overdue()
            bulk = self._bulk_size()
            ready = self._queue.live_waiting or (bulk and self._queue.bulk_waiting)
            if ready and self._free_slots > 0 and not self._acoustic_pending:
                await self._gather()
                self._skip_overdue()
                batch = self._queue.take(
                    time.monotonic(), self._transcription_s, bulk=self._bulk_size()
                )
                # A speculative request abandoned while it waited is not worth running.
                batch = [r for r in batch if not r.result.done()]
                if batch:
                    self._free_slots -= 1
                    self._spawn(self._run_batch(batch, bulk=batch[0].bulk))
                continue
            self._wake.clear()
            timeout = None
            if self._queue and self.transcribing:
                timeout = max(
                    0.0,
                    self._queue.next_deadline()
                    - self._transcription_s
                    - time.monotonic(),
                )
                if self._asr_cutoff is not None:
                    timeout = min(
                        timeout, max(0.0, self._asr_cutoff - time.monotonic())
                    )
            if timeout is not None and math.isinf(timeout):
                timeout = None  # only streams that are never late wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _bulk_size(self) -> int:
        """How many bulk utterances a batch may take now. Bulk gets only what live
        streams leave: none while a live utterance waits or is transcribed, none
        while live streams are in overload (one of their utterances went without
        a transcript in the last ``LIVE_OVERLOAD_S``), and, while live streams are
        active (``note_live``), one utterance at a time,
        one batch at a time, so that a live utterance arriving meanwhile waits
        behind one transcription at most. With no live stream, bulk batches leave
        one worker free (when there are two or more) for a call that starts."""
        if self._queue.live_waiting or len(self._batches) > self._bulk_batches:
            return 0
        if self.overloaded():
            return 0
        if time.monotonic() - self._last_live < LIVE_ACTIVE_S:
            return 0 if self._bulk_batches else 1
        free = self._bulk_batches < max(1, self.options.workers - 1)
        return self.options.max_batch if free else 0

    @property
    def transcribing(self) -> bool:
        """Whether utterances get transcripts (Whisper loaded and ASR on)."""
        return self.recognizer.asr is not None and self.recognizer.options.asr.enabled

    async def _gather(self) -> None:
        """Give other streams ``batch_wait_ms`` to join a batch that is not full."""
        deadline = time.monotonic() + self.options.batch_wait_ms / 1000
        while len(self._queue) < self.options.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _skip_overdue(self) -> None:
        """Send the waiting requests whose transcription is overdue to the acoustic
        lane (acoustic and text models only)."""
        if not self._queue or not self.transcribing:
            return
        now = time.monotonic()
        shutdown = self._asr_cutoff is not None and now >= self._asr_cutoff
        if shutdown:
            overdue = self._queue.remove(lambda r: True)
        else:
            overdue = self._queue.overdue(
                now,
                self._batches,
                self._transcription_s,
                bulk_blocked=not self._bulk_size(),
            )
        if not overdue:
            return
        reason = ASR_SKIPPED_SHUTDOWN if shutdown else ASR_SKIPPED_OVERLOAD
        batch = []
        for request in overdue:
            if request.result.done():
                continue
            request.skipped = reason
            request.request = replace(request.request, transcribe=False)
            batch.append(request)
        if any(not r.bulk for r in batch):
            self._last_live_skip = now
        if batch:
            self.metrics.skipped_asr.labels(reason).inc(len(batch))
            self._spawn(self._recognize_acoustic(batch))

    async def _recognize_acoustic(self, batch: list[_Request]) -> None:
        """Recognise skipped utterances without ASR; transcriptions wait meanwhile."""
        self._acoustic_pending += 1
        try:
            await self._recognize_batch(batch, "acoustic")
        finally:
            self._acoustic_pending -= 1
            self._wake.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[_Request], *, bulk: bool) -> None:
        started = time.monotonic()
        running = (started, len(batch))
        self._batches.append(running)
        self._bulk_batches += bulk
        try:
            self.metrics.batch_size.observe(len(batch))
            await self._recognize_batch(batch, "recognize")
        finally:
            self._batches.remove(running)
            self._bulk_batches -= bulk
            self._free_slots += 1
            self._wake.set()
        if self.transcribing:
            # What a transcription takes now (moving average): under load it grows,
            # and fewer utterances wait for one.
            took = time.monotonic() - started
            if self._queue.per_utterance:
                took /= len(batch)
            self._transcription_s += 0.2 * (took - self._transcription_s)

    async def _recognize_batch(self, batch: list[_Request], stage: str) -> None:
        try:
            results = await self.run(
                stage,
                self.recognizer.recognize_batch,
                [r.request for r in batch],
                self._nobody_waits,
            )
        except Exception as err:
            if len(batch) > 1:
                # One bad utterance must not fail the others: retry them one by one.
                for request in batch:
                    await self._recognize_batch([request], stage)
            elif not batch[0].result.done():
                batch[0].result.set_exception(err)
            return
        for request, result in zip(batch, results, strict=True):
            if not request.result.done():
                request.result.set_result(Recognized(result, request.asr_state(result)))

    def _nobody_waits(self) -> bool:
        """Whether no live utterance waits for a worker (asked from a worker
        thread): Whisper's fallback decodings, which can take several times a
        first decoding, stop while one does."""
        return not self._queue.live_waiting

    def replace(
        self,
        recognizer: Recognizer,
        vad: VadOptions,
        segmenter: SegmenterOptions,
        options: PipelineOptions,
        analytics: AnalyticsOptions | None = None,
    ) -> None:
        """Swap in reloaded models and settings (SIGHUP) without touching streams.

        Utterances recognised from now on use ``recognizer``; streams opened from now
        on use the new VAD and segmenter settings. Calls already running finish on
        the old recogniser. A changed worker count gets a new executor; the old one
        finishes what it holds in the background.
        """
        old_workers = self.options.workers
        options = _for_recognizer(options, recognizer)
        self.recognizer = recognizer
        self.vad_options = vad
        self.segmenter_options = segmenter
        self.options = options
        if analytics is not None:
            self.analytics_options = analytics
        workers = options.workers
        self._free_slots += workers - old_workers
        self._queue.workers = workers
        self._queue.max_batch = options.max_batch
        self._queue.per_utterance = _device(recognizer) != "cuda"
        if workers != old_workers:
            old = self._executor
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="recognize")
            old.shutdown(wait=False)

    def close(self) -> None:
        """Stop the batcher and the executors (after the streams have finished)."""
        if self._batcher is not None:
            self._batcher.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._acoustic_executor.shutdown(wait=True, cancel_futures=True)


def _device(recognizer: Recognizer) -> str:
    """Where ``recognizer``'s Whisper runs: "cpu" or "cuda"."""
    return recognizer.asr.device if recognizer.asr is not None else "cpu"


def _for_recognizer(
    options: PipelineOptions, recognizer: Recognizer
) -> PipelineOptions:
    """``options`` made concrete for where ``recognizer``'s Whisper runs."""
    asr = recognizer.asr
    device = _device(recognizer)
    workers = asr.options.num_workers if asr is not None else 2
    return options.for_device(device, asr_workers=workers)


@dataclass(frozen=True)
class Recognized:
    """An utterance's recognition and whether (or why not) it was transcribed."""

    recognition: Recognition
    asr: str
    """``utterance.end``'s ``asr``: one of ``events.ASR_STATES``."""


@dataclass(eq=False)
class _Request:
    request: UtteranceRequest
    result: asyncio.Future[Recognized]
    skipped: str | None = None
    bulk: bool = False

    def asr_state(self, recognition: Recognition) -> str:
        if self.skipped is not None:
            return self.skipped
        if not recognition.transcribed:
            return ASR_OFF
        return ASR_REJECTED if recognition.rejected else ASR_OK
