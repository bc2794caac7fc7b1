"""A stream's lanes (one per channel kept apart, else one) and the utterances they
hand to recognition: what ``StreamSession`` keeps per channel."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamser.audio.segmenter import Segmenter, UtteranceEnding
from streamser.pipeline.engine import Recognized
from streamser.pipeline.stable_prefix import StablePrefix
from streamser.recognition.adaptation import SpeakerBaseline


@dataclass
class Speculation:
    """Recognition started on an ``UtteranceEnding``, before the utterance closed."""

    ending: UtteranceEnding
    language: str | None
    baseline_version: int
    task: asyncio.Task[Recognized]


@dataclass
class PendingUtterance:
    """A closed utterance on its way to recognition."""

    lane: Lane
    utterance_id: int
    start_sample: int
    end_sample: int
    audio: npt.NDArray[np.float32]
    closed_at: float
    speculation: Speculation | None = None
    prefix: StablePrefix | None = None
    """The stable words of its partial transcripts (None: none were sent)."""
    taken_at: float | None = None
    """When the stream's worker took it (None while it waits)."""


def retrieve(task: asyncio.Task[Recognized]) -> None:
    """Mark a discarded speculation's failure as seen (it is not reported)."""
    if not task.cancelled():
        task.exception()


@dataclass
class Lane:
    """One channel of a stream: its own segmenter, speaker baseline, speculation and
    partials. A stream has one lane, or one per channel when they are kept apart.
    Used from the loop thread only."""

    channel: int
    segmenter: Segmenter
    baseline: SpeakerBaseline
    speculation: Speculation | None = None
    partial: asyncio.Task[None] | None = None
    next_partial_sample: int = 0
    open_id: int | None = None
    """The stream-wide ``utterance_id`` of the lane's active utterance."""
    open_start: int = 0
    last_done_id: int = -1
    ids: dict[int, int] = field(default_factory=dict)
    """The segmenter's utterance index to the stream-wide ``utterance_id``."""
    prefix: StablePrefix = field(default_factory=StablePrefix)
    """The stable words of the open utterance's partial transcripts."""
    text_owed: bool = False
    """A partial transcript of the open utterance was due but skipped (recognition
    was busy): it is tried again with the next audio."""

    def open(self, utterance_id: int, start_sample: int, partial_samples: int) -> None:
        """Note the utterance confirmed at ``start_sample`` (its ``speech.start``);
        its first partial is due ``partial_samples`` later."""
        self.open_id = utterance_id
        self.open_start = start_sample
        self.prefix = StablePrefix()
        self.text_owed = False
        self.next_partial_sample = start_sample + partial_samples

    @property
    def running_partial(self) -> bool:
        """Whether a partial of the lane is being made."""
        return self.partial is not None and not self.partial.done()

    def partial_due(self, partial_samples: int) -> bool:
        """Whether the open utterance is due a partial now (then the next one is
        due ``partial_samples`` later). One partial at a time per lane: one due
        while the previous runs is skipped rather than queued."""
        segmenter = self.segmenter
        if not partial_samples or not segmenter.active:
            return False
        if segmenter.samples_seen < self.next_partial_sample:
            return False
        if self.running_partial:
            return False
        self.next_partial_sample = segmenter.samples_seen + partial_samples
        return True
