"""The asyncio pipeline: audio streams in, events out.

``Engine`` is shared by every stream: the recogniser, the executor it runs in, the
event ids and the fan-out to sinks. ``StreamSession`` is one audio stream: decoding,
VAD and segmentation run synchronously on the loop as audio arrives (they are cheap
and sans-I/O); each closed utterance goes through a bounded queue to the stream's
worker task, which runs recognition in the executor so the loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
        max_pending_utterances: utterances a stream may queue for recognition; more
            are shed with an ``overloaded`` error event (counted, never silent).
        workers: recognition calls that may run at once; 0 for one per core.
        max_batch: utterances of concurrent streams recognised in one call.
        batch_wait_ms: how long the first utterance of a batch waits for others;
            short, so that batching never costs a lone stream its latency.
    """

    partial_interval_ms: int = 1000
    partial_window_ms: int = 4000
    max_pending_utterances: int = 8
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
        self._outbox: deque[Envelope] = deque()
        self._in_flight = 0
        self._requests: asyncio.Queue[_Request] = asyncio.Queue()
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
        self._in_flight += 1
        try:
            return await loop.run_in_executor(self._executor, func, *args)
        finally:
            self._in_flight -= 1
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
        return self._in_flight >= workers or not self._requests.empty()

    async def recognize(
        self,
        audio: npt.NDArray[np.float32],
        language: str | None,
        baseline: Baseline = NO_BASELINE,
    ) -> Recognition:
        """Recognise one utterance, batched with those of other streams."""
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._batch_loop(), name="batcher")
        request = _Request(
            UtteranceRequest(audio, language, baseline), asyncio.Future()
        )
        self._requests.put_nowait(request)
        return await request.result

    async def _batch_loop(self) -> None:
        """Gather requests into batches; run up to ``workers`` batches at once."""
        slots = asyncio.Semaphore(self.options.workers or (os.cpu_count() or 1))
        while True:
            batch = [await self._requests.get()]
            deadline = time.monotonic() + self.options.batch_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                if not self._requests.empty():
                    batch.append(self._requests.get_nowait())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(
                        await asyncio.wait_for(self._requests.get(), remaining)
                    )
                except TimeoutError:
                    break
            await slots.acquire()
            # A speculative request abandoned while it waited is not worth running.
            batch = [r for r in batch if not r.result.done()]
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch, slots))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[_Request], slots: asyncio.Semaphore) -> None:
        try:
            self.metrics.batch_size.observe(len(batch))
            await self._recognize_batch(batch)
        finally:
            slots.release()

    async def _recognize_batch(self, batch: list[_Request]) -> None:
        try:
            results = await self.run(
                "recognize", self.recognizer.recognize_batch, [r.request for r in batch]
            )
        except Exception as err:
            if len(batch) > 1:
                # One bad utterance must not fail the others: retry them one by one.
                for request in batch:
                    await self._recognize_batch([request])
            elif not batch[0].result.done():
                batch[0].result.set_exception(err)
            return
        for request, result in zip(batch, results, strict=True):
            if not request.result.done():
                request.result.set_result(result)

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
        """Stop the batcher and the executor (after the streams have finished)."""
        if self._batcher is not None:
            self._batcher.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Request:
    request: UtteranceRequest
    result: asyncio.Future[Recognition]


@dataclass
class _Speculation:
    """Recognition started on an ``UtteranceEnding``, before the utterance closed."""

    ending: UtteranceEnding
    language: str | None
    baseline_version: int
    task: asyncio.Task[Recognition]


@dataclass
class _Pending:
    index: int
    start_sample: int
    end_sample: int
    audio: npt.NDArray[np.float32]
    closed_at: float
    speculation: _Speculation | None = None


def _retrieve(task: asyncio.Task[Recognition]) -> None:
    """Mark a discarded speculation's failure as seen (it is not reported)."""
    if not task.cancelled():
        task.exception()


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
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(
            engine.options.max_pending_utterances
        )
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

    async def wait_for_room(self) -> None:
        """Wait until recognition has room for two more utterances.

        Sources that can wait (files) call this between chunks, so nothing is shed;
        live sources do not wait, and an overloaded stream sheds (counted) instead.
        """
        while self._queue.maxsize - self._queue.qsize() < 2 and self._queue.maxsize > 1:
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
            try:
                self._queue.put_nowait(pending)
                self.engine.metrics.queue_depth.inc()
            except asyncio.QueueFull:
                if pending.speculation is not None:
                    pending.speculation.task.cancel()
                self.engine.metrics.dropped_utterances.inc()
                self.error(
                    "overloaded",
                    f"utterance {result.utterance_index} dropped: recognition is "
                    f"{self._queue.qsize()} utterances behind",
                    fatal=False,
                )

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
                self.engine.recognize(ending.audio, self.language, baseline)
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

    async def _recognition(self, pending: _Pending) -> Recognition:
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
        return await self.engine.recognize(pending.audio, self.language, baseline)

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
                recognition = await self._recognition(pending)
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
            self._keep_language(recognition)
            self._baseline.add(recognition.pooled)
            self._emit_utterance(pending, recognition)

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

    def _emit_utterance(self, pending: _Pending, recognition: Recognition) -> None:
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
                transcript=(
                    recognition.transcript
                    if self.engine.recognizer.options.asr
                    else None
                ),
                language=recognition.language,
                label=recognition.label,
                confidence=round(recognition.confidence, 6),
                scores={k: round(v, 6) for k, v in recognition.scores.items()},
                modalities={
                    "acoustic": _modality(recognition.acoustic),
                    "text": _modality(recognition.text),
                },
                latency_ms=round(latency_s * 1000.0, 1),
            ),
        )
