"""A call's running analytics: its events in, ``call.alert`` and ``call.summary`` out.

Sans-I/O: ``CallAnalytics`` sees the stream's events (``observe``) and its position
in stream audio (``advance``), and returns the alerts to send; it never sends
anything itself, so synthetic event sequences test it without a server.

Silences are judged in stream audio only, never by when events arrive: a file run as
fast as recognition goes (whose ``utterance.end`` events come long after their audio)
raises the same alerts as the same audio played in real time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from streamser.analytics.rules import CallState, Rule
from streamser.events import (
    CallAlert,
    CallSummary,
    ChannelSummary,
    Event,
    SpeechStart,
    UtteranceEnd,
)


@dataclass(frozen=True)
class _Spoken:
    """One recognised utterance, as the summary needs it."""

    start_s: float
    end_s: float
    label: str
    arousal: float | None
    valence: float | None
    sentiment: str | None = None


class _Channel:
    def __init__(self, channel: int, name: str | None) -> None:
        self.channel = channel
        self.name = name
        self.spoken: list[_Spoken] = []
        self.open: dict[int, float] = {}
        """utterance_id to start (s) of utterances without their utterance.end."""
        self.unrecognised: list[tuple[float, float]] = []
        """Speech of utterances that will get no utterance.end."""

    def intervals(self, position_s: float) -> list[tuple[float, float]]:
        """Speech on this channel: utterances, and open ones up to now."""
        spans = [(u.start_s, u.end_s) for u in self.spoken] + self.unrecognised
        spans += [(start, max(start, position_s)) for start in self.open.values()]
        return spans

    def summary(self) -> ChannelSummary:
        counts = Counter(u.label for u in self.spoken)
        seconds: dict[str, float] = {}
        for u in self.spoken:
            seconds[u.label] = seconds.get(u.label, 0.0) + (u.end_s - u.start_s)
        return ChannelSummary(
            channel=self.channel,
            name=self.name,
            utterances=len(self.spoken),
            label_counts=dict(sorted(counts.items())),
            label_seconds={k: round(v, 3) for k, v in sorted(seconds.items())},
            talk_seconds=round(sum(u.end_s - u.start_s for u in self.spoken), 3),
            mean_arousal=_mean([u.arousal for u in self.spoken]),
            mean_valence=_mean([u.valence for u in self.spoken]),
            sentiment_counts=dict(
                sorted(Counter(u.sentiment for u in self.spoken if u.sentiment).items())
            ),
        )


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 6) if known else None


class CallAnalytics:
    """The analytics of one stream: per-channel tallies, rule state, alerts raised.

    One per stream; not thread-safe.
    """

    def __init__(self, rules: Sequence[Rule], names: Sequence[str | None]) -> None:
        """Start a call.

        Args:
            rules: the alert rules.
            names: one entry per channel: its name, or None.
        """
        self._channels = [_Channel(i, name) for i, name in enumerate(names or [None])]
        self._watches = [rule.watch() for rule in rules]
        self._position_s = 0.0
        self._settled_s = 0.0
        """No utterance not yet seen starts before this (stream seconds)."""
        self._pending: list[tuple[float, float]] = []
        """Speech spans whose end is known, not yet merged into ``_covered_to``."""
        self._covered_to = 0.0
        """Every silence before this has been judged; speech reaches up to it."""
        self.alerts: list[CallAlert] = []
        """Every alert raised so far, in order."""

    def _channel(self, channel: int) -> _Channel:
        while len(self._channels) <= channel:
            self._channels.append(_Channel(len(self._channels), None))
        return self._channels[channel]

    def observe(self, event: Event) -> list[CallAlert]:
        """Take one of the stream's events (others than speech.start and utterance.end
        are ignored); returns the alerts it raises."""
        if isinstance(event, SpeechStart):
            self._channel(event.channel).open[event.utterance_id] = event.start
            return self._tick()
        if not isinstance(event, UtteranceEnd):
            return []
        channel = self._channel(event.channel)
        channel.open.pop(event.utterance_id, None)
        channel.spoken.append(
            _Spoken(
                event.start,
                event.end,
                event.label,
                event.arousal,
                event.valence,
                event.sentiment.label if event.sentiment else None,
            )
        )
        self._pending.append((event.start, event.end))
        raised = [a for w in self._watches for a in w.utterance(event, channel.name)]
        self.alerts += raised
        return raised + self._tick()

    def abandon(self, channel: int, utterance_id: int, end_s: float) -> list[CallAlert]:
        """An utterance that will get no ``utterance.end`` (its recognition failed or
        it was shed) ended at ``end_s``: it was speech, but counts in no tally."""
        record = self._channel(channel)
        start = record.open.pop(utterance_id, None)
        if start is not None:
            record.unrecognised.append((start, max(start, end_s)))
            self._pending.append((start, max(start, end_s)))
        return self._tick()

    def advance(
        self, position_s: float, settled_s: float | None = None
    ) -> list[CallAlert]:
        """The stream has ``position_s`` seconds of audio; returns alerts raised.

        Args:
            position_s: seconds of stream audio received.
            settled_s: no utterance that has not sent its ``speech.start`` yet will
                start before this (the segmenters' bound); None for ``position_s``
                (at the end of a stream, or when speech is announced at once).
        """
        self._position_s = max(self._position_s, position_s)
        settled = position_s if settled_s is None else min(settled_s, position_s)
        self._settled_s = max(self._settled_s, settled)
        return self._tick()

    def _tick(self) -> list[CallAlert]:
        state = CallState(self._position_s, self._silences())
        raised = [alert for watch in self._watches for alert in watch.tick(state)]
        self.alerts += raised
        return raised

    def _silences(self) -> tuple[tuple[float, float], ...]:
        """The silences completed since the last tick, then the current one.

        Speech is known up to ``horizon``: the settled point, or the start of an
        utterance whose end is not known yet, whichever is earlier. Every span that
        starts before it has ended (it arrived in ``_pending``), so the silences
        before it are final whatever the pace of recognition.
        """
        opened = [start for c in self._channels for start in c.open.values()]
        horizon = min([self._settled_s, *opened])
        silences = []
        ready = sorted(span for span in self._pending if span[0] < horizon)
        self._pending = [span for span in self._pending if span[0] >= horizon]
        for start, end in ready:
            if start > self._covered_to:
                silences.append((self._covered_to, start - self._covered_to))
            self._covered_to = max(self._covered_to, end)
        if horizon > self._covered_to:
            silences.append((self._covered_to, horizon - self._covered_to))
        return tuple(silences)

    def summary(self, duration_s: float | None = None) -> CallSummary:
        """The ``call.summary`` of the stream so far.

        Args:
            duration_s: seconds of stream audio (default: the latest ``advance``).
        """
        duration = self._position_s if duration_s is None else duration_s
        spans = [c.intervals(duration) for c in self._channels]
        return CallSummary(
            duration_s=round(duration, 3),
            overlap_seconds=round(overlap_seconds(spans), 3),
            longest_silence_s=round(longest_silence(spans, duration), 3),
            channels=tuple(c.summary() for c in self._channels),
            alerts=tuple(self.alerts),
        )


def overlap_seconds(channels: Sequence[Sequence[tuple[float, float]]]) -> float:
    """Seconds during which two or more channels speak.

    Args:
        channels: per channel, its speech as (start, end) spans (not overlapping
            each other within a channel).
    """
    edges = sorted(
        (t, step)
        for spans in channels
        for start, end in spans
        if end > start
        for t, step in ((start, 1), (end, -1))
    )
    total, speaking, previous = 0.0, 0, 0.0
    for t, step in edges:
        if speaking >= 2:
            total += t - previous
        speaking += step
        previous = t
    return total


def longest_silence(
    channels: Sequence[Sequence[tuple[float, float]]], duration_s: float
) -> float:
    """Longest stretch of ``[0, duration_s]`` in which no channel speaks."""
    spans = sorted(span for spans in channels for span in spans)
    longest, covered = 0.0, 0.0
    for start, end in spans:
        longest = max(longest, min(start, duration_s) - covered)
        covered = max(covered, end)
    return max(longest, duration_s - covered, 0.0)
