"""PROTOCOL.md version 1 in code: events and their JSON form.

One frozen dataclass per event type holds the type-specific fields (``bodies``, with
the objects inside them in ``parts``); ``Envelope`` adds the common ones (``type``,
``id``, ``origin``, ``stream_id``, ``seq``, ``time``) in one place, and
``EventSequencer`` stamps them (``envelope``). Client messages live in
``streamser.messages``. Positions inside the runtime are sample indices at 16 kHz;
``samples_to_seconds`` is the only place that turns them into the seconds of the
protocol.
"""

from streamser.events.bodies import (
    ASR_OFF,
    ASR_OK,
    ASR_REJECTED,
    ASR_SKIPPED_OVERLOAD,
    ASR_SKIPPED_SHUTDOWN,
    ASR_STATES,
    EVENT_TYPES,
    MODALITIES,
    STREAM_END_REASONS,
    TRANSIENT_TYPES,
    CallAlert,
    CallSummary,
    EmotionPartial,
    ErrorEvent,
    Event,
    EventsGap,
    SpeechStart,
    StreamEnd,
    StreamStart,
    TranscriptPartial,
    UtteranceEnd,
    event_from_dict,
    samples_to_seconds,
)
from streamser.events.envelope import (
    Envelope,
    EventSequencer,
    default_origin,
    rfc3339_now,
)
from streamser.events.parts import (
    ChannelSummary,
    ModalityScores,
    ModelInfo,
    WordTiming,
)

__all__ = [
    "ASR_OFF",
    "ASR_OK",
    "ASR_REJECTED",
    "ASR_SKIPPED_OVERLOAD",
    "ASR_SKIPPED_SHUTDOWN",
    "ASR_STATES",
    "EVENT_TYPES",
    "MODALITIES",
    "STREAM_END_REASONS",
    "TRANSIENT_TYPES",
    "CallAlert",
    "CallSummary",
    "ChannelSummary",
    "EmotionPartial",
    "Envelope",
    "ErrorEvent",
    "Event",
    "EventSequencer",
    "EventsGap",
    "ModalityScores",
    "ModelInfo",
    "SpeechStart",
    "StreamEnd",
    "StreamStart",
    "TranscriptPartial",
    "UtteranceEnd",
    "WordTiming",
    "default_origin",
    "event_from_dict",
    "rfc3339_now",
    "samples_to_seconds",
]
