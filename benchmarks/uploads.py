"""``POST /v1/calls``: what an upload costs the server's memory, and how soon it answers.

A ``streamser serve`` (the shipped models, ASR off: the HTTP side is measured, not
Whisper) on a loopback port, and a real HTTP client (aiohttp). Measured: the server's
resident memory (``VmRSS``, sampled every 0.1 s) before and at its peak while a long
48 kHz stereo WAV is uploaded with ``Accept: application/x-ndjson`` (the time to its
first event and to its last), and while a body of non-audio bytes as large as
``max_upload_bytes`` allows is spooled and refused (415); and how soon a
``Content-Length`` of 300 MB is refused (413) with only the headers sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import numpy as np
import soundfile as sf
import soxr

from .common import REPO, Section, markdown_table
from .serving import ServedDaemon

DEMO: Final = REPO / "streamser" / "assets" / "demo.wav"
MiB: Final = 1 << 20


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _sampled(pid: int, work: Any) -> tuple[Any, float, float]:
    """``work``'s result, the server's RSS before it and the peak while it ran."""
    before = peak = _rss_mib(pid)
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, _rss_mib(pid))
        await asyncio.wait({task}, timeout=0.1)
    return task.result(), before, peak


async def _ndjson(url: str, path: Path) -> dict[str, float]:
    began = time.monotonic()
    first = float("nan")
    ends = 0
    with path.open("rb") as handle:
        data = aiohttp.FormData()
        data.add_field("file", handle, filename=path.name)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/v1/calls",
                data=data,
                headers={"Accept": "application/x-ndjson"},
                timeout=aiohttp.ClientTimeout(total=3600),
            ) as response,
        ):
            async for line in response.content:
                if first != first:
                    first = time.monotonic() - began
                ends += json.loads(line)["type"] == "utterance.end"
            status = response.status
    return {
        "status": status,
        "first_event_s": first,
        "all_s": time.monotonic() - began,
        "utterances": ends,
    }


async def _garbage(url: str, size_mib: int) -> dict[str, float]:
    async def chunks() -> Any:
        for _ in range(size_mib):
            yield b"\x01" * MiB

    began = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/calls", data=chunks()) as response,
    ):
        await response.read()
        return {"status": response.status, "all_s": time.monotonic() - began}


def _too_large(port: int) -> dict[str, float]:
    """Only the headers of a 300 MB upload: the answer, and how soon it came."""
    head = (
        "POST /v1/calls HTTP/1.1\r\nHost: bench\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {300 * MiB}\r\n\r\n"
    )
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(4096).decode("latin-1")
    return {
        "status": int(answer.split()[1]),
        "answer_ms": (time.monotonic() - began) * 1000,
    }


def run(quick: bool = False) -> Section:
    """Upload a long WAV and a large non-audio body; refuse a 300 MB one."""
    minutes = 1 if quick else 10
    garbage_mib = 20 if quick else 190
    audio, rate = sf.read(DEMO, dtype="float32")
    audio = np.tile(audio, int(np.ceil(minutes * 60 * rate / audio.size)))
    audio = audio[: minutes * 60 * rate]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "call.wav"
        at48 = soxr.resample(audio, rate, 48000)
        sf.write(wav, np.stack([at48, at48], axis=1), 48000, "PCM_16")
        size_mb = wav.stat().st_size / MiB
        with ServedDaemon.serve(["--no-asr"], Path(tmp), ready_timeout_s=300) as served:
            url = f"http://127.0.0.1:{served.port}"
            pid = served.process.pid
            call, call_before, call_peak = asyncio.run(_sampled(pid, _ndjson(url, wav)))
            junk, junk_before, junk_peak = asyncio.run(
                _sampled(pid, _garbage(url, garbage_mib))
            )
            refused = _too_large(served.port)
    data = {
        "wav": {
            **call,
            "mib": size_mb,
            "rss_before_mib": call_before,
            "rss_peak_mib": call_peak,
        },
        "non-audio": {
            **junk,
            "mib": garbage_mib,
            "rss_before_mib": junk_before,
            "rss_peak_mib": junk_peak,
        },
        "300 MB Content-Length": refused,
    }
    rows = [
        [
            f"{minutes} min 48 kHz stereo WAV, ndjson",
            f"{size_mb:.0f}",
            str(call["status"]),
            f"{call['first_event_s']:.1f} / {call['all_s']:.1f}",
            f"{call_before:.0f} / {call_peak:.0f}",
        ],
        [
            "non-audio bytes, chunked",
            str(garbage_mib),
            str(junk["status"]),
            f"- / {junk['all_s']:.1f}",
            f"{junk_before:.0f} / {junk_peak:.0f}",
        ],
        [
            "Content-Length 300 MB, headers only",
            "300",
            str(refused["status"]),
            f"- / {refused['answer_ms'] / 1000:.3f}",
            "",
        ],
    ]
    body = (
        "A `streamser serve` (shipped models, ASR off) and an aiohttp client on "
        "loopback. The server's resident memory is sampled every 0.1 s; the upload is "
        "spooled to a temporary file and decoded block by block, so its size does "
        f"not reach memory. The WAV gave {call['utterances']:.0f} `utterance.end`.\n\n"
        + markdown_table(
            [
                "upload",
                "MiB",
                "status",
                "first event / done s",
                "server RSS before / peak MiB",
            ],
            rows,
        )
    )
    return Section("Uploads on POST /v1/calls", "benchmarks/uploads.py", body, data)
