"""The Redis event sink: events per second through it, and the latency it adds.

A private ``redis-server`` (append-only file on, fsync every second, as in
``deploy/``) on a loopback port; events shaped like ``utterance.end`` go through
``RedisSink`` as ``Engine.emit`` hands them over. Measured: the time the sink's call
takes on the event loop (what the audio path pays), the throughput of a burst (emit
to the last ``XADD`` acknowledged), and, at a steady rate, each event's latency from
emit to its ``XADD`` being acknowledged. ``RedisServer`` is also what the tests use
to run their own server (standard library only at import).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from .common import Section, markdown_table, percentile
from .serving import free_port

BURST_EVENTS: Final = 50_000
STEADY_RATE: Final = 500
"""Events per second in the steady run (a busy daemon emits tens per second)."""
STEADY_SECONDS: Final = 10


def redis_server_binary() -> str | None:
    """The ``redis-server`` executable, or None when it is not installed."""
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """A private ``redis-server`` on a loopback port, its data in ``directory``."""

    directory: Path
    port: int = field(default_factory=free_port)
    fsync: str = "everysec"
    """``appendfsync``: "always" makes every acknowledged write survive SIGKILL."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10) -> None:
        """Start it (again, on the same port and files) and wait for PING.

        Raises:
            FileNotFoundError: redis-server is not installed.
            RuntimeError: it exits or does not answer within ``timeout_s``.
        """
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited {self.process.returncode}: "
                    + (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                )
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not answering within {timeout_s:g} s")

    def ping(self) -> bool:
        """Whether it answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: what a crash or a pulled plug does."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (Redis flushes its append-only file and exits)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, directory: Path, fsync: str = "everysec") -> Iterator[Self]:
        """A started server, stopped on exit."""
        server = cls(directory, fsync=fsync)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def run(quick: bool = False) -> Section:
    """Measure the sink against a private redis-server."""
    import asyncio
    import tempfile

    if redis_server_binary() is None:
        raise FileNotFoundError(
            "redis-server is not installed (Debian: apt-get install redis-server)"
        )
    with (
        tempfile.TemporaryDirectory(prefix="streamser-bench-redis-") as tmp,
        RedisServer.running(Path(tmp)) as server,
    ):
        data = asyncio.run(_measure(server.url, quick))
    burst, steady = data["burst"], data["steady"]
    rows = [
        [
            f"burst of {burst['events']} events",
            f"{burst['events_per_s']:.0f}",
            f"{burst['call_p50_us']:.1f} / {burst['call_p95_us']:.1f}",
            f"{burst['write_p50_ms']:.1f} / {burst['write_p95_ms']:.1f}",
        ],
        [
            f"steady {STEADY_RATE} events/s, {steady['events']} events",
            f"{steady['events_per_s']:.0f}",
            f"{steady['call_p50_us']:.1f} / {steady['call_p95_us']:.1f}",
            f"{steady['write_p50_ms']:.2f} / {steady['write_p95_ms']:.2f}",
        ],
    ]
    body = "\n".join(
        [
            "`RedisSink` against a private redis-server "
            f"({data['redis_version']}, loopback, append-only file with fsync every "
            "second); events shaped like `utterance.end` "
            f'({data["event_bytes"]} bytes of JSON each). "call" is the time the '
            "sink takes inside `Engine.emit` (serialise and enqueue: what the audio "
            'path pays); "emit to XADD ack" is from that call to Redis acknowledging '
            "the pipelined `XADD` (batches of up to 512). The burst's events/s counts "
            "from the first emit to the last acknowledgement.",
            "",
            markdown_table(
                [
                    "run",
                    "events/s",
                    "call p50 / p95 µs",
                    "emit to XADD ack p50 / p95 ms",
                ],
                rows,
            ),
        ]
    )
    return Section("Redis event sink", "benchmarks/redis.py", body, data)


async def _measure(url: str, quick: bool) -> dict[str, Any]:
    import asyncio

    import redis.asyncio as aioredis

    from streamser.events import EventSequencer, ModalityScores, UtteranceEnd
    from streamser.metrics import Metrics
    from streamser.sinks.redis import RedisSink, RedisSinkOptions

    scores = {"anger": 0.1, "happiness": 0.2, "neutral": 0.5, "sadness": 0.2}
    body = UtteranceEnd(
        utterance_id=3,
        start=1.25,
        end=4.5,
        label="neutral",
        scores=scores,
        confidence=0.5,
        transcript="and then we talked about the weather for a while",
        language="en",
        latency_ms=180,
        modalities={"acoustic": ModalityScores("neutral", scores), "text": None},
    )
    sequencer = EventSequencer(origin="bench:8765")
    client = aioredis.from_url(url)
    version = (await client.info("server"))["redis_version"]
    results: dict[str, Any] = {"redis_version": version}
    burst_events = 2_000 if quick else BURST_EVENTS
    steady_events = (200 if quick else STEADY_RATE * STEADY_SECONDS) // 5 * 5
    for name, count, rate in (
        ("burst", burst_events, None),
        ("steady", steady_events, STEADY_RATE),
    ):
        stream = f"bench:{name}"
        await client.delete(stream)
        latencies: list[float] = []
        sink = RedisSink(
            RedisSinkOptions(url=url, stream=stream, maxlen=10 * count),
            Metrics(),
            on_written=latencies.extend,
        )
        await sink.start()
        assert await sink.wait_ready(5)
        calls: list[float] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(count):
            envelope = sequencer.stamp(f"call-{i % 20}", body)
            before = time.perf_counter()
            sink(envelope)
            calls.append(time.perf_counter() - before)
            if rate is None:
                if i % 100 == 99:
                    await asyncio.sleep(0)  # let the writer run, as the loop would
            elif i % 5 == 4:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - loop.time()))
        while sink.buffered:
            await asyncio.sleep(0.001)
        took = loop.time() - started
        await sink.close()
        stored = await client.xlen(stream)
        assert stored == count, f"{stored} of {count} events in Redis"
        results[name] = {
            "events": count,
            "events_per_s": count / took,
            "call_p50_us": 1e6 * percentile(calls, 50),
            "call_p95_us": 1e6 * percentile(calls, 95),
            "write_p50_ms": 1e3 * percentile(latencies, 50),
            "write_p95_ms": 1e3 * percentile(latencies, 95),
            "write_p99_ms": 1e3 * percentile(latencies, 99),
        }
    results["event_bytes"] = len(sequencer.stamp("call-0", body).to_json().encode())
    await client.aclose()
    return results
