"""The events of an utterance (``speech.start``, ``emotion.partial``,
``transcript.partial``, ``utterance.end``), built from sample positions and recognition results: the
rounding and the modality scores the protocol carries."""

from __future__ import annotations

from streamser.events import (
    ASR_OK,
    EmotionPartial,
    ModalityScores,
    SpeechStart,
    TranscriptPartial,
    UtteranceEnd,
    WordTiming,
    samples_to_seconds,
)
from streamser.pipeline.lane import PendingUtterance
from streamser.pipeline.stable_prefix import StablePrefix
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
    to 0.1 ms; the transcript and its word timings only when ``asr`` is "ok")."""
    start = samples_to_seconds(pending.start_sample)
    words = None
    if asr == ASR_OK and recognition.words is not None:
        words = tuple(
            WordTiming(
                w.word,
                round(start + w.start, 3),
                round(start + w.end, 3),
                w.probability,
            )
            for w in recognition.words
        )
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
        words=words,
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


def transcript_partial(
    utterance_id: int,
    start_sample: int,
    end_sample: int,
    text: str,
    prefix: StablePrefix,
    channel: int,
) -> TranscriptPartial:
    """The ``transcript.partial`` of hypothesis ``text`` of the speech from
    ``start_sample`` to ``end_sample``; ``prefix`` takes it and says what is stable."""
    stable = prefix.update(text)
    return TranscriptPartial(
        utterance_id=utterance_id,
        start=samples_to_seconds(start_sample),
        end=samples_to_seconds(end_sample),
        text=text,
        stable=stable,
        revisions=prefix.revisions,
        channel=channel,
    )
