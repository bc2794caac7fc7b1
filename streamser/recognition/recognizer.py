"""Whole-utterance recognition: transcript, acoustic, text and fused emotion.

``Recognizer`` is what the pipeline, ``streamser run`` and ``python -m training
evaluate`` all call, so an evaluation scores exactly what the daemon would emit. It is
thread-safe: one instance serves every stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import ModelError
from streamser.recognition.adaptation import NO_BASELINE, Baseline
from streamser.recognition.asr import Transcript, WhisperAsr, Word
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion import EmotionModels, EmotionOutput, EmotionScores
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.features import TextTokenizer, encoder_states, log_mel
from streamser.recognition.models import bundled_model_dir

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecognizerOptions:
    """What the recogniser loads: one options object per concern.

    Attributes:
        emotion: the emotion graphs (``[emotion]``).
        asr: Whisper (``[asr]``): transcribe utterances (and so run the text model)
            when ``enabled``; Whisper is loaded anyway for an acoustic graph that
            reads its encoder states. An "auto" ``device`` follows ``emotion``'s.
    """

    emotion: EmotionOptions = field(default_factory=EmotionOptions)
    asr: AsrOptions = field(default_factory=AsrOptions)


@dataclass(frozen=True)
class Recognition:
    """Everything recognised in one utterance.

    Attributes:
        transcript: the words ("" with ASR off or when ``rejected``).
        language: the transcript's language (None with ASR off).
        language_probability: confidence of a detected language (1.0 when given).
        label: the final emotion ("uncertain" below ``min_confidence``).
        confidence: probability of the most probable label (of ``label`` unless
            "uncertain").
        scores: the final distribution (label to probability).
        acoustic: the acoustic model's own scores.
        text: the text model's own scores (None without a transcript or text model).
    """

    transcript: str
    language: str | None
    language_probability: float
    label: str
    confidence: float
    scores: dict[str, float]
    acoustic: EmotionScores
    text: EmotionScores | None
    sentiment: EmotionScores | None = None
    """The transcript's sentiment, from a text graph that gives one (else None)."""
    pooled: npt.NDArray[np.float32] | None = field(default=None, compare=False)
    """What the stream's baseline keeps of this utterance (``streamser.recognition.adaptation``)."""
    transcribed: bool = True
    """Whether ASR ran on it (False with ASR off or when the request skipped it)."""
    rejected: bool = False
    """ASR ran but gave no words that passed its checks (non-speech, noise, a loop);
    ``transcript`` is then ""."""
    arousal: float | None = None
    """Activation in [-1, 1] from the acoustic graph, None when it gives none."""
    valence: float | None = None
    """Pleasantness in [-1, 1] from the acoustic graph, None when it gives none."""
    words: tuple[Word, ...] | None = None
    """The transcript's words with their times in the utterance (with
    ``asr.word_timestamps`` on), else None."""


@dataclass(frozen=True)
class UtteranceRequest:
    """One utterance to recognise.

    Attributes:
        audio: 16 kHz mono float32 samples.
        language: ISO 639-1 code, or None to detect.
        baseline: the stream's earlier utterances (``streamser.recognition.adaptation``).
        transcribe: run ASR on it; False to get its emotion without a transcript
            (the pipeline's way to keep up under overload).
    """

    audio: npt.NDArray[np.float32]
    language: str | None = None
    baseline: Baseline = NO_BASELINE
    transcribe: bool = True


class Recognizer:
    """Loaded models and the per-utterance recipe that combines them."""

    def __init__(self, options: RecognizerOptions) -> None:
        """Load Whisper (when needed) and the emotion graphs.

        Raises:
            ModelError: a model is missing or fails its checks.
        """
        self.options = options
        emotion = options.emotion
        model_dir = Path(emotion.model_dir) if emotion.model_dir else None
        self.models = EmotionModels.load(
            model_dir or bundled_model_dir(),
            device=emotion.device,
            num_threads=emotion.num_threads,
            acoustic=emotion.acoustic,
            text=emotion.text,
        )
        front_end = self.models.acoustic_model.contract.front_end
        self.front_end_type = front_end.type if front_end else "log-mel"
        needs_whisper = options.asr.enabled or self.front_end_type == "whisper-encoder"
        self.asr: WhisperAsr | None = None
        self.tokenizer: TextTokenizer | None = None
        if needs_whisper:
            whisper = options.asr
            if whisper.device == "auto" and emotion.device != "auto":
                whisper = replace(whisper, device=emotion.device)
            self.asr = WhisperAsr(whisper)
            self.tokenizer = TextTokenizer(
                str(Path(self.asr.model_path) / "tokenizer.json")
            )

    def model_versions(self) -> list[dict[str, str]]:
        """Kind, name and version of every model in use, for ``stream.start``."""
        versions = [
            {
                "kind": m.contract.kind,
                "name": m.contract.name,
                "version": m.contract.version,
            }
            for m in self.models.all_models
        ]
        if self.asr is not None and self.options.asr.enabled:
            versions.append({"kind": "asr", "name": self.asr.name, "version": "ct2"})
        return versions

    def _acoustic_inputs(
        self, mels: Sequence[npt.NDArray[np.float32]]
    ) -> list[npt.NDArray[np.float32]]:
        if self.front_end_type != "whisper-encoder":
            return list(mels)
        if self.asr is None:
            raise ModelError(
                "the acoustic model reads Whisper encoder states; no Whisper"
            )
        return encoder_states(self.asr.encoder, list(mels))

    @property
    def adaptation_window(self) -> int:
        """Earlier utterances a stream's baseline keeps (0: no speaker adaptation)."""
        if not self.options.emotion.speaker_adaptation:
            return 0
        return self.models.acoustic_model.contract.adaptation_window

    def acoustic(
        self,
        audios: Sequence[npt.NDArray[np.float32]],
        baselines: Sequence[Baseline] | None = None,
    ) -> list[EmotionOutput]:
        """Acoustic emotion of several utterances in one batch."""
        return self.models.acoustic(
            self._acoustic_inputs([log_mel(a) for a in audios]), baselines
        )

    def partial(
        self, audio: npt.NDArray[np.float32], baseline: Baseline = NO_BASELINE
    ) -> EmotionScores:
        """Acoustic emotion of the speech so far (for ``emotion.partial``; its label
        "uncertain" below ``min_confidence``)."""
        scores = self.acoustic([audio], [baseline])[0].scores
        return scores.uncertain_below(self.options.emotion.min_confidence)

    def partial_transcript(
        self, audio: npt.NDArray[np.float32], language: str | None
    ) -> str:
        """What Whisper hears in the speech so far: one decoding, no fallback ("" with
        ASR off, or when it fails a check)."""
        if self.asr is None or not self.options.asr.enabled:
            return ""
        transcript = self.asr.transcribe_batch(
            [log_mel(audio)], [language], fallback=False
        )[0]
        return transcript.text

    def _transcribe(
        self,
        mels: Sequence[npt.NDArray[np.float32]],
        languages: Sequence[str | None],
        wanted: Sequence[bool] | None = None,
        fallback: bool | Callable[[], bool] = True,
    ) -> list[Transcript | None]:
        """Transcripts of the ``wanted`` utterances (all by default); None for the
        others, and for all when ASR is off."""
        if self.asr is None or not self.options.asr.enabled:
            return [None] * len(mels)
        wanted = [True] * len(mels) if wanted is None else list(wanted)
        chosen = [i for i, want in enumerate(wanted) if want]
        results: list[Transcript | None] = [None] * len(mels)
        if chosen:
            transcripts = self.asr.transcribe_batch(
                [mels[i] for i in chosen],
                [languages[i] for i in chosen],
                fallback=fallback,
            )
            for i, transcript in zip(chosen, transcripts, strict=True):
                results[i] = transcript
        return results

    def text_emotion(self, text: str, language: str | None) -> EmotionScores | None:
        """Emotion of a transcript alone; None when no text model reads ``language``."""
        output = self._text_outputs([text], [language])[0]
        return output.scores if output is not None else None

    def text_outputs(
        self, texts: Sequence[str], languages: Sequence[str | None]
    ) -> list[EmotionOutput | None]:
        """Emotion and sentiment of transcripts alone, batched per language; None
        where no text model reads the language or the transcript is empty."""
        return self._text_outputs(texts, languages)

    def _text_outputs(
        self, texts: Sequence[str], languages: Sequence[str | None]
    ) -> list[EmotionOutput | None]:
        results: list[EmotionOutput | None] = [None] * len(texts)
        by_language: dict[str, list[int]] = {}
        for i, (text, language) in enumerate(zip(texts, languages, strict=True)):
            if text.strip() and self.models.text_model_for(language) is not None:
                by_language.setdefault(language or "", []).append(i)
        for language, indices in by_language.items():
            encoder = self.models.text_encoder_for(language) or self.tokenizer
            if encoder is None:  # a Whisper-BPE graph without Whisper loaded
                continue
            ids = [encoder.encode(texts[i]) for i in indices]
            outputs = self.models.text(ids, language) or []
            for i, output in zip(indices, outputs, strict=True):
                results[i] = output
        return results

    def recognize(
        self, audio: npt.NDArray[np.float32], language: str | None = None
    ) -> Recognition:
        """Recognise one utterance."""
        return self.recognize_batch([UtteranceRequest(audio, language)])[0]

    def recognize_batch(
        self,
        requests: Sequence[UtteranceRequest],
        fallback: bool | Callable[[], bool] = True,
    ) -> list[Recognition]:
        """Recognise several utterances; emotion graphs run once for the batch.
        ``fallback``: Whisper's fallback decodings, as ``WhisperAsr.transcribe_batch``
        takes it."""
        if not requests:
            return []
        mels = [log_mel(r.audio) for r in requests]
        made = self._transcribe(
            mels,
            [r.language for r in requests],
            [r.transcribe for r in requests],
            fallback,
        )
        transcripts = [
            t if t is not None else Transcript("", r.language or "", 0.0)
            for t, r in zip(made, requests, strict=True)
        ]
        acoustic = self.models.acoustic(
            self._acoustic_inputs(mels), [r.baseline for r in requests]
        )
        languages = [t.language or None for t in transcripts]
        text = self._text_outputs([t.text for t in transcripts], languages)
        fused = [
            f.uncertain_below(self.options.emotion.min_confidence)
            for f in self.models.fuse(acoustic, text)
        ]
        return [
            Recognition(
                transcript=t.text,
                language=(t.language or None) if t.text else None,
                language_probability=t.language_probability,
                label=f.label,
                confidence=f.confidence,
                scores=dict(f.scores),
                acoustic=a.scores,
                text=x.scores if x is not None else None,
                sentiment=x.sentiment if x is not None else None,
                pooled=a.pooled,
                transcribed=m is not None,
                rejected=m is not None and m.rejected,
                arousal=a.scores.arousal,
                valence=a.scores.valence,
                words=t.words if t.text else None,
            )
            for t, m, a, x, f in zip(
                transcripts, made, acoustic, text, fused, strict=True
            )
        ]

    def warm_up(self) -> None:
        """Run every model once so the first real utterance is not slow."""
        rng = np.random.default_rng(0)
        audio = (0.01 * rng.standard_normal(SAMPLE_RATE_HZ)).astype(np.float32)
        self.recognize(audio, None if self.options.asr.enabled else "en")
        _LOGGER.debug("Models warmed up")
