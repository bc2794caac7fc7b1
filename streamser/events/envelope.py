"""``Envelope``: an event with its common fields, and ``EventSequencer``, which stamps
them (``id``, ``stream_id``, ``seq``, ``time``, ``origin``) in one place."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from streamser.errors import ProtocolError
from streamser.events.bodies import Event, event_from_dict
from streamser.events.fields import read_int, read_str
from streamser.messages import load_json

_COMMON_FIELDS: Final = ("type", "id", "stream_id", "seq", "time", "origin")


@dataclass(frozen=True)
class Envelope:
    """An event with its common fields, as sent on the wire."""

    id: int
    """Server-wide, strictly increasing from 1."""
    stream_id: str
    """The stream the event belongs to."""
    seq: int
    """Position in the stream's events, from 0, without gaps."""
    time: str
    """Server wall clock, RFC 3339 UTC with milliseconds."""
    body: Event
    """The type-specific part."""
    origin: str = ""
    """The daemon that stamped it (``[hub] origin``): (origin, id) is unique across
    daemons for as long as each runs."""

    @property
    def type(self) -> str:
        """The wire type of the body."""
        return self.body.TYPE

    def to_dict(self) -> dict[str, Any]:
        """Returns the whole JSON object, common fields first."""
        return {
            "type": self.body.TYPE,
            "id": self.id,
            "stream_id": self.stream_id,
            "seq": self.seq,
            "time": self.time,
            "origin": self.origin,
            **self.body.to_dict(),
        }

    def to_json(self) -> str:
        """Returns compact JSON text.

        Raises:
            ValueError: a number in the event is NaN or infinite.
        """
        return json.dumps(
            self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """Reads a whole event object; raises ProtocolError("malformed_event")."""
        body = event_from_dict(data)
        for name in _COMMON_FIELDS:
            if name not in data:
                raise ProtocolError("malformed_event", f"event without field {name!r}")
        return cls(
            id=read_int("id", data["id"]),
            stream_id=read_str("stream_id", data["stream_id"]),
            seq=read_int("seq", data["seq"]),
            time=read_str("time", data["time"]),
            body=body,
            origin=read_str("origin", data["origin"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Reads a whole event from JSON text; raises ProtocolError."""
        return cls.from_dict(load_json(text, "malformed_event", fatal=False))


def rfc3339_now() -> str:
    """Returns the current UTC time as RFC 3339 with milliseconds and "Z"."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def default_origin(port: int | None = None) -> str:
    """The host name, with ``:port`` when given (several daemons on one host)."""
    host = socket.gethostname() or "localhost"
    return host if port is None else f"{host}:{port}"


class EventSequencer:
    """Stamps event bodies with the server-wide ``id`` and per-stream ``seq``.

    One per server, shared by every stream; all methods are thread-safe.
    """

    def __init__(
        self,
        clock: Callable[[], str] = rfc3339_now,
        first_id: int = 1,
        origin: str = "",
    ) -> None:
        """Starts the counters.

        Args:
            clock: returns the ``time`` field (RFC 3339 text).
            first_id: the ``id`` of the first event.
            origin: the ``origin`` field; "" for ``default_origin()``.
        """
        self.origin = origin or default_origin()
        """Stamped on every event; set it before the first one."""
        self._clock = clock
        self._lock = threading.Lock()
        self._next_id = first_id
        self._next_seq: dict[str, int] = {}

    def stamp(self, stream_id: str, body: Event) -> Envelope:
        """Wraps ``body`` with the next id, the stream's next seq and the time."""
        with self._lock:
            event_id = self._next_id
            self._next_id += 1
            seq = self._next_seq.get(stream_id, 0)
            self._next_seq[stream_id] = seq + 1
            time = self._clock()
        return Envelope(event_id, stream_id, seq, time, body, self.origin)

    def forget(self, stream_id: str) -> None:
        """Drops a finished stream's seq counter (a reused id starts again at 0)."""
        with self._lock:
            self._next_seq.pop(stream_id, None)

    @property
    def last_id(self) -> int:
        """The id of the latest stamped event (first_id - 1 before any)."""
        with self._lock:
            return self._next_id - 1
