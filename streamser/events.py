"""PROTOCOL.md version 1 in code: events, their JSON form, and client messages.

One frozen dataclass per event type holds the type-specific fields; ``Envelope`` adds
the common ones (``type``, ``id``, ``origin``, ``stream_id``, ``seq``, ``time``) in one
place, and
``EventSequencer`` stamps them. Client messages live in ``messages.py``. Positions inside the runtime are sample indices at
16 kHz; this is the only module that turns them into the seconds of the protocol
(``samples_to_seconds``).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import ProtocolError
from streamser.messages import load_json

_LOGGER = logging.getLogger(__name__)

MODALITIES: Final = ("acoustic", "text")
"""Keys of ``utterance.end``'s ``modalities``, always present (null when unused)."""
_COMMON_FIELDS: Final = ("type", "id", "stream_id", "seq", "time", "origin")
ASR_OK: Final = "ok"
ASR_OFF: Final = "off"
ASR_SKIPPED_OVERLOAD: Final = "skipped_overload"
ASR_SKIPPED_SHUTDOWN: Final = "skipped_shutdown"
ASR_REJECTED: Final = "rejected"
ASR_STATES: Final = (
    ASR_OK,
    ASR_OFF,
    ASR_SKIPPED_OVERLOAD,
    ASR_SKIPPED_SHUTDOWN,
    ASR_REJECTED,
)
"""Values of ``utterance.end``'s ``asr``: whether and why not it has a transcript."""


def samples_to_seconds(samples: int) -> float:
    """Converts a 16 kHz sample index to the protocol's seconds, rounded to ms.

    Rounds half up in integers, so the result does not depend on float quirks.
    """
    half = SAMPLE_RATE_HZ // 2
    return ((samples * 1000 + half) // SAMPLE_RATE_HZ) / 1000


# -- field readers: raw JSON value -> typed value, or ProtocolError("malformed_event")


def _malformed(name: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(
        "malformed_event", f"field {name!r} must be {expected}, got {value!r:.80}"
    )


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(name, "an integer", value)
    return value


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(name, "a number", value)
    if not math.isfinite(value):
        raise _malformed(name, "a finite number", value)
    return float(value)


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _malformed(name, "a string", value)
    return value


def _optional_str(name: str, value: Any) -> str | None:
    return None if value is None else _str(name, value)


def _optional_float(name: str, value: Any) -> float | None:
    return None if value is None else _float(name, value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _malformed(name, "true or false", value)
    return value


def _object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(name, "an object", value)
    return value


def _scores(name: str, value: Any) -> dict[str, float]:
    return {str(k): _float(f"{name}.{k}", v) for k, v in _object(name, value).items()}


def _counts(name: str, value: Any) -> dict[str, int]:
    return {str(k): _int(f"{name}.{k}", v) for k, v in _object(name, value).items()}


def _optional_int(name: str, value: Any) -> int | None:
    return None if value is None else _int(name, value)


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _malformed(name, "a list", value)
    return value


def _ints(name: str, value: Any) -> tuple[int, ...]:
    return tuple(_int(f"{name}[]", item) for item in _list(name, value))


@dataclass(frozen=True)
class ModelInfo:
    """A model in use, as named in ``stream.start``."""

    kind: str
    """Its role: "vad", "asr", "acoustic", "text" or "fusion"."""
    name: str
    """Its name, e.g. "emotion-acoustic-v1"."""
    version: str
    """Its version (from the model's metadata)."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON object."""
        return {"kind": self.kind, "name": self.name, "version": self.version}

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo:
        """Reads the JSON object; raises ProtocolError("malformed_event")."""
        obj = _object("models[]", data)
        return cls(*(_str(k, obj.get(k)) for k in ("kind", "name", "version")))


@dataclass(frozen=True)
class ModalityScores:
    """One modality's opinion inside ``utterance.end``'s ``modalities``."""

    label: str
    """Its most probable label."""
    scores: dict[str, float]
    """Label to probability, summing to 1."""
    language: str | None = None
    """For ``modalities.text``: the language of the transcript the text model read
    (ISO 639-1); None (and the key absent) elsewhere."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON object ``{label, scores}`` (and ``language`` when set)."""
        data: dict[str, Any] = {"label": self.label, "scores": dict(self.scores)}
        if self.language is not None:
            data["language"] = self.language
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ModalityScores:
        """Reads the JSON object; raises ProtocolError("malformed_event")."""
        obj = _object("modality", data)
        return cls(
            _str("label", obj.get("label")),
            _scores("scores", obj.get("scores")),
            _optional_str("language", obj.get("language")),
        )


@dataclass(frozen=True)
class ChannelSummary:
    """One channel's part of ``call.summary``."""

    channel: int
    """The channel, from 0 (0 for a downmixed stream)."""
    name: str | None
    """Its name from the start message's ``metadata.channels``, or None."""
    utterances: int
    """``utterance.end`` events of the channel."""
    label_counts: dict[str, int]
    """Label to the number of the channel's utterances with that label."""
    label_seconds: dict[str, float]
    """Label to the seconds of speech of the channel's utterances with that label."""
    talk_seconds: float
    """Seconds of speech (utterance start to end) on the channel."""
    mean_arousal: float | None
    """Mean ``arousal`` of its utterances; None when none carries one."""
    mean_valence: float | None
    """Mean ``valence`` of its utterances; None when none carries one."""
    sentiment_counts: dict[str, int] = field(default_factory=dict)
    """Sentiment of the words (negative, neutral, positive) to the number of the
    channel's utterances with it; utterances without a sentiment are not counted."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON object."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> ChannelSummary:
        """Reads the JSON object; raises ProtocolError("malformed_event")."""
        obj = _object("channels[]", data)
        for key in (f.name for f in fields(cls) if f.name != "sentiment_counts"):
            if key not in obj:
                raise ProtocolError(
                    "malformed_event", f"call.summary channel without field {key!r}"
                )
        return cls(
            channel=_int("channel", obj["channel"]),
            name=_optional_str("name", obj["name"]),
            utterances=_int("utterances", obj["utterances"]),
            label_counts=_counts("label_counts", obj["label_counts"]),
            label_seconds=_scores("label_seconds", obj["label_seconds"]),
            talk_seconds=_float("talk_seconds", obj["talk_seconds"]),
            mean_arousal=_optional_float("mean_arousal", obj["mean_arousal"]),
            mean_valence=_optional_float("mean_valence", obj["mean_valence"]),
            sentiment_counts=_counts(
                "sentiment_counts", obj.get("sentiment_counts", {})
            ),
        )


_Reader = Callable[[str, Any], Any]


def _models(name: str, value: Any) -> tuple[ModelInfo, ...]:
    if not isinstance(value, list):
        raise _malformed(name, "a list", value)
    return tuple(ModelInfo.from_dict(item) for item in value)


def _modalities(name: str, value: Any) -> dict[str, ModalityScores | None]:
    obj = _object(name, value)
    return {
        key: None if obj.get(key) is None else ModalityScores.from_dict(obj[key])
        for key in (*MODALITIES, *(k for k in obj if k not in MODALITIES))
    }


def _channel_summaries(name: str, value: Any) -> tuple[ChannelSummary, ...]:
    return tuple(ChannelSummary.from_dict(item) for item in _list(name, value))


def _alerts(name: str, value: Any) -> tuple[CallAlert, ...]:
    return tuple(
        CallAlert._read(_object(f"{name}[]", item)) for item in _list(name, value)
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, ModelInfo | ModalityScores | ChannelSummary | CallAlert):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


_READERS: Final[dict[str, _Reader]] = {
    "int": _int,
    "float": _float,
    "str": _str,
    "str | None": _optional_str,
    "bool": _bool,
    "dict[str, Any]": _object,
    "dict[str, float]": _scores,
    "tuple[ModelInfo, ...]": _models,
    "dict[str, ModalityScores | None]": _modalities,
    "float | None": _optional_float,
    "ModalityScores | None": lambda name, value: (
        None if value is None else ModalityScores.from_dict(value)
    ),
    "int | None": _optional_int,
    "tuple[int, ...]": _ints,
    "tuple[ChannelSummary, ...]": _channel_summaries,
    "tuple[CallAlert, ...]": _alerts,
}
"""Reader of each field annotation used by the events (they are strings here)."""


@dataclass(frozen=True)
class _Event:
    """Shared serialisation of the event bodies below, driven by their fields."""

    TYPE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Returns the type-specific fields as JSON values (no common fields)."""
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> Any:
        values = {}
        for item in fields(cls):
            if item.name not in data:
                raise ProtocolError(
                    "malformed_event", f"{cls.TYPE} event without field {item.name!r}"
                )
            values[item.name] = _READERS[str(item.type)](item.name, data[item.name])
        return cls(**values)


@dataclass(frozen=True)
class StreamStart(_Event):
    """``stream.start``: a stream was accepted."""

    TYPE: ClassVar[str] = "stream.start"
    sample_rate: int
    """The client's sample rate in Hz."""
    encoding: str
    """The client's encoding (one of PROTOCOL.md's)."""
    language: str | None
    """The fixed language, or None when it is detected."""
    metadata: dict[str, Any]
    """The client's metadata, echoed."""
    models: tuple[ModelInfo, ...] = ()
    """Each model in use with its version."""
    channel_mode: str = "downmix"
    """"separate" when each channel is recognised on its own (``channel`` on its
    events, ``metadata.channels`` naming them), else "downmix"."""


@dataclass(frozen=True)
class SpeechStart(_Event):
    """``speech.start``: the VAD opened an utterance."""

    TYPE: ClassVar[str] = "speech.start"
    utterance_id: int
    """Index of the utterance in its stream, from 0."""
    start: float
    """Seconds of stream audio where the utterance (with its pre-speech pad) begins."""
    channel: int = 0
    """The audio channel it was heard on (0 unless channels are kept separate)."""


@dataclass(frozen=True)
class EmotionPartial(_Event):
    """``emotion.partial``: the acoustic model's view of an utterance so far."""

    TYPE: ClassVar[str] = "emotion.partial"
    utterance_id: int
    """Index of the utterance in its stream, from 0."""
    start: float
    """Seconds of stream audio where the utterance begins."""
    end: float
    """Seconds of stream audio the scores cover up to."""
    label: str
    """Most probable label."""
    scores: dict[str, float]
    """Label to probability (acoustic model only), summing to 1."""
    channel: int = 0
    """The audio channel it was heard on (0 unless channels are kept separate)."""
    arousal: float | None = None
    """Activation in [-1, 1] (calm to excited); None when no model gives it."""
    valence: float | None = None
    """Pleasantness in [-1, 1] (negative to positive); None when no model gives it."""


@dataclass(frozen=True)
class UtteranceEnd(_Event):
    """``utterance.end``: an utterance was recognised."""

    TYPE: ClassVar[str] = "utterance.end"
    utterance_id: int
    """Index of the utterance in its stream, from 0."""
    start: float
    """Seconds of stream audio where the utterance begins."""
    end: float
    """Seconds of stream audio where it ends."""
    transcript: str | None
    """What was said; None unless ``asr`` is "ok" (never "")."""
    language: str | None
    """Language of the transcript (ISO 639-1), None when unknown."""
    label: str
    """The fused emotion label."""
    confidence: float
    """Probability of ``label``."""
    scores: dict[str, float]
    """Fused label to probability, summing to 1."""
    modalities: dict[str, ModalityScores | None] = field(
        default_factory=lambda: dict.fromkeys(MODALITIES)
    )
    """"acoustic" and "text", each that model's scores or None when not used."""
    latency_ms: float = 0.0
    """Milliseconds from the end of speech to this event."""
    asr: str = ASR_OK
    """Whether ``transcript`` was made (``ASR_STATES``): "ok"; "off" (the server runs
    without ASR); "skipped_overload" or "skipped_shutdown" (skipped so that the
    emotion is not late: under overload, or to finish a drain in time); "rejected"
    (Whisper's output looked like a loop or noise). ``transcript`` is None unless
    "ok"."""
    channel: int = 0
    """The audio channel it was heard on (0 unless channels are kept separate)."""
    arousal: float | None = None
    """Activation in [-1, 1] (calm to excited); None when no model gives it."""
    valence: float | None = None
    """Pleasantness in [-1, 1] (negative to positive); None when no model gives it."""
    sentiment: ModalityScores | None = None
    """Sentiment of the transcript (negative, neutral, positive) from the text model
    of its language; None when no text model ran."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as JSON values; both modalities always present."""
        data = super().to_dict()
        data["modalities"] = {
            key: _json_value(self.modalities.get(key))
            for key in (
                *MODALITIES,
                *(k for k in self.modalities if k not in MODALITIES),
            )
        }
        return data


@dataclass(frozen=True)
class StreamEnd(_Event):
    """``stream.end``: every utterance of the stream is out."""

    TYPE: ClassVar[str] = "stream.end"
    utterances: int
    """Number of ``utterance.end`` events the stream produced."""
    audio_seconds: float
    """Seconds of audio received."""


@dataclass(frozen=True)
class ErrorEvent(_Event):
    """``error``: a problem with the stream or the server."""

    TYPE: ClassVar[str] = "error"
    code: str
    """Stable snake_case code, e.g. "partial_sample"."""
    message: str
    """Explanation for people."""
    fatal: bool
    """True when the stream or connection ends."""

    @classmethod
    def from_exception(cls, error: ProtocolError) -> ErrorEvent:
        """Builds the event for a ProtocolError."""
        return cls(error.code, str(error), error.fatal)


@dataclass(frozen=True)
class CallAlert(_Event):
    """``call.alert``: an analytics rule fired (``streamser.analytics``)."""

    TYPE: ClassVar[str] = "call.alert"
    rule: str
    """The rule's name, from the configuration."""
    channel: int | None
    """The channel it is about; None for the whole call (a silence)."""
    utterance_ids: tuple[int, ...]
    """The utterances that made it fire (none for a silence)."""
    message: str
    """What happened, for people."""


@dataclass(frozen=True)
class CallSummary(_Event):
    """``call.summary``: the stream so far, per channel; sent before ``stream.end``
    and when the client asks (``{"type": "summary"}``)."""

    TYPE: ClassVar[str] = "call.summary"
    duration_s: float
    """Seconds of stream audio received."""
    overlap_seconds: float
    """Seconds during which two or more channels were speaking."""
    longest_silence_s: float
    """Longest stretch of stream audio during which no channel was speaking."""
    channels: tuple[ChannelSummary, ...]
    """One summary per channel, in channel order."""
    alerts: tuple[CallAlert, ...]
    """Every ``call.alert`` raised on the stream so far, in order."""


Event = (
    StreamStart
    | SpeechStart
    | EmotionPartial
    | UtteranceEnd
    | StreamEnd
    | ErrorEvent
    | CallAlert
    | CallSummary
)
"""Any event body."""
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.TYPE: cls
    for cls in (
        StreamStart,
        SpeechStart,
        EmotionPartial,
        UtteranceEnd,
        StreamEnd,
        ErrorEvent,
        CallAlert,
        CallSummary,
    )
}
"""Event class by wire type."""


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """Reads an event body from its JSON object (common fields are ignored).

    Args:
        data: the decoded JSON object, with ``type``; unknown extra keys are ignored.

    Returns:
        The event body.

    Raises:
        ProtocolError: ``malformed_event`` for an unknown type or a missing or
            mistyped field.
    """
    if not isinstance(data, Mapping):
        raise _malformed("event", "an object", data)
    event_type = data.get("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise ProtocolError("malformed_event", f"unknown event type {event_type!r:.80}")
    result: Event = cls._read(data)
    return result


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
            id=_int("id", data["id"]),
            stream_id=_str("stream_id", data["stream_id"]),
            seq=_int("seq", data["seq"]),
            time=_str("time", data["time"]),
            body=body,
            origin=_str("origin", data["origin"]),
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


# -- client messages
