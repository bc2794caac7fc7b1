"""The events of an utterance (``speech.start``, ``emotion.partial``,
``utterance.end``), built from sample positions and recognition results: the
rounding and the modality scores the protocol carries."""

from __future__ import annotations

from streamser.events import (
    ASR_OK,
    EmotionPartial,
    ModalityScores,
    SpeechStart,
    UtteranceEnd,
    samples_to_seconds,
)
from streamser.pipeline.lane import PendingUtterance
from streamser.recognition.emotion import EmotionScores
from streamser.recognition.recognizer import Recognition


def rounded(value: float | None) -> float | None:
    """An arousal or valence value for an event (None stays None)."""
    return None if value is None else round(value, 6)


def modality(
    scores: EmotionScores | None, language: str | None = None
) -> ModalityScores | None:
    if scores is None:
        return None
    return ModalityScores(
        label=scores.label, scores=dict(scores.scores), language=language
    )


def utterance_end(
    pending: PendingUtterance,
    recognition: Recognition,
    asr: str,
    latency_s: float,
    channel: int,
) -> UtteranceEnd:
    """The ``utterance.end`` of ``pending`` (scores rounded to 6 digits, latency
    to 0.1 ms; the transcript only when ``asr`` is "ok")."""
    return UtteranceEnd(
        utterance_id=pending.utterance_id,
        start=samples_to_seconds(pending.start_sample),
        end=samples_to_seconds(pending.end_sample),
        transcript=recognition.transcript if asr == ASR_OK else None,
        language=recognition.language,
        label=recognition.label,
        confidence=round(recognition.confidence, 6),
        scores={k: round(v, 6) for k, v in recognition.scores.items()},
        modalities={
            "acoustic": modality(recognition.acoustic),
            "text": modality(recognition.text, recognition.language),
        },
        latency_ms=round(latency_s * 1000.0, 1),
        asr=asr,
        channel=channel,
        arousal=rounded(recognition.arousal),
        valence=rounded(recognition.valence),
        sentiment=modality(recognition.sentiment),
    )


def speech_start(utterance_id: int, start_sample: int, channel: int) -> SpeechStart:
    """The ``speech.start`` of an utterance confirmed at ``start_sample``."""
    return SpeechStart(
        utterance_id=utterance_id,
        start=samples_to_seconds(start_sample),
        channel=channel,
    )


def partial_event(
    utterance_id: int,
    start_sample: int,
    end_sample: int,
    scores: EmotionScores,
    channel: int,
) -> EmotionPartial:
    """The ``emotion.partial`` of the speech from ``start_sample`` to
    ``end_sample`` (its scores as they are, arousal and valence rounded)."""
    return EmotionPartial(
        utterance_id=utterance_id,
        start=samples_to_seconds(start_sample),
        end=samples_to_seconds(end_sample),
        label=scores.label,
        scores=dict(scores.scores),
        channel=channel,
        arousal=rounded(scores.arousal),
        valence=rounded(scores.valence),
    )
