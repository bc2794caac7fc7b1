"""Operations: the systemd unit and notify protocol, SIGTERM drain, SIGHUP reload,
faults (a failing model, missing/corrupt models, an unwritable sink, no GPU) and the
/metrics a host monitors. Every test runs a real ``streamser serve`` subprocess on a
loopback port with the tiny fixture graphs and ASR off, unless it says otherwise."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamser.serve.server import ServerOptions

from _ops_helpers import (
    FAST,
    MODELS,
    MODELS_FAULTY,
    MODELS_V2,
    REPO,
    NotifySocket,
    check_events,
    deaf_client,
    metric,
    pcm16,
    read_clip,
    run_stream,
    running,
    spawn,
    speech,
)

UNIT = REPO / "systemd" / "streamser.service"
DEMO = REPO / "streamser" / "assets" / "demo.wav"


def _demo_pcm() -> bytes:
    return pcm16(read_clip(DEMO))


# -- systemd ------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    # verify checks that ExecStart exists: point it at this interpreter in a copy
    text = UNIT.read_text().replace(
        "/opt/streamser/bin/streamser", f"{sys.executable} -m streamser"
    )
    copy = tmp_path / "streamser.service"
    copy.write_text(text)
    result = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "streamser.service" not in result.stderr, result.stderr


def test_unit_is_notify_with_watchdog_hardening_and_a_long_stop() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith(
        "streamser serve --config /etc/streamser/streamser.toml"
    )
    assert "-HUP" in service["ExecReload"]
    assert service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) >= 10
    drain_s = ServerOptions().drain_timeout_s
    # drain, then up to 5 s to close connections, then the process exits
    assert int(service["TimeoutStopSec"]) > drain_s + 10
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "streamser",
        "CacheDirectory": "streamser",
    }.items():
        assert service[key] == value, key
    assert set(service["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    assert service["MemoryMax"]


def test_instance_unit_is_generated_from_the_single_unit(tmp_path: Path) -> None:
    script = REPO / "deploy" / "systemd" / "instance_unit.py"
    check = [sys.executable, str(script), "--check"]
    result = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # A stale instance unit fails the check: the script reads the repository's
    # files, so run a copy of the three files in a scratch tree.
    for path in (script, UNIT, REPO / "deploy" / "systemd" / "streamser@.service"):
        copy = tmp_path / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text("utf-8"), "utf-8")
    single = tmp_path / UNIT.relative_to(REPO)
    single.write_text(single.read_text("utf-8").replace("MemoryMax=6G", "MemoryMax=8G"))
    stale = subprocess.run(
        [sys.executable, str(tmp_path / script.relative_to(REPO)), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stale.returncode == 1
    assert "out of date" in stale.stderr


@pytest.mark.slow
def test_notify_ready_after_load_status_watchdog_and_stopping(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    # a 2 s watchdog: pings every second, and a loop may stall for up to a second
    # under load before a ping is late
    watchdog_s = 2.0
    served = spawn(
        FAST,
        tmp_path,
        {
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
        },
    )
    process, port, log_path = served.process, served.port, served.log_path
    import urllib.request

    def healthz() -> int | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=2
            ) as response:
                return int(response.status)
        except Exception:
            return None

    messages: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(
            "READY=1" in m for _, m in messages
        ):
            message = notify.receive(1.0)
            if message is not None:
                messages.append((time.monotonic(), message))
                if "READY=1" in message:
                    # READY comes once the models are warm and /healthz says 200
                    assert healthz() == 200
                    assert "Models loaded and warm" in log_path.read_text()
            assert process.poll() is None, log_path.read_text()
        assert any("READY=1" in m for _, m in messages), messages
        first = messages[0][1]
        assert first.startswith("STATUS=loading models") and "READY" not in first
        ready = next(m for _, m in messages if "READY=1" in m)
        assert f"STATUS=serving on port {port}" in ready
        # WATCHDOG=1 every WATCHDOG_USEC/2 from the event loop
        pings: list[float] = []
        until = time.monotonic() + 3.5 * watchdog_s
        while time.monotonic() < until:
            message = notify.receive(0.5)
            if message == "WATCHDOG=1":
                pings.append(time.monotonic())
        assert len(pings) >= 4, pings
        assert max(b - a for a, b in itertools_pairwise(pings)) < watchdog_s
        # SIGHUP: RELOADING=1, then READY=1 again once the models are swapped
        process.send_signal(signal.SIGHUP)
        reload_messages = []
        until = time.monotonic() + 120
        while time.monotonic() < until and not any(
            m.startswith("READY=1") for m in reload_messages
        ):
            message = notify.receive(1.0)
            if message is not None and message != "WATCHDOG=1":
                reload_messages.append(message)
        assert reload_messages[0].startswith("RELOADING=1"), reload_messages
        assert reload_messages[-1].startswith("READY=1"), reload_messages
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        rest = []
        while (message := notify.receive(0.5)) is not None:
            rest.append(message)
        assert any(m.startswith("STOPPING=1") for m in rest), rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        notify.close()


async def test_watchdog_pings_stop_while_the_event_loop_is_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamser.serve.systemd import Notifier

    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    import threading

    arrivals: list[float] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            if notify.receive(0.1) == "WATCHDOG=1":
                arrivals.append(time.monotonic())

    listener = threading.Thread(target=listen)
    listener.start()
    task = asyncio.create_task(Notifier().watchdog_loop())
    try:
        await asyncio.sleep(0.6)
        blocked = time.monotonic()
        time.sleep(1.0)  # a wedged loop: what systemd must notice
        await asyncio.sleep(0.6)
    finally:
        task.cancel()
        done.set()
        await asyncio.to_thread(listener.join, 5)
        notify.close()
    gaps = [b - a for a, b in itertools_pairwise(arrivals)]
    assert len(arrivals) >= 8, arrivals
    # pings every ~0.1 s, none while the loop was blocked
    # (a ping sent just before the block may reach the listener thread late)
    assert not [t for t in arrivals if blocked + 0.25 < t < blocked + 0.95]
    assert max(gaps) >= 0.9 and sorted(gaps)[len(gaps) // 2] < 0.3


def itertools_pairwise(values: list[float]) -> list[tuple[float, float]]:
    return list(zip(values, values[1:], strict=False))


# -- SIGTERM ------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.slow
async def test_sigterm_finishes_in_flight_utterances_then_closes_1001(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    jsonl = tmp_path / "events.jsonl"
    env = {
        # one recognition at a time and room for every queued utterance, so the
        # drain has several utterances in flight and lasts long enough to probe
        "STREAMSER_PIPELINE_WORKERS": "1",
        "STREAMSER_PIPELINE_MAX_PENDING_UTTERANCES": "64",
        "STREAMSER_PIPELINE_PARTIAL_INTERVAL_MS": "0",
        "STREAMSER_SERVER_DRAIN_TIMEOUT_S": "90",
    }
    clips = [read_clip(p) for p in emodb_clips[20:50]]
    # the last clip is still being spoken at SIGTERM: no trailing silence
    audio = speech(clips)[: -16000 - 8000]
    with running([*FAST, "--jsonl-log", str(jsonl)], tmp_path, env) as server:
        subscriber = await connect(
            f"{server.url}/v1/events?stream_id=drain", open_timeout=30
        )
        stream = await connect(
            f"{server.url}/v1/stream", max_size=None, open_timeout=30
        )

        async def send_all() -> None:
            await stream.send(json.dumps({"type": "start", "stream_id": "drain"}))
            payload = pcm16(audio)
            for offset in range(0, len(payload), 32000):
                await stream.send(payload[offset : offset + 32000])

        await asyncio.wait_for(send_all(), 300)
        events: list[dict] = []
        last_start = (len(clips) - 1) * 3.0 + 1.0  # seconds, from speech()
        while not any(
            e["type"] == "speech.start" and e["start"] > last_start - 0.5
            for e in events
        ):
            events.append(json.loads(await asyncio.wait_for(stream.recv(), 60)))
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        # while draining: unhealthy, no new streams (503 + Retry-After)
        unhealthy_by = time.monotonic() + 30
        status, _, _ = await asyncio.to_thread(server.http, "/healthz")
        while status != 503:
            assert time.monotonic() < unhealthy_by, f"/healthz still {status}"
            status, _, _ = await asyncio.to_thread(server.http, "/healthz")
        status, _, headers = await asyncio.to_thread(server.http, "/v1/stream")
        assert status == 503 and int(headers["Retry-After"]) > 0

        async def rest_of_stream() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in stream:
                    events.append(json.loads(message))

        await asyncio.wait_for(rest_of_stream(), 90 + 30)
        assert stream.close_code == 1001
        seen = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                seen.append(json.loads(await asyncio.wait_for(subscriber.recv(), 60)))
        assert subscriber.close_code == 1001
        assert await asyncio.to_thread(server.wait, 60) == 0
        took = time.monotonic() - signalled
    check_events(events)
    starts = {e["utterance_id"] for e in events if e["type"] == "speech.start"}
    ends = {e["utterance_id"] for e in events if e["type"] == "utterance.end"}
    assert starts == ends and len(ends) >= len(clips) - 1
    # the last utterance was still open at SIGTERM: the drain closed and recognised it
    assert max(ends) == max(starts)
    assert not [e for e in events if e["type"] == "error"]
    assert [e["id"] for e in seen] == [e["id"] for e in events]
    logged = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["id"] for e in logged if e["stream_id"] == "drain"] == [
        e["id"] for e in events
    ]
    assert took < 90 + 30  # the drain deadline, and room for a loaded machine
    log = server.log()
    assert "Draining 1 stream(s)" in log and "Stopped" in log


@pytest.mark.slow
async def test_drain_is_bounded_when_a_client_stops_reading(tmp_path: Path) -> None:
    env = {"STREAMSER_SERVER_DRAIN_TIMEOUT_S": "3"}
    with running(FAST, tmp_path, env) as server:
        ws = await deaf_client(server.url, server.port)

        async def fall_behind() -> bool:
            # each message is an error event the client never reads; the kernel
            # buffers megabytes on loopback, so go on until the server's queue for
            # it grows
            for i in range(200):
                for j in range(500):
                    await ws.send(json.dumps({"type": f"junk-{i}-{j}-{'x' * 40}"}))
                behind = await asyncio.to_thread(server.metrics)
                if metric(behind, "streamser_client_queue_events") >= 100:
                    return True
            return False

        if not await asyncio.wait_for(fall_behind(), 180):
            pytest.fail("the server never fell behind the deaf client")
        began = time.monotonic()
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 60) == 0
        took = time.monotonic() - began
        log = server.log()
    ws.transport.abort()
    # the drain deadline, a second to notice, 5 s to close, and room for load
    assert took < 3 + 1 + 5 + 10, took
    assert "1 stream(s) did not finish within 3 s" in log
    assert "Dropping 1 connection(s)" in log


def test_signals_while_loading_models_are_handled_after(tmp_path: Path) -> None:
    served = spawn(FAST, tmp_path)
    process, log_path = served.process, served.log_path
    try:
        deadline = time.monotonic() + 120
        while "Emotion model" not in log_path.read_text():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGHUP)  # default action would kill it
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = log_path.read_text()
    assert "SIGHUP ignored" in log and "Stopped before serving" in log
    assert "Ready" not in log


def test_sigterm_when_idle_exits_zero_quickly(tmp_path: Path) -> None:
    with running(FAST, tmp_path) as server:
        began = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert time.monotonic() - began < 20  # idle: immediate, but CI may be loaded


# -- SIGHUP -------------------------------------------------------------------------


def _distance(a: dict, b: dict) -> float:
    return sum(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"])


def _copy_models(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for path in target.iterdir():
        path.unlink()
    for path in source.iterdir():
        shutil.copy(path, target / path.name)


@pytest.mark.data
@pytest.mark.slow
async def test_sighup_reloads_models_and_rejects_bad_ones_without_dropping_streams(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    models = tmp_path / "models"
    _copy_models(MODELS, models)
    config = tmp_path / "streamser.toml"
    config.write_text("[pipeline]\npartial_interval_ms = 0\n")
    clip = pcm16(speech([read_clip(emodb_clips[40])]))
    args = ["--no-asr", "--model-dir", str(models), "--config", str(config)]

    async def utterance(ws) -> dict:  # type: ignore[no-untyped-def]
        async def send() -> None:
            await ws.send(clip)
            await ws.send(json.dumps({"type": "flush"}))

        await asyncio.wait_for(send(), 60)
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if event["type"] in ("utterance.end", "error"):
                return event

    async def open_stream(url: str) -> tuple[object, dict]:
        ws = await connect(f"{url}/v1/stream", max_size=None, open_timeout=30)
        await asyncio.wait_for(ws.send(json.dumps({"type": "start"})), 30)
        return ws, json.loads(await asyncio.wait_for(ws.recv(), 30))

    async def stop(ws) -> None:  # type: ignore[no-untyped-def]
        await ws.send(json.dumps({"type": "stop"}))
        async for _ in ws:
            pass

    def versions(start: dict) -> set[str]:
        return {m["version"] for m in start["models"] if m["kind"] != "asr"}

    with running(args, tmp_path) as server:
        long_lived, start = await open_stream(server.url)
        assert versions(start) == {"1"}
        before = await utterance(long_lived)
        assert before["type"] == "utterance.end"
        # a new release of the models, then SIGHUP
        _copy_models(MODELS_V2, models)
        server.signal(signal.SIGHUP)
        server.wait_log(r"Reloaded in")
        after = await utterance(long_lived)  # the same stream, never dropped
        fresh, start = await open_stream(server.url)
        assert versions(start) == {"2"}
        fresh_end = await utterance(fresh)
        # the old stream's new utterance scores like v2, not like v1
        assert _distance(after, fresh_end) < _distance(after, before) / 4
        # a corrupt model file: rejected, v2 keeps serving
        (models / "emotion-acoustic-v1.onnx").write_bytes(b"\x08\x07garbage")
        server.signal(signal.SIGHUP)
        server.wait_log(r"Reload rejected")
        # a bad configuration file: rejected too
        _copy_models(MODELS, models)
        config.write_text("[pipeline]\npartial_interval_ms = 'often'\n")
        server.signal(signal.SIGHUP)
        log = server.wait_log(r"Reload rejected", count=2)
        rejected = [line for line in log.splitlines() if "Reload rejected" in line]
        assert len(rejected) == 2
        assert "not a loadable ONNX graph" in rejected[0]
        assert "partial_interval_ms" in rejected[1]
        assert "Traceback" not in log
        third, start = await open_stream(server.url)
        assert versions(start) == {"2"}
        still = await utterance(long_lived)
        assert _distance(still, fresh_end) < _distance(still, before) / 4
        text = server.metrics()
        assert metric(text, "streamser_reloads_total", result="ok") == 1
        assert metric(text, "streamser_reloads_total", result="failed") == 2
        assert metric(text, "streamser_model_info", kind="acoustic", version="2") == 1
        assert metric(text, "streamser_models_loaded") == 1
        for ws in (long_lived, fresh, third):
            await asyncio.wait_for(stop(ws), 60)
            assert ws.close_code == 1000  # type: ignore[attr-defined]


# -- faults -------------------------------------------------------------------------


@pytest.mark.data
async def test_a_model_failing_on_one_utterance_gives_an_error_and_the_stream_goes_on(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    clips = [read_clip(p) for p in emodb_clips[50:55]]
    import numpy as np

    long_one = np.concatenate(clips[1:4])  # ~6 s: over the faulty graph's 4 s
    audio = speech([clips[0], long_one, clips[4]])
    args = ["--no-asr", "--model-dir", str(MODELS_FAULTY)]
    env = {"STREAMSER_PIPELINE_PARTIAL_INTERVAL_MS": "0"}
    with running(args, tmp_path, env) as server:
        result = await run_stream(server.url, pcm16(audio), chunk_bytes=16000)
        assert server.http("/healthz")[0] == 200
        text = server.metrics()
        log = server.log()
    events = result.events
    check_events(events)
    assert result.close_code == 1000
    kinds = [
        (e["type"], e.get("code"))
        for e in events
        if e["type"] in ("utterance.end", "error")
    ]
    assert kinds == [
        ("utterance.end", None),
        ("error", "recognition_failed"),
        ("utterance.end", None),
    ]
    error = next(e for e in events if e["type"] == "error")
    assert error["fatal"] is False and "utterance 1" in error["message"]
    assert metric(text, "streamser_errors_total", code="recognition_failed") == 1
    assert "Recognition failed on stream" in log


def _serve_fails(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamser", "serve", "--port", "0", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_model_folder_fails_at_start_in_one_line(tmp_path: Path) -> None:
    line = _one_error_line(_serve_fails(["--model-dir", str(tmp_path / "absent")]))
    assert "model folder not found" in line and "absent" in line


def test_card_hash_mismatch_fails_at_start_in_one_line(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _copy_models(MODELS, models)
    card = models / "emotion-fusion-v1.onnx.json"
    data = json.loads(card.read_text())
    data["sha256"] = "0" * 64
    card.write_text(json.dumps(data))
    line = _one_error_line(_serve_fails(["--no-asr", "--model-dir", str(models)]))
    assert "emotion-fusion-v1.onnx.json" in line and "sha256" in line


def test_folder_without_acoustic_model_fails_at_start_in_one_line(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    _copy_models(MODELS, models)
    (models / "emotion-acoustic-v1.onnx").unlink()
    line = _one_error_line(_serve_fails(["--no-asr", "--model-dir", str(models)]))
    assert "no emotion-acoustic-vN.onnx" in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_full_disk_sink_is_reported_and_recognition_goes_on(
    tmp_path: Path,
) -> None:
    with running([*FAST, "--jsonl-log", "/dev/full"], tmp_path) as server:
        result = await run_stream(server.url, _demo_pcm(), chunk_bytes=32000)
        text = server.metrics()
        log = server.log()
    check_events(result.events)
    errors = [e for e in result.events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["sink_write_failed"]
    assert errors[0]["fatal"] is False
    assert len([e for e in result.events if e["type"] == "utterance.end"]) == 3
    assert metric(text, "streamser_sink_write_failures_total") >= len(result.events)
    assert metric(text, "streamser_errors_total", code="sink_write_failed") == 1
    lines = [line for line in log.splitlines() if "Cannot write events" in line]
    assert len(lines) == 1 and "/dev/full" in lines[0]


async def test_cuda_without_a_gpu_warns_and_serves_on_cpu(tmp_path: Path) -> None:
    from streamser.recognition.asr import cuda_available

    if cuda_available():
        pytest.skip("this host has a CUDA GPU: the fallback cannot be observed")
    with running([*FAST, "--inference-device", "cuda"], tmp_path) as server:
        result = await run_stream(server.url, _demo_pcm(), chunk_bytes=32000)
        log = server.log()
    check_events(result.events)
    assert len([e for e in result.events if e["type"] == "utterance.end"]) == 3
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert any("CUDA" in w and "CPU" in w for w in warnings), log
    assert "loaded on cpu" in log


# -- observability ------------------------------------------------------------------


async def test_metrics_cover_streams_latency_stages_queues_errors_and_models(
    tmp_path: Path,
) -> None:
    with running(FAST, tmp_path) as server:
        idle = server.metrics()
        async with connect(f"{server.url}/v1/events") as subscriber:
            result = await run_stream(server.url, _demo_pcm() + b"\x01")
            await asyncio.wait_for(subscriber.recv(), 10)
            busy = server.metrics()
    check_events(result.events)
    assert metric(idle, "streamser_models_loaded") == 1
    assert metric(idle, "streamser_model_info", kind="acoustic") == 1
    assert metric(idle, "streamser_utterances_total") == 0
    assert metric(idle, "process_resident_memory_bytes") > 0
    assert metric(busy, "streamser_utterances_total") == 3
    assert metric(busy, "streamser_streams_total") == 1
    assert metric(busy, "streamser_active_streams") == 0
    assert metric(busy, "streamser_end_of_speech_latency_seconds_count") == 3
    # One "recognize" call per batch; speculative requests may share a batch with
    # others or be recognised and then discarded, so count utterances, not calls.
    assert metric(busy, "streamser_stage_seconds_count", stage="recognize") >= 1
    assert metric(busy, "streamser_batch_size_sum") >= 3
    assert 0 <= metric(busy, "streamser_speculations_total", outcome="used") <= 3
    assert metric(busy, "streamser_stage_seconds_count", stage="partial") > 0
    assert metric(busy, "streamser_errors_total", code="partial_sample") == 1
    assert metric(busy, "streamser_connections", path="/v1/events") == 1
    assert metric(busy, "streamser_subscribers") == 1
    assert metric(busy, "streamser_audio_seconds_total") > 15
    for name in (
        "streamser_queue_depth",
        "streamser_client_queue_events",
        "streamser_subscriber_queue_events",
        "streamser_evicted_subscribers_total",
        "streamser_dropped_utterances_total",
        "streamser_draining",
        "streamser_refused_connections_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in busy, name
