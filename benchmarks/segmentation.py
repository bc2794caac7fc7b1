"""VAD hangover vs segmentation: what a shorter end-of-speech wait costs.

RAVDESS and EMO-DB clips (1 s of silence before, 1.5 s after) go through the
runtime's default VAD and segmenter for several ``segmenter.hangover_ms`` values. A
clip holds one sentence, so more than one utterance means a pause inside it was taken
for the end of speech (the sentence is split, and its emotion judged in parts). Also
measured: how long after the clip's end of speech (``common.speech_end_sample``) the
segmenter closes the utterance and when it announces ``UtteranceEnding`` (where
speculative recognition starts), in stream time, with no recognition involved.
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np

from streamser.audio.segmenter import (
    Segmenter,
    SegmenterOptions,
    UtteranceEnded,
    UtteranceEnding,
)
from streamser.audio.vad import VadOptions, make_vad

from .common import (
    Section,
    emodb_clips,
    markdown_table,
    percentile,
    ravdess_clips,
    speech_end_sample,
)

_LOGGER = logging.getLogger(__name__)

HANGOVERS_MS: Final = (300, 400, 500, 600)
CHUNK_SAMPLES: Final = 320


def _segment(
    audio: np.ndarray, options: SegmenterOptions
) -> tuple[int, float | None, float | None]:
    """(utterances, ms from speech end to close, ms to the matching ending)."""
    lead = 16000
    stream = np.concatenate(
        [np.zeros(lead, np.float32), audio, np.zeros(24000, np.float32)]
    )
    segmenter = Segmenter(make_vad(VadOptions()), options)
    speech_end = lead + speech_end_sample(audio)
    ended: list[int] = []
    ending_at: int | None = None
    matched: int | None = None
    for offset in range(0, stream.shape[0], CHUNK_SAMPLES):
        position = offset + CHUNK_SAMPLES
        for event in segmenter.push(stream[offset:position]):
            if isinstance(event, UtteranceEnding):
                ending_at, ending = position, event
            elif isinstance(event, UtteranceEnded):
                ended.append(position)
                if ending_at is not None and ending.matches(event):
                    matched = ending_at
    ended += [stream.shape[0]] * len(segmenter.flush())
    if not ended:
        return 0, None, None
    close_ms = (ended[-1] - speech_end) / 16
    ending_ms = (matched - speech_end) / 16 if matched is not None else None
    return len(ended), close_ms, ending_ms


def run(quick: bool = False) -> Section:
    """Segment every clip at each hangover and tabulate splits and timings."""
    corpora = {
        "RAVDESS": ravdess_clips(20 if quick else 1200, seed=0),
        "EMO-DB": emodb_clips(8 if quick else 457, seed=0),
    }
    audios = {name: [c.audio() for c in clips] for name, clips in corpora.items()}
    rows = []
    data: dict[str, object] = {}
    for hangover in HANGOVERS_MS:
        options = SegmenterOptions(hangover_ms=hangover)
        for name, clip_audio in audios.items():
            counts, closes, endings = [], [], []
            for audio in clip_audio:
                count, close_ms, ending_ms = _segment(audio, options)
                counts.append(count)
                if close_ms is not None:
                    closes.append(close_ms)
                if ending_ms is not None:
                    endings.append(ending_ms)
            n = np.array(counts)
            row = [
                hangover,
                name,
                len(n),
                int(np.sum(n > 1)),
                100 * float(np.mean(n > 1)),
                int(np.sum(n == 0)),
                percentile(closes, 50),
                percentile(closes, 95),
                percentile(endings, 50),
            ]
            rows.append(row)
            data[f"{name}@{hangover}"] = {
                "clips": len(n),
                "split": row[3],
                "none": row[5],
                "close_p50_ms": row[6],
                "close_p95_ms": row[7],
                "ending_p50_ms": row[8],
            }
            _LOGGER.info(
                "hangover %d ms %s: %d of %d split", hangover, name, row[3], len(n)
            )
    defaults = SegmenterOptions()
    body = "\n".join(
        [
            "Clips of each corpus (the clips column; seeded, spread over speakers: "
            "all of RAVDESS), default VAD (webrtc, mode 2, 30 ms), "
            f"early_end_ms {defaults.early_end_ms}, end_pad_ms {defaults.end_pad_ms}; "
            "20 ms chunks. split = the one-sentence clip became more than one "
            "utterance; none = no utterance. close / ending = stream time from the "
            "clip's end of speech (last 20 ms frame within 30 dB of its loudest) to "
            "the utterance's close and to the UtteranceEnding that matched it.",
            "",
            markdown_table(
                [
                    "hangover ms",
                    "corpus",
                    "clips",
                    "split",
                    "split %",
                    "none",
                    "close p50 ms",
                    "close p95 ms",
                    "ending p50 ms",
                ],
                rows,
            ),
        ]
    )
    return Section("Segmentation vs hangover", "benchmarks/segmentation.py", body, data)
