"""Security: loopback by default, bearer tokens from a file, TLS, the PROTOCOL.md
limits, nothing a client sends reaching the file system, no transcripts in the log.
Real ``streamser serve`` subprocesses on loopback ports; fixture graphs, ASR off
unless the test is about transcripts."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamser.serve.handshake import RefusalLog

from _ops_helpers import (
    FAST,
    MODELS,
    REPO,
    Served,
    check_events,
    deaf_client,
    metric,
    pcm16,
    read_clip,
    run_stream,
    running,
)

DEMO = REPO / "streamser" / "assets" / "demo.wav"
TOKENS = ("s3cret-token-alpha", "s3cret-token-beta")


def _demo_pcm(seconds: float | None = None) -> bytes:
    audio = read_clip(DEMO)
    if seconds is not None:
        audio = audio[: int(16000 * seconds)]
    return pcm16(audio)


async def _refused(url: str, **kwargs: object) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, open_timeout=20, **kwargs):  # type: ignore[arg-type]
            pass
    return info.value


# -- tokens -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("tokens")
    token_file = tmp / "tokens"
    token_file.write_text(f"# streamser tokens\n{TOKENS[0]}\n\n  {TOKENS[1]}  \n")
    env = {"STREAMSER_SERVER_TOKEN_FILE": str(token_file)}
    # bound beyond loopback, but with tokens: no warning expected
    with running([*FAST, "--host", "0.0.0.0"], tmp, env) as server:
        yield server


def test_health_needs_no_token_everything_else_does(secured: Served) -> None:
    assert secured.http("/healthz")[0] == 200
    for path in ("/metrics", "/v1/stream", "/v1/events"):
        status, _, headers = secured.http(path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert secured.http(path, {"Authorization": "Bearer wrong"})[0] == 401
        assert secured.http(f"{path}?token=wrong")[0] == 401
        assert secured.http(path, {"Authorization": f"Basic {TOKENS[0]}"})[0] == 401
    for token in TOKENS:
        assert secured.http("/metrics", {"Authorization": f"Bearer {token}"})[0] == 200
        assert secured.http(f"/metrics?token={token}")[0] == 200


def _raw_get(port: int, path: str, header_lines: list[str]) -> bytes:
    """A GET with exactly these header lines (urllib cannot repeat a header)."""
    import socket

    head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *header_lines, "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def test_a_repeated_authorization_header_is_refused_counted_and_throttled(
    secured: Served,
) -> None:
    auth = {"Authorization": f"Bearer {TOKENS[0]}"}
    before = metric(
        secured.metrics(auth),
        "streamser_refused_connections_total",
        reason="unauthorized",
    )
    log_before = len(secured.log())
    twice = [f"Authorization: Bearer {TOKENS[0]}", f"Authorization: Bearer {TOKENS[1]}"]
    for _ in range(50):
        reply = _raw_get(secured.port, "/metrics", twice)
        assert reply.startswith(b"HTTP/1.1 401"), reply[:80]
    after = metric(
        secured.metrics(auth),
        "streamser_refused_connections_total",
        reason="unauthorized",
    )
    assert after - before == 50
    log = secured.log()[log_before:]
    assert "Traceback" not in log and "500" not in log
    # at most one WARNING per address and interval (RefusalLog), however many tries
    assert log.count("missing or wrong token") <= 1


async def test_websockets_need_a_token_in_header_or_query(secured: Served) -> None:
    for path in ("/v1/stream", "/v1/events"):
        url = f"{secured.url}{path}"
        assert (await _refused(url)).response.status_code == 401
        bad = {"Authorization": f"Bearer {TOKENS[0]}x"}
        assert (await _refused(url, additional_headers=bad)).response.status_code == 401
        assert (
            await _refused(f"{url}?token={TOKENS[0][:-1]}")
        ).response.status_code == 401
    pcm = _demo_pcm(6.0)
    by_header = await run_stream(
        secured.url, pcm, headers={"Authorization": f"Bearer {TOKENS[1]}"}
    )
    check_events(by_header.events)
    async with connect(f"{secured.url}/v1/events?token={TOKENS[0]}") as subscriber:
        by_query = await asyncio.wait_for(
            _stream_with_query_token(secured.url, pcm), 120
        )
        first = json.loads(await asyncio.wait_for(subscriber.recv(), 10))
    check_events(by_query)
    assert first["stream_id"] == by_query[0]["stream_id"]
    text = secured.metrics({"Authorization": f"Bearer {TOKENS[0]}"})
    assert (
        metric(text, "streamser_refused_connections_total", reason="unauthorized") >= 6
    )


async def _stream_with_query_token(url: str, pcm: bytes) -> list[dict]:
    async with connect(f"{url}/v1/stream?token={TOKENS[0]}", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(pcm)
        await ws.send(json.dumps({"type": "stop"}))
        return [json.loads(m) async for m in ws]


def test_tokens_are_never_logged_and_tokens_bound_wide_do_not_warn(
    secured: Served,
) -> None:
    log = secured.log()
    assert "Listening on ws://0.0.0.0" in log and "(2 token(s))" in log
    assert "without tokens" not in log
    for token in TOKENS:
        assert token not in log
        assert token[:8] not in log


def test_refused_tokens_warn_once_a_minute_per_address(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKENS[0]}\n")
    env = {"STREAMSER_SERVER_TOKEN_FILE": str(token_file)}
    with running([*FAST, "--debug"], tmp_path, env) as server:
        for attempt in range(5):
            path = ("/metrics", "/v1/stream", "/v1/events")[attempt % 3]
            assert server.http(path, {"Authorization": "Bearer wrong"})[0] == 401
        log = server.wait_log(r"DEBUG streamser\.serve\.server: Refused", count=4)
        text = server.metrics({"Authorization": f"Bearer {TOKENS[0]}"})
    refusals = [line for line in log.splitlines() if "missing or wrong token" in line]
    warnings = [line for line in refusals if " WARNING " in line]
    assert len(refusals) == 5
    assert len(warnings) == 1, refusals
    assert warnings[0].endswith(
        "Refused /metrics from 127.0.0.1: missing or wrong token"
    )
    assert (
        metric(text, "streamser_refused_connections_total", reason="unauthorized") == 5
    )


def test_refusal_log_counts_what_it_keeps_at_debug() -> None:
    refusals = RefusalLog(interval_s=60.0, max_addresses=2)
    assert refusals.refused("10.0.0.1", now=0.0) == 0  # a warning, none before
    assert [refusals.refused("10.0.0.1", now=t) for t in (1, 2, 59)] == [None] * 3
    assert refusals.refused("10.0.0.2", now=30.0) == 0  # per address
    assert refusals.refused("10.0.0.1", now=60.0) == 3  # a minute on: 3 kept back
    assert refusals.refused("10.0.0.1", now=61.0) is None
    # at most max_addresses are remembered: a third one forgets the oldest
    assert refusals.refused("10.0.0.3", now=62.0) == 0
    assert refusals.refused("10.0.0.2", now=63.0) == 0


def test_no_token_on_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamser", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--token" not in result.stdout


def test_unreadable_token_file_fails_at_start_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamser", "serve", "--port", "0", *FAST],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "STREAMSER_SERVER_TOKEN_FILE": str(tmp_path / "absent"),
        },
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot read token file" in errors[0]
    assert "Traceback" not in result.stderr
    # checked before the models load (seconds), not after
    assert "Emotion model" not in result.stderr and "loaded" not in result.stderr


# -- binding ------------------------------------------------------------------------


def test_binds_loopback_by_default_and_warns_wide_without_tokens(
    tmp_path: Path,
) -> None:
    """Loopback by default; beyond loopback without tokens only when the operator
    opts out explicitly, and then with a warning (refused otherwise:
    tests/test_admission.py)."""
    with running(FAST, tmp_path) as server:
        log = server.log()
        assert f"Listening on ws://127.0.0.1:{server.port}" in log
        assert "WARNING" not in log
    env = {"STREAMSER_SERVER_ALLOW_ANONYMOUS": "true"}
    with running([*FAST, "--host", "0.0.0.0"], tmp_path, env) as server:
        warnings = [line for line in server.log().splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "without tokens" in warnings[0]


# -- TLS ----------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_serves_wss_and_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    client = ssl.create_default_context(cafile=str(cert))
    env = {"STREAMSER_SERVER_TLS_CERT": str(cert), "STREAMSER_SERVER_TLS_KEY": str(key)}
    with running(FAST, tmp_path, env, ssl_context=client) as server:
        assert server.url.startswith("wss://")
        assert server.http("/healthz")[0] == 200
        result = await run_stream(server.url, _demo_pcm(6.0), ssl_context=client)
        check_events(result.events)
        assert result.close_code == 1000
        # plain ws:// to the TLS port gets no WebSocket
        with pytest.raises((OSError, ConnectionClosed, InvalidStatus, Exception)):
            async with connect(
                f"ws://127.0.0.1:{server.port}/v1/stream", open_timeout=10
            ):
                pass
        # a client that does not trust the certificate is refused by TLS itself
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(
                f"{server.url}/v1/stream",
                ssl=ssl.create_default_context(),
                open_timeout=10,
            ):
                pass
        assert f"Listening on wss://127.0.0.1:{server.port}" in server.log()


# -- limits -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("limits")
    env = {
        "STREAMSER_SERVER_MAX_STREAMS": "3",
        "STREAMSER_SERVER_MAX_STREAMS_PER_CLIENT": "2",
        "STREAMSER_SERVER_MAX_MESSAGE_BYTES": "4096",
        "STREAMSER_SERVER_MAX_STREAM_S": "5",
        "STREAMSER_SERVER_MAX_CLIENT_QUEUE_EVENTS": "500",
    }
    jsonl = tmp / "events.jsonl"
    with running([*FAST, "--jsonl-log", str(jsonl)], tmp, env) as server:
        yield server


async def _open(url: str, local: str) -> object:
    ws = await connect(
        f"{url}/v1/stream", open_timeout=20, local_addr=(local, 0), max_size=None
    )
    await asyncio.wait_for(ws.send(json.dumps({"type": "start"})), 20)
    event = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert event["type"] == "stream.start"
    return ws


async def test_stream_limits_refuse_at_the_handshake_with_retry_after(
    limited: Served,
) -> None:
    url = f"{limited.url}/v1/stream"
    mine = [await _open(limited.url, "127.0.0.1") for _ in range(2)]
    refused = await _refused(url)  # a third from 127.0.0.1: per-client limit
    assert refused.response.status_code == 503
    assert int(refused.response.headers["Retry-After"]) > 0
    other = await _open(limited.url, "127.0.0.2")  # another client: total now 3
    refused = await _refused(url, local_addr=("127.0.0.2", 0))  # server-wide limit
    assert refused.response.status_code == 503
    assert "Retry-After" in refused.response.headers
    text = limited.metrics()
    assert metric(text, "streamser_active_streams") == 3
    assert (
        metric(text, "streamser_refused_connections_total", reason="max_streams") == 1
    )
    assert (
        metric(
            text, "streamser_refused_connections_total", reason="max_streams_per_client"
        )
        == 1
    )
    for ws in [*mine, other]:
        await asyncio.wait_for(ws.close(), 30)  # type: ignore[attr-defined]
    # the slots free up once the streams have ended
    for _ in range(100):
        if metric(limited.metrics(), "streamser_active_streams") == 0:
            break
        await asyncio.sleep(0.1)
    result = await run_stream(limited.url, _demo_pcm(2.0))
    check_events(result.events)


async def test_oversized_message_is_a_non_fatal_error(limited: Served) -> None:
    async with connect(f"{limited.url}/v1/stream", max_size=None) as ws:

        async def send() -> None:
            await ws.send(json.dumps({"type": "start"}))
            await ws.send(b"\x00" * 5000)  # over max_message_bytes (4096)
            for offset in range(0, 64000, 4000):
                await ws.send(_demo_pcm(4.0)[offset : offset + 4000])
            await ws.send(json.dumps({"type": "stop"}))

        await asyncio.wait_for(send(), 60)
        events = [json.loads(m) async for m in asyncio_timeout_iter(ws, 60)]
        assert ws.close_code == 1000
    check_events(events)
    errors = [e for e in events if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("message_too_large", False)]


async def asyncio_timeout_iter(ws: object, timeout: float) -> object:
    while True:
        try:
            yield await asyncio.wait_for(ws.recv(), timeout)  # type: ignore[attr-defined]
        except ConnectionClosed:
            return


async def test_a_stream_over_max_stream_s_ends_properly(limited: Served) -> None:
    result = await run_stream(limited.url, _demo_pcm(9.0), chunk_bytes=4000)
    events = result.events
    check_events(events)  # stream.end last, seq without gaps
    errors = [e for e in events if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("stream_too_long", True)]
    assert events[-1]["audio_seconds"] <= 5.5
    assert result.close_code == 1000  # PROTOCOL.md: 1000 after stream.end
    assert result.close_reason == "stream_too_long"


async def test_a_client_that_never_reads_is_dropped_and_its_stream_ends(
    limited: Served,
) -> None:
    query = "stream_id=deaf&types=stream.start,stream.end"
    async with connect(f"{limited.url}/v1/events?{query}") as subscriber:
        ws = await deaf_client(limited.url, limited.port)

        async def flood() -> None:
            # every junk message is an error event the client never reads
            for sent in range(200000):
                await ws.send(json.dumps({"type": f"junk-{sent}-{'x' * 40}"}))
                if sent % 500 == 0:
                    await asyncio.sleep(0.01)

        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(flood(), 180)
        ws.transport.abort()
        ends = [json.loads(await asyncio.wait_for(subscriber.recv(), 30)) for _ in "se"]
    assert [e["type"] for e in ends] == ["stream.start", "stream.end"]
    assert metric(limited.metrics(), "streamser_dropped_stream_clients_total") == 1
    assert "Dropping stream deaf: its client is 500 events behind" in limited.log()
    assert limited.http("/healthz")[0] == 200


# -- the file system and the log ----------------------------------------------------


async def test_stream_ids_never_reach_the_file_system(limited: Served) -> None:
    folder = limited.log_path.parent
    before = sorted(p.name for p in folder.rglob("*"))
    for stream_id in ("../../etc/x", "/tmp/x", "a/b", "..\\..\\x", "x\x00y"):
        async with connect(f"{limited.url}/v1/stream") as ws:
            start = json.dumps({"type": "start", "stream_id": stream_id})
            await asyncio.wait_for(ws.send(start), 10)
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["type"] == "error" and event["code"] == "invalid_stream_id"
            assert event["fatal"] is True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008
    result = await run_stream(limited.url, _demo_pcm(2.0), {"stream_id": ".."})
    check_events(result.events)
    assert result.events[0]["stream_id"] == ".."
    assert sorted(p.name for p in folder.rglob("*")) == before
    assert limited.http("/healthz")[0] == 200
    # and in the code: no path, open() or file name is built from a stream id
    for source in (REPO / "streamser").rglob("*.py"):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if "stream_id" in line:
                assert not re.search(r"\bPath\(|\bopen\(|os\.path|mkdir", line), (
                    f"{source.name}:{number}: {line.strip()}"
                )


async def test_transcripts_are_not_logged_at_info(tmp_path: Path) -> None:
    with running(["--model-dir", str(MODELS)], tmp_path) as server:
        result = await run_stream(server.url, _demo_pcm(), {"language": "en"})
        log = server.log()
    ends = [e for e in result.events if e["type"] == "utterance.end"]
    transcripts = [e["transcript"] for e in ends if e["transcript"]]
    assert len(transcripts) == 3, ends  # ASR ran and said something each time
    text = " ".join(re.findall(r"[a-z']+", log.lower()))
    for transcript in transcripts:
        words = re.findall(r"[a-z']+", transcript.lower())
        assert len(words) >= 3
        for i in range(len(words) - 2):
            assert " ".join(words[i : i + 3]) not in text, transcript
