"""``Partials``: the partial results of a stream's open utterances.

While an utterance is open, every ``partial_interval_ms`` of audio a lane starts an
``emotion.partial`` of its latest speech and, on a live stream with ASR on, a
``transcript.partial`` of the utterance so far. Both are skipped while recognition is
busy or for ``PARTIAL_OVERLOAD_S`` after a live utterance went without a transcript,
since the final results are owed first; a skipped transcript partial is tried again
with the next audio. Transcript partials run one at a time, on an idle engine, and an
utterance still without partial text goes before those that have some.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from streamser.audio import SAMPLE_RATE_HZ
from streamser.events import Event
from streamser.pipeline.engine import PARTIAL_OVERLOAD_S, Engine
from streamser.pipeline.lane import Lane
from streamser.pipeline.pace import StreamPace
from streamser.pipeline.utterance_events import partial_event, transcript_partial

_LOGGER = logging.getLogger(__name__)

WHISPER_WINDOW_SAMPLES = 30 * SAMPLE_RATE_HZ
"""The most speech a partial transcript decodes (Whisper's window)."""


class Partials:
    """Starts and emits the partials of one stream's lanes. Use from the loop thread."""

    def __init__(
        self,
        engine: Engine,
        stream_id: str,
        pace: StreamPace,
        emit: Callable[[Event], None],
        language: Callable[[], str | None],
        *,
        transcribe: bool,
    ) -> None:
        """Serve one stream.

        Args:
            engine: the shared models and executors.
            stream_id: the stream's id, for logs.
            pace: the stream's pace (partials carry text only at real-time pace).
            emit: emits an utterance event of the stream.
            language: the stream's language at the time of asking.
            transcribe: the stream wants transcripts (partial ones too).
        """
        self.engine = engine
        self.stream_id = stream_id
        self.pace = pace
        self._emit = emit
        self._language = language
        self.transcribe = transcribe

    @property
    def interval_samples(self) -> int:
        """Stream audio between two partials of an utterance (0: none)."""
        return self.engine.options.partial_interval_ms * SAMPLE_RATE_HZ // 1000

    def maybe_start(self, lane: Lane) -> None:
        """Start the lane's next partial if one is due and recognition is not busy,
        or, when the last partial transcript was skipped, that transcript as soon
        as its turn comes."""
        if lane.open_id is None or lane.running_partial:
            return
        due = lane.partial_due(self.interval_samples)
        with_text = (due or lane.text_owed) and self._with_text(lane)
        overloaded = self.engine.overloaded(PARTIAL_OVERLOAD_S)
        if due and (self.engine.busy or overloaded):
            self.engine.metrics.skipped_partials.inc()
            lane.text_owed = with_text
            return
        if not due and not (with_text and self._text_turn(lane)):
            return
        segmenter = lane.segmenter
        window = self.engine.options.partial_window_ms * SAMPLE_RATE_HZ // 1000
        audio = segmenter.active_audio()
        lane.partial = asyncio.create_task(
            self._emit_partial(
                lane,
                lane.open_id,
                lane.open_start,
                segmenter.samples_seen,
                audio[-window:] if due else None,
                audio[-WHISPER_WINDOW_SAMPLES:] if with_text else None,
            )
        )

    def _text_turn(self, lane: Lane) -> bool:
        """Whether the lane's partial transcript may run now: on an idle engine
        only, so that a final transcript never waits for a partial or shares the
        CPU with one it could have avoided. Utterances still without partial text
        go first, the one that has waited longest first; one with text gets more
        only when the engine has rested (``Engine.room_for_more_text``)."""
        engine = self.engine
        if engine.overloaded(PARTIAL_OVERLOAD_S):
            return False
        if lane.prefix.heard:
            return engine.room_for_more_text
        utterance_id, prefix = lane.open_id, lane.prefix
        key = (id(lane), utterance_id)
        engine.await_text(
            key,
            lambda: (
                lane.open_id == utterance_id
                and lane.prefix is prefix
                and not prefix.heard
            ),
        )
        return engine.idle and engine.next_for_text == key

    def _with_text(self, lane: Lane) -> bool:
        """Whether partials carry text: a live stream, sent at its real-time pace,
        with ASR on."""
        self.pace.note(lane.segmenter.samples_seen, time.monotonic())
        pace = self.pace
        return (
            pace.live and not pace.bulk and self.transcribe and self.engine.transcribing
        )

    async def _emit_partial(
        self,
        lane: Lane,
        utterance_id: int,
        start_sample: int,
        end_sample: int,
        audio: npt.NDArray[np.float32] | None,
        speech: npt.NDArray[np.float32] | None,
    ) -> None:
        """Emit the ``emotion.partial`` of ``audio`` (the latest speech; None: no
        emotion partial is due), then the ``transcript.partial`` of the utterance's
        ``speech`` so far when it is its turn (else it is owed)."""
        if audio is not None:
            try:
                scores = await self.engine.run(
                    "partial",
                    self.engine.recognizer.partial,
                    audio,
                    lane.baseline.snapshot(),
                )
            except Exception:
                _LOGGER.exception("Partial emotion failed on stream %s", self.stream_id)
                return
            if utterance_id <= lane.last_done_id:
                return  # its utterance.end is already out and says more
            self._emit(
                partial_event(
                    utterance_id, start_sample, end_sample, scores, lane.channel
                )
            )
        if speech is None:
            return
        if not self._text_turn(lane):
            self.engine.metrics.skipped_partials.inc()
            lane.text_owed = True
            return
        lane.text_owed = False
        prefix = lane.prefix
        try:
            text = await self.engine.run(
                "partial_asr",
                self.engine.recognizer.partial_transcript,
                speech,
                self._language(),
            )
        except Exception:
            _LOGGER.exception("Partial transcript failed on stream %s", self.stream_id)
            return
        if utterance_id <= lane.last_done_id or not text:
            return
        self._emit(
            transcript_partial(
                utterance_id, start_sample, end_sample, text, prefix, lane.channel
            )
        )
