"""Call analytics without a server: rules, alerts and summaries from synthetic event
sequences, and the ``[analytics]`` configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamser.analytics import (
    DEFAULT_RULES,
    AnalyticsOptions,
    CallAnalytics,
    LabelRunRule,
    SilenceRule,
    TrendRule,
    parse_rules,
)
from streamser.analytics.rules import fit_slope
from streamser.analytics.summary import longest_silence, overlap_seconds
from streamser.config import Config, load_config
from streamser.errors import ConfigError
from streamser.events import CallAlert, SpeechStart, UtteranceEnd

ANGER = LabelRunRule("sustained_anger", "anger", window=3, count=2, min_confidence=0.5)


def _utterance(
    utterance_id: int,
    start: float,
    end: float,
    label: str = "neutral",
    confidence: float = 0.9,
    channel: int = 0,
    valence: float | None = None,
    arousal: float | None = None,
) -> UtteranceEnd:
    return UtteranceEnd(
        utterance_id,
        start,
        end,
        None,
        None,
        label,
        confidence,
        {label: confidence},
        channel=channel,
        valence=valence,
        arousal=arousal,
    )


def _play(
    analytics: CallAnalytics, events: list[SpeechStart | UtteranceEnd]
) -> list[CallAlert]:
    """Each utterance's speech.start, then its utterance.end, in order."""
    alerts = []
    for event in events:
        if isinstance(event, UtteranceEnd):
            alerts += analytics.advance(event.start)
            alerts += analytics.observe(
                SpeechStart(event.utterance_id, event.start, event.channel)
            )
            alerts += analytics.advance(event.end)
        alerts += analytics.observe(event)
    return alerts


def test_sustained_anger_fires_once_per_run() -> None:
    analytics = CallAnalytics([ANGER], ["agent", "customer"])
    labels = ["anger", "anger", "neutral", "anger", "anger", "neutral", "neutral"]
    labels += ["neutral", "anger", "anger"]
    events = [
        _utterance(i, 2.0 * i, 2.0 * i + 1.5, label) for i, label in enumerate(labels)
    ]
    alerts = _play(analytics, events)
    # anger, anger: fires; the window never drops below 2 angers until two
    # neutrals; the last two angers are a new run.
    assert [a.utterance_ids for a in alerts] == [(0, 1), (8, 9)]
    assert {(a.rule, a.channel) for a in alerts} == {("sustained_anger", 0)}
    assert "agent" in alerts[0].message
    assert analytics.summary().alerts == tuple(alerts)


def test_anger_needs_the_confidence_and_counts_each_channel_alone() -> None:
    analytics = CallAnalytics([ANGER], [None, None])
    events = [
        _utterance(0, 0.0, 1.0, "anger", 0.9, channel=0),
        _utterance(1, 1.0, 2.0, "anger", 0.9, channel=1),  # other channel
        _utterance(2, 2.0, 3.0, "anger", 0.4, channel=0),  # too unsure
        _utterance(3, 3.0, 4.0, "anger", 0.49, channel=1),
        _utterance(4, 4.0, 5.0, "anger", 0.5, channel=1),
    ]
    alerts = _play(analytics, events)
    assert [(a.channel, a.utterance_ids) for a in alerts] == [(1, (1, 4))]


def test_valence_trend_fires_only_when_valence_exists() -> None:
    rule = TrendRule("falling_valence", "valence", 60.0, -0.01, 3)
    silent = CallAnalytics([rule], [None])
    without = [_utterance(i, 10.0 * i, 10.0 * i + 2) for i in range(8)]
    assert _play(silent, without) == []
    assert silent.summary().channels[0].mean_valence is None

    falling = CallAnalytics([rule], [None])
    values = [0.6, 0.5, 0.3, 0.1, -0.1, -0.3]
    events = [
        _utterance(i, 10.0 * i, 10.0 * i + 2, valence=v) for i, v in enumerate(values)
    ]
    alerts = _play(falling, events)
    assert len(alerts) == 1  # once, from the third point on, while it keeps falling
    assert alerts[0].utterance_ids == (0, 1, 2)
    assert "falling" in alerts[0].message
    assert falling.summary().channels[0].mean_valence == pytest.approx(
        sum(values) / len(values), abs=1e-6
    )


def test_trend_looks_at_its_window_only() -> None:
    rule = TrendRule("falling_valence", "valence", 30.0, -0.01, 3)
    analytics = CallAnalytics([rule], [None])
    # A fall long ago, then flat: the flat window does not fire again.
    values = [(0, 0.8), (10, 0.4), (20, 0.0), (100, 0.0), (110, 0.0), (120, 0.0)]
    events = [_utterance(i, t, t + 2, valence=v) for i, (t, v) in enumerate(values)]
    assert [a.utterance_ids for a in _play(analytics, events)] == [(0, 1, 2)]
    rising = TrendRule("rising_arousal", "arousal", 60.0, 0.02, 2)
    up = CallAnalytics([rising], [None])
    events = [_utterance(0, 0, 2, arousal=-0.5), _utterance(1, 10, 12, arousal=0.5)]
    assert [a.rule for a in _play(up, events)] == ["rising_arousal"]


def test_fit_slope() -> None:
    assert fit_slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == pytest.approx(2.0)
    assert fit_slope([(1.0, 1.0), (1.0, 2.0)]) is None
    assert fit_slope([(1.0, 1.0)]) is None


def test_long_silence_fires_once_per_silence_in_stream_time() -> None:
    analytics = CallAnalytics([SilenceRule("long_silence", 10.0)], [None, None])
    assert analytics.advance(9.9) == []
    first = analytics.advance(10.0)  # nobody spoke since the start
    assert [(a.rule, a.channel, a.utterance_ids) for a in first] == [
        ("long_silence", None, ())
    ]
    assert analytics.advance(15.0) == []  # the same silence
    assert analytics.observe(SpeechStart(0, 16.0, channel=1)) == []
    assert analytics.advance(40.0) == []  # channel 1 speaks (open utterance)
    assert analytics.observe(_utterance(0, 16.0, 41.0, channel=1)) == []
    assert analytics.advance(50.0) == []
    assert len(analytics.advance(51.0)) == 1  # 10 s after the end at 41 s
    # An utterance that never gets its utterance.end (recognition failed) does
    # not hold silence off once it has ended; it was speech all the same.
    analytics.observe(SpeechStart(1, 52.0, channel=0))
    assert analytics.advance(70.0) == []
    assert [a.message for a in analytics.abandon(0, 1, 55.0)] == [
        "no one has spoken for 10 s (silent since 55.0 s)"
    ]
    assert analytics.summary().channels[0].utterances == 0


def test_summary_counts_overlap_and_silence() -> None:
    analytics = CallAnalytics([], ["agent", "customer"])
    events = [
        _utterance(0, 1.0, 4.0, "anger", channel=0),
        _utterance(1, 3.0, 5.0, "sadness", channel=1),  # overlaps 3-4
        _utterance(2, 12.0, 14.0, "anger", channel=0),  # 7 s of silence before
        _utterance(3, 14.5, 15.0, "neutral", channel=1, arousal=0.5, valence=-0.25),
    ]
    _play(analytics, events)
    summary = analytics.summary(20.0)
    assert summary.duration_s == 20.0
    assert summary.overlap_seconds == 1.0
    assert summary.longest_silence_s == 7.0
    agent, customer = summary.channels
    assert (agent.channel, agent.name, agent.utterances) == (0, "agent", 2)
    assert agent.label_counts == {"anger": 2}
    assert agent.label_seconds == {"anger": 5.0}
    assert agent.talk_seconds == 5.0
    assert (agent.mean_arousal, agent.mean_valence) == (None, None)
    assert customer.label_counts == {"neutral": 1, "sadness": 1}
    assert customer.label_seconds == {"neutral": 0.5, "sadness": 2.0}
    assert (customer.mean_arousal, customer.mean_valence) == (0.5, -0.25)
    assert summary.alerts == ()


def test_summary_mid_stream_counts_open_speech() -> None:
    analytics = CallAnalytics([], [None])
    analytics.observe(SpeechStart(0, 2.0))
    analytics.advance(5.0)
    summary = analytics.summary()
    assert summary.duration_s == 5.0
    assert summary.channels[0].utterances == 0
    assert summary.longest_silence_s == 2.0


def test_overlap_and_silence_helpers() -> None:
    assert overlap_seconds([[(0, 2), (5, 6)], [(1, 5.5)], [(1.5, 1.75)]]) == 1.5
    assert overlap_seconds([[], [(0, 1)]]) == 0.0
    assert longest_silence([], 3.0) == 3.0
    assert longest_silence([[(0, 1), (4, 5)], [(0.5, 2)]], 6.0) == 2.0


def test_rules_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[analytics]\nsummary = false\n"
        '[[analytics.rules]]\nname = "fear"\nkind = "label_run"\nlabel = "fear"\n'
        "window = 4\ncount = 3\n"
        '[[analytics.rules]]\nname = "quiet"\nkind = "silence"\nseconds = 30\n'
    )
    config = load_config(path, environ={})
    assert config.analytics == AnalyticsOptions(
        summary=False,
        rules=(LabelRunRule("fear", "fear", 4, 3, 0.5), SilenceRule("quiet", 30.0)),
    )
    assert load_config(None, environ={}).analytics.rules == DEFAULT_RULES
    empty = tmp_path / "e.toml"
    empty.write_text("[analytics]\nrules = []\n")
    assert load_config(empty, environ={}).analytics.rules == ()


@pytest.mark.parametrize(
    "config", [Config(), Config(analytics=AnalyticsOptions(rules=()))]
)
def test_effective_config_round_trips_with_rules(
    tmp_path: Path, config: Config
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path, environ={}) == config


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "label_run", "label": "anger"}, r"rules\[0\]: name must be"),
        ({"name": "x", "kind": "regex"}, r"\('x'\): kind must be one of label_run"),
        ({"name": "x", "kind": "label_run"}, r"\('x'\): label must be"),
        (
            {"name": "x", "kind": "label_run", "label": "anger", "window": 0},
            r"\('x'\): window must be an integer >= 1, got 0",
        ),
        (
            {"name": "x", "kind": "label_run", "label": "anger", "count": 4},
            r"\('x'\): count must be an integer from 1 to window \(3\)",
        ),
        (
            {"name": "x", "kind": "label_run", "label": "a", "min_confidence": 2},
            r"min_confidence must be a number from 0 to 1",
        ),
        (
            {"name": "x", "kind": "label_run", "label": "a", "seconds": 2},
            r"unknown field\(s\) seconds for kind 'label_run'",
        ),
        ({"name": "x", "kind": "trend", "field": "joy"}, r"field must be one of"),
        ({"name": "x", "kind": "trend", "slope": 0}, r"slope must be a non-zero"),
        ({"name": "x", "kind": "trend", "window_s": -1}, r"window_s must be"),
        ({"name": "x", "kind": "trend", "min_points": 1}, r"min_points must be"),
        ({"name": "x", "kind": "silence", "seconds": "10"}, r"seconds must be"),
        ({"name": "x", "kind": "silence", "seconds": True}, r"seconds must be"),
    ],
)
def test_bad_rules_are_refused_naming_rule_and_field(
    rule: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules([rule])


def test_bad_rule_lists_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\] \('a'\): name is already"):
        parse_rules(
            [
                {"name": "a", "kind": "silence"},
                {"name": "a", "kind": "silence", "seconds": 3},
            ]
        )
    with pytest.raises(ConfigError, match="must be a table"):
        parse_rules([3])
    path = tmp_path / "s.toml"
    path.write_text('[analytics]\nrules = "anger"\n')
    with pytest.raises(ConfigError, match=r"must be \[\[analytics.rules\]\] tables"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="nor an environment variable"):
        load_config(None, environ={"STREAMSER_ANALYTICS_RULES": "x"})
    path.write_text("[analytics]\nsumary = true\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(path, environ={})
