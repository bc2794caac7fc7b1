"""Offline call reports (``streamser run --report``, ``--csv``): what the events of a
run say about each call, as one self-contained HTML file and as CSV rows.

``CallRecorder`` is an event sink that keeps what the reports need; ``write_html``
and ``write_csv`` write them. The HTML has inline CSS and inline SVG only: no script,
no external resource, so it opens anywhere, offline, and can be mailed as is.
"""

from __future__ import annotations

import csv
import html
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from streamser.errors import StreamserError
from streamser.events import (
    CallAlert,
    CallSummary,
    Envelope,
    StreamStart,
    UtteranceEnd,
)
from streamser.labels import CANONICAL_LABELS, voice_and_words

_LOGGER = logging.getLogger(__name__)

CSV_COLUMNS: Final = (
    "stream",
    "channel",
    "channel_name",
    "utterance_id",
    "start",
    "end",
    "label",
    "confidence",
    "arousal",
    "valence",
    "transcript",
    "asr",
)
"""Columns of ``write_csv``, one row per ``utterance.end``."""

_PALETTE: Final = {
    "anger": "#d62728",
    "boredom": "#8c8c8c",
    "calm": "#17becf",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happiness": "#f2b701",
    "neutral": "#b8c4cc",
    "sadness": "#1f77b4",
    "surprise": "#e377c2",
}
_EXTRA_COLOURS: Final = ("#2ca02c", "#ff7f0e", "#bcbd22", "#7f7f7f", "#393b79")


@dataclass
class CallRecord:
    """What the reports need of one stream."""

    stream_id: str
    names: list[str | None] = field(default_factory=list)
    """Channel names from the start's ``metadata.channels``."""
    title: str = ""
    """What to call the call: a name from its metadata, else "" (its stream id)."""
    utterances: list[UtteranceEnd] = field(default_factory=list)
    alerts: list[CallAlert] = field(default_factory=list)
    summary: CallSummary | None = None
    """The latest ``call.summary``."""

    def channel_name(self, channel: int) -> str | None:
        """The channel's name, or None."""
        return self.names[channel] if 0 <= channel < len(self.names) else None


class CallRecorder:
    """An event sink keeping each stream's utterances, alerts and summary."""

    def __init__(self) -> None:
        """Start empty."""
        self.calls: dict[str, CallRecord] = {}
        """Per stream id, in the order streams started."""

    def __call__(self, envelope: Envelope) -> None:
        """Keep what ``envelope`` adds to its call."""
        record = self.calls.setdefault(
            envelope.stream_id, CallRecord(envelope.stream_id)
        )
        body = envelope.body
        if isinstance(body, StreamStart):
            names = body.metadata.get("channels")
            if isinstance(names, list) and body.channel_mode == "separate":
                record.names = [n if isinstance(n, str) else None for n in names]
            record.title = call_title(body.metadata)
        elif isinstance(body, UtteranceEnd):
            record.utterances.append(body)
        elif isinstance(body, CallAlert):
            record.alerts.append(body)
        elif isinstance(body, CallSummary):
            record.summary = body


TITLE_KEYS: Final = ("call_id", "call", "name", "title", "file")
"""``metadata`` keys that name a call, first found wins (``send`` sets ``file``)."""


def call_title(metadata: Mapping[str, Any]) -> str:
    """A call's name from its ``metadata`` (``TITLE_KEYS``), or ""."""
    for key in TITLE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
            return str(value)
    return ""


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def check_report_paths(*paths: Path | None) -> None:
    """Fail before any work when a report could not be written (no such folder).

    Raises:
        StreamserError: naming the path.
    """
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise StreamserError(f"cannot write {path}: no folder {path.parent}")


def write_reports(
    calls: Sequence[CallRecord], csv_path: Path | None, html_path: Path | None
) -> None:
    """Write the CSV and the HTML report of ``calls`` where asked (None: not).

    Raises:
        StreamserError: a file cannot be written.
    """
    for path, write in ((csv_path, write_csv), (html_path, write_html)):
        if path is None:
            continue
        try:
            write(path, list(calls))
        except OSError as err:
            raise StreamserError(f"cannot write {path}: {err.strerror}") from err
        _LOGGER.info("Wrote %s (%d stream(s))", path, len(calls))


def write_csv(path: str | os.PathLike[str], calls: list[CallRecord]) -> None:
    """Write one row per utterance of ``calls`` (``CSV_COLUMNS``), UTF-8.

    Raises:
        OSError: the file cannot be written.
    """
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for call in calls:
            for u in call.utterances:
                writer.writerow(
                    (
                        call.stream_id,
                        u.channel,
                        call.channel_name(u.channel) or "",
                        u.utterance_id,
                        f"{u.start:.3f}",
                        f"{u.end:.3f}",
                        u.label,
                        f"{u.confidence:.4f}",
                        _number(u.arousal),
                        _number(u.valence),
                        "" if u.transcript is None else u.transcript,
                        u.asr,
                    )
                )


def label_colour(label: str) -> str:
    """The report's colour of ``label`` (a fixed one for canonical labels)."""
    if label in _PALETTE:
        return _PALETTE[label]
    return _EXTRA_COLOURS[sum(map(ord, label)) % len(_EXTRA_COLOURS)]


_CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1040px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
.chip{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;
font-size:.85em}
.alert{background:#fff3f0;border-left:4px solid #d62728;padding:4px 8px;margin:4px 0}
.line{border-left:6px solid #ccc;padding:2px 8px;margin:2px 0}
.meta{color:#666;font-size:.85em}
.legend span{margin-right:10px}
svg text{font:11px system-ui,sans-serif;fill:#444}
"""

_WIDTH: Final = 1000
_LEFT: Final = 120
_ROW: Final = 26


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _name(call: CallRecord, channel: int) -> str:
    name = call.channel_name(channel)
    return f"{channel} ({name})" if name else str(channel)


def _channels(call: CallRecord) -> list[int]:
    seen = {u.channel for u in call.utterances}
    if call.summary is not None:
        seen |= {c.channel for c in call.summary.channels}
    return sorted(seen | set(range(len(call.names)))) or [0]


def _duration(call: CallRecord) -> float:
    ends = [u.end for u in call.utterances]
    summary = call.summary.duration_s if call.summary is not None else 0.0
    return max([summary, *ends, 1.0])


def _timeline(call: CallRecord) -> str:
    """The labels of each channel over time; arousal and valence when present."""
    channels = _channels(call)
    duration = _duration(call)
    scale = (_WIDTH - _LEFT - 10) / duration
    with_affect = [
        u for u in call.utterances if u.arousal is not None or u.valence is not None
    ]
    curve_rows = 1 if with_affect else 0
    height = (len(channels) + curve_rows * len(channels)) * _ROW * 2 + 30
    parts = [
        f'<svg width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" '
        'role="img" aria-label="timeline">'
    ]
    row = {channel: index for index, channel in enumerate(channels)}
    for channel, index in row.items():
        y = index * _ROW * 2 + 10
        parts.append(
            f'<text x="0" y="{y + _ROW / 2 + 4}">{_esc(_name(call, channel))}</text>'
        )
        parts.append(
            f'<rect x="{_LEFT}" y="{y}" width="{_WIDTH - _LEFT - 10}" height="{_ROW}" '
            'fill="#f6f6f6"/>'
        )
    for u in call.utterances:
        y = row[u.channel] * _ROW * 2 + 10
        x = _LEFT + u.start * scale
        width = max(1.0, (u.end - u.start) * scale)
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_ROW}" '
            f'fill="{label_colour(u.label)}" fill-opacity="{0.35 + 0.65 * u.confidence:.2f}">'
            f"<title>{_esc(u.label)} {u.confidence:.2f}, {u.start:.1f}-{u.end:.1f} s"
            "</title></rect>"
        )
    base = len(channels) * _ROW * 2 + 10
    if with_affect:
        for channel, index in row.items():
            top = base + index * _ROW * 2
            mid = top + _ROW
            parts.append(
                f'<text x="0" y="{mid + 4}">{_esc(_name(call, channel))} a/v</text>'
                f'<line x1="{_LEFT}" y1="{mid}" x2="{_WIDTH - 10}" y2="{mid}" '
                'stroke="#ccc"/>'
            )
            for attr, colour in (("arousal", "#ff7f0e"), ("valence", "#2ca02c")):
                points = [
                    (
                        _LEFT + (u.start + u.end) / 2 * scale,
                        mid - float(getattr(u, attr)) * _ROW,
                    )
                    for u in call.utterances
                    if u.channel == channel and getattr(u, attr) is not None
                ]
                if points:
                    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                    parts.append(
                        f'<polyline points="{coords}" fill="none" '
                        f'stroke="{colour}" stroke-width="2"><title>{attr}</title>'
                        "</polyline>"
                    )
    axis = height - 6
    step = _tick_step(duration)
    tick = 0.0
    while tick <= duration + 1e-9:
        x = _LEFT + tick * scale
        parts.append(
            f'<text x="{x:.1f}" y="{axis}" text-anchor="middle">{tick:g}s</text>'
        )
        tick += step
    parts.append("</svg>")
    return "".join(parts)


def _tick_step(duration: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800):
        if duration / step <= 12:
            return float(step)
    return 3600.0


def _legend(call: CallRecord) -> str:
    labels = sorted({u.label for u in call.utterances}, key=_label_order)
    chips = "".join(
        f'<span><span class="chip" style="background:{label_colour(label)}">'
        f"{_esc(label)}</span></span>"
        for label in labels
    )
    if any(u.arousal is not None or u.valence is not None for u in call.utterances):
        chips += (
            '<span style="color:#ff7f0e">&#9473; arousal</span>'
            '<span style="color:#2ca02c">&#9473; valence</span>'
            '<span class="meta">(a/v rows: -1 to 1)</span>'
        )
    return f'<p class="legend">{chips}</p>'


def _label_order(label: str) -> tuple[int, str]:
    if label in CANONICAL_LABELS:
        return (CANONICAL_LABELS.index(label), label)
    return (len(CANONICAL_LABELS), label)


def _summary_table(call: CallRecord) -> str:
    summary = call.summary
    if summary is None:
        return "<p>No summary (the stream did not end).</p>"
    rows = [
        '<table class="summary"><tr><th>duration</th><th>overlap</th>'
        "<th>longest silence</th><th>alerts</th></tr>",
        f"<tr><td>{summary.duration_s:.1f} s</td>"
        f"<td>{summary.overlap_seconds:.1f} s</td>"
        f"<td>{summary.longest_silence_s:.1f} s</td>"
        f"<td>{len(summary.alerts)}</td></tr></table>",
        "<table><tr><th>channel</th><th>utterances</th><th>talk</th>"
        "<th>labels (count, seconds)</th><th>mean arousal</th>"
        "<th>mean valence</th><th>words' sentiment</th></tr>",
    ]
    for channel in summary.channels:
        labels = ", ".join(
            f'<span class="chip" style="background:{label_colour(label)}">'
            f"{_esc(label)}</span> {count} ({channel.label_seconds.get(label, 0):.1f} s)"
            for label, count in sorted(
                channel.label_counts.items(), key=lambda item: -item[1]
            )
        )
        sentiments = ", ".join(
            f"{name} {count}" for name, count in channel.sentiment_counts.items()
        )
        rows.append(
            f"<tr><td>{_esc(_name(call, channel.channel))}</td>"
            f"<td>{channel.utterances}</td><td>{channel.talk_seconds:.1f} s</td>"
            f"<td>{labels}</td><td>{_number(channel.mean_arousal, 2) or '-'}</td>"
            f"<td>{_number(channel.mean_valence, 2) or '-'}</td>"
            f"<td>{_esc(sentiments) or '-'}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _alerts(call: CallRecord) -> str:
    alerts = call.summary.alerts if call.summary is not None else tuple(call.alerts)
    if not alerts:
        return "<p>No alerts.</p>"
    return "".join(
        f'<div class="alert"><b>{_esc(a.rule)}</b>: {_esc(a.message)}'
        + (
            f' <span class="meta">(utterances '
            f"{_esc(', '.join(map(str, a.utterance_ids)))})</span>"
            if a.utterance_ids
            else ""
        )
        + "</div>"
        for a in alerts
    )


def _transcript(call: CallRecord) -> str:
    lines = []
    for u in sorted(call.utterances, key=lambda u: (u.start, u.channel)):
        colour = label_colour(u.label)
        text = _esc(u.transcript) if u.transcript else '<span class="meta">-</span>'
        if u.transcript and u.words:
            # Each word says when it was said (hover, or tap on a touch screen).
            text = " ".join(
                f'<span class="word" tabindex="0" title="{w.start:.2f}-{w.end:.2f} s">'
                f"{_esc(w.word)}</span>"
                for w in u.words
            )
        affect = "".join(
            f" {name} {value:+.2f}"
            for name, value in (("arousal", u.arousal), ("valence", u.valence))
            if value is not None
        )
        lines.append(
            f'<div class="line" style="border-color:{colour}">'
            f'<span class="meta">{u.start:7.1f}-{u.end:.1f} s, '
            f"{_esc(_name(call, u.channel))}</span> "
            f'<span class="chip" style="background:{colour}">{_esc(u.label)} '
            f"{u.confidence:.2f}</span>"
            f'<span class="meta">{_esc(affect)}{_esc(_words(u))}</span> {text}</div>'
        )
    return "".join(lines) or "<p>No utterances.</p>"


def _words(u: UtteranceEnd) -> str:
    """`` voice neutral · words anger (negative)`` when the words' label differs."""
    words = u.modalities.get("text")
    both = voice_and_words(
        u.label,
        words.label if words else None,
        u.sentiment.label if u.sentiment else None,
    )
    return f" {both}" if both else ""


def render_html(calls: list[CallRecord], title: str = "Call report") -> str:
    """The report of ``calls`` as one self-contained HTML document."""
    body = [f"<h1>{_esc(title)}</h1>"]
    for call in calls:
        body += [
            f"<h2>{_esc(call.title or call.stream_id)}</h2>",
            "<h3>Summary</h3>",
            _summary_table(call),
            "<h3>Alerts</h3>",
            _alerts(call),
            "<h3>Timeline</h3>",
            _legend(call),
            _timeline(call),
            "<h3>Transcript</h3>",
            _transcript(call),
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_html(
    path: str | os.PathLike[str], calls: list[CallRecord], title: str = "Call report"
) -> None:
    """Write ``render_html(calls)`` to ``path`` (UTF-8).

    Raises:
        OSError: the file cannot be written.
    """
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(calls, title))
