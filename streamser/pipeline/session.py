"""``StreamSession``: one audio stream, from its start to ``stream.end``.

Decoding, VAD and segmentation run synchronously on the loop as audio arrives (they
are cheap and sans-I/O); each closed utterance goes through a bounded queue to the
stream's worker task, which has the ``Engine`` recognise it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import numpy.typing as npt

from streamser.analytics.summary import CallAnalytics
from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import AudioDecoder
from streamser.audio.segmenter import (
    Segmenter,
    SegmentEvent,
    SpeechStarted,
    UtteranceEnding,
)
from streamser.audio.vad import make_vad
from streamser.events import (
    ASR_OK,
    CallAlert,
    ErrorEvent,
    Event,
    ModelInfo,
    StreamEnd,
    StreamStart,
    samples_to_seconds,
)
from streamser.messages import StartMessage
from streamser.pipeline.engine import Engine, Recognized
from streamser.pipeline.lane import Lane, PendingUtterance, Speculation, retrieve
from streamser.pipeline.pace import StreamPace
from streamser.pipeline.partials import Partials
from streamser.pipeline.utterance_events import speech_start, utterance_end
from streamser.recognition.adaptation import SpeakerBaseline
from streamser.recognition.recognizer import Recognition

_LOGGER = logging.getLogger(__name__)


class StreamSession:
    """One audio stream from start to ``stream.end``. Use from the loop thread only.

    A stream whose start says ``channel_mode: "separate"`` has one lane per channel
    (``Lane``: segmenter, speaker baseline, speculation, partials); otherwise one
    lane of the downmixed audio. Lanes share the recognition queue and worker, the
    stream's language and its analytics. ``utterance_id`` counts the utterances of
    all lanes together, in the order they were confirmed (``speech.start``); audio
    is fed to the lanes one VAD frame at a time, so that order does not depend on
    how the audio was chunked.
    """

    def __init__(
        self,
        engine: Engine,
        start: StartMessage,
        stream_id: str,
        *,
        live: bool = True,
        transcribe: bool = True,
    ) -> None:
        """Set up decoding and segmentation; call ``open`` to announce the stream.

        Args:
            engine: the shared models and executors.
            start: the stream's start message.
            stream_id: the stream's id.
            live: the audio comes at its real-time pace or from a WebSocket
                client: ``latency_ms`` counts from the close of the utterance. For audio
                played as fast as recognition keeps up (``streamser run``), it counts
                from when the stream's worker takes the utterance, so it measures
                the recognition, not the wait behind earlier utterances.
            transcribe: run ASR on its utterances (when the engine has it); False
                for emotion from the voice only (an upload's ``asr=false``).
        """
        self.engine = engine
        self.live = live
        self.transcribe = transcribe
        self.start = start
        self.stream_id = stream_id
        self.language = start.language
        self._decoder = AudioDecoder(
            start.encoding, start.sample_rate, start.channels, separate=start.separate
        )
        window = engine.recognizer.adaptation_window
        self._lanes = [
            Lane(
                channel,
                Segmenter(make_vad(engine.vad_options), engine.segmenter_options),
                SpeakerBaseline(window),
            )
            for channel in range(self._decoder.lanes)
        ]
        self._frame_samples = self._lanes[0].segmenter.vad.frame_samples
        self._next_utterance_id = 0
        self._queue: asyncio.Queue[PendingUtterance | None] = asyncio.Queue()
        self.pace = StreamPace(stream_id, live=live)
        self._partials = Partials(
            engine,
            stream_id,
            self.pace,
            self._emit,
            lambda: self.language,
            transcribe=transcribe,
        )
        self._worker: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._recognizing = False
        self._analytics = CallAnalytics(
            engine.analytics_options.rules,
            [start.channel_name(lane.channel) for lane in self._lanes],
        )
        self.utterances = 0
        self.closed = False

    def open(self) -> None:
        """Emit ``stream.start`` and start the recognition worker."""
        self.pace.restart()
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
                channel_mode=self.start.channel_mode,
            ),
        )
        self._worker = asyncio.create_task(
            self._work(), name=f"stream-{self.stream_id}"
        )

    @property
    def bulk(self) -> bool:
        """Whether the stream has sent faster than real time (``StreamPace``)."""
        return self.pace.bulk

    @property
    def channels(self) -> int:
        """Lanes of the stream: its channels when kept apart, otherwise 1."""
        return len(self._lanes)

    @property
    def audio_seconds(self) -> float:
        """Seconds of 16 kHz audio received so far."""
        return self._lanes[0].segmenter.samples_seen / SAMPLE_RATE_HZ

    def feed(self, payload: bytes) -> None:
        """Decode and segment one binary message.

        Raises:
            ProtocolError: the payload is not whole samples (nothing is consumed).
        """
        self.feed_audio(self._decoder.decode_lanes(payload))

    def feed_audio(self, audio: npt.NDArray[np.float32]) -> None:
        """Segment 16 kHz audio: 1-D for a stream of one lane, or one column per lane.

        Raises:
            ValueError: ``audio`` has another number of columns than the stream has
                lanes.
        """
        lanes = audio.reshape(-1, 1) if audio.ndim == 1 else audio
        if lanes.ndim != 2 or lanes.shape[1] != len(self._lanes):
            raise ValueError(
                f"audio of shape {audio.shape} for a stream of {len(self._lanes)} "
                "lane(s)"
            )
        self.engine.metrics.audio_seconds.inc(lanes.shape[0] / SAMPLE_RATE_HZ)
        self._push(lanes)
        if self.pace.keeps_pace(
            self._lanes[0].segmenter.samples_seen, time.monotonic()
        ):
            self.engine.note_live()
        for lane in self._lanes:
            self._partials.maybe_start(lane)
        settled = min(lane.segmenter.settled_sample for lane in self._lanes)
        self._send(
            self._analytics.advance(self.audio_seconds, settled / SAMPLE_RATE_HZ)
        )

    def _push(self, lanes: npt.NDArray[np.float32]) -> None:
        """Segment every lane; with several, one VAD frame at a time, lane after
        lane, so events come in the order of the frames that caused them."""
        if len(self._lanes) == 1:
            lane = self._lanes[0]
            self._handle(lane, lane.segmenter.push(lanes[:, 0]))
            return
        offset, total = 0, lanes.shape[0]
        while offset < total:
            seen = self._lanes[0].segmenter.samples_seen
            step = min(total - offset, self._frame_samples - seen % self._frame_samples)
            part = lanes[offset : offset + step]
            for lane in self._lanes:
                column = np.ascontiguousarray(part[:, lane.channel])
                self._handle(lane, lane.segmenter.push(column))
            offset += step

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
        """End the current utterance of every lane now (the client's ``flush``)."""
        for lane in self._lanes:
            self._handle(lane, lane.segmenter.flush())

    def summarize(self) -> None:
        """Emit a ``call.summary`` of the stream so far (the client's ``summary``)."""
        self.engine.emit(self.stream_id, self._analytics.summary(self.audio_seconds))

    async def close(self, reason: str = "stop") -> None:
        """Finish every pending utterance, then emit ``call.summary`` (unless turned
        off) and ``stream.end`` saying ``reason`` (``STREAM_END_REASONS``)."""
        if self.closed:
            return
        self.closed = True
        tail = self._decoder.flush_lanes()
        if tail.shape[0]:
            self._push(tail)
        for lane in self._lanes:
            self._handle(lane, lane.segmenter.flush())
            self._drop_speculation(lane)
        await self._queue.put(None)
        if self._worker is not None:
            await self._worker
        for lane in self._lanes:
            if lane.partial is not None:
                await lane.partial
        self._send(self._analytics.advance(self.audio_seconds))
        if self.engine.analytics_options.summary:
            self.summarize()
        self.engine.emit(
            self.stream_id,
            StreamEnd(
                utterances=self.utterances,
                audio_seconds=round(self.audio_seconds, 3),
                reason=reason,
            ),
        )
        self.engine.sequencer.forget(self.stream_id)
        self.engine.metrics.active_streams.dec()

    def error(self, code: str, message: str, *, fatal: bool) -> None:
        """Emit an ``error`` event on this stream."""
        self.engine.emit(
            self.stream_id, ErrorEvent(code=code, message=message, fatal=fatal)
        )

    def _emit(self, body: Event) -> None:
        """Emit an utterance event, then the alerts it raises."""
        self.engine.emit(self.stream_id, body)
        self._send(self._analytics.observe(body))

    def _send(self, alerts: list[CallAlert]) -> None:
        for alert in alerts:
            self.engine.emit(self.stream_id, alert)

    def _utterance_id(self, lane: Lane, index: int) -> int:
        """The stream-wide id of the lane's utterance ``index``, given on first
        sight (its ``SpeechStarted``)."""
        if index not in lane.ids:
            lane.ids[index] = self._next_utterance_id
            self._next_utterance_id += 1
        return lane.ids[index]

    def _handle(self, lane: Lane, results: list[SegmentEvent]) -> None:
        for result in results:
            utterance_id = self._utterance_id(lane, result.utterance_index)
            if isinstance(result, UtteranceEnding):
                self._speculate(lane, result)
                continue
            if isinstance(result, SpeechStarted):
                lane.open(
                    utterance_id, result.start_sample, self._partials.interval_samples
                )
                self._emit(
                    speech_start(utterance_id, result.start_sample, lane.channel)
                )
                continue
            lane.open_id = None
            del lane.ids[result.utterance_index]
            pending = PendingUtterance(
                lane=lane,
                utterance_id=utterance_id,
                start_sample=result.start_sample,
                end_sample=result.end_sample,
                audio=result.audio,
                closed_at=time.monotonic(),
                prefix=lane.prefix,
            )
            if lane.speculation and lane.speculation.ending.matches(result):
                pending.speculation, lane.speculation = lane.speculation, None
            else:
                self._drop_speculation(lane)
            if self._queue.qsize() >= self.engine.options.shed_limit:
                # The source did not pause (it cannot, or does not wait for room):
                # the last resort, and a bug when it happens.
                if pending.speculation is not None:
                    pending.speculation.task.cancel()
                self.engine.metrics.dropped_utterances.inc()
                _LOGGER.error(
                    "Stream %s: utterance %d shed, %d utterances behind",
                    self.stream_id,
                    utterance_id,
                    self._queue.qsize(),
                )
                self.error(
                    "overloaded",
                    f"utterance {utterance_id} dropped: recognition is "
                    f"{self._queue.qsize()} utterances behind",
                    fatal=False,
                )
                self._send(
                    self._analytics.abandon(
                        lane.channel,
                        utterance_id,
                        samples_to_seconds(result.end_sample),
                    )
                )
                continue
            self._queue.put_nowait(pending)
            self.engine.metrics.queue_depth.inc()

    def _speculate(self, lane: Lane, ending: UtteranceEnding) -> None:
        """Start recognising an utterance that has gone quiet, unless workers are busy
        (or, for a stream adapting to its speaker, an earlier utterance is unfinished).

        Most utterances stay quiet until the hangover closes them, and then their
        ``utterance.end`` waits only for what is left of this work. Under load the
        workers belong to closed utterances, so nothing is started then.
        """
        self._drop_speculation(lane)
        if self.engine.busy:
            return
        if lane.baseline.window and self.pending_utterances:
            return  # an earlier utterance's result will change the baseline
        baseline = lane.baseline.snapshot()
        lane.speculation = Speculation(
            ending,
            self.language,
            baseline.version,
            asyncio.create_task(
                self.engine.recognize(
                    ending.audio,
                    self.language,
                    baseline,
                    self.pace.arrival(ending.end_sample, time.monotonic()),
                    self.stream_id,
                    transcribe=self.transcribe,
                    patient=not self.pace.live,
                )
            ),
        )
        lane.speculation.task.add_done_callback(retrieve)

    def _drop_speculation(self, lane: Lane) -> None:
        """Abandon the lane's open speculation: speech resumed or the utterance ended
        otherwise (flush, max length, end of stream)."""
        if lane.speculation is not None:
            lane.speculation.task.cancel()
            lane.speculation = None
            self.engine.metrics.speculations.labels("discarded").inc()

    async def _recognition(self, pending: PendingUtterance) -> Recognized:
        """The speculative result, when it was started with the stream's current
        language and the lane's speaker baseline; otherwise a fresh recognition.
        (Utterances are finished in order, so a fresh one sees every earlier
        utterance: the labels of a stream do not depend on timing.)"""
        speculation = pending.speculation
        baseline = pending.lane.baseline.snapshot()
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
            self.pace.arrival(pending.end_sample, pending.closed_at),
            self.stream_id,
            transcribe=self.transcribe,
            patient=not self.pace.live,
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
                pending.taken_at = time.monotonic()
                recognized = await self._recognition(pending)
            except Exception as err:
                _LOGGER.exception(
                    "Recognition failed on stream %s utterance %d",
                    self.stream_id,
                    pending.utterance_id,
                )
                pending.lane.last_done_id = pending.utterance_id
                self.error(
                    "recognition_failed",
                    f"utterance {pending.utterance_id}: {type(err).__name__}",
                    fatal=False,
                )
                self._send(
                    self._analytics.abandon(
                        pending.lane.channel,
                        pending.utterance_id,
                        samples_to_seconds(pending.end_sample),
                    )
                )
                continue
            finally:
                self._recognizing = False
            recognition = recognized.recognition
            self._keep_language(recognition)
            pending.lane.baseline.add(recognition.pooled)
            self._emit_utterance(pending, recognition, recognized.asr)

    def _keep_language(self, recognition: Recognition) -> None:
        threshold = self.engine.recognizer.options.asr.language_confidence
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
        self, pending: PendingUtterance, recognition: Recognition, asr: str
    ) -> None:
        pending.lane.last_done_id = pending.utterance_id
        since = pending.closed_at
        if not self.live and pending.taken_at is not None:
            since = max(since, pending.taken_at)  # the recognition, not the queue
        latency_s = time.monotonic() - since
        if pending.prefix is not None and asr == ASR_OK:
            self.engine.metrics.partial_revisions.inc(
                pending.prefix.finish(recognition.transcript)
            )
        self.engine.metrics.latency.observe(latency_s)
        self.engine.metrics.utterances.inc()
        self.utterances += 1
        self._emit(
            utterance_end(pending, recognition, asr, latency_s, pending.lane.channel)
        )
