"""One frozen dataclass per event type of PROTOCOL.md, with its JSON form.

Positions inside the runtime are sample indices at 16 kHz; ``samples_to_seconds`` is
the one place that turns them into the seconds of the protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import ProtocolError
from streamser.events.fields import (
    malformed,
    read_bool,
    read_float,
    read_int,
    read_ints,
    read_list,
    read_object,
    read_optional_float,
    read_optional_int,
    read_optional_str,
    read_scores,
    read_str,
)
from streamser.events.parts import (
    ChannelSummary,
    ModalityScores,
    ModelInfo,
    WordTiming,
)

_OPTIONAL_FIELDS: Final = frozenset({"words"})
"""Fields an event may leave out (added after version 1; read as their default)."""

MODALITIES: Final = ("acoustic", "text")
"""Keys of ``utterance.end``'s ``modalities``, always present (null when unused)."""
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


_Reader = Callable[[str, Any], Any]


def _models(name: str, value: Any) -> tuple[ModelInfo, ...]:
    if not isinstance(value, list):
        raise malformed(name, "a list", value)
    return tuple(ModelInfo.from_dict(item) for item in value)


def _modalities(name: str, value: Any) -> dict[str, ModalityScores | None]:
    obj = read_object(name, value)
    return {
        key: None if obj.get(key) is None else ModalityScores.from_dict(obj[key])
        for key in (*MODALITIES, *(k for k in obj if k not in MODALITIES))
    }


def _channel_summaries(name: str, value: Any) -> tuple[ChannelSummary, ...]:
    return tuple(ChannelSummary.from_dict(item) for item in read_list(name, value))


def _alerts(name: str, value: Any) -> tuple[CallAlert, ...]:
    return tuple(
        CallAlert._read(read_object(f"{name}[]", item))
        for item in read_list(name, value)
    )


def _words(name: str, value: Any) -> tuple[WordTiming, ...] | None:
    if value is None:
        return None
    return tuple(WordTiming.from_dict(item) for item in read_list(name, value))


def _json_value(value: Any) -> Any:
    if isinstance(
        value, ModelInfo | ModalityScores | ChannelSummary | CallAlert | WordTiming
    ):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


_READERS: Final[dict[str, _Reader]] = {
    "int": read_int,
    "float": read_float,
    "str": read_str,
    "str | None": read_optional_str,
    "bool": read_bool,
    "dict[str, Any]": read_object,
    "dict[str, float]": read_scores,
    "tuple[ModelInfo, ...]": _models,
    "dict[str, ModalityScores | None]": _modalities,
    "float | None": read_optional_float,
    "ModalityScores | None": lambda name, value: (
        None if value is None else ModalityScores.from_dict(value)
    ),
    "int | None": read_optional_int,
    "tuple[int, ...]": read_ints,
    "tuple[ChannelSummary, ...]": _channel_summaries,
    "tuple[CallAlert, ...]": _alerts,
    "tuple[WordTiming, ...] | None": _words,
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
                if item.name in _OPTIONAL_FIELDS:
                    continue
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
class _UtteranceSpan(_Event):
    """The fields that come first in ``emotion.partial`` and ``utterance.end``."""

    utterance_id: int
    """Index of the utterance in its stream, from 0."""
    start: float
    """Seconds of stream audio where the utterance begins."""
    end: float
    """Seconds of stream audio where it ends (for a partial: the audio its scores
    cover up to)."""


@dataclass(frozen=True)
class EmotionPartial(_UtteranceSpan):
    """``emotion.partial``: the acoustic model's view of an utterance so far."""

    TYPE: ClassVar[str] = "emotion.partial"
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
class TranscriptPartial(_UtteranceSpan):
    """``transcript.partial``: what Whisper hears of an utterance so far.

    Sent while the utterance is open, at most once per ``partial_interval_ms`` of
    audio, on live streams only, and never while a final transcript waits for ASR.
    Not retained for replay: ``utterance.end`` carries the final transcript.
    """

    TYPE: ClassVar[str] = "transcript.partial"
    text: str
    """The whole hypothesis so far (may change in the next partial)."""
    stable: str
    """Its first words that two consecutive hypotheses agreed on (LocalAgreement):
    they are not expected to change; a prefix of ``text``."""
    revisions: int = 0
    """Stable words of this utterance that a later hypothesis changed so far."""
    channel: int = 0
    """The audio channel it was heard on (0 unless channels are kept separate)."""


TRANSIENT_TYPES: Final[frozenset[str]] = frozenset({"transcript.partial"})
"""Event types kept out of replays (and out of the memory hub's ring): previews that
the ``utterance.end`` after them supersedes."""


@dataclass(frozen=True)
class UtteranceEnd(_UtteranceSpan):
    """``utterance.end``: an utterance was recognised."""

    TYPE: ClassVar[str] = "utterance.end"
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
    words: tuple[WordTiming, ...] | None = None
    """Each word of ``transcript`` with its time, with ``asr.word_timestamps`` on;
    None (and left out of the JSON) otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as JSON values; both modalities always present;
        ``words`` only when there are word timings."""
        data = super().to_dict()
        if self.words is None:
            del data["words"]
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
    """Seconds of audio received, every utterance of which was recognised."""
    reason: str = "stop"
    """Why it ended (``STREAM_END_REASONS``): only "stop" means all of the audio
    the client sent was received."""


STREAM_END_REASONS: Final = ("stop", "disconnect", "stream_too_long", "shutdown")
"""``stream.end``'s ``reason``: the client's ``stop`` (or the end of a file), the
client went away, ``server.max_stream_s`` was reached, the server shut down."""


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


@dataclass(frozen=True)
class EventsGap(_Event):
    """``events.gap``: a ``/v1/events`` resume cannot start right after ``after``,
    because the events in between are no longer retained. Sent first, before the
    replay; its envelope has ``id`` 0 and ``stream_id`` "" (it is no stream's event,
    and not a place to resume from)."""

    TYPE: ClassVar[str] = "events.gap"
    after: str
    """The ``after=`` the subscriber asked for."""
    first: str
    """The ``id`` (memory hub) or ``cursor`` (Redis hub) of the first event it can
    still give; events between ``after`` and it are lost to this subscriber."""


Event = (
    StreamStart
    | SpeechStart
    | EmotionPartial
    | TranscriptPartial
    | UtteranceEnd
    | StreamEnd
    | ErrorEvent
    | CallAlert
    | CallSummary
    | EventsGap
)
"""Any event body."""
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.TYPE: cls
    for cls in (
        StreamStart,
        SpeechStart,
        EmotionPartial,
        TranscriptPartial,
        UtteranceEnd,
        StreamEnd,
        ErrorEvent,
        CallAlert,
        CallSummary,
        EventsGap,
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
        raise malformed("event", "an object", data)
    event_type = data.get("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise ProtocolError("malformed_event", f"unknown event type {event_type!r:.80}")
    result: Event = cls._read(data)
    return result
