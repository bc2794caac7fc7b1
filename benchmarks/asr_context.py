"""ASR window vs transcript quality: WER and encoder/decoder time per utterance.

streamser pads each utterance's log-mel to ``asr.audio_context_s`` before the Whisper
encoder. This measures word error rate on RAVDESS (two fixed English sentences) and
EMO-DB (German; clips cut at 2 s, so scored against the best-matching prefix of the
sentence) for several windows, beside plain faster-whisper ``transcribe``. The emotion
models do not depend on this window: the acoustic model reads its own unpadded encoder
pass (``streamser.recognition.features.encoder_states``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import numpy as np
import numpy.typing as npt

from streamser.recognition.asr import WhisperAsr

from .common import (
    Clip,
    Section,
    emodb_clips,
    markdown_table,
    ravdess_clips,
    word_errors,
)
from .whisper import (
    faster_whisper_transcribe,
    load_asr,
    streamser_transcribe,
    with_context,
)

_LOGGER = logging.getLogger(__name__)

UNPADDED: Final = 1.0
"""audio_context_s of 1 s pads nothing for utterances of at least 1 s (all here)."""
WINDOWS_S: Final = (UNPADDED, 5.0, 8.0, 10.0, 15.0, 30.0)


@dataclass
class _Tally:
    errors: dict[str, int] = field(default_factory=dict)
    words: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, clip: Clip, hypothesis: str, seconds: dict[str, float]) -> None:
        errors, count = word_errors(hypothesis, clip.reference, prefix=clip.truncated)
        self.errors[clip.corpus] = self.errors.get(clip.corpus, 0) + errors
        self.words[clip.corpus] = self.words.get(clip.corpus, 0) + count
        for key, value in seconds.items():
            self.seconds.setdefault(key, []).append(value)
        if errors and len(self.examples) < 2:
            self.examples.append(f"{clip.path.name}: {hypothesis!r}")

    def wer(self, corpus: str) -> float:
        words = self.words.get(corpus, 0)
        return self.errors.get(corpus, 0) / words if words else float("nan")

    def ms(self, key: str) -> float:
        values = self.seconds.get(key, [])
        return 1000 * float(np.mean(values)) if values else float("nan")


def _streamser(
    asr: WhisperAsr, window_s: float, audio: npt.NDArray[np.float32], language: str
) -> str:
    with_context(asr, window_s)
    return streamser_transcribe(asr, [audio], language)[0].text


def _faster_whisper(
    asr: WhisperAsr, chunk_s: int, audio: npt.NDArray[np.float32], language: str
) -> str:
    return faster_whisper_transcribe(asr, audio, language, chunk_s)


def run(quick: bool = False) -> Section:
    """Measure every window and both faster-whisper peers on the same clips."""
    clips = ravdess_clips(2 if quick else 60) + emodb_clips(1 if quick else 24)
    windows = (UNPADDED, 10.0) if quick else WINDOWS_S
    asr, timed = load_asr()
    audios = [clip.audio() for clip in clips]
    settings: list[tuple[str, Callable[[npt.NDArray[np.float32], str], str]]] = []
    for window in windows:
        name = "unpadded" if window == UNPADDED else f"{window:g} s"
        settings.append(
            (f"streamser WhisperAsr, window {name}", partial(_streamser, asr, window))
        )
    for chunk in (30,) if quick else (30, 10):
        default = " (default)" if chunk == 30 else ""
        settings.append(
            (
                f"faster-whisper transcribe, chunk_length={chunk}{default}",
                partial(_faster_whisper, asr, chunk),
            )
        )
    # Warm up every path once so that first-call costs do not land on one setting.
    for _, decode in settings:
        decode(audios[0], clips[0].language)
    tallies = {name: _Tally() for name, _ in settings}
    for clip, audio in zip(clips, audios, strict=True):
        # Settings interleaved per clip: load from other processes spreads evenly.
        for name, decode in settings:
            timed.reset()
            started = time.perf_counter()
            text = decode(audio, clip.language)
            total = time.perf_counter() - started
            tallies[name].add(clip, text, {**timed.reset(), "total": total})
    with_context(asr, 10.0)
    n_ravdess = sum(c.corpus == "ravdess" for c in clips)
    n_emodb = len(clips) - n_ravdess
    seconds = float(np.mean([a.shape[0] / 16000 for a in audios]))
    rows = []
    data: dict[str, object] = {"clips": {"ravdess": n_ravdess, "emodb": n_emodb}}
    for name, tally in tallies.items():
        row = [
            name,
            100 * tally.wer("ravdess"),
            100 * tally.wer("emodb"),
            tally.ms("encoder"),
            tally.ms("decoder"),
            tally.ms("total"),
        ]
        rows.append(row)
        data[name] = dict(
            zip(
                (
                    "ravdess_wer_pct",
                    "emodb_prefix_wer_pct",
                    "encoder_ms",
                    "decoder_ms",
                    "total_ms",
                ),
                row[1:],
                strict=True,
            )
        )
    body = "\n".join(
        [
            f"{n_ravdess} RAVDESS clips (seeded, all 20 actors, reference = statement "
            f"01/02) and {n_emodb} EMO-DB clips (seeded, all 8 speakers, German); mean "
            f"clip {seconds:.2f} s; one utterance per call (batch 1), Whisper base "
            "int8, beam 1, language given. EMO-DB clips are cut at 2 s, so their WER is "
            "against the prefix of the sentence that fits the transcript best (an "
            "optimistic score; RAVDESS is the reliable one). Times are per utterance, "
            "the mean over all clips; faster-whisper's total includes its own "
            "padded log-mel. The emotion models do not depend on this window: the "
            "acoustic model reads its own unpadded encoder pass.",
            "",
            markdown_table(
                [
                    "decoding",
                    "RAVDESS WER %",
                    "EMO-DB prefix WER %",
                    "encoder ms",
                    "decoder ms",
                    "total ms",
                ],
                rows,
            ),
        ]
    )
    # The first wrong transcript of each setting goes to the JSON only.
    data["first_wrong"] = {
        name: tally.examples[0] for name, tally in tallies.items() if tally.examples
    }
    return Section("ASR window vs quality", "benchmarks/asr_context.py", body, data)
