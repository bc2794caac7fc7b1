"""Alert rules over a call's events: their settings, validation and evaluation.

Three kinds, each general enough for many rules: ``label_run`` (a label in enough of
a channel's last utterances), ``trend`` (arousal or valence rising or falling over a
time window) and ``silence`` (no one speaks for a while, in stream audio). Rules are
read from ``[[analytics.rules]]`` tables (``analytics.loading`` checks them once, at
load). Evaluation is sans-I/O: a ``Watch`` per rule and stream takes utterances and the
stream's position and returns the alerts to raise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

from streamser.events import CallAlert, UtteranceEnd

TREND_FIELDS: Final = ("arousal", "valence")
"""What a ``trend`` rule may follow: fields of ``utterance.end`` that may be null."""


@dataclass(frozen=True)
class LabelRunRule:
    """Fires when ``label`` is in at least ``count`` of a channel's last ``window``
    utterances, each with ``confidence >= min_confidence``; once per run (again only
    after the condition has stopped holding)."""

    KIND: ClassVar[str] = "label_run"
    name: str
    """The rule's name, carried by its alerts as ``rule``."""
    label: str
    """The emotion label to look for."""
    window: int = 3
    """How many of the channel's latest utterances are looked at."""
    count: int = 2
    """How many of them must carry ``label``."""
    min_confidence: float = 0.5
    """The least ``confidence`` an utterance needs to count."""

    def watch(self) -> Watch:
        """A fresh evaluation state for one stream."""
        return _LabelRunWatch(self)


@dataclass(frozen=True)
class TrendRule:
    """Fires when the least-squares slope of ``field`` (per second of stream audio)
    over a channel's utterances of the last ``window_s`` reaches ``slope``: falls to
    it when negative, rises to it when positive; once per run. Silent while the
    utterances carry no ``field`` (no model gives it)."""

    KIND: ClassVar[str] = "trend"
    name: str
    """The rule's name, carried by its alerts as ``rule``."""
    field: str = "valence"
    """One of ``TREND_FIELDS``."""
    window_s: float = 60.0
    """Seconds of stream audio the trend is fitted over (by utterance midpoints)."""
    slope: float = -0.01
    """Threshold in units of ``field`` per second; its sign is the direction."""
    min_points: int = 3
    """Utterances with ``field`` the window needs before the rule may fire."""

    def watch(self) -> Watch:
        """A fresh evaluation state for one stream."""
        return _TrendWatch(self)


@dataclass(frozen=True)
class SilenceRule:
    """Fires (for the whole call, ``channel`` null) when no channel has spoken for
    ``seconds`` of stream audio; once per silence."""

    KIND: ClassVar[str] = "silence"
    name: str
    """The rule's name, carried by its alerts as ``rule``."""
    seconds: float = 10.0
    """Seconds of stream audio without speech on any channel."""

    def watch(self) -> Watch:
        """A fresh evaluation state for one stream."""
        return _SilenceWatch(self)


Rule = LabelRunRule | TrendRule | SilenceRule
"""Any rule."""
RULE_KINDS: Final[dict[str, type[Rule]]] = {
    cls.KIND: cls for cls in (LabelRunRule, TrendRule, SilenceRule)
}
"""Rule class by ``kind``."""
DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    LabelRunRule("sustained_anger", "anger", window=3, count=2, min_confidence=0.5),
    TrendRule("falling_valence", "valence", window_s=60.0, slope=-0.01, min_points=3),
    SilenceRule("long_silence", seconds=10.0),
)
"""The rules of a configuration that names none."""


@dataclass(frozen=True)
class AnalyticsOptions:
    """Call analytics settings (``[analytics]``; rules as ``[[analytics.rules]]``).

    Attributes:
        summary: send ``call.summary`` before every ``stream.end`` (a client's
            ``{"type": "summary"}`` gets one either way).
        rules: the alert rules; a configuration that lists any replaces the
            defaults, and ``rules = []`` turns alerts off.
        channel_names: names of a call's channels kept apart, comma-separated
            ("agent,customer"), for the streams that ``run`` and ``listen`` open
            (their ``metadata.channels``); "" for none.
    """

    summary: bool = True
    rules: tuple[Rule, ...] = field(default_factory=lambda: DEFAULT_RULES)
    channel_names: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """``channel_names`` as a tuple (empty for none)."""
        return parse_channel_names(self.channel_names)

    def __post_init__(self) -> None:
        parse_channel_names(self.channel_names)
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must differ: {', '.join(duplicates)}")


MAX_CHANNEL_NAME: Final = 64
"""Longest channel name, in characters."""


def parse_channel_names(text: str) -> tuple[str, ...]:
    """Channel names from a comma-separated list ("agent,customer").

    Raises:
        ValueError: an empty or overlong name, or a name given twice.
    """
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    if any(not name or len(name) > MAX_CHANNEL_NAME for name in names):
        raise ValueError(
            f"channel names must be 1 to {MAX_CHANNEL_NAME} characters, "
            f"comma-separated (e.g. agent,customer), got {text!r:.80}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"channel names must differ, got {text!r:.80}")
    return names


# -- evaluation -------------------------------------------------------------------


@dataclass(frozen=True)
class CallState:
    """What a silence needs to know about the call at one position."""

    position_s: float
    """Seconds of stream audio received."""
    silences: tuple[tuple[float, float], ...] = ()
    """Stretches in which no channel spoke, known so far and not reported before,
    plus the current one: each (where it began, seconds it is known to have lasted).
    Known means in stream audio, whatever the pace of recognition: a silence is
    only measured up to where every channel's speech is settled."""


class Watch(Protocol):
    """One rule's state on one stream. Not thread-safe; one per stream."""

    def utterance(self, event: UtteranceEnd, name: str | None) -> list[CallAlert]:
        """Takes an ``utterance.end`` (channel ``name``); returns alerts to raise."""
        ...

    def tick(self, state: CallState) -> list[CallAlert]:
        """Takes the stream's progress; returns alerts to raise."""
        ...


def _who(channel: int, name: str | None) -> str:
    return f"channel {channel} ({name})" if name else f"channel {channel}"


class _LabelRunWatch:
    def __init__(self, rule: LabelRunRule) -> None:
        self.rule = rule
        self._recent: dict[int, deque[UtteranceEnd]] = {}
        self._firing: set[int] = set()

    def utterance(self, event: UtteranceEnd, name: str | None) -> list[CallAlert]:
        rule = self.rule
        recent = self._recent.setdefault(event.channel, deque(maxlen=rule.window))
        recent.append(event)
        hits = [
            u
            for u in recent
            if u.label == rule.label and u.confidence >= rule.min_confidence
        ]
        if len(hits) < rule.count:
            self._firing.discard(event.channel)
            return []
        if event.channel in self._firing:
            return []
        self._firing.add(event.channel)
        return [
            CallAlert(
                rule=rule.name,
                channel=event.channel,
                utterance_ids=tuple(u.utterance_id for u in hits),
                message=(
                    f"{rule.label} on {_who(event.channel, name)}: {len(hits)} of "
                    f"the last {len(recent)} utterances"
                ),
            )
        ]

    def tick(self, state: CallState) -> list[CallAlert]:
        return []


def fit_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points; None when x does not vary."""
    count = len(points)
    if count < 2:
        return None
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread <= 1e-12:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


class _TrendWatch:
    def __init__(self, rule: TrendRule) -> None:
        self.rule = rule
        self._points: dict[int, deque[tuple[float, float, int]]] = {}
        self._firing: set[int] = set()

    def utterance(self, event: UtteranceEnd, name: str | None) -> list[CallAlert]:
        rule = self.rule
        value = getattr(event, rule.field)
        if value is None:
            return []
        points = self._points.setdefault(event.channel, deque())
        points.append(((event.start + event.end) / 2, value, event.utterance_id))
        while points and points[0][0] < points[-1][0] - rule.window_s:
            points.popleft()
        slope = fit_slope([(x, y) for x, y, _ in points])
        reached = (
            len(points) >= rule.min_points
            and slope is not None
            and (slope <= rule.slope if rule.slope < 0 else slope >= rule.slope)
        )
        if not reached:
            self._firing.discard(event.channel)
            return []
        if event.channel in self._firing:
            return []
        self._firing.add(event.channel)
        direction = "falling" if rule.slope < 0 else "rising"
        return [
            CallAlert(
                rule=rule.name,
                channel=event.channel,
                utterance_ids=tuple(i for _, _, i in points),
                message=(
                    f"{rule.field} {direction} on {_who(event.channel, name)}: "
                    f"{slope:+.3f} per second over {len(points)} utterances "
                    f"in {rule.window_s:g} s"
                ),
            )
        ]

    def tick(self, state: CallState) -> list[CallAlert]:
        return []


class _SilenceWatch:
    def __init__(self, rule: SilenceRule) -> None:
        self.rule = rule
        self._fired_for: float | None = None

    def utterance(self, event: UtteranceEnd, name: str | None) -> list[CallAlert]:
        return []

    def tick(self, state: CallState) -> list[CallAlert]:
        alerts = []
        for since, seconds in state.silences:
            if since == self._fired_for or seconds < self.rule.seconds:
                continue
            self._fired_for = since
            alerts.append(
                CallAlert(
                    rule=self.rule.name,
                    channel=None,
                    utterance_ids=(),
                    message=(
                        f"no one has spoken for {self.rule.seconds:g} s "
                        f"(silent since {since:.1f} s)"
                    ),
                )
            )
        return alerts
