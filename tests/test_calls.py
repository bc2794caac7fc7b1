"""``POST /v1/calls`` against a real ``streamser serve`` (fixture graphs, no ASR),
with real HTTP clients (aiohttp, raw sockets) and real speech: the events ``run``
gives, the limits (413, 415, 503), tokens, ndjson, the HTML report, and live
WebSocket streams beside a large upload."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from _ops_helpers import FAST, Served, run_jsonl, running
from _server_helpers import check_stream_events, stream_audio
from conftest import REPO

TOKEN = "calls-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_UPLOAD_BYTES = 48 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("calls")
    (tmp / "tokens").write_text(TOKEN + "\n")
    env = {
        "STREAMSER_SERVER_TOKEN_FILE": str(tmp / "tokens"),
        "STREAMSER_SERVER_MAX_UPLOADS": "1",
        "STREAMSER_SERVER_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }
    with running(FAST, tmp, env) as served:
        yield served


def base(server: Served) -> str:
    return f"http://127.0.0.1:{server.port}"


def ends(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["utterance_id"], e["start"], e["end"], e["label"])
        for e in events
        if e["type"] == "utterance.end"
    ]


async def upload(
    server: Served,
    path: Path,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    form: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """POST ``path`` to /v1/calls (a multipart form or the raw body)."""
    async with aiohttp.ClientSession() as session:
        data: Any
        if form:
            data = aiohttp.FormData()
            data.add_field("file", path.read_bytes(), filename=path.name)
        else:
            data = path.read_bytes()
        async with session.post(
            f"{base(server)}/v1/calls{query}",
            data=data,
            headers={**AUTH, **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=600),
        ) as response:
            return response.status, dict(response.headers), await response.read()


def raw_request(server: Served, head: str, body: bytes = b"") -> socket.socket:
    """A socket that has sent ``head`` (CRLF line ends added) and ``body``."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def response_head(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def test_an_upload_gets_every_utterance_end_that_run_gives(
    server: Served, speech: Path
) -> None:
    status, headers, body = asyncio.run(upload(server, speech))
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Connection"] == "close"  # a next GET goes to a new connection
    answer = json.loads(body)
    events = answer["events"]
    check_stream_events(events)
    expected = run_jsonl(speech)
    assert len(ends(events)) >= 6
    assert ends(events) == ends(expected)
    assert events[0]["metadata"] == {"file": "six.wav"}
    assert events[-1]["audio_seconds"] == expected[-1]["audio_seconds"]
    assert answer["summary"]["type"] == "call.summary"
    assert answer["summary"] == [e for e in events if e["type"] == "call.summary"][-1]


def test_a_raw_body_with_options_in_the_query(server: Served, tmp_path: Path) -> None:
    two = tmp_path / "two.flac"
    audio, rate = sf.read(REPO / "streamser" / "assets" / "demo.wav", dtype="float32")
    sf.write(two, np.stack([audio, np.zeros_like(audio)], axis=1), rate)
    query = "?channels=separate&channel_names=agent,customer&language=de"
    status, _, body = asyncio.run(upload(server, two, query=query, form=False))
    assert status == 200, body
    start = json.loads(body)["events"][0]
    assert start["channel_mode"] == "separate"
    assert start["metadata"] == {"channels": ["agent", "customer"]}
    assert start["language"] == "de"
    status, _, body = asyncio.run(upload(server, two, query="?language=German"))
    assert status == 400 and b"language" in body


def test_options_as_form_fields(server: Served, tmp_path: Path) -> None:
    two = tmp_path / "two.ogg"
    audio, rate = sf.read(REPO / "streamser" / "assets" / "demo.wav", dtype="float32")
    sf.write(two, np.stack([audio, audio[::-1]], axis=1), rate)

    async def post() -> dict[str, Any]:
        data = aiohttp.FormData()
        data.add_field("channel_names", "agent,customer")  # implies separate
        data.add_field("file", two.read_bytes(), filename=two.name)
        data.add_field("language", "en")  # after the file: read all the same
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base(server)}/v1/calls", data=data, headers=AUTH) as r,
        ):
            assert r.status == 200, await r.text()
            return dict(await r.json())

    events = asyncio.run(post())["events"]
    start = events[0]
    assert start["channel_mode"] == "separate" and start["language"] == "en"
    assert start["metadata"] == {"channels": ["agent", "customer"], "file": "two.ogg"}
    assert {e["channel"] for e in events if e["type"] == "utterance.end"} == {0, 1}


def test_ndjson_streams_each_event_as_a_line(server: Served, speech: Path) -> None:
    accept = {"Accept": "application/x-ndjson"}
    status, headers, body = asyncio.run(upload(server, speech, headers=accept))
    assert status == 200
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers.get("Transfer-Encoding") == "chunked"  # sent as it comes
    assert headers["Connection"] == "close"
    events = [json.loads(line) for line in body.decode().splitlines()]
    check_stream_events(events)
    assert len(ends(events)) >= 6


def test_a_client_leaving_mid_answer_ends_its_call(
    server: Served, speech: Path
) -> None:
    async def leave_after_one_line() -> dict[str, Any]:
        data = aiohttp.FormData()
        data.add_field("file", speech.read_bytes(), filename="left.wav")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base(server)}/v1/calls?format=ndjson", data=data, headers=AUTH
            ) as response,
        ):
            return dict(json.loads(await response.content.readline()))

    first = asyncio.run(leave_after_one_line())
    assert first["type"] == "stream.start"
    server.wait_log(f"Call {first['stream_id']} done")
    status, _, _ = asyncio.run(upload(server, speech))  # its slot is free again
    assert status == 200


def test_html_format_is_the_call_report(server: Served, speech: Path) -> None:
    status, headers, body = asyncio.run(upload(server, speech, query="?format=html"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert page.startswith("<!DOCTYPE html>")
    assert "six.wav" in page and "Timeline" in page


def test_no_token_gets_401(server: Served, speech: Path) -> None:
    sock = raw_request(
        server, "POST /v1/calls HTTP/1.1\nHost: x\nContent-Length: 4\n", b"RIFF"
    )
    head = response_head(sock)
    sock.close()
    assert head.startswith("HTTP/1.1 401"), head
    assert 'WWW-Authenticate: Bearer realm="streamser"' in head
    status, _, _ = asyncio.run(upload(server, speech, query=f"?token={TOKEN}"))
    assert status == 200


def test_garbage_gets_415(server: Served, tmp_path: Path) -> None:
    garbage = tmp_path / "notes.wav"
    garbage.write_bytes(b"not audio at all " * 100)
    status, _, body = asyncio.run(upload(server, garbage))
    assert status == 415
    assert b"cannot read audio" in body and str(tmp_path).encode() not in body


def test_a_300_mb_body_gets_413_before_it_is_sent(server: Served) -> None:
    head = (
        "POST /v1/calls HTTP/1.1\nHost: x\nAuthorization: Bearer "
        f"{TOKEN}\nContent-Type: audio/wav\nContent-Length: {300 << 20}\n"
    )
    sock = raw_request(server, head, b"RIFF")
    answer = response_head(sock)
    sock.close()
    assert answer.startswith("HTTP/1.1 413"), answer


def test_a_body_without_length_past_the_limit_gets_413(server: Served) -> None:
    async def send() -> int:
        async def chunks() -> Any:
            for _ in range(MAX_UPLOAD_BYTES // (1 << 20) + 2):
                yield bytes(1 << 20)

        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(
                    f"{base(server)}/v1/calls", data=chunks(), headers=AUTH
                ) as response:
                    return response.status
            except aiohttp.ClientError:
                return -1  # the server closed before the client finished sending

    assert asyncio.run(send()) in (413, -1)
    assert server.http("/healthz")[0] == 200
    assert 'refused_connections_total{reason="max_upload_bytes"}' in server.metrics(
        AUTH
    )


def test_past_the_upload_limit_gets_503_with_retry_after(
    server: Served, speech: Path
) -> None:
    head = (
        "POST /v1/calls HTTP/1.1\nHost: x\nAuthorization: Bearer "
        f"{TOKEN}\nContent-Type: audio/wav\nContent-Length: 1000000\n"
    )
    # Two uploads that never end: whichever the server takes second is refused.
    socks = [raw_request(server, head, b"RIFF") for _ in range(2)]
    try:
        readable, _, _ = select.select(socks, [], [], 60)
        assert len(readable) == 1
        answer = response_head(readable[0])
        assert answer.startswith("HTTP/1.1 503"), answer
        assert "Retry-After: 5" in answer
    finally:
        for sock in socks:
            sock.close()
    # the slot is given back when its client leaves
    for _ in range(50):
        status, _, _ = asyncio.run(upload(server, speech))
        if status == 200:
            break
    assert status == 200


def test_live_streams_get_their_events_during_a_large_upload(
    server: Served, speech: Path, tmp_path: Path
) -> None:
    audio, rate = sf.read(speech, dtype="float32")
    large = tmp_path / "large.wav"
    loud = np.tile(audio, 8)  # about two minutes, 48 kHz stereo
    stereo = np.stack([loud, loud], axis=1)
    sf.write(large, np.repeat(stereo, 3, axis=0), rate * 3, subtype="PCM_16")
    assert large.stat().st_size > 20 << 20
    pcm = (audio * 32767).astype("<i2").tobytes()

    async def both() -> tuple[int, list[dict[str, Any]], list[list[dict[str, Any]]]]:
        uploading = asyncio.create_task(upload(server, large))
        await asyncio.sleep(0.5)
        streams = await asyncio.gather(
            *(
                stream_audio(
                    f"ws://127.0.0.1:{server.port}",
                    pcm,
                    {"sample_rate": 16000},
                    iter(lambda: 3200, None),
                    frame_bytes=2,
                    headers=AUTH,
                )
                for _ in range(2)
            )
        )
        status, _, body = await uploading
        return status, json.loads(body)["events"], [s.events for s in streams]

    status, uploaded, live = asyncio.run(both())
    assert status == 200
    check_stream_events(uploaded)
    assert len(ends(uploaded)) >= 8 * 6
    for events in live:
        check_stream_events(events)
        assert len(ends(events)) >= 6


def test_asr_false_gives_the_voice_only_on_a_server_with_asr(
    speech: Path, tmp_path: Path
) -> None:
    with running(["--model-dir", FAST[-1]], tmp_path) as served:
        transcribed = json.loads(asyncio.run(upload(served, speech))[2])["events"]
        status, _, body = asyncio.run(upload(served, speech, query="?asr=false"))
        bad, _, _ = asyncio.run(upload(served, speech, query="?asr=maybe"))
    assert status == 200 and bad == 400
    voice_only = json.loads(body)["events"]
    assert any(e["transcript"] for e in ends_of(transcribed))
    assert "off" not in {e["asr"] for e in ends_of(transcribed)}
    assert len(ends_of(voice_only)) == len(ends_of(transcribed)) >= 6
    assert {e["asr"] for e in ends_of(voice_only)} == {"off"}
    assert all(e["transcript"] is None for e in ends_of(voice_only))


def ends_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "utterance.end"]


def test_a_drain_lets_an_upload_finish_its_events(speech: Path, tmp_path: Path) -> None:
    audio, rate = sf.read(speech, dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(audio, 8), rate, subtype="PCM_16")

    async def upload_while_draining(served: Served) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        data = aiohttp.FormData()
        data.add_field("file", long.read_bytes(), filename=long.name)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base(served)}/v1/calls",
                data=data,
                headers={"Accept": "application/x-ndjson"},
            ) as response,
        ):
            async for line in response.content:
                events.append(json.loads(line))
                if len(events) == 1:
                    served.process.send_signal(signal.SIGTERM)
        return events

    with running(FAST, tmp_path) as served:
        events = asyncio.run(upload_while_draining(served))
        assert served.process.wait(60) == 0
        log = served.log()
    check_stream_events(events)
    assert "Draining 1 stream(s)" in log
    assert "Traceback" not in log


def test_the_server_logged_no_error(server: Served) -> None:
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert "Call call-" in log and "uploaded from 127.0.0.1" in log
