"""A ``streamser serve`` subprocess on a free loopback port: start it, wait for
/healthz, keep its log, stop it. The one implementation the tests and the benchmarks
share (tests import it as ``benchmarks.serving``; only the standard library here)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

REPO: Final = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServedDaemon:
    """A ``streamser serve`` subprocess, its port and the file its output goes to."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ssl_context: ssl.SSLContext | None = None
    """The client side of TLS: set for a server started with a certificate."""

    @classmethod
    def spawn(
        cls,
        args: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Self:
        """Start ``python -m streamser serve --port PORT ARGS`` without waiting.

        Args:
            args: further ``serve`` arguments.
            log_dir: where its stdout and stderr go, as ``serve-PORT.log``.
            env: added to this process's environment (with ``PYTHONPATH`` set to
                the repository, so the checkout is served, installed or not).
            port: 0 for a free one.
            ssl_context: the client's TLS context, for a server given a certificate.

        Returns:
            The running daemon, not yet ready.
        """
        port = port or free_port()
        log_path = log_dir / f"serve-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamser",
                    "serve",
                    "--port",
                    str(port),
                    *args,
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            )
        return cls(process, port, log_path, ssl_context)

    @classmethod
    @contextlib.contextmanager
    def serve(
        cls,
        args: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ready_timeout_s: float = 180,
        poll_timeout_s: float = 5,
    ) -> Iterator[Self]:
        """Start ``streamser serve``, wait for /healthz 200, and stop it on exit
        (``stop``: SIGTERM, then SIGKILL after 60 s).

        Args:
            args: further ``serve`` arguments (``--port`` is chosen here).
            log_dir: where the log goes (see ``spawn``).
            env: added to the environment.
            ssl_context: the client's TLS context, for a server given a certificate.
            ready_timeout_s: how long to wait for /healthz.
            poll_timeout_s: the timeout of each /healthz request.

        Raises:
            RuntimeError: the server exits or is not healthy in ``ready_timeout_s``.
        """
        daemon = cls.spawn(args, log_dir, env=env, ssl_context=ssl_context)
        try:
            daemon.wait_healthy(ready_timeout_s, poll_timeout_s)
            yield daemon
        finally:
            daemon.stop()

    @property
    def url(self) -> str:
        """The WebSocket base URL."""
        return f"{'wss' if self.ssl_context else 'ws'}://127.0.0.1:{self.port}"

    def http(
        self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, str, dict[str, str]]:
        """GET ``path``: status, body and headers (an HTTP error is returned too).

        Raises:
            OSError: the server cannot be reached within ``timeout`` seconds.
        """
        scheme = "https" if self.ssl_context else "http"
        request = urllib.request.Request(
            f"{scheme}://127.0.0.1:{self.port}{path}", headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(
                request, timeout=timeout, context=self.ssl_context
            ) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 120, count: int = 1) -> str:
        """Wait until ``pattern`` (a regex) occurs ``count`` times in the log.

        Returns:
            The log at that moment.

        Raises:
            AssertionError: not within ``timeout`` s, or the process exited first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not in the log:\n{self.log()[-4000:]}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server process."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit status.

        Raises:
            subprocess.TimeoutExpired: it is still running after ``timeout`` s.
        """
        return self.process.wait(timeout)

    def wait_healthy(self, timeout_s: float, poll_timeout_s: float = 5) -> None:
        """Poll /healthz until it says 200.

        Raises:
            RuntimeError: the server exits or is not healthy within ``timeout_s``,
                with the end of its log.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"streamser serve exited {self.process.returncode}:\n"
                    f"{self.log()[-4000:]}"
                )
            with contextlib.suppress(OSError):
                if self.http("/healthz", timeout=poll_timeout_s)[0] == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(
            f"streamser serve not healthy within {timeout_s:g} s:\n{self.log()[-4000:]}"
        )

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM (the drain), then SIGKILL if it is still running after
        ``timeout_s``; a no-op once the process has exited."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
