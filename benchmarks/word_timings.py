"""What word timings cost (``asr.word_timestamps``): Whisper base on the CPU, one
utterance per call, RAVDESS clips, with and without the alignment, interleaved so
that both see the same load; and whether the aligned words are the transcript's."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .common import Section, load_average, markdown_table, percentile, ravdess_clips

_LOGGER = logging.getLogger(__name__)


def run(quick: bool = False) -> Section:
    """Per-utterance transcription time with and without word timings."""
    from streamser.recognition.asr import WhisperAsr
    from streamser.recognition.asr_options import AsrOptions
    from streamser.recognition.features import log_mel

    clips = ravdess_clips(4 if quick else 30, seed=5)
    plain = WhisperAsr(AsrOptions(device="cpu", num_threads=1))
    timed = WhisperAsr(replace(plain.options, word_timestamps=True))
    load_before = load_average()
    times: dict[bool, list[float]] = {False: [], True: []}
    matched = 0
    spans = 0.0
    for index, clip in enumerate(clips):
        mel = log_mel(clip.audio())
        for words in (False, True):
            asr = timed if words else plain
            started = time.perf_counter()
            transcript = asr.transcribe_batch([mel], ["en"])[0]
            if index:  # the first call of each warms it up
                times[words].append(time.perf_counter() - started)
            if words and transcript.words:
                joined = " ".join(w.word for w in transcript.words)
                matched += joined.split() == transcript.text.split()
                spans += transcript.words[-1].end - transcript.words[0].start
    off, on = times[False], times[True]
    mean_off = 1000 * sum(off) / len(off)
    mean_on = 1000 * sum(on) / len(on)
    rows = [
        ["off", mean_off, 1000 * percentile(off, 50), 1000 * percentile(off, 95)],
        ["on", mean_on, 1000 * percentile(on, 50), 1000 * percentile(on, 95)],
    ]
    data = {
        "mean_ms_off": mean_off,
        "mean_ms_on": mean_on,
        "extra_percent": 100 * (mean_on - mean_off) / mean_off,
        "words_match_transcript": matched,
        "clips": len(clips),
        "load": [load_before, load_average()],
    }
    body = "\n".join(
        [
            f"{len(clips)} RAVDESS clips, Whisper base int8 on one CPU thread, one "
            "utterance per call, language given; each clip transcribed without and "
            "then with word timings (the first clip only warms up). Alignment adds "
            f"{data['extra_percent']:.1f}% per utterance; on {matched} of "
            f"{len(clips)} clips the aligned words are exactly the transcript's "
            f"words. Load average (1/5/15 min) before and after: {load_before}; "
            f"{load_average()}.",
            "",
            markdown_table(
                ["word timings", "mean ms", "p50 ms", "p95 ms"],
                rows,
            ),
        ]
    )
    return Section("Word timings (`asr.word_timestamps`)", __file__, body, data)
