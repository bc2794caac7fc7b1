"""Alert rules over a call's events: their settings, validation and evaluation.

Three kinds, each general enough for many rules: ``label_run`` (a label in enough of
a channel's last utterances), ``trend`` (arousal or valence rising or falling over a
time window) and ``silence`` (no one speaks for a while, in stream audio). Rules are
read from ``[[analytics.rules]]`` tables; ``parse_rules`` checks them once, at load.
Evaluation is sans-I/O: a ``Watch`` per rule and stream takes utterances and the
stream's position and returns the alerts to raise.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final, Protocol

from streamser.errors import ConfigError
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
    """

    summary: bool = True
    rules: tuple[Rule, ...] = field(default_factory=lambda: DEFAULT_RULES)

    def __post_init__(self) -> None:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must differ: {', '.join(duplicates)}")


# -- loading ----------------------------------------------------------------------


def _check(ok: bool, where: str, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{where}: {name} must be {expected}, got {value!r:.60}")


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_rule(raw: Any, position: int) -> Rule:
    """Reads and checks one ``[[analytics.rules]]`` table.

    Args:
        raw: the table.
        position: its index in the list (for messages).

    Returns:
        The rule.

    Raises:
        ConfigError: a missing, unknown or bad field; the message names the rule
            and the field.
    """
    where = f"analytics.rules[{position}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table ([[analytics.rules]])")
    name = raw.get("name")
    _check(
        isinstance(name, str) and bool(name.strip()),
        where,
        "name",
        "a non-empty string",
        name,
    )
    where = f"{where} ({name!r})"
    kind = raw.get("kind")
    _check(kind in RULE_KINDS, where, "kind", f"one of {', '.join(RULE_KINDS)}", kind)
    cls = RULE_KINDS[str(kind)]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known - {"kind"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)} for kind {kind!r}; "
            f"known: {', '.join(sorted(known - {'name'}))}"
        )
    values = {k: v for k, v in raw.items() if k != "kind"}
    if cls is LabelRunRule:
        return _label_run(values, where)
    if cls is TrendRule:
        return _trend(values, where)
    return _silence(values, where)


def _label_run(values: dict[str, Any], where: str) -> LabelRunRule:
    label = values.get("label")
    _check(
        isinstance(label, str) and bool(label), where, "label", "a label name", label
    )
    window = values.get("window", LabelRunRule.window)
    _check(_integer(window) and window >= 1, where, "window", "an integer >= 1", window)
    count = values.get("count", LabelRunRule.count)
    _check(
        _integer(count) and 1 <= count <= window,
        where,
        "count",
        f"an integer from 1 to window ({window})",
        count,
    )
    confidence = values.get("min_confidence", LabelRunRule.min_confidence)
    _check(
        _number(confidence) and 0 <= confidence <= 1,
        where,
        "min_confidence",
        "a number from 0 to 1",
        confidence,
    )
    return LabelRunRule(values["name"], str(label), window, count, float(confidence))


def _trend(values: dict[str, Any], where: str) -> TrendRule:
    followed = values.get("field", TrendRule.field)
    _check(
        followed in TREND_FIELDS,
        where,
        "field",
        f"one of {', '.join(TREND_FIELDS)}",
        followed,
    )
    window_s = values.get("window_s", TrendRule.window_s)
    _check(
        _number(window_s) and window_s > 0, where, "window_s", "a number > 0", window_s
    )
    slope = values.get("slope", TrendRule.slope)
    _check(
        _number(slope) and slope != 0,
        where,
        "slope",
        "a non-zero number (per second; negative: falling)",
        slope,
    )
    points = values.get("min_points", TrendRule.min_points)
    _check(
        _integer(points) and points >= 2, where, "min_points", "an integer >= 2", points
    )
    return TrendRule(values["name"], followed, float(window_s), float(slope), points)


def _silence(values: dict[str, Any], where: str) -> SilenceRule:
    seconds = values.get("seconds", SilenceRule.seconds)
    _check(_number(seconds) and seconds > 0, where, "seconds", "a number > 0", seconds)
    return SilenceRule(values["name"], float(seconds))


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    """Reads and checks the ``[[analytics.rules]]`` list.

    Raises:
        ConfigError: not a list of tables, a bad rule (named with its field), or two
            rules with one name.
    """
    if not isinstance(raw, list):
        raise ConfigError(
            "analytics.rules: must be a list of tables ([[analytics.rules]])"
        )
    rules = tuple(parse_rule(item, position) for position, item in enumerate(raw))
    seen: set[str] = set()
    for position, rule in enumerate(rules):
        if rule.name in seen:
            raise ConfigError(
                f"analytics.rules[{position}] ({rule.name!r}): name is already used "
                "by an earlier rule"
            )
        seen.add(rule.name)
    return rules


def rules_to_toml(rules: Sequence[Rule]) -> list[str]:
    """The ``[[analytics.rules]]`` tables of ``rules``, as TOML lines."""
    lines: list[str] = []
    for rule in rules:
        lines += ["[[analytics.rules]]", f'kind = "{rule.KIND}"']
        for item in fields(rule):
            value = getattr(rule, item.name)
            text = f'"{value}"' if isinstance(value, str) else repr(value)
            lines.append(f"{item.name} = {text}")
        lines.append("")
    return lines


# -- evaluation -------------------------------------------------------------------


@dataclass(frozen=True)
class CallState:
    """What a silence needs to know about the call at one position."""

    position_s: float
    """Seconds of stream audio received."""
    silent_since_s: float | None
    """Where the current silence on every channel began; None while one speaks."""


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
        since = state.silent_since_s
        if since is None or since == self._fired_for:
            return []
        if state.position_s - since < self.rule.seconds:
            return []
        self._fired_for = since
        return [
            CallAlert(
                rule=self.rule.name,
                channel=None,
                utterance_ids=(),
                message=(
                    f"no one has spoken for {self.rule.seconds:g} s "
                    f"(silent since {since:.1f} s)"
                ),
            )
        ]
