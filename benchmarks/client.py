"""A ``streamser serve`` subprocess and real-time WebSocket clients for it.

Each client stream plays a programme of corpus clips separated by silence at real-time
pace over ``/v1/stream`` (PROTOCOL.md) and times every clip from the moment it sent the
chunk holding the clip's end of speech to the ``utterance.end`` that covers the clip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamser.audio import SAMPLE_RATE_HZ

from .common import Clip, process_peak_rss_mb, speech_end_sample
from .serving import ServedDaemon

# -- server ---------------------------------------------------------------------------


def _toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = json.dumps(value)
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


class Server(ServedDaemon):
    """A running ``streamser serve``."""

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus samples (name with labels -> value)."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/metrics", timeout=10
        ) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    samples[name] = float(value)
        return samples

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far."""
        return process_peak_rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().split(") ")[1]
        except OSError:
            return float("nan")
        parts = fields.split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(settings: Mapping[str, Mapping[str, Any]]) -> Iterator[Server]:
    """Start ``streamser serve`` with a TOML config of ``settings``; wait for /healthz.

    Raises:
        RuntimeError: the server exits or is not healthy within 180 s.
    """
    folder = Path(tempfile.mkdtemp(prefix="streamser-bench-"))
    config = folder / "streamser.toml"
    config.write_text(_toml(settings))
    with Server.serve(
        ["--config", str(config)], folder, ready_timeout_s=180, poll_timeout_s=5
    ) as server:
        yield server


# -- clients --------------------------------------------------------------------------


@dataclass(frozen=True)
class Programme:
    """What one stream plays.

    Attributes:
        audio: 16 kHz float32, clips joined by silence.
        clip_spans: (first sample, end of speech, end sample) of each clip in
            ``audio``; end of speech by ``common.speech_end_sample``.
        clips: the clips, in order.
        language: the start message's language.
    """

    audio: npt.NDArray[np.float32]
    clip_spans: tuple[tuple[int, int, int], ...]
    clips: tuple[Clip, ...]
    language: str | None


def programme(
    clips: Sequence[Clip],
    audios: Sequence[npt.NDArray[np.float32]],
    *,
    gap_s: float = 1.5,
    lead_s: float = 1.0,
    language: str | None = None,
) -> Programme:
    """Clips separated by ``gap_s`` of silence, after ``lead_s`` of silence."""
    parts = [np.zeros(int(lead_s * SAMPLE_RATE_HZ), np.float32)]
    spans = []
    position = parts[0].shape[0]
    for audio in audios:
        spans.append(
            (position, position + speech_end_sample(audio), position + audio.shape[0])
        )
        parts += [audio, np.zeros(int(gap_s * SAMPLE_RATE_HZ), np.float32)]
        position += audio.shape[0] + parts[-1].shape[0]
    return Programme(np.concatenate(parts), tuple(spans), tuple(clips), language)


@dataclass
class StreamOutcome:
    """What one stream measured.

    Attributes:
        client_latency_s: per clip with an utterance.end: send of the chunk holding
            the clip's end of speech to receipt of the last utterance.end
            overlapping the clip (so it includes the VAD's hangover).
        server_latency_s: latency_ms of those utterance.end events (from the
            moment the VAD closed the utterance).
        clip_seconds: duration of the utterance(s) the server cut from each clip.
        missed: clips no utterance.end covered.
        shed: ``overloaded`` error events.
        errors: other error events (code: message).
        max_lag_s: how late the client sent a chunk at worst (its own overload).
        transcripts: (clip, transcript) pairs.
        transcribed: utterance.end events that carry a transcript (``asr`` "ok").
        asr: the ``asr`` field of each ``server_latency_s`` event.
        first_partial_s: per clip with a ``transcript.partial``: send of the chunk
            holding the clip's first sample to receipt of its first partial text.
        partials: the ``transcript.partial`` events, in order of receipt.
        finals: the ``utterance.end`` events, in order of receipt.
    """

    client_latency_s: list[float] = field(default_factory=list)
    server_latency_s: list[float] = field(default_factory=list)
    clip_seconds: list[float] = field(default_factory=list)
    missed: int = 0
    shed: int = 0
    errors: list[str] = field(default_factory=list)
    max_lag_s: float = 0.0
    transcripts: list[tuple[Clip, str]] = field(default_factory=list)
    transcribed: int = 0
    asr: list[str] = field(default_factory=list)
    first_partial_s: list[float] = field(default_factory=list)
    partials: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)


async def play(
    url: str, plan: Programme, *, chunk_ms: int = 20, delay_s: float = 0.0
) -> StreamOutcome:
    """Stream ``plan`` in real time as pcm_s16le and time its clips."""
    await asyncio.sleep(delay_s)
    outcome = StreamOutcome()
    pcm = (np.clip(plan.audio, -1, 1) * 32767).astype("<i2")
    step = SAMPLE_RATE_HZ * chunk_ms // 1000
    ends = {speech_end: i for i, (_, speech_end, _) in enumerate(plan.clip_spans)}
    end_sent: dict[int, float] = {}
    start_sent: dict[int, float] = {}
    firsts = sorted((first, i) for i, (first, _, _) in enumerate(plan.clip_spans))
    received: list[tuple[float, dict[str, Any]]] = []
    async with connect(f"{url}/v1/stream", max_size=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "start",
                    "sample_rate": SAMPLE_RATE_HZ,
                    "encoding": "pcm_s16le",
                    "channels": 1,
                    "language": plan.language,
                }
            )
        )

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    received.append((time.monotonic(), json.loads(message)))

        task = asyncio.create_task(reader())
        started = time.monotonic()
        pending_ends = sorted(ends)
        for index, offset in enumerate(range(0, pcm.shape[0], step)):
            due = started + index * chunk_ms / 1000
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                outcome.max_lag_s = max(outcome.max_lag_s, now - due)
            await ws.send(pcm[offset : offset + step].tobytes())
            sent = time.monotonic()
            while pending_ends and pending_ends[0] <= offset + step:
                end_sent[ends[pending_ends.pop(0)]] = sent
            while firsts and firsts[0][0] < offset + step:
                start_sent[firsts.pop(0)[1]] = sent
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 600)
    _score(plan, received, end_sent, outcome)
    _score_partials(plan, received, start_sent, outcome)
    return outcome


def _score(
    plan: Programme,
    received: list[tuple[float, dict[str, Any]]],
    end_sent: dict[int, float],
    outcome: StreamOutcome,
) -> None:
    utterances = [(t, e) for t, e in received if e["type"] == "utterance.end"]
    outcome.transcribed = sum(e.get("asr") == "ok" for _, e in utterances)
    for _, event in received:
        if event["type"] == "error":
            if event["code"] == "overloaded":
                outcome.shed += 1
            else:
                outcome.errors.append(f"{event['code']}: {event['message']}")
    for i, (first, _, end) in enumerate(plan.clip_spans):
        covering = [
            (t, e)
            for t, e in utterances
            if e["start"] * SAMPLE_RATE_HZ < end and e["end"] * SAMPLE_RATE_HZ > first
        ]
        if not covering or i not in end_sent:
            outcome.missed += 1
            continue
        when, event = max(covering, key=lambda pair: pair[0])
        outcome.client_latency_s.append(when - end_sent[i])
        outcome.server_latency_s.append(event["latency_ms"] / 1000)
        outcome.asr.append(str(event.get("asr")))
        outcome.clip_seconds.append(sum(e["end"] - e["start"] for _, e in covering))
        outcome.transcripts.append(
            (plan.clips[i], " ".join(e.get("transcript") or "" for _, e in covering))
        )


def _score_partials(
    plan: Programme,
    received: list[tuple[float, dict[str, Any]]],
    start_sent: dict[int, float],
    outcome: StreamOutcome,
) -> None:
    outcome.partials = [e for _, e in received if e["type"] == "transcript.partial"]
    outcome.finals = [e for _, e in received if e["type"] == "utterance.end"]
    for i, (first, _, end) in enumerate(plan.clip_spans):
        times = [
            t
            for t, e in received
            if e["type"] == "transcript.partial"
            and e["start"] * SAMPLE_RATE_HZ < end
            and e["end"] * SAMPLE_RATE_HZ > first
        ]
        if times and i in start_sent:
            outcome.first_partial_s.append(min(times) - start_sent[i])


async def play_all(
    url: str,
    plans: Sequence[Programme],
    *,
    chunk_ms: int,
    stagger_s: float,
) -> list[StreamOutcome]:
    """Play several streams at once, their starts spread over ``stagger_s``."""
    rng = np.random.default_rng(len(plans))
    delays = rng.uniform(0, stagger_s, len(plans)) if stagger_s else [0.0] * len(plans)
    return list(
        await asyncio.gather(
            *(
                play(url, plan, chunk_ms=chunk_ms, delay_s=float(delay))
                for plan, delay in zip(plans, delays, strict=True)
            )
        )
    )
