"""What the command line shows on the terminal: its log handler (text or JSON
lines), the live view's event lines (``streamser run``, ``listen`` and ``send``) and
a model card's metrics and the provider a model runs on (``streamser models``)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from streamser.events import Envelope, ErrorEvent, UtteranceEnd
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


def event_line(envelope: Envelope, name: str | None = None) -> str | None:
    """One line of the live view for an utterance or an error, else None.

    Args:
        envelope: the event.
        name: what the line calls the stream (default: its ``stream_id``).
    """
    body = envelope.body
    stream = envelope.stream_id if name is None else name
    if isinstance(body, ErrorEvent):
        return f"{stream}  error {body.code}: {body.message}"
    if isinstance(body, UtteranceEnd):
        bar = "#" * round(body.confidence * 20)
        text = f'  "{body.transcript}"' if body.transcript else ""
        words = body.modalities.get("text")
        both = voice_and_words(
            body.label,
            words.label if words else None,
            body.sentiment.label if body.sentiment else None,
        )
        return (
            f"{stream}  {body.start:7.2f}-{body.end:7.2f}s  "
            f"{body.label:<10} {body.confidence:5.2f} {bar:<20}"
            f"{'  ' + both if both else ''}{text}"
        )
    return None


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
