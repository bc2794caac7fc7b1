"""What the command line shows on the terminal: its log handler (text or JSON
lines), the live view's event lines (``streamser run``, ``listen`` and ``send``) and
a model card's metrics and the provider a model runs on (``streamser models``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamser.events import (
    CallAlert,
    CallSummary,
    Envelope,
    ErrorEvent,
    StreamEnd,
    StreamStart,
    TranscriptPartial,
    UtteranceEnd,
)
from streamser.labels import voice_and_words


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(debug: bool, log_format: str) -> None:
    """Configure logging on stderr: text (no timestamps under systemd) or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("websockets", "faster_whisper", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event_line(
    envelope: Envelope, name: str | None = None, channel: str | None = None
) -> str | None:
    """One line of the live view for an utterance, an error or an alert, else None.

    Args:
        envelope: the event.
        name: what the line calls the stream (default: its ``stream_id``).
        channel: what the line calls an utterance's channel (None: no channel).
    """
    body = envelope.body
    stream = envelope.stream_id if name is None else name
    if isinstance(body, ErrorEvent):
        return f"{stream}  error {body.code}: {body.message}"
    if isinstance(body, CallAlert):
        return f"{stream}  ALERT {body.rule}: {body.message}"
    if isinstance(body, UtteranceEnd):
        bar = "#" * round(body.confidence * 20)
        text = f'  "{body.transcript}"' if body.transcript else ""
        who = f"{channel:<10} " if channel is not None else ""
        words = body.modalities.get("text")
        both = voice_and_words(
            body.label,
            words.label if words else None,
            body.sentiment.label if body.sentiment else None,
        )
        return (
            f"{stream}  {body.start:7.2f}-{body.end:7.2f}s  {who}"
            f"{body.label:<10} {body.confidence:5.2f} {bar:<20}"
            f"{'  ' + both if both else ''}{text}"
        )
    return None


def summary_lines(summary: CallSummary, stream: str, names: Sequence[str]) -> list[str]:
    """A call's summary for the terminal: the call, then one line per channel.

    Args:
        summary: the ``call.summary``.
        stream: what the lines call the stream.
        names: the channels' names (by channel; missing ones are numbered).
    """
    lines = [
        f"{stream}  summary: {summary.duration_s:.1f} s, overlap "
        f"{summary.overlap_seconds:.1f} s, longest silence "
        f"{summary.longest_silence_s:.1f} s, {len(summary.alerts)} alert(s)"
    ]
    for entry in summary.channels:
        who = channel_label(entry.channel, entry.name or _at(names, entry.channel))
        labels = ", ".join(
            f"{label} {count} ({entry.label_seconds.get(label, 0.0):.1f} s)"
            for label, count in sorted(
                entry.label_counts.items(), key=lambda item: -item[1]
            )
        )
        lines.append(
            f"{stream}    {who}: {entry.utterances} utterance(s), "
            f"{entry.talk_seconds:.1f} s of speech{': ' + labels if labels else ''}"
        )
    lines += [f"{stream}    alert {a.rule}: {a.message}" for a in summary.alerts]
    return lines


def channel_label(channel: int, name: str | None) -> str:
    """How the terminal calls a channel: its name, else "channel N"."""
    return name if name else f"channel {channel}"


def _at(names: Sequence[str], index: int) -> str | None:
    return names[index] if 0 <= index < len(names) else None


class CallView:
    """The terminal's live view of calls (``run``, ``send``, ``listen``).

    One line per utterance (with its channel's name when the channels are kept
    apart), per error and per alert as they come; each call ends with its summary.
    On a terminal, the open utterance's partial transcript (``transcript.partial``)
    is shown on the current line, rewritten as it grows and replaced by the
    utterance's line when it ends.
    """

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        """Print to standard output, or hand each line to ``write`` (then partial
        transcripts are not shown)."""
        self._terminal = write is None
        self._write = write or (lambda line: print(line, flush=True))
        self._names: dict[str, tuple[str, ...]] = {}
        self._separate: set[str] = set()
        self._partial_shown = False

    def __call__(self, envelope: Envelope, name: str | None = None) -> None:
        """Show ``envelope``; ``name`` is what to call its stream (default: its id)."""
        body = envelope.body
        if isinstance(body, TranscriptPartial):
            if self._terminal and sys.stdout.isatty():
                stream = envelope.stream_id if name is None else name
                text = f"{stream}  {body.start:7.2f}-{body.end:7.2f}s  … {body.text}"
                width = shutil.get_terminal_size().columns
                sys.stdout.write(f"\r\033[K{text[: width - 1]}")
                sys.stdout.flush()
                self._partial_shown = True
            return
        for line in self.lines(envelope, name):
            if self._partial_shown:
                sys.stdout.write("\r\033[K")
                self._partial_shown = False
            self._write(line)

    def lines(self, envelope: Envelope, name: str | None = None) -> list[str]:
        """The lines ``envelope`` adds to the view."""
        body, stream_id = envelope.body, envelope.stream_id
        stream = stream_id if name is None else name
        if isinstance(body, StreamStart):
            names = body.metadata.get("channels")
            if isinstance(names, list):
                self._names[stream_id] = tuple(str(n) for n in names)
            if body.channel_mode == "separate":
                self._separate.add(stream_id)
            return []
        names = self._names.get(stream_id, ())
        if isinstance(body, CallSummary):
            return summary_lines(body, stream, names)
        if isinstance(body, StreamEnd):
            self._names.pop(stream_id, None)
            self._separate.discard(stream_id)
            return []
        channel = None
        if isinstance(body, UtteranceEnd) and stream_id in self._separate:
            channel = channel_label(body.channel, _at(names, body.channel))
        line = event_line(envelope, stream, channel)
        return [line] if line else []


def provider_line(providers: Sequence[str]) -> str:
    """Where an onnxruntime session runs: its first provider, and the fallback.

    Args:
        providers: the session's ``get_providers()``, in priority order.

    Returns:
        "CUDA (CPU for nodes without a CUDA kernel)", "CPU", or the provider names.
    """
    names = [p.removesuffix("ExecutionProvider") for p in providers]
    if not names:
        return "none"
    if names[0] == "CUDA" and "CPU" in names[1:]:
        return "CUDA (CPU for nodes without a CUDA kernel)"
    return ", ".join(names)


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return str(round(value, 3))
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list):
        if value and all(isinstance(row, list) for row in value):
            return f"[{len(value)}x{len(value[0])} matrix]"
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return str(value)


def metric_lines(metrics: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """A model card's ``metrics``, one line per family (a nested object), whole.

    Numbers are rounded to 3 decimals; a matrix (a confusion matrix) is shown by
    its shape only, the card holds it.

    Args:
        metrics: the card's ``metrics`` object.
        indent: put before each line.

    Returns:
        ``metrics:`` then one line per object: its path and its plain values.
    """
    lines = [f"{indent}metrics:"]

    def family(path: str, values: Mapping[str, Any]) -> None:
        plain = [
            f"{key} {_value(value)}"
            for key, value in values.items()
            if not isinstance(value, Mapping)
        ]
        if plain and path:
            lines.append(f"{indent}  {path}: {', '.join(plain)}")
        elif plain:  # top-level values (how the model was evaluated): one per line
            lines.extend(f"{indent}  {item.replace(' ', ': ', 1)}" for item in plain)
        for key, value in values.items():
            if isinstance(value, Mapping):
                family(f"{path} / {key}" if path else str(key), value)

    family("", metrics)
    return lines
