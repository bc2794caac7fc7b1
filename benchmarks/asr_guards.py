"""Whisper's guards against loops on degraded audio: ``streamser run`` on RAVDESS clips
converted to 8 kHz mu-law (telephone audio), one MP3, and clips cut off mid-word.

Counts, per condition, transcripts that are null or empty, that loop (a word four or
more times in a row), that run over 12 words (each RAVDESS sentence has 6), and the WER
against the spoken sentence. Run it as ``python -m benchmarks.asr_guards [--vad
silero] [--count 24] [--cut]``; it writes its clips to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import soundfile as sf
import soxr

from .common import RAVDESS_STATEMENTS, REPO, require_data, word_errors, words

TELEPHONE_RATE_HZ: Final = 8000
LOOP_RUN: Final = 4
MAX_WORDS: Final = 12


@dataclass(frozen=True)
class Sample:
    """One written clip and the sentence it holds."""

    path: Path
    reference: str
    cut: bool


def ravdess_spread(count: int, seed: int) -> list[Path]:
    """``count`` RAVDESS files over all actors, emotions, intensities and statements."""
    root = require_data() / "ravdess"
    files = sorted(root.glob("Actor_*/*.flac"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    chosen: list[Path] = []
    seen: set[tuple[str, str]] = set()
    for i in order:  # one per (actor, statement) first, then the rest
        parts = files[i].stem.split("-")
        key = (files[i].parent.name, parts[4])
        if key not in seen:
            seen.add(key)
            chosen.append(files[i])
        if len(chosen) == count:
            break
    return sorted(chosen)


def write_clips(folder: Path, count: int, seed: int, cut: bool) -> list[Sample]:
    """8 kHz mu-law WAVs (and the first clip again as MP3); ``cut`` stops each at
    55-80% of its length, inside a word."""
    rng = np.random.default_rng(seed + 1)
    samples: list[Sample] = []
    for n, source in enumerate(ravdess_spread(count, seed)):
        audio, rate = sf.read(source, dtype="float32")
        reference = RAVDESS_STATEMENTS[source.stem.split("-")[4]]
        if cut:
            audio = audio[: int(len(audio) * rng.uniform(0.55, 0.8))]
        telephone = soxr.resample(audio, rate, TELEPHONE_RATE_HZ).astype(np.float32)
        path = folder / f"{n:02d}-{source.stem}.wav"
        sf.write(path, telephone, TELEPHONE_RATE_HZ, subtype="ULAW")
        samples.append(Sample(path, reference, cut))
        if n == 0:
            mp3 = folder / f"{n:02d}-{source.stem}.mp3"
            sf.write(mp3, audio, rate, format="MP3")
            samples.append(Sample(mp3, reference, cut))
    return samples


def longest_run(text: str) -> int:
    """The most times one word follows itself."""
    best, run, previous = 0, 0, None
    for word in words(text):
        run = run + 1 if word == previous else 1
        previous = word
        best = max(best, run)
    return best


def run_streamser(
    paths: list[Path], vad: str, config: Path | None
) -> dict[str, list[str | None]]:
    """Transcripts of each file's utterances (by path) through ``streamser run``."""
    command = [
        sys.executable,
        "-m",
        "streamser",
        "run",
        "--language",
        "en",
        "--vad",
        vad,
        "--jsonl",
        *(["--config", str(config)] if config else []),
        *map(str, paths),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=1800, check=True
    )
    by_stream: dict[str, list[str | None]] = {}
    for line in done.stdout.splitlines():
        event = json.loads(line)
        if event.get("type") == "utterance.end":
            stream = str(event.get("stream_id", ""))
            by_stream.setdefault(stream, []).append(event["transcript"])
    return {
        str(path): next(
            (v for k, v in by_stream.items() if k in (path.name, path.stem, str(path))),
            [],
        )
        for path in paths
    }


def main() -> None:
    """Writes the clips, runs streamser, prints one line per clip and a summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asr_guards")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--vad", default="webrtc", choices=("webrtc", "silero"))
    parser.add_argument("--cut", action="store_true", help="cut clips mid-word")
    parser.add_argument(
        "--allow-skips",
        action="store_true",
        help="keep pipeline.asr_max_lag_ms overload skips (off: every clip is transcribed, "
        "so the count measures Whisper, not this machine's speed)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        samples = write_clips(Path(folder), args.count, args.seed, args.cut)
        config = None
        if not args.allow_skips:
            config = Path(folder) / "streamser.toml"
            config.write_text("[pipeline]\nasr_max_lag_ms = 3600000\n")
        results = run_streamser([s.path for s in samples], args.vad, config)
    empty = loops = long = errors = reference_words = 0
    for sample in samples:
        transcripts = results[str(sample.path)]
        text = " ".join(t for t in transcripts if t)
        is_empty = not text.strip()
        run = longest_run(text)
        count = len(words(text))
        wrong, total = word_errors(text, sample.reference, prefix=sample.cut)
        empty += is_empty
        loops += run >= LOOP_RUN
        long += count > MAX_WORDS
        errors += wrong
        reference_words += total
        print(f"{sample.path.name:40s} {transcripts!r}")
    print(
        f"clips {len(samples)} vad {args.vad} cut {args.cut}: empty/null "
        f"{empty}, looping {loops}, over {MAX_WORDS} words {long}, "
        f"WER {100.0 * errors / max(1, reference_words):.1f}%"
    )


if __name__ == "__main__":
    main()
