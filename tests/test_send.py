"""``streamser send`` and the README's Python client against real ``streamser serve``
subprocesses (fixture graphs, no ASR), with real speech; also the server's answer to
HTTP methods other than GET."""

from __future__ import annotations

import http.client
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from _cli_helpers import run_python

from benchmarks.serving import free_port
from streamser.client import SendOptions, read_clip, start_message

from _ops_helpers import FAST, Served, run_jsonl, running
from _server_helpers import check_stream_events
from conftest import REPO

DEMO = REPO / "streamser" / "assets" / "demo.wav"

README_CLIENT = """
import asyncio, json, soundfile as sf
from websockets.asyncio.client import connect

async def main(path: str) -> None:
    audio, rate = sf.read(path, dtype="int16", always_2d=True)
    frames, channels = audio.shape
    async with connect("ws://127.0.0.1:8765/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate,
                                  "encoding": "pcm_s16le", "channels": channels}))

        async def send_audio() -> None:
            for i in range(0, frames, rate // 10):           # 100 ms chunks
                await ws.send(audio[i:i + rate // 10].tobytes())
            await ws.send(json.dumps({"type": "stop"}))

        async def read_events() -> None:                    # meanwhile, read the events
            async for message in ws:                         # until stream.end / close
                event = json.loads(message)
                if event["type"] == "utterance.end":
                    print(event["label"], round(event["confidence"], 2), event["transcript"])

        await asyncio.gather(send_audio(), read_events())

asyncio.run(main("call.wav"))
"""
"""The README's example, run as it is but for its URL and file."""


def send(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streamser", "send", *args],
        cwd=REPO,
        capture_output=True,
        input=stdin,
        timeout=300,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def by_stream(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events split by stream, in the order the streams first appear."""
    streams: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        streams.setdefault(event["stream_id"], []).append(event)
    return list(streams.values())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with running(FAST, tmp_path_factory.mktemp("send")) as served:
        yield served


def test_send_a_file_fast_gets_every_utterance_as_run_does(
    server: Served, speech: Path
) -> None:
    sent = send(str(speech), "--jsonl", "--url", server.url)
    assert sent.returncode == 0, sent.stderr
    events = events_of(sent.stdout)
    check_stream_events(events)
    expected = run_jsonl(speech)

    def ends(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (e["utterance_id"], e["start"], e["end"], e["label"])
            for e in events
            if e["type"] == "utterance.end"
        ]

    assert len(ends(events)) >= 6
    assert ends(events) == ends(expected)
    assert events[0]["metadata"] == {"file": "six.wav"}
    assert events[-1]["audio_seconds"] == expected[-1]["audio_seconds"]


def test_send_prints_the_live_view_lines_of_run(server: Served) -> None:
    sent = send(str(DEMO), "--url", server.url)
    assert sent.returncode == 0, sent.stderr
    lines = sent.stdout.splitlines()
    # three utterances, then the call's summary (no alert: no rule fired)
    assert len(lines) == 5
    assert all(line.startswith("demo.wav  ") for line in lines)
    assert lines[0].split()[1] == "0.69-"
    assert "summary:" in lines[3] and "0 alert(s)" in lines[3]
    assert "channel 0: 3 utterance(s)" in lines[4]


def test_a_stereo_file_is_declared_as_such_and_downmixed(
    server: Served, emodb_clips: list[Path], tmp_path: Path
) -> None:
    # Left: one sentence then silence; right: silence then another one. Sent as
    # mono, the interleaved frames would be twice as long and garbled.
    first, _ = sf.read(emodb_clips[0], dtype="float32")
    second, _ = sf.read(emodb_clips[1], dtype="float32")
    pause = np.zeros(16000, np.float32)
    left = np.concatenate([pause, first, pause, np.zeros_like(second), pause])
    right = np.concatenate([pause, np.zeros_like(first), pause, second, pause])
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    clip = read_clip(str(stereo))
    start = start_message(clip, SendOptions())
    assert (start["channels"], start["sample_rate"]) == (2, 16000)
    assert "channel_mode" not in start
    separate = start_message(clip, SendOptions(channel_mode="separate"))
    assert (separate["channels"], separate["channel_mode"]) == (2, "separate")

    sent = send(str(stereo), "--jsonl", "--url", server.url, "--channels", "downmix")
    assert sent.returncode == 0, sent.stderr
    events = events_of(sent.stdout)
    check_stream_events(events)
    assert events[-1]["audio_seconds"] == pytest.approx(len(left) / 16000, abs=0.01)
    ends = [e for e in events if e["type"] == "utterance.end"]
    boundary = (len(pause) * 2 + len(first)) / 16000 - 0.5
    assert len(ends) == 2
    assert ends[0]["end"] < boundary < ends[1]["start"]


def test_send_reads_standard_input_and_files_in_order(server: Served) -> None:
    audio, rate = sf.read(DEMO, dtype="float32")  # its first utterance, as FLAC
    data = io.BytesIO()
    sf.write(data, audio[: int(5.8 * rate)], rate, format="FLAC")
    sent = send("-", str(DEMO), "--jsonl", "--url", server.url, stdin=data.getvalue())
    assert sent.returncode == 0, sent.stderr
    streams = by_stream(events_of(sent.stdout))
    assert len(streams) == 2
    for events in streams:
        check_stream_events(events)
    assert streams[0][0]["metadata"] == {"file": "stdin"}
    assert streams[1][0]["metadata"] == {"file": "demo.wav"}
    utterances = [s[-1]["utterances"] for s in streams]
    assert utterances == [1, 3]


def test_a_missing_file_fails_but_the_others_are_sent(server: Served) -> None:
    sent = send("nope.wav", str(DEMO), "--jsonl", "--url", server.url)
    assert sent.returncode == 1
    assert "file not found: nope.wav" in sent.stderr
    assert "Traceback" not in sent.stderr
    events = events_of(sent.stdout)
    check_stream_events(events)
    assert events[0]["metadata"] == {"file": "demo.wav"}


def test_a_refused_connection_is_one_clear_line() -> None:
    port = free_port()
    sent = send(str(DEMO), "--url", f"ws://127.0.0.1:{port}")
    assert sent.returncode == 1
    errors = [line for line in sent.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, sent.stderr
    assert errors[0].endswith(
        f"cannot connect to ws://127.0.0.1:{port}/v1/stream: connection refused"
    )
    assert "Traceback" not in sent.stderr


def test_a_fatal_error_event_fails(server: Served) -> None:
    sent = send(str(DEMO), "--url", server.url, "--language", "EN")
    assert sent.returncode == 1
    assert "error invalid_language" in sent.stdout
    assert "demo.wav: invalid_language" in sent.stderr


@pytest.mark.parametrize(
    ("rate", "channels", "mode"),
    [(96000, 1, "downmix"), (2000, 1, "downmix"), (16000, 16, "downmix")],
    ids=["96kHz", "2kHz", "16-channel"],
)
def test_send_takes_what_run_takes(
    server: Served, tmp_path: Path, rate: int, channels: int, mode: str
) -> None:
    # the demo's speech, at a rate or with channels a start cannot declare: sent
    # decoded to 16 kHz, as run decodes it, so both give the same utterances
    speech, _ = sf.read(DEMO, dtype="float32")
    import soxr

    audio = soxr.resample(speech[: 6 * 16000], 16000, rate) if rate != 16000 else speech
    audio = np.repeat(np.asarray(audio)[:, None], channels, axis=1)
    path = tmp_path / f"odd-{rate}-{channels}.wav"
    sf.write(path, audio, rate, subtype="PCM_16")
    sent = send(str(path), "--url", server.url, "--jsonl", "--channels", mode)
    assert sent.returncode == 0, sent.stderr
    assert "BytesIO" not in sent.stderr
    expected = run_jsonl(path)

    def ends(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (e["start"], e["end"], e["label"])
            for e in events
            if e["type"] == "utterance.end"
        ]

    if rate >= 8000:  # 2 kHz keeps too little of the speech for the VAD to find it
        assert ends(events_of(sent.stdout))
    assert ends(events_of(sent.stdout)) == ends(expected)
    end = events_of(sent.stdout)[-1]
    assert end["audio_seconds"] == pytest.approx(len(audio) / rate, abs=0.01)


def test_send_refuses_too_many_channels_to_keep_apart_in_one_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sixteen.wav"
    sf.write(path, np.zeros((16000, 16), np.float32), 16000, subtype="PCM_16")
    sent = send(str(path), "--channels", "separate", "--url", "ws://127.0.0.1:9")
    assert sent.returncode == 1
    (line,) = sent.stderr.strip().splitlines()
    assert line.endswith(f"{path}: 16 channels; at most 8 can be kept apart")
    garbage = send("-", "--url", "ws://127.0.0.1:9", stdin=b"not audio at all" * 8)
    assert garbage.returncode == 1
    (line,) = garbage.stderr.strip().splitlines()
    assert "standard input: cannot read audio" in line and "BytesIO" not in line


def test_tokens_come_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# streamser\n\n  s3cret-send-token  \n")
    env = {"STREAMSER_SERVER_TOKEN_FILE": str(token_file)}
    with running(FAST, tmp_path, env) as secured:
        refused = send(str(DEMO), "--url", secured.url)
        assert refused.returncode == 1
        assert (
            f"cannot connect to {secured.url}/v1/stream: HTTP 401 unauthorized "
            "(give a token with --token-file)" in refused.stderr
        )
        sent = send(str(DEMO), "--url", secured.url, "--token-file", str(token_file))
        assert sent.returncode == 0, sent.stderr
        assert len(sent.stdout.splitlines()) == 5  # 3 utterances, the summary
    assert "s3cret-send-token" not in secured.log()


def test_the_readme_client_reads_while_it_sends(server: Served, speech: Path) -> None:
    code = README_CLIENT.replace("ws://127.0.0.1:8765", server.url).replace(
        '"call.wav"', repr(str(speech))
    )
    assert code != README_CLIENT
    result = run_python("-c", code, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 6
    assert all(line.endswith(" None") for line in lines)  # no ASR: no transcript


@pytest.mark.parametrize("body", [b"", b"x=1"])
@pytest.mark.parametrize("path", ["/metrics", "/v1/stream", "/healthz"])
def test_methods_other_than_get_get_405(server: Served, path: str, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        assert response.status == 405
        assert response.getheader("Allow") == "GET"
        assert response.read() == b"method not allowed: use GET\n"
    finally:
        connection.close()
    assert server.http(path)[0] in (200, 426)  # GET still works


def test_realtime_paces_the_audio(server: Served, tmp_path: Path) -> None:
    audio, rate = sf.read(DEMO, dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, audio[: 3 * rate], rate)
    began = time.monotonic()
    sent = send(str(short), "--jsonl", "--realtime", "--url", server.url)
    elapsed = time.monotonic() - began
    assert sent.returncode == 0, sent.stderr
    assert elapsed >= 3.0
    assert events_of(sent.stdout)[-1]["audio_seconds"] == 3.0


def test_a_call_cut_by_a_draining_server_fails_in_one_line(tmp_path: Path) -> None:
    with running(FAST, tmp_path) as server:
        sending = subprocess.Popen(
            [sys.executable, "-m", "streamser", "send", str(DEMO), "--realtime"]
            + ["--url", server.url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            server.wait_log(r"Stream \S+ opened", timeout=60)
            time.sleep(4.0)  # into the call (15.7 s of audio at real-time pace)
            server.signal(signal.SIGTERM)
            stdout, stderr = sending.communicate(timeout=120)
        finally:
            if sending.poll() is None:
                sending.kill()
    assert sending.returncode == 1
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert len(errors) == 1, stderr
    assert "demo.wav: the stream was cut (the server shut down)" in errors[0]
    recognised = float(errors[0].split(": ")[-1].split(" s of")[0].split()[-1])
    assert 3.0 <= recognised < 15.0, errors[0]
    assert "utterance(s)" in errors[0] and "15.7 s sent" in errors[0]
    # the stream.end said so, and what the server had got was still recognised
    assert "summary:" in stdout


def test_a_complete_call_says_stop(server: Served) -> None:
    sent = send(str(DEMO), "--url", server.url, "--jsonl")
    assert sent.returncode == 0, sent.stderr
    end = events_of(sent.stdout)[-1]
    assert (end["type"], end["reason"]) == ("stream.end", "stop")
    assert end["audio_seconds"] == pytest.approx(15.661, abs=0.01)
