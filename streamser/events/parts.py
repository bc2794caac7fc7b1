"""The parts of events that are objects of their own: a model in ``stream.start``, a
modality's scores in ``utterance.end``, a channel in ``call.summary``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from streamser.errors import ProtocolError
from streamser.events.fields import (
    read_counts,
    read_float,
    read_int,
    read_object,
    read_optional_float,
    read_optional_str,
    read_scores,
    read_str,
)


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
        obj = read_object("models[]", data)
        return cls(*(read_str(k, obj.get(k)) for k in ("kind", "name", "version")))


@dataclass(frozen=True)
class WordTiming:
    """One word of ``utterance.end``'s ``words``: where it was said, in stream time."""

    word: str
    """The word as in the transcript (with its punctuation)."""
    start: float
    """Seconds of stream audio where it begins."""
    end: float
    """Seconds of stream audio where it ends."""
    probability: float
    """Whisper's mean probability of its tokens."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON object ``{word, start, end, probability}``."""
        return {
            "word": self.word,
            "start": self.start,
            "end": self.end,
            "probability": self.probability,
        }

    @classmethod
    def from_dict(cls, data: Any) -> WordTiming:
        """Reads the JSON object; raises ProtocolError("malformed_event")."""
        obj = read_object("words[]", data)
        return cls(
            read_str("word", obj.get("word")),
            read_float("start", obj.get("start")),
            read_float("end", obj.get("end")),
            read_float("probability", obj.get("probability")),
        )


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
        obj = read_object("modality", data)
        return cls(
            read_str("label", obj.get("label")),
            read_scores("scores", obj.get("scores")),
            read_optional_str("language", obj.get("language")),
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
        obj = read_object("channels[]", data)
        for key in (f.name for f in fields(cls) if f.name != "sentiment_counts"):
            if key not in obj:
                raise ProtocolError(
                    "malformed_event", f"call.summary channel without field {key!r}"
                )
        return cls(
            channel=read_int("channel", obj["channel"]),
            name=read_optional_str("name", obj["name"]),
            utterances=read_int("utterances", obj["utterances"]),
            label_counts=read_counts("label_counts", obj["label_counts"]),
            label_seconds=read_scores("label_seconds", obj["label_seconds"]),
            talk_seconds=read_float("talk_seconds", obj["talk_seconds"]),
            mean_arousal=read_optional_float("mean_arousal", obj["mean_arousal"]),
            mean_valence=read_optional_float("mean_valence", obj["mean_valence"]),
            sentiment_counts=read_counts(
                "sentiment_counts", obj.get("sentiment_counts", {})
            ),
        )
