"""Reading ``[[analytics.rules]]`` tables: each rule checked once, at load, with
messages that name the rule and the field; and writing them back as TOML."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from streamser.analytics.rules import (
    RULE_KINDS,
    TREND_FIELDS,
    LabelRunRule,
    Rule,
    SilenceRule,
    TrendRule,
)
from streamser.errors import ConfigError


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
