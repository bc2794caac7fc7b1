"""Helpers for the operations, security, load and fuzz tests: a ``streamser serve``
subprocess (plain or TLS) on an ephemeral loopback port, Prometheus text parsing,
EMO-DB speech streams and a real sd_notify socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.serving import REPO, ServedDaemon

MODELS = REPO / "tests" / "data" / "models"
MODELS_V2 = REPO / "tests" / "data" / "models-v2"
MODELS_FAULTY = REPO / "tests" / "data" / "models-faulty"
FAST = ["--no-asr", "--model-dir", str(MODELS)]
"""Flags for a quick server: fixture graphs, no transcription."""


def run_jsonl(path: Path) -> list[dict[str, Any]]:
    """The events of ``streamser run PATH --jsonl`` (fixture graphs, no ASR)."""
    ran = subprocess.run(
        [sys.executable, "-m", "streamser", "run", str(path), "--jsonl", *FAST],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    return [json.loads(line) for line in ran.stdout.splitlines()]


class Served(ServedDaemon):
    """A running ``streamser serve``."""

    def metrics(self, headers: dict[str, str] | None = None) -> str:
        status, text, _ = self.http("/metrics", headers)
        assert status == 200, (status, text)
        return text


THREADS = {"OMP_NUM_THREADS": "1"}
"""The environment of every test server: one OpenMP thread."""


def spawn(
    args: list[str], tmp: Path, env: dict[str, str] | None = None, port: int = 0
) -> Served:
    """Start ``streamser serve`` without waiting for it."""
    return Served.spawn(args, tmp, env={**THREADS, **(env or {})}, port=port)


@contextlib.contextmanager
def running(
    args: list[str],
    tmp: Path,
    env: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ready_timeout: float = 240,
) -> Iterator[Served]:
    """Start ``streamser serve``, wait for /healthz 200, stop it (SIGTERM) after."""
    with Served.serve(
        args,
        tmp,
        env={**THREADS, **(env or {})},
        ssl_context=ssl_context,
        ready_timeout_s=ready_timeout,
        poll_timeout_s=2,
    ) as served:
        yield served


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0.0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_clip(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return audio


def speech(clips: list[np.ndarray], pause_s: float = 1.0) -> np.ndarray:
    """Clips joined by silence, with silence before and after."""
    silence = np.zeros(int(16000 * pause_s), np.float32)
    parts = [silence]
    for clip in clips:
        parts += [clip, silence]
    return np.concatenate(parts)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


@dataclass
class Stream:
    """A client on /v1/stream that records every event it receives."""

    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


async def run_stream(
    url: str,
    payload: bytes,
    start: dict[str, Any] | None = None,
    *,
    chunk_bytes: int = 3200,
    bytes_per_s: float = 0.0,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 240,
) -> Stream:
    """Send start, ``payload`` in chunks (paced at ``bytes_per_s`` if set), stop."""
    result = Stream()

    async def go() -> None:
        async with connect(
            f"{url}/v1/stream",
            additional_headers=headers,
            max_size=None,
            ssl=ssl_context,
            open_timeout=30,
        ) as ws:
            await ws.send(json.dumps({"type": "start", **(start or {})}))

            async def reader() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in ws:
                        result.events.append(json.loads(message))

            task = asyncio.create_task(reader())
            began = time.monotonic()
            for offset in range(0, len(payload), chunk_bytes):
                await ws.send(payload[offset : offset + chunk_bytes])
                if bytes_per_s:
                    due = began + (offset + chunk_bytes) / bytes_per_s
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                else:
                    await asyncio.sleep(0)
            await ws.send(json.dumps({"type": "stop"}))
            await task
            result.close_code = ws.close_code
            result.close_reason = ws.close_reason or ""

    await asyncio.wait_for(go(), timeout)
    return result


def check_events(events: list[dict[str, Any]]) -> None:
    """PROTOCOL.md invariants of one stream: seq without gaps, ids rising, end last,
    every speech.start answered by an utterance.end or an error."""
    assert events and events[0]["type"] == "stream.start", events[:1]
    assert events[-1]["type"] == "stream.end", events[-1:]
    assert [e["seq"] for e in events] == list(range(len(events)))
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert events[-1]["utterances"] == len(ends)


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


def slow_socket(port: int) -> socket.socket:
    """A connected TCP socket with a tiny receive buffer, so unread data backs up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def deaf_client(url: str, port: int) -> ClientConnection:
    """A /v1/stream client that has started the stream "deaf" and never reads: its
    socket's tiny receive buffer (``slow_socket``) lets unread events back up."""
    ws = await connect(
        f"{url}/v1/stream", sock=slow_socket(port), max_queue=1, open_timeout=20
    )
    await ws.send(json.dumps({"type": "start", "stream_id": "deaf"}))
    return ws
