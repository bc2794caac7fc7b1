"""Turns a stream's VAD decisions into utterances: a synchronous state machine.

The segmenter re-blocks audio of any chunk size into the VAD's frames, so the same
audio gives the same utterances however it is cut. An utterance opens after
``start_speech_ms`` of speech and closes after ``hangover_ms`` of silence; it is
reported (``SpeechStarted``) only once it holds ``min_utterance_ms`` of speech, so a
shorter blip produces no events at all. After ``early_end_ms`` of silence it announces
``UtteranceEnding``: the audio the utterance will have if the silence lasts, so the
pipeline can recognise it while the hangover runs out. Speech longer than ``max_utterance_ms`` is cut
at its quietest point and goes on as the next utterance. Like silero-vad's
``VADIterator``, it works on fixed windows and answers with start/end or nothing.

Positions are sample indices at 16 kHz from the start of the stream. An utterance's
``start_sample`` includes its pre-speech pad, its ``end_sample`` the last speech frame
plus ``end_pad_ms`` (90 ms) of the trailing silence, not the whole hangover; its audio
is exactly the stream's samples ``[start_sample, end_sample)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.vad import Vad

_LOGGER = logging.getLogger(__name__)

SAMPLES_PER_MS: Final = 16
"""At the runtime's 16 kHz."""
MAX_UTTERANCE_LIMIT_MS: Final = 30000
"""Whisper's encoder sees at most 30 s."""
SPLIT_SEARCH_FRACTION: Final = 0.3
"""A too-long utterance is cut inside this last fraction of it."""
ENERGY_WINDOW_SAMPLES: Final = 320
"""Short-term RMS window (20 ms) used to find the quietest cut point."""
ENERGY_HOP_SAMPLES: Final = 160
"""Hop (10 ms) between RMS windows."""
NEGATIVE_THRESHOLD_MARGIN: Final = 0.15
"""Inside an utterance a frame stays speech down to threshold - margin (hysteresis,
as silero-vad's ``neg_threshold``)."""


@dataclass(frozen=True)
class SegmenterOptions:
    """Timing of the utterance state machine, all in milliseconds.

    Raises:
        ValueError: on construction, for a value out of range.
    """

    pre_speech_pad_ms: int = 300
    """Audio kept before the first speech frame (soft onsets, ASR context)."""
    start_speech_ms: int = 90
    """Consecutive speech needed to open an utterance."""
    hangover_ms: int = 400
    """Consecutive silence needed to close it."""
    min_utterance_ms: int = 300
    """Speech needed before the utterance is reported; shorter ones are dropped."""
    max_utterance_ms: int = 15000
    """Longer utterances are cut at their quietest point (1000 to 30000)."""
    end_pad_ms: int = 90
    """Silence kept after the last speech frame (capped at ``hangover_ms``)."""
    early_end_ms: int = 90
    """Silence after which ``UtteranceEnding`` offers the utterance for speculative
    recognition (never before its end pad has arrived); 0 turns it off."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks every field.

        Raises:
            ValueError: naming the field and its accepted range.
        """
        for name in (
            "pre_speech_pad_ms",
            "start_speech_ms",
            "hangover_ms",
            "min_utterance_ms",
            "max_utterance_ms",
            "end_pad_ms",
            "early_end_ms",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"segmenter {name} must be an integer >= 0, not {value!r}"
                )
        if self.start_speech_ms == 0 or self.hangover_ms == 0:
            raise ValueError("segmenter start_speech_ms and hangover_ms must be > 0")
        if not 1000 <= self.max_utterance_ms <= MAX_UTTERANCE_LIMIT_MS:
            raise ValueError(
                f"segmenter max_utterance_ms must be 1000 to {MAX_UTTERANCE_LIMIT_MS}, "
                f"not {self.max_utterance_ms}"
            )
        if self.max_utterance_ms <= self.pre_speech_pad_ms + self.min_utterance_ms:
            raise ValueError(
                "segmenter max_utterance_ms must exceed pre_speech_pad_ms + "
                "min_utterance_ms"
            )


@dataclass(frozen=True)
class SpeechStarted:
    """An utterance was confirmed (it already holds ``min_utterance_ms`` of speech)."""

    utterance_index: int
    """Index in the stream, from 0, without gaps."""
    start_sample: int
    """Where its audio begins, pre-speech pad included."""


@dataclass(frozen=True, eq=False)
class UtteranceEnded:
    """A reported utterance is complete."""

    utterance_index: int
    """The index its ``SpeechStarted`` had."""
    start_sample: int
    """Where its audio begins, pre-speech pad included."""
    end_sample: int
    """Where its audio ends (exclusive)."""
    audio: npt.NDArray[np.float32] = field(repr=False)
    """The stream's samples ``[start_sample, end_sample)``."""
    reason: str = "silence"
    """Why it ended: "silence", "max_length" (cut, continues) or "flush"."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UtteranceEnded):
            return NotImplemented
        return _same_audio(self, other) and self.reason == other.reason

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class UtteranceEnding:
    """A reported utterance has gone quiet: if the silence lasts until the hangover
    closes it, its ``UtteranceEnded`` will have exactly these samples. Speech that
    resumes first makes this one stale (a later one may follow)."""

    utterance_index: int
    start_sample: int
    end_sample: int
    audio: npt.NDArray[np.float32] = field(repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UtteranceEnding):
            return NotImplemented
        return _same_audio(self, other)

    __hash__ = None  # type: ignore[assignment]

    def matches(self, ended: UtteranceEnded) -> bool:
        """Whether ``ended`` is this utterance with exactly this audio."""
        return _span(self) == _span(ended)


def _span(event: UtteranceEnded | UtteranceEnding) -> tuple[int, int, int]:
    return (event.utterance_index, event.start_sample, event.end_sample)


def _same_audio(
    a: UtteranceEnded | UtteranceEnding, b: UtteranceEnded | UtteranceEnding
) -> bool:
    return _span(a) == _span(b) and np.array_equal(a.audio, b.audio)


SegmentEvent = SpeechStarted | UtteranceEnding | UtteranceEnded
"""What ``Segmenter.push`` and ``flush`` return."""


class _Timeline:
    """The retained tail of a stream's audio, addressed by absolute sample index."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
        self._head = 0
        self._tail = 0
        self.start = 0
        """Absolute index of the oldest retained sample."""

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + self._tail - self._head

    def append(self, samples: npt.NDArray[np.float32]) -> None:
        size = samples.shape[0]
        if self._tail + size > self._data.shape[0]:
            live = self._tail - self._head
            data = self._data
            if 2 * (live + size) > data.shape[0]:
                data = np.zeros(2 * (live + size), dtype=np.float32)
            data[:live] = self._data[self._head : self._tail]
            self._data, self._head, self._tail = data, 0, live
        self._data[self._tail : self._tail + size] = samples
        self._tail += size

    def drop_before(self, sample: int) -> None:
        count = min(max(sample - self.start, 0), self._tail - self._head)
        self._head += count
        self.start += count

    def get(self, begin: int, end: int) -> npt.NDArray[np.float32]:
        if begin < self.start or end > self.end:
            raise ValueError(f"samples {begin}:{end} are not retained")
        offset = self._head - self.start
        return self._data[begin + offset : end + offset].copy()


class Segmenter:
    """Streaming utterance segmentation of one stream.

    One per stream, with its own ``Vad``; not thread-safe. Memory is bounded: only the
    pre-speech pad and the open utterance (at most ``max_utterance_ms``) are kept.

    Attributes:
        samples_seen: samples pushed so far.
    """

    def __init__(self, vad: Vad, options: SegmenterOptions | None = None) -> None:
        """Creates the state machine.

        Args:
            vad: the stream's VAD (fixes the frame size).
            options: timings; defaults when None.
        """
        self.vad = vad
        self.options = options if options is not None else SegmenterOptions()
        self.samples_seen = 0
        self._frame = vad.frame_samples
        self._threshold = float(vad.threshold)
        self._negative_threshold = max(
            self._threshold - NEGATIVE_THRESHOLD_MARGIN, 0.01
        )
        opts = self.options
        self._pad = opts.pre_speech_pad_ms * SAMPLES_PER_MS
        self._end_pad = min(opts.end_pad_ms, opts.hangover_ms) * SAMPLES_PER_MS
        self._min = opts.min_utterance_ms * SAMPLES_PER_MS
        self._max = opts.max_utterance_ms * SAMPLES_PER_MS
        self._start_frames = max(
            1, -(-opts.start_speech_ms * SAMPLES_PER_MS // self._frame)
        )
        self._hangover_frames = max(
            1, -(-opts.hangover_ms * SAMPLES_PER_MS // self._frame)
        )
        self._early_frames = (
            max(1, -(-opts.early_end_ms * SAMPLES_PER_MS // self._frame))
            if opts.early_end_ms
            else 0
        )
        self._ending_sent = False
        self._keep_idle = self._pad + self._start_frames * self._frame
        self._pending = np.zeros(0, dtype=np.float32)
        self._timeline = _Timeline()
        self._index = 0
        self._previous_end = 0
        self._speech_run = 0
        self._open = False
        self._confirmed = False
        self._start = 0
        self._speech_start = 0
        self._last_speech_end = 0
        self._silence_frames = 0

    @property
    def active(self) -> bool:
        """True between a ``SpeechStarted`` and its ``UtteranceEnded``."""
        return self._open and self._confirmed

    @property
    def active_start_sample(self) -> int | None:
        """``start_sample`` of the active utterance, None when not ``active``."""
        return self._start if self.active else None

    @property
    def settled_sample(self) -> int:
        """No utterance reported from now on starts before this sample: the start
        of the open one (confirmed or not), else the oldest sample still held."""
        return self._start if self._open else self._timeline.start

    @property
    def retained_samples(self) -> int:
        """Samples held in memory: the pre-speech pad or the open utterance."""
        return self._timeline.end - self._timeline.start + self._pending.shape[0]

    def active_audio(self) -> npt.NDArray[np.float32]:
        """Audio of the active utterance so far (empty when not ``active``)."""
        if not self.active:
            return np.zeros(0, dtype=np.float32)
        return self._timeline.get(self._start, self._timeline.end)

    def push(self, audio: npt.NDArray[np.float32]) -> list[SegmentEvent]:
        """Feeds audio of any length (0 samples to minutes).

        Args:
            audio: 16 kHz mono float32, 1-D.

        Returns:
            What happened, in order: ``SpeechStarted``, ``UtteranceEnding`` and
            ``UtteranceEnded``.

        Raises:
            ValueError: ``audio`` is not 1-D.
        """
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"audio must be 1-D, got shape {samples.shape}")
        self.samples_seen += samples.shape[0]
        if self._pending.shape[0]:
            samples = np.concatenate([self._pending, samples])
        whole = samples.shape[0] - samples.shape[0] % self._frame
        events: list[SegmentEvent] = []
        for offset in range(0, whole, self._frame):
            self._step(samples[offset : offset + self._frame], events)
        self._pending = samples[whole:].copy()
        return events

    def flush(self) -> list[SegmentEvent]:
        """Ends the open utterance now (client flush or end of stream).

        Audio not yet filling a VAD frame (under one frame) is not part of it. A
        started utterance too short to be reported is dropped.

        Returns:
            The ``UtteranceEnded`` of the active utterance, or nothing.
        """
        events: list[SegmentEvent] = []
        if self._open:
            end = min(self._timeline.end, self._last_speech_end + self._end_pad)
            self._close(max(end, self._start), "flush", events)
        return events

    def _step(self, frame: npt.NDArray[np.float32], events: list[SegmentEvent]) -> None:
        """Runs the state machine on one VAD frame."""
        probability = self.vad.speech_probability(frame)
        self._timeline.append(frame)
        end = self._timeline.end
        if not self._open:
            self._speech_run = (
                self._speech_run + 1 if probability >= self._threshold else 0
            )
            if self._speech_run >= self._start_frames:
                self._open_utterance(end - self._speech_run * self._frame, end, events)
            else:
                self._timeline.drop_before(end - self._keep_idle)
            return
        speech = probability >= self._negative_threshold
        if speech:
            self._silence_frames = 0
            self._ending_sent = False
            self._last_speech_end = end
            self._confirm(events)
        else:
            self._silence_frames += 1
            if self._silence_frames >= self._hangover_frames:
                self._close(self._last_speech_end + self._end_pad, "silence", events)
                return
            self._maybe_ending(events)
        if end - self._start >= self._max:
            self._split(end, speech, events)

    def _open_utterance(
        self, speech_start: int, end: int, events: list[SegmentEvent]
    ) -> None:
        self._open = True
        self._confirmed = False
        self._speech_start = speech_start
        self._start = max(
            speech_start - self._pad, self._previous_end, self._timeline.start
        )
        self._timeline.drop_before(self._start)
        self._last_speech_end = end
        self._silence_frames = 0
        self._confirm(events)

    def _confirm(self, events: list[SegmentEvent]) -> None:
        if (
            not self._confirmed
            and self._last_speech_end - self._speech_start >= self._min
        ):
            self._confirmed = True
            events.append(SpeechStarted(self._index, self._start))
            _LOGGER.debug("Utterance %d started at sample %d", self._index, self._start)

    def _maybe_ending(self, events: list[SegmentEvent]) -> None:
        """Announces ``UtteranceEnding`` once per silence, when its audio is all here."""
        end_sample = self._last_speech_end + self._end_pad
        if (
            self._confirmed
            and self._early_frames
            and not self._ending_sent
            and self._silence_frames >= self._early_frames
            and self._timeline.end >= end_sample
        ):
            self._ending_sent = True
            audio = self._timeline.get(self._start, end_sample)
            events.append(UtteranceEnding(self._index, self._start, end_sample, audio))

    def _close(self, end_sample: int, reason: str, events: list[SegmentEvent]) -> None:
        """Ends the open utterance at ``end_sample``, reporting it when confirmed."""
        end_sample = min(end_sample, self._timeline.end)
        if self._confirmed:
            audio = self._timeline.get(self._start, end_sample)
            events.append(
                UtteranceEnded(self._index, self._start, end_sample, audio, reason)
            )
            _LOGGER.debug(
                "Utterance %d ended (%s): samples %d to %d",
                self._index,
                reason,
                self._start,
                end_sample,
            )
            self._index += 1
            self._previous_end = end_sample
        else:
            _LOGGER.debug(
                "Dropped %d samples of speech at sample %d: under min_utterance_ms",
                self._last_speech_end - self._speech_start,
                self._speech_start,
            )
        self._open = False
        self._confirmed = False
        self._ending_sent = False
        self._speech_run = 0

    def _split(self, end: int, speech: bool, events: list[SegmentEvent]) -> None:
        """Cuts a too-long utterance at its quietest point; the rest goes on."""
        search_from = self._start + int(
            (end - self._start) * (1 - SPLIT_SEARCH_FRACTION)
        )
        cut = search_from + _quietest_point(self._timeline.get(search_from, end))
        speech_start, last_speech_end = cut, max(self._last_speech_end, cut)
        self._close(cut, "max_length", events)
        self._open = True
        self._speech_start = self._start = cut
        self._last_speech_end = last_speech_end
        self._timeline.drop_before(cut)
        if speech:
            self._confirm(events)
        _LOGGER.debug("Long utterance cut at sample %d", speech_start)


def _quietest_point(audio: npt.NDArray[np.float32]) -> int:
    """Returns the centre of the lowest-RMS 20 ms window (the first on ties)."""
    if audio.shape[0] <= ENERGY_WINDOW_SAMPLES:
        return audio.shape[0] // 2
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(
        0, audio.shape[0] - ENERGY_WINDOW_SAMPLES + 1, ENERGY_HOP_SAMPLES
    )
    window_energy = energy[starts + ENERGY_WINDOW_SAMPLES] - energy[starts]
    return int(starts[np.argmin(window_energy)]) + ENERGY_WINDOW_SAMPLES // 2
