"""Per-call analytics (sans-I/O): summaries, alert rules and offline call reports."""

from streamser.analytics.loading import parse_rules
from streamser.analytics.rules import (
    DEFAULT_RULES,
    AnalyticsOptions,
    LabelRunRule,
    Rule,
    SilenceRule,
    TrendRule,
)
from streamser.analytics.summary import CallAnalytics

__all__ = [
    "DEFAULT_RULES",
    "AnalyticsOptions",
    "CallAnalytics",
    "LabelRunRule",
    "Rule",
    "SilenceRule",
    "TrendRule",
    "parse_rules",
]
