"""``StreamPace``: whether a stream comes at its real-time pace or as bulk."""

from __future__ import annotations

import logging
import math
import time

from streamser.audio import SAMPLE_RATE_HZ

_LOGGER = logging.getLogger(__name__)

FAST_SENDER_S = 1.0
"""How far ahead of its real-time pace a stream's audio may come before it is
treated as bulk (a recording sent as fast as it goes) rather than a live call."""


class StreamPace:
    """When a stream's audio would have arrived in real time, and whether it is bulk.

    A stream is bulk when it is not live (a file played as fast as possible, an
    upload) or once its audio has come more than ``FAST_SENDER_S`` ahead of its
    real-time pace (a client sending a recording as fast as it can): it gets
    backpressure instead of transcripts that live calls are owed.
    """

    def __init__(self, stream_id: str, *, live: bool) -> None:
        """Start the clock now; ``restart`` it when the stream opens."""
        self.stream_id = stream_id
        self.live = live
        self.opened_at = time.monotonic()
        self.bulk = False
        """Whether the stream has sent faster than real time (``note``)."""

    def restart(self) -> None:
        """The stream opens now: its audio is paced from here."""
        self.opened_at = time.monotonic()

    def arrival(self, end_sample: int, closed_at: float) -> float:
        """When an utterance ending at ``end_sample`` and closed at ``closed_at``
        arrived, or infinity for a bulk stream, whose utterances are never late and
        wait behind the live streams' (``AsrQueue``)."""
        paced = self.note(end_sample, closed_at)
        if self.bulk or not self.live:
            return math.inf
        return max(closed_at, paced)

    def keeps_pace(self, end_sample: int, now: float) -> bool:
        """Whether the stream is known to come at its real-time pace: live, and
        more than ``FAST_SENDER_S`` of its audio (up to ``end_sample``, come at
        ``now``) has come without it running ahead."""
        self.note(end_sample, now)
        past = end_sample > FAST_SENDER_S * SAMPLE_RATE_HZ
        return self.live and not self.bulk and past

    def note(self, end_sample: int, now: float) -> float:
        """When audio up to ``end_sample`` would have arrived in real time; the
        stream becomes bulk if it came more than ``FAST_SENDER_S`` sooner (``now``)."""
        paced = self.opened_at + end_sample / SAMPLE_RATE_HZ
        if paced - now > FAST_SENDER_S and not self.bulk:
            self.bulk = True
            _LOGGER.info(
                "Stream %s sends faster than real time: bulk ASR", self.stream_id
            )
        return paced
