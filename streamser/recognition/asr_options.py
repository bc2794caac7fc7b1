"""``AsrOptions``: the Whisper settings, apart from the model so that reading a
configuration loads no Whisper."""

from __future__ import annotations

from dataclasses import dataclass

from streamser.errors import ConfigError


@dataclass(frozen=True)
class AsrOptions:
    """Speech recognition settings.

    Attributes:
        enabled: transcribe utterances (and run the text model); when off, Whisper is
            still loaded if the acoustic model reads its encoder states.
        model: "" for the bundled multilingual Whisper base, else a faster-whisper
            model folder or a size name (a size name downloads, so needs internet).
        device: "auto", "cpu" or "cuda".
        compute_type: "auto" (int8 on CPU, float16 on CUDA) or a CTranslate2 type.
        num_threads: CPU threads per call; 0 for one per core.
        num_workers: calls that may run at once (streams transcribed in parallel).
        beam_size: decoding beam; 1 is greedy and fastest.
        audio_context_s: the Whisper window an utterance is padded to. Whisper was
            trained on 30 s windows; on 60 RAVDESS sentences 15 s gave a WER of 1.1%
            (30 s: 0.8%, 10 s: 6.1%, 8 s: 24%) at a quarter of the 30 s encoder cost,
            while no padding made the decoder fail (benchmarks/asr_context.py).
        no_speech_threshold: an utterance whose no-speech probability is above this
            and whose text scores below ``log_prob_threshold`` is non-speech: rejected
            without a second decoding (as faster-whisper's ``transcribe``).
        log_prob_threshold: text whose average token log-probability is below this is
            decoded again (temperature fallback) and rejected if no decoding passes
            (on noise Whisper-base scored -2 to -3.3, on RAVDESS and EMO-DB speech
            above -0.3).
        log_prob_low_threshold: when no decoding passes, the most probable one that
            is not a bare loop is kept if it scores at least this (faster-whisper's
            option of that name): on utterances cut off mid-word, whose words Whisper
            is less sure of, right partial sentences scored -1.0 to -1.2, invented
            ones -1.2 to -1.7.
        compression_ratio_threshold: text that zlib compresses more than this (a
            repetition loop) is decoded again, as is text with an n-gram three or more
            times in a row.
        temperature_step: the fallback decodes the utterances that fail the checks
            again, sampling at this temperature, then twice it, and so on up to
            ``max_temperature`` (faster-whisper: 0.2 to 1.0), until they pass.
        max_temperature: the last fallback temperature; 0 turns the fallback off.
        best_of: hypotheses sampled per utterance at each fallback temperature; the
            most probable one is judged.
        language_confidence: probability at which a detected language is kept for the
            rest of a stream.
        word_timestamps: give each word of a transcript its time (``utterance.end``'s
            ``words``), aligned as faster-whisper does (CTranslate2's
            ``Whisper.align`` on the decoder's cross-attention). Off by default: it
            runs the decoder once more over the text (BENCHMARKS.md gives the cost).
    """

    enabled: bool = True
    model: str = ""
    device: str = "auto"
    compute_type: str = "auto"
    num_threads: int = 0
    num_workers: int = 2
    beam_size: int = 1
    audio_context_s: float = 15.0
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    log_prob_low_threshold: float = -1.25
    compression_ratio_threshold: float = 2.4
    temperature_step: float = 0.2
    max_temperature: float = 1.0
    best_of: int = 5
    language_confidence: float = 0.8
    word_timestamps: bool = False

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"asr.device must be auto, cpu or cuda, not {self.device!r}"
            )
        if self.beam_size < 1 or self.num_workers < 1 or self.num_threads < 0:
            raise ConfigError("asr.beam_size and asr.num_workers must be >= 1")
        if not 1.0 <= self.audio_context_s <= 30.0:
            raise ConfigError("asr.audio_context_s must be between 1 and 30 seconds")
        if not 0.0 <= self.no_speech_threshold <= 1.0:
            raise ConfigError("asr.no_speech_threshold must be in [0, 1]")
        if not 0.0 <= self.language_confidence <= 1.0:
            raise ConfigError("asr.language_confidence must be in [0, 1]")
        if not 0.0 < self.temperature_step <= 1.0 or self.max_temperature < 0.0:
            raise ConfigError(
                "asr.temperature_step must be in (0, 1], asr.max_temperature >= 0"
            )
        if self.log_prob_low_threshold > self.log_prob_threshold:
            raise ConfigError(
                "asr.log_prob_low_threshold must be <= asr.log_prob_threshold"
            )
        if self.best_of < 1 or self.compression_ratio_threshold <= 1.0:
            raise ConfigError(
                "asr.best_of must be >= 1, asr.compression_ratio_threshold > 1"
            )

    @property
    def temperatures(self) -> list[float]:
        """The fallback's sampling temperatures, in order (none when it is off)."""
        steps = int(self.max_temperature / self.temperature_step + 1e-6)
        return [round((i + 1) * self.temperature_step, 6) for i in range(steps)]
