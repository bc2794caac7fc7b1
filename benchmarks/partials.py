"""Partial transcripts (``transcript.partial``) with partials on and off, in one run.

No corpus here has long utterances, so each is built: three silence-trimmed RAVDESS
clips of one actor joined by 0.15 s gaps (5-8 s of continuous speech). Each stream
plays three such utterances with 2 s gaps, in real time, 100 ms chunks. Measured:
the time from the first speech sample sent to the first partial text (p50, p95, at
1 and 4 streams); revisions of the stable prefix (replayed from the partials by the
protocol's rule, and the final transcript); client-side final latency (from the
chunk holding the end of speech to ``utterance.end``) at 1, 4 and 16 streams; server
CPU seconds per utterance. "Off" is a second server with
``pipeline.partial_interval_ms = 0`` (no partials of either kind), up beside the first:
at 1 and 4 streams the two take turns (on, off, on, off) with the same utterances in
each pair of turns, so a drift in the host's load falls on both.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from .capacity import SERVER_LIMITS
from .client import Programme, StreamOutcome, play_all, programme, serve
from .common import (
    Section,
    load_average,
    markdown_table,
    model_dir,
    percentile,
    ravdess_clips,
)

_LOGGER = logging.getLogger(__name__)

COUNTS: Final = (1, 4, 16)
UTTERANCES: Final = {1: 6, 4: 5, 16: 3}
"""Long utterances each stream plays in one turn."""
ROUNDS: Final = {1: 2, 4: 3, 16: 1}
"""Turns of each setting (on, off, on, off, ...)."""
GAP_S: Final = 0.15
UTTERANCE_GAP_S: Final = 2.0


def _trim(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


def _long_utterances(quick: bool) -> tuple[list[Any], list[np.ndarray]]:
    """Per actor, three clips joined: (first clip, joined audio) pairs."""
    clips = ravdess_clips(60 if quick else 120, seed=11)
    by_actor: dict[str, list[Any]] = {}
    for clip in clips:
        by_actor.setdefault(clip.path.parent.name, []).append(clip)
    firsts, audios = [], []
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    for group in by_actor.values():
        for i in range(0, len(group) - 2, 3):
            parts = []
            for clip in group[i : i + 3]:
                parts += [_trim(clip.audio()), gap]
            firsts.append(group[i])
            audios.append(np.concatenate(parts[:-1]))
    return firsts, audios


def _plans(
    count: int, turn: int, each: int, firsts: list[Any], audios: list[np.ndarray]
) -> list[Programme]:
    """``count`` streams of ``each`` long utterances, the same for a ``turn``."""
    rng = np.random.default_rng([count, turn])
    plans = []
    for _ in range(count):
        picks = rng.choice(len(audios), each, replace=False)
        plans.append(
            programme(
                [firsts[i] for i in picks],
                [audios[i] for i in picks],
                gap_s=UTTERANCE_GAP_S,
                language="en",
            )
        )
    return plans


def _revisions(outcomes: Sequence[StreamOutcome]) -> tuple[int, int, int]:
    """(revisions, stable words, utterances with partials), replayed by the rule."""
    from streamser.pipeline.stable_prefix import StablePrefix

    revisions = stable = utterances = 0
    for outcome in outcomes:
        finals = {e["utterance_id"]: e for e in outcome.finals}
        by_utterance: dict[int, list[dict[str, Any]]] = {}
        for partial in outcome.partials:
            by_utterance.setdefault(partial["utterance_id"], []).append(partial)
        for utterance_id, partials in by_utterance.items():
            prefix = StablePrefix()
            for partial in partials:
                prefix.update(partial["text"])
            stable += prefix.stable
            final = finals.get(utterance_id)
            if final is not None and final.get("transcript"):
                prefix.finish(final["transcript"])
            revisions += prefix.revisions
            utterances += 1
    return revisions, stable, utterances


def _long_with_text(outcomes: Sequence[StreamOutcome]) -> str:
    """Utterances longer than 2 s that got partial text, of all of them, and the
    length and ``asr`` of each that got none."""
    long = with_text = 0
    missed = []
    for outcome in outcomes:
        heard = {p["utterance_id"] for p in outcome.partials if p.get("text")}
        for final in outcome.finals:
            length = final["end"] - final["start"]
            if length > 2.0:
                long += 1
                if final["utterance_id"] in heard:
                    with_text += 1
                else:
                    missed.append(f"{length:.1f} s {final.get('asr')}")
    if not missed or len(missed) > 5:
        return f"{with_text} of {long}"
    return f"{with_text} of {long} (none: {', '.join(missed)})"


def _not_transcribed(outcomes: Sequence[Any]) -> str:
    """Why the clips' utterances went without a transcript (``asr``: count)."""
    counts = Counter(a for o in outcomes for a in o.asr if a != "ok")
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _ms(values: Sequence[float], q: float) -> float:
    return 1000 * percentile(values, q) if values else float("nan")


def run(quick: bool = False) -> Section:
    """Partials on and off, stepped through the stream counts."""
    models, models_note = model_dir()
    firsts, audios = _long_utterances(quick)
    counts = (1,) if quick else COUNTS
    rows = []
    data: dict[str, Any] = {"models": models_note, "utterance_s": {}}
    lengths = [a.shape[0] / 16000 for a in audios]
    data["utterance_s"] = {"min": min(lengths), "max": max(lengths)}
    settings: dict[str, dict[str, dict[str, Any]]] = {
        name: {
            "emotion": {"model_dir": str(models)},
            "server": dict(SERVER_LIMITS),
            "pipeline": pipeline,
        }
        for name, pipeline in (("on", {}), ("off", {"partial_interval_ms": 0}))
    }
    with serve(settings["on"]) as on, serve(settings["off"]) as off:
        for count in counts:
            turns: dict[str, list[tuple[list[StreamOutcome], float, str]]] = {
                "on": [],
                "off": [],
            }
            for turn in range(1 if quick else ROUNDS[count]):
                each = 1 if quick else UTTERANCES[count]
                plans = _plans(count, turn, each, firsts, audios)
                for name, server in (("on", on), ("off", off)):
                    load = load_average()
                    cpu = server.cpu_seconds()
                    outcomes = asyncio.run(
                        play_all(server.url, plans, chunk_ms=100, stagger_s=1.0)
                    )
                    turns[name].append((outcomes, server.cpu_seconds() - cpu, load))
            for name, runs in turns.items():
                row = _row(name, count, runs)
                rows.append(row)
                data[f"{name} {count}"] = dict(zip(_HEADER, row, strict=True))
    rows.sort(key=lambda row: (row[0] != "on", row[1]))
    body = "\n".join(
        [
            f"Long utterances: three silence-trimmed RAVDESS clips of one actor joined "
            f"by {GAP_S:g} s gaps ({min(lengths):.1f}-{max(lengths):.1f} s). In one "
            "turn each stream plays "
            + ", ".join(
                f"{n} at {c} stream{'s' * (c > 1)}" for c, n in UTTERANCES.items()
            )
            + f" with {UTTERANCE_GAP_S:g} s gaps, in real time; partials on and off "
            "run on two servers up side by side, taking turns (on, off, on, off) "
            "with the same utterances in each pair: "
            + ", ".join(f"{n} turns each at {c}" for c, n in ROUNDS.items())
            + ". "
            "First partial = first speech sample sent to the first "
            "transcript.partial; revisions = stable words changed later (by a "
            "partial or the final transcript) of all stable words; final = chunk "
            "holding the end of speech to utterance.end (client side); CPU = server "
            "CPU seconds per utterance; load = the host's 1/5/15-minute load "
            "average when the first turn began (the load generator runs on the same "
            "host).",
            "",
            markdown_table(_HEADER, rows),
        ]
    )
    return Section("Partial transcripts on and off", __file__, body, data)


def _row(
    name: str, count: int, runs: Sequence[tuple[list[StreamOutcome], float, str]]
) -> list[Any]:
    """One table row from every turn of a setting at a stream count."""
    outcomes = [o for run, _, _ in runs for o in run]
    cpu = sum(cpu for _, cpu, _ in runs)
    finals = [v for o in outcomes for v in o.client_latency_s]
    firsts_s = [v for o in outcomes for v in o.first_partial_s]
    revisions, stable, with_partials = _revisions(outcomes)
    utterances = len(finals)
    return [
        name,
        count,
        utterances,
        with_partials,
        _long_with_text(outcomes),
        _ms(firsts_s, 50),
        _ms(firsts_s, 95),
        f"{revisions} of {stable}",
        _ms(finals, 50),
        _ms(finals, 95),
        sum(o.transcribed for o in outcomes),
        _not_transcribed(outcomes),
        sum(o.missed + o.shed + len(o.errors) for o in outcomes),
        cpu / max(1, utterances),
        runs[0][2],
    ]


_HEADER: Final = [
    "partials",
    "streams",
    "utterances",
    "with partial text",
    "over 2 s with partial text",
    "first partial p50 ms",
    "first partial p95 ms",
    "revisions",
    "final p50 ms",
    "final p95 ms",
    "transcribed",
    "not transcribed",
    "lost",
    "CPU s / utterance",
    "load",
]
