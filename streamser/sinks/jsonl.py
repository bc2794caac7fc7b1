"""Event sinks beside the WebSocket clients: an append-only JSONL file and stdout."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from streamser.events import Envelope, ErrorEvent
from streamser.metrics import Metrics

_LOGGER = logging.getLogger(__name__)


class JsonlSink:
    """Appends every event as one JSON line to a file, flushed per event.

    A failing write (disk full, file unwritable) is counted, logged once per failure
    spell, and reported as an ``error`` event once per spell on every stream whose
    events are not written; recognition goes on and writing resumes when the file
    accepts data again.
    """

    def __init__(
        self, path: Path, metrics: Metrics, report: Callable[[str, Any], object]
    ) -> None:
        """Open ``path`` for appending.

        Args:
            path: the JSONL file.
            metrics: where failures are counted.
            report: ``Engine.emit``, to send the error event.
        """
        self.path = path
        self.metrics = metrics
        self._report = report
        self._failing = False
        self._reported: set[str] = set()
        self._handle: TextIO | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("a", encoding="utf-8")
        except OSError as err:
            self._fail(None, err)

    def __call__(self, envelope: Envelope) -> None:
        """Write one event."""
        try:
            if self._handle is None:
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(envelope.to_json() + "\n")
            self._handle.flush()
        except OSError as err:
            self._fail(envelope, err)
            return
        if self._failing:
            _LOGGER.info("JSONL sink %s writable again", self.path)
            self._failing = False
            self._reported.clear()

    def _fail(self, envelope: Envelope | None, err: OSError) -> None:
        self.metrics.sink_failures.inc()
        if not self._failing:
            self._failing = True
            _LOGGER.error(
                "Cannot write events to %s: %s", self.path, err.strerror or err
            )
        if envelope is None or envelope.stream_id in self._reported:
            return
        self._reported.add(envelope.stream_id)  # before: the report comes back here
        self._report(
            envelope.stream_id,
            ErrorEvent(
                code="sink_write_failed",
                message=f"event log not written: {err.strerror or err}",
                fatal=False,
            ),
        )

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None


def stdout_sink(stream: TextIO = sys.stdout) -> Callable[[Envelope], None]:
    """A sink printing each event as a JSON line (``streamser run --jsonl``)."""

    closed = False

    def write(envelope: Envelope) -> None:
        nonlocal closed
        if closed:
            return
        try:
            stream.write(envelope.to_json() + "\n")
            stream.flush()
        except BrokenPipeError:  # ``streamser run --jsonl | head``: the reader left
            closed = True
            _LOGGER.info("Standard output closed; no more events are printed")
            with contextlib.suppress(OSError, ValueError):
                # so the interpreter's own flush at exit does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())

    return write
