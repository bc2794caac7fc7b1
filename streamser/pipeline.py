"""The asyncio pipeline: audio streams in, events out.

``Engine`` is shared by every stream: the recogniser, the executor it runs in, the
event ids and the fan-out to sinks. ``StreamSession`` is one audio stream: decoding,
VAD and segmentation run synchronously on the loop as audio arrives (they are cheap
and sans-I/O); each closed utterance goes through a bounded queue to the stream's
worker task, which runs recognition in the executor so the loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import AudioDecoder
from streamser.audio.segmenter import (
    Segmenter,
    SegmenterOptions,
    SegmentEvent,
    SpeechStarted,
    UtteranceEnding,
)
from streamser.audio.vad import VadOptions, make_vad
from streamser.events import (
    ASR_OFF,
    ASR_OK,
    ASR_SKIPPED_OVERLOAD,
    ASR_SKIPPED_SHUTDOWN,
    EmotionPartial,
    Envelope,
    ErrorEvent,
    EventSequencer,
    ModalityScores,
    ModelInfo,
    SpeechStart,
    StreamEnd,
    StreamStart,
    UtteranceEnd,
    samples_to_seconds,
)
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.recognition.adaptation import NO_BASELINE, Baseline, SpeakerBaseline
from streamser.recognition.emotion import EmotionScores
from streamser.recognition.recognizer import Recognition, Recognizer, UtteranceRequest

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class PipelineOptions:
    """How streams are processed.

    Attributes:
        partial_interval_ms: stream audio between two ``emotion.partial`` events of
            one utterance; 0 turns partials off.
        partial_window_ms: the most recent speech a partial looks at.
        max_pending_utterances: utterances a stream may queue for recognition before
            its source is paused (the server stops reading its socket: backpressure);
            a stream that cannot be paused and gets 4 times as far behind sheds with
            an ``overloaded`` error event (counted, logged as a bug).
        asr_max_lag_ms: an utterance whose transcription has not started this long
            after its audio arrived is recognised without ASR (its emotion is never
            late; ``utterance.end`` says ``"asr": "skipped_overload"``). Audio that
            arrives faster than real time counts as arriving at its real-time pace.
        workers: recognition calls that may run at once; 0 for one per core.
        max_batch: utterances of concurrent streams recognised in one call.
        batch_wait_ms: how long the first utterance of a batch waits for others;
            short, so that batching never costs a lone stream its latency.
    """

    partial_interval_ms: int = 1000
    partial_window_ms: int = 4000
    max_pending_utterances: int = 8
    asr_max_lag_ms: int = 2000
    workers: int = 0
    max_batch: int = 8
    batch_wait_ms: int = 10

    def __post_init__(self) -> None:
        if self.partial_interval_ms < 0 or self.partial_window_ms < 100:
            raise ValueError("partial_interval_ms >= 0 and partial_window_ms >= 100")
        if self.max_pending_utterances < 2 or self.workers < 0:
            raise ValueError("max_pending_utterances >= 2 and workers >= 0")
        if self.max_batch < 1 or self.batch_wait_ms < 0:
            raise ValueError("max_batch >= 1 and batch_wait_ms >= 0")
        if self.asr_max_lag_ms < 0:
            raise ValueError("asr_max_lag_ms >= 0")

    @property
    def shed_limit(self) -> int:
        """Queued utterances beyond which a stream that cannot be paused sheds."""
        return 4 * self.max_pending_utterances


class Engine:
    """What all streams share. Create and use it on one event loop."""

    def __init__(
        self,
        recognizer: Recognizer,
        options: PipelineOptions,
        vad: VadOptions,
        segmenter: SegmenterOptions,
        metrics: Metrics,
    ) -> None:
        """Wrap a loaded recogniser; ``sinks`` get every event in ``id`` order."""
        self.recognizer = recognizer
        self.options = options
        self.vad_options = vad
        self.segmenter_options = segmenter
        self.metrics = metrics
        self.sequencer = EventSequencer()
        self.sinks: list[Callable[[Envelope], None]] = []
        workers = options.workers or (os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="recognize")
        # Utterances whose transcription was skipped run here, beside the workers,
        # so their emotion does not wait behind transcriptions.
        self._acoustic_executor = ThreadPoolExecutor(1, thread_name_prefix="acoustic")
        self._outbox: deque[Envelope] = deque()
        self._in_flight = 0
        self._waiting: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._free_slots = workers
        self._asr_cutoff: float | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

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
                for sink in self.sinks:
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
        executor = self._acoustic_executor if acoustic_only else self._executor
        self._in_flight += not acoustic_only
        try:
            return await loop.run_in_executor(executor, func, *args)
        finally:
            self._in_flight -= not acoustic_only
            self.metrics.stage_seconds.labels(stage).observe(
                time.perf_counter() - started
            )

    @property
    def busy(self) -> bool:
        """Whether every recognition worker is taken or utterances wait for one.

        Partials are skipped then (and counted): they are a preview, and under load
        the workers belong to the utterances whose ``utterance.end`` is owed.
        """
        workers = self.options.workers or (os.cpu_count() or 1)
        return self._in_flight >= workers or bool(self._waiting)

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
    ) -> Recognized:
        """Recognise one utterance, batched with those of other streams.

        Args:
            audio: the utterance, 16 kHz mono.
            language: its language, or None to detect.
            baseline: the stream's speaker baseline.
            arrived: ``time.monotonic()`` at which its audio arrived (default: now);
                its transcription is skipped if it cannot start within
                ``asr_max_lag_ms`` of that.
        """
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._batch_loop(), name="batcher")
        arrived = time.monotonic() if arrived is None else arrived
        request = _Request(
            UtteranceRequest(audio, language, baseline),
            asyncio.get_running_loop().create_future(),
            due=arrived + self.options.asr_max_lag_ms / 1000,
        )
        self._waiting.append(request)
        self._wake.set()
        return await request.result

    async def _batch_loop(self) -> None:
        """Gather requests into batches; run up to ``workers`` batches at once.

        A request that waits past its ``due`` time (or past the shutdown cutoff) is
        taken out and recognised without ASR at once, so the emotion of every
        utterance keeps up even when transcription cannot.
        """
        while True:
            self._skip_overdue()
            if self._waiting and self._free_slots > 0:
                await self._gather()
                self._skip_overdue()
                count = min(len(self._waiting), self.options.max_batch)
                batch = [self._waiting.popleft() for _ in range(count)]
                # A speculative request abandoned while it waited is not worth running.
                batch = [r for r in batch if not r.result.done()]
                if batch:
                    self._free_slots -= 1
                    self._spawn(self._run_batch(batch))
                continue
            self._wake.clear()
            timeout = None
            if self._waiting and self._transcribing:
                timeout = max(0.0, min(r.due for r in self._waiting) - time.monotonic())
                if self._asr_cutoff is not None:
                    timeout = min(
                        timeout, max(0.0, self._asr_cutoff - time.monotonic())
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    @property
    def _transcribing(self) -> bool:
        return self.recognizer.asr is not None and self.recognizer.options.asr

    async def _gather(self) -> None:
        """Give other streams ``batch_wait_ms`` to join a batch that is not full."""
        deadline = time.monotonic() + self.options.batch_wait_ms / 1000
        while len(self._waiting) < self.options.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _skip_overdue(self) -> None:
        """Send the waiting requests whose transcription is overdue to the acoustic
        lane (acoustic and text models only)."""
        if not self._waiting or not self._transcribing:
            return
        now = time.monotonic()
        shutdown = self._asr_cutoff is not None and now >= self._asr_cutoff
        overdue = [r for r in self._waiting if shutdown or now >= r.due]
        if not overdue:
            return
        self._waiting = deque(r for r in self._waiting if r not in overdue)
        reason = ASR_SKIPPED_SHUTDOWN if shutdown else ASR_SKIPPED_OVERLOAD
        batch = []
        for request in overdue:
            if request.result.done():
                continue
            request.skipped = reason
            request.request = replace(request.request, transcribe=False)
            batch.append(request)
        if batch:
            self.metrics.skipped_asr.labels(reason).inc(len(batch))
            self._spawn(self._recognize_batch(batch, "acoustic"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[_Request]) -> None:
        try:
            self.metrics.batch_size.observe(len(batch))
            await self._recognize_batch(batch, "recognize")
        finally:
            self._free_slots += 1
            self._wake.set()

    async def _recognize_batch(self, batch: list[_Request], stage: str) -> None:
        try:
            results = await self.run(
                stage, self.recognizer.recognize_batch, [r.request for r in batch]
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

    def replace(
        self,
        recognizer: Recognizer,
        vad: VadOptions,
        segmenter: SegmenterOptions,
        options: PipelineOptions,
    ) -> None:
        """Swap in reloaded models and settings (SIGHUP) without touching streams.

        Utterances recognised from now on use ``recognizer``; streams opened from now
        on use the new VAD and segmenter settings. Calls already running finish on
        the old recogniser. A changed worker count gets a new executor; the old one
        finishes what it holds in the background.
        """
        old_workers = self.options.workers or (os.cpu_count() or 1)
        self.recognizer = recognizer
        self.vad_options = vad
        self.segmenter_options = segmenter
        self.options = options
        workers = options.workers or (os.cpu_count() or 1)
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
    due: float
    """``time.monotonic()`` after which its transcription is skipped."""
    skipped: str | None = None

    def asr_state(self, recognition: Recognition) -> str:
        if self.skipped is not None:
            return self.skipped
        return ASR_OK if recognition.transcribed else ASR_OFF


@dataclass
class _Speculation:
    """Recognition started on an ``UtteranceEnding``, before the utterance closed."""

    ending: UtteranceEnding
    language: str | None
    baseline_version: int
    task: asyncio.Task[Recognized]


@dataclass
class _Pending:
    index: int
    start_sample: int
    end_sample: int
    audio: npt.NDArray[np.float32]
    closed_at: float
    speculation: _Speculation | None = None


def _retrieve(task: asyncio.Task[Recognized]) -> None:
    """Mark a discarded speculation's failure as seen (it is not reported)."""
    if not task.cancelled():
        task.exception()


def _rounded(value: float | None) -> float | None:
    """An arousal or valence value for an event (None stays None)."""
    return None if value is None else round(value, 6)


def _modality(scores: EmotionScores | None) -> ModalityScores | None:
    if scores is None:
        return None
    return ModalityScores(label=scores.label, scores=dict(scores.scores))


class StreamSession:
    """One audio stream from start to ``stream.end``. Use from the loop thread only."""

    def __init__(self, engine: Engine, start: StartMessage, stream_id: str) -> None:
        """Set up decoding and segmentation; call ``open`` to announce the stream."""
        self.engine = engine
        self.start = start
        self.stream_id = stream_id
        self.language = start.language
        self._decoder = AudioDecoder(start.encoding, start.sample_rate, start.channels)
        self._segmenter = Segmenter(
            make_vad(engine.vad_options), engine.segmenter_options
        )
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._opened_at = time.monotonic()
        self._worker: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._partial: asyncio.Task[None] | None = None
        self._next_partial_sample = 0
        self._open_index: int | None = None
        self._open_start = 0
        self._last_done_index = -1
        self._speculation: _Speculation | None = None
        self._baseline = SpeakerBaseline(engine.recognizer.adaptation_window)
        self._recognizing = False
        self.utterances = 0
        self.closed = False

    def open(self) -> None:
        """Emit ``stream.start`` and start the recognition worker."""
        self._opened_at = time.monotonic()
        self.engine.metrics.streams.inc()
        self.engine.metrics.active_streams.inc()
        self.engine.emit(
            self.stream_id,
            StreamStart(
                sample_rate=self.start.sample_rate,
                encoding=self.start.encoding,
                language=self.start.language,
                metadata=dict(self.start.metadata),
                models=tuple(
                    ModelInfo(**m) for m in self.engine.recognizer.model_versions()
                ),
            ),
        )
        self._worker = asyncio.create_task(
            self._work(), name=f"stream-{self.stream_id}"
        )

    @property
    def audio_seconds(self) -> float:
        """Seconds of 16 kHz audio received so far."""
        return self._segmenter.samples_seen / SAMPLE_RATE_HZ

    def feed(self, payload: bytes) -> None:
        """Decode and segment one binary message.

        Raises:
            ProtocolError: the payload is not whole samples (nothing is consumed).
        """
        self.feed_audio(self._decoder.decode(payload))

    def feed_audio(self, audio: npt.NDArray[np.float32]) -> None:
        """Segment 16 kHz mono audio."""
        self.engine.metrics.audio_seconds.inc(audio.shape[0] / SAMPLE_RATE_HZ)
        self._handle(self._segmenter.push(audio))
        self._maybe_partial()

    @property
    def backlogged(self) -> bool:
        """Whether the source should pause: ``max_pending_utterances`` minus one wait
        for recognition (one more may close from audio already taken in)."""
        limit = self.engine.options.max_pending_utterances
        return self._queue.qsize() >= limit - 1

    async def wait_for_room(self) -> None:
        """Wait until the stream is no longer ``backlogged`` (backpressure).

        Sources that can pause (files, WebSocket clients, whose socket is then not
        read) call this between chunks, so nothing is shed.
        """
        while self.backlogged and not self.closed:
            self._room.clear()
            await self._room.wait()

    def flush(self) -> None:
        """End the current utterance now (the client's ``flush``)."""
        self._handle(self._segmenter.flush())

    async def close(self) -> None:
        """Finish every pending utterance, then emit ``stream.end``."""
        if self.closed:
            return
        self.closed = True
        tail = self._decoder.flush()
        if tail.size:
            self._handle(self._segmenter.push(tail))
        self._handle(self._segmenter.flush())
        self._drop_speculation()
        await self._queue.put(None)
        if self._worker is not None:
            await self._worker
        if self._partial is not None:
            await self._partial
        self.engine.emit(
            self.stream_id,
            StreamEnd(
                utterances=self.utterances,
                audio_seconds=round(self.audio_seconds, 3),
            ),
        )
        self.engine.sequencer.forget(self.stream_id)
        self.engine.metrics.active_streams.dec()

    def error(self, code: str, message: str, *, fatal: bool) -> None:
        """Emit an ``error`` event on this stream."""
        self.engine.emit(
            self.stream_id, ErrorEvent(code=code, message=message, fatal=fatal)
        )

    def _handle(self, results: list[SegmentEvent]) -> None:
        for result in results:
            if isinstance(result, UtteranceEnding):
                self._speculate(result)
                continue
            if isinstance(result, SpeechStarted):
                self._open_index = result.utterance_index
                self._open_start = result.start_sample
                self._next_partial_sample = (
                    result.start_sample
                    + self.engine.options.partial_interval_ms * SAMPLE_RATE_HZ // 1000
                )
                self.engine.emit(
                    self.stream_id,
                    SpeechStart(
                        utterance_id=result.utterance_index,
                        start=samples_to_seconds(result.start_sample),
                    ),
                )
                continue
            self._open_index = None
            pending = _Pending(
                index=result.utterance_index,
                start_sample=result.start_sample,
                end_sample=result.end_sample,
                audio=result.audio,
                closed_at=time.monotonic(),
            )
            if self._speculation and self._speculation.ending.matches(result):
                pending.speculation, self._speculation = self._speculation, None
            else:
                self._drop_speculation()
            if self._queue.qsize() >= self.engine.options.shed_limit:
                # The source did not pause (it cannot, or does not wait for room):
                # the last resort, and a bug when it happens.
                if pending.speculation is not None:
                    pending.speculation.task.cancel()
                self.engine.metrics.dropped_utterances.inc()
                _LOGGER.error(
                    "Stream %s: utterance %d shed, %d utterances behind",
                    self.stream_id,
                    result.utterance_index,
                    self._queue.qsize(),
                )
                self.error(
                    "overloaded",
                    f"utterance {result.utterance_index} dropped: recognition is "
                    f"{self._queue.qsize()} utterances behind",
                    fatal=False,
                )
                continue
            self._queue.put_nowait(pending)
            self.engine.metrics.queue_depth.inc()

    def _speculate(self, ending: UtteranceEnding) -> None:
        """Start recognising an utterance that has gone quiet, unless workers are busy
        (or, for a stream adapting to its speaker, an earlier utterance is unfinished).

        Most utterances stay quiet until the hangover closes them, and then their
        ``utterance.end`` waits only for what is left of this work. Under load the
        workers belong to closed utterances, so nothing is started then.
        """
        self._drop_speculation()
        if self.engine.busy:
            return
        if self._baseline.window and self.pending_utterances:
            return  # an earlier utterance's result will change the baseline
        baseline = self._baseline.snapshot()
        self._speculation = _Speculation(
            ending,
            self.language,
            baseline.version,
            asyncio.create_task(
                self.engine.recognize(
                    ending.audio,
                    self.language,
                    baseline,
                    self._arrival(ending.end_sample, time.monotonic()),
                )
            ),
        )
        self._speculation.task.add_done_callback(_retrieve)

    def _drop_speculation(self) -> None:
        """Abandon the open speculation: speech resumed or the utterance ended
        otherwise (flush, max length, end of stream)."""
        if self._speculation is not None:
            self._speculation.task.cancel()
            self._speculation = None
            self.engine.metrics.speculations.labels("discarded").inc()

    def _arrival(self, end_sample: int, closed_at: float) -> float:
        """When an utterance ending at ``end_sample`` and closed at ``closed_at``
        arrived: then, or at its real-time pace if the audio came faster (a fast
        upload is never late; it gets backpressure instead)."""
        return max(closed_at, self._opened_at + end_sample / SAMPLE_RATE_HZ)

    async def _recognition(self, pending: _Pending) -> Recognized:
        """The speculative result, when it was started with the stream's current
        language and speaker baseline; otherwise a fresh recognition. (Utterances are
        finished in order, so a fresh one sees every earlier utterance: the labels of
        a stream do not depend on timing.)"""
        speculation = pending.speculation
        baseline = self._baseline.snapshot()
        if speculation is not None:
            if (
                speculation.language == self.language
                and speculation.baseline_version == baseline.version
            ):
                self.engine.metrics.speculations.labels("used").inc()
                return await speculation.task
            speculation.task.cancel()
            self.engine.metrics.speculations.labels("discarded").inc()
        return await self.engine.recognize(
            pending.audio,
            self.language,
            baseline,
            self._arrival(pending.end_sample, pending.closed_at),
        )

    def _maybe_partial(self) -> None:
        interval = self.engine.options.partial_interval_ms
        if not interval or self._open_index is None or not self._segmenter.active:
            return
        if self._segmenter.samples_seen < self._next_partial_sample:
            return
        if self._partial is not None and not self._partial.done():
            return  # one partial at a time per stream: skip rather than queue
        self._next_partial_sample = self._segmenter.samples_seen + (
            interval * SAMPLE_RATE_HZ // 1000
        )
        if self.engine.busy:
            self.engine.metrics.skipped_partials.inc()
            return
        window = self.engine.options.partial_window_ms * SAMPLE_RATE_HZ // 1000
        audio = self._segmenter.active_audio()[-window:]
        self._partial = asyncio.create_task(
            self._emit_partial(
                self._open_index, self._open_start, self._segmenter.samples_seen, audio
            )
        )

    async def _emit_partial(
        self,
        index: int,
        start_sample: int,
        end_sample: int,
        audio: npt.NDArray[np.float32],
    ) -> None:
        try:
            scores = await self.engine.run(
                "partial",
                self.engine.recognizer.partial,
                audio,
                self._baseline.snapshot(),
            )
        except Exception:
            _LOGGER.exception("Partial emotion failed on stream %s", self.stream_id)
            return
        if index <= self._last_done_index:
            return  # its utterance.end is already out and says more
        self.engine.emit(
            self.stream_id,
            EmotionPartial(
                utterance_id=index,
                start=samples_to_seconds(start_sample),
                end=samples_to_seconds(end_sample),
                label=scores.label,
                scores=dict(scores.scores),
                arousal=_rounded(scores.arousal),
                valence=_rounded(scores.valence),
            ),
        )

    @property
    def pending_utterances(self) -> int:
        """Closed utterances whose ``utterance.end`` (or error) is not out yet."""
        return self._queue.qsize() + int(self._recognizing)

    async def _work(self) -> None:
        while (pending := await self._queue.get()) is not None:
            self._room.set()
            self.engine.metrics.queue_depth.dec()
            self._recognizing = True
            try:
                recognized = await self._recognition(pending)
            except Exception as err:
                _LOGGER.exception(
                    "Recognition failed on stream %s utterance %d",
                    self.stream_id,
                    pending.index,
                )
                self._last_done_index = pending.index
                self.error(
                    "recognition_failed",
                    f"utterance {pending.index}: {type(err).__name__}",
                    fatal=False,
                )
                continue
            finally:
                self._recognizing = False
            recognition = recognized.recognition
            self._keep_language(recognition)
            self._baseline.add(recognition.pooled)
            self._emit_utterance(pending, recognition, recognized.asr)

    def _keep_language(self, recognition: Recognition) -> None:
        threshold = self.engine.recognizer.options.whisper.language_confidence
        if (
            self.language is None
            and recognition.language
            and recognition.transcript
            and recognition.language_probability >= threshold
        ):
            self.language = recognition.language
            _LOGGER.debug(
                "Stream %s language fixed to %s", self.stream_id, self.language
            )

    def _emit_utterance(
        self, pending: _Pending, recognition: Recognition, asr: str
    ) -> None:
        self._last_done_index = pending.index
        latency_s = time.monotonic() - pending.closed_at
        self.engine.metrics.latency.observe(latency_s)
        self.engine.metrics.utterances.inc()
        self.utterances += 1
        self.engine.emit(
            self.stream_id,
            UtteranceEnd(
                utterance_id=pending.index,
                start=samples_to_seconds(pending.start_sample),
                end=samples_to_seconds(pending.end_sample),
                transcript=recognition.transcript if asr == ASR_OK else None,
                language=recognition.language,
                label=recognition.label,
                confidence=round(recognition.confidence, 6),
                scores={k: round(v, 6) for k, v in recognition.scores.items()},
                modalities={
                    "acoustic": _modality(recognition.acoustic),
                    "text": _modality(recognition.text),
                },
                latency_ms=round(latency_s * 1000.0, 1),
                asr=asr,
                arousal=_rounded(recognition.arousal),
                valence=_rounded(recognition.valence),
            ),
        )
