"""The dashboard (GET /) in a real headless Chromium against a real ``streamser serve``.

Needs Debian's chromium at /usr/bin/chromium and the ``playwright`` package (the dev
extra); never downloads a browser. Set ``STREAMSER_DASHBOARD_PNG`` to a path (e.g.
``docs/dashboard.png``) to also save the live-call screenshot there; it is always
saved under the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

import streamser.events
from benchmarks.serving import ServedDaemon

from _server_helpers import serve, started_stream
from conftest import REPO

try:
    from playwright.async_api import Page, WebSocketRoute, async_playwright
except ImportError:  # the dev extra is not installed
    async_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]
SHOWN_WITHIN_S = 2.0
"""How soon after the event an utterance's label must be on the page."""
CHUNK_S = 0.1
SAMPLE_RATE = 16000

pytestmark = [
    pytest.mark.skipif(
        async_playwright is None,
        reason="playwright is not installed (pip install -e '.[dev]')",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium (apt-get install chromium)",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDaemon]:
    with serve(["--no-asr"], tmp_path_factory.mktemp("dashboard")) as daemon:
        yield daemon


@contextlib.asynccontextmanager
async def open_page(url: str) -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh headless Chromium on ``url``; the list collects console errors and
    uncaught exceptions."""
    assert async_playwright is not None
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60000
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15000)
            errors: list[str] = []
            page.on(
                "console",
                lambda message: (
                    errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            await page.goto(url)
            yield page, errors
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def watched_page(port: int) -> AsyncIterator[tuple[Page, list[str], Watcher]]:
    """The dashboard of the daemon on ``port``, live (connected to its events), with
    its console errors and a ``Watcher`` of it."""
    async with open_page(f"http://127.0.0.1:{port}/") as (page, errors):
        await page.wait_for_selector('#connection[data-state="live"]')
        yield page, errors, Watcher(page)


def _call_start(stream_id: str, call_id: str) -> dict[str, Any]:
    """The start message of a mono 16 kHz PCM stream with its call id."""
    return {
        "sample_rate": SAMPLE_RATE,
        "encoding": "pcm_s16le",
        "stream_id": stream_id,
        "metadata": {"call_id": call_id},
    }


def _clips(emodb_clips: list[Path], code: str, count: int) -> list[Path]:
    """``count`` EMO-DB clips of one emotion code (6th character), other speakers
    first."""
    picked: list[Path] = []
    speakers: set[str] = set()
    for clip in emodb_clips:
        if clip.name[5] == code and clip.name[:2] not in speakers:
            picked.append(clip)
            speakers.add(clip.name[:2])
    picked += [c for c in emodb_clips if c.name[5] == code and c not in picked]
    assert len(picked) >= count, f"not enough EMO-DB clips of code {code}"
    return picked[:count]


def _read(clip: Path) -> np.ndarray:
    audio, rate = sf.read(clip, dtype="float32")
    assert rate == SAMPLE_RATE
    return audio


def _two_channel_call(agent: list[Path], customer: list[Path]) -> bytes:
    """A turn-taking call as interleaved stereo 16-bit PCM: agent on the left,
    customer on the right, 1 s between turns."""
    gap = np.zeros(SAMPLE_RATE, np.float32)
    left: list[np.ndarray] = [gap[: SAMPLE_RATE // 2]]
    right: list[np.ndarray] = [gap[: SAMPLE_RATE // 2]]
    for agent_clip, customer_clip in zip(agent, customer, strict=True):
        for speaking, silent, clip in (
            (left, right, agent_clip),
            (right, left, customer_clip),
        ):
            audio = _read(clip)
            speaking += [audio, gap]
            silent += [np.zeros_like(audio), gap]
    stereo = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    return (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()


def _mono(clips: list[Path]) -> bytes:
    gap = np.zeros(SAMPLE_RATE, np.float32)
    parts = [gap[: SAMPLE_RATE // 2]]
    for clip in clips:
        parts += [_read(clip), gap]
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


async def stream_live(
    url: str,
    pcm: bytes,
    start: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None],
    before_stop: Callable[[], Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> list[dict[str, Any]]:
    """Stream 16 kHz PCM to /v1/stream at real-time pace (100 ms messages) with a
    real client, calling ``on_event`` as each event arrives; the stream's events."""
    channels = int(start.get("channels", 1))
    chunk = int(SAMPLE_RATE * CHUNK_S) * 2 * channels
    events: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        events.append(event)
        on_event(event)

    async def converse() -> None:
        async with started_stream(url, start, record, headers) as ws:
            began = time.monotonic()
            for index, offset in enumerate(range(0, len(pcm), chunk)):
                await ws.send(pcm[offset : offset + chunk])
                await asyncio.sleep(
                    max(0.0, began + (index + 1) * CHUNK_S - time.monotonic())
                )
            if before_stop is not None:
                await before_stop()
            await ws.send(json.dumps({"type": "stop"}))

    await asyncio.wait_for(converse(), timeout_s)
    return events


def _line(event: dict[str, Any]) -> str:
    """The selector of an utterance's final transcript line with its label."""
    return (
        f'#call-view li.line[data-utterance-id="{event["utterance_id"]}"]'
        f'[data-channel="{event.get("channel", 0)}"]'
        f'[data-label="{event["label"]}"][data-final="true"]'
    )


class Watcher:
    """Checks that each event's trace shows on the page within ``SHOWN_WITHIN_S``."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.tasks: list[asyncio.Task[float]] = []

    def expect(self, selector: str) -> None:
        received = time.monotonic()

        async def shown() -> float:
            try:
                await self.page.wait_for_selector(
                    selector, state="attached", timeout=SHOWN_WITHIN_S * 1000
                )
            except Exception as err:  # Playwright's TimeoutError, with the selector
                raise AssertionError(
                    f"{selector} not on the page within {SHOWN_WITHIN_S} s"
                ) from err
            return time.monotonic() - received

        self.tasks.append(asyncio.create_task(shown()))

    async def delays(self) -> list[float]:
        return list(await asyncio.wait_for(asyncio.gather(*self.tasks), 30))


# -- serving the page ------------------------------------------------------------


def test_page_and_files_are_served(server: ServedDaemon) -> None:
    status, body, headers = server.http("/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "static/dashboard.js" in body
    for name, kind in (
        ("dashboard.js", "text/javascript"),
        ("calls.js", "text/javascript"),
        ("connection.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ):
        status, _, headers = server.http(f"/static/{name}")
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind)
    # Revalidation: the same ETag gets 304 without a body.
    etag = server.http("/static/dashboard.js")[2]["ETag"]
    status, body, _ = server.http("/static/dashboard.js", {"If-None-Match": etag})
    assert (status, body) == (304, "")
    for path in ("/static/missing.js", "/static/../pyproject.toml", "/static/", "/x"):
        assert server.http(path)[0] == 404, path


async def test_page_loads_without_console_errors(server: ServedDaemon) -> None:
    async with open_page(f"http://127.0.0.1:{server.port}/") as (page, errors):
        await page.wait_for_selector('#connection[data-state="live"]')
        assert await page.title() == "streamser dashboard"
        assert await page.is_visible("#no-calls")
        await asyncio.sleep(0.5)
        assert errors == []


# -- a live call -----------------------------------------------------------------


@pytest.mark.data
async def test_live_two_channel_call(
    server: ServedDaemon, emodb_clips: list[Path], tmp_path: Path
) -> None:
    pcm = _two_channel_call(
        _clips(emodb_clips, "N", 1) + _clips(emodb_clips, "F", 1),
        _clips(emodb_clips, "W", 2),
    )
    stream_id = "dashboard-live"
    start = {
        "sample_rate": SAMPLE_RATE,
        "encoding": "pcm_s16le",
        "channels": 2,
        "channel_mode": "separate",
        "stream_id": stream_id,
        "metadata": {"call_id": "call-1042", "channels": ["agent", "customer"]},
    }
    screenshot = tmp_path / "dashboard.png"
    async with watched_page(server.port) as (page, errors, watcher):
        ends: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "stream.start":
                watcher.expect(f'#call-list li.live[data-stream-id="{stream_id}"]')
            elif event["type"] == "utterance.end":
                ends.append(event)
                watcher.expect(_line(event))

        async def before_stop() -> None:
            # The last utterance is out once the trailing silence closed it.
            await page.wait_for_selector(f'#call-list li[data-stream-id="{stream_id}"]')
            await page.click(f'#call-list li[data-stream-id="{stream_id}"] button')
            await asyncio.sleep(1.5)
            await page.locator("body").screenshot(path=screenshot)

        events = await stream_live(server.url, pcm, start, on_event, before_stop)
        delays = await watcher.delays()
        assert len(ends) >= 3, f"expected about 4 utterances, got {len(ends)}"
        assert max(delays) <= SHOWN_WITHIN_S, delays
        # Once ended, the call says so and keeps every utterance, each once.
        await page.wait_for_selector(
            f'#call-list li.ended[data-stream-id="{stream_id}"]'
        )
        lines = await page.locator("#call-view li.line").count()
        assert lines == len(ends)
        # The words' label beside the voice's where they differ, nowhere else.
        for event in ends:
            text = event["modalities"]["text"]
            differs = text is not None and text["label"] != event["label"]
            words = page.locator(f"{_line(event)} .words")
            assert await words.count() == int(differs)
            if differs:
                assert (await words.text_content() or "").startswith(
                    f"voice {event['label']} · words {text['label']}"
                )
        # What the server adds once channels are kept apart and analytics run.
        channels = {e.get("channel", 0) for e in ends}
        if summaries := [e for e in events if e["type"] == "call.summary"]:
            rows = page.locator("#call-view section.summary tbody tr")
            assert await rows.count() == len(summaries[-1]["channels"])
            channels |= {c["channel"] for c in summaries[-1]["channels"]}
        names = await page.locator(
            "#call-view .timeline .channel-name"
        ).all_text_contents()
        assert len(names) == len(channels)
        assert set(names) == {["agent", "customer"][c] for c in channels}
        if any(e.get("arousal") is not None for e in ends):
            assert await page.locator("#call-view polyline.arousal").count() >= 1
        assert events[-1]["type"] == "stream.end"
        assert errors == []
    assert screenshot.stat().st_size > 10000
    if target := os.environ.get("STREAMSER_DASHBOARD_PNG"):
        Path(REPO / target).write_bytes(screenshot.read_bytes())


@pytest.mark.data
async def test_open_row_shows_partial_text(
    emodb_clips: list[Path], tmp_path: Path
) -> None:
    """With ASR on, the open row of a long utterance shows its partial transcript
    (``transcript.partial``) before the utterance ends."""
    from test_partials import long_utterance

    pcm = (long_utterance(emodb_clips) * 32767).astype("<i2").tobytes()
    stream_id = "dashboard-partial"
    start = {
        "sample_rate": SAMPLE_RATE,
        "encoding": "pcm_s16le",
        "stream_id": stream_id,
        "language": "de",
    }
    ends: list[dict[str, Any]] = []
    partials: list[dict[str, Any]] = []
    shown: list[tuple[str, int]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "utterance.end":
            ends.append(event)
        elif event["type"] == "transcript.partial":
            partials.append(event)

    with serve([], tmp_path) as daemon:
        async with open_page(f"http://127.0.0.1:{daemon.port}/") as (page, errors):
            await page.wait_for_selector('#connection[data-state="live"]')

            async def watch() -> None:
                row = f'#call-list li[data-stream-id="{stream_id}"] button'
                await page.click(row, timeout=60000)
                handle = await page.wait_for_function(
                    """() => {
                      const texts = document.querySelectorAll(
                        '#call-view li.line[data-final="false"] .text');
                      for (const t of texts) {
                        if (t.textContent.trim() !== "…") return t.textContent;
                      }
                      return null;
                    }""",
                    timeout=120000,
                )
                shown.append((str(await handle.json_value()), len(ends)))

            watcher = asyncio.create_task(watch())
            await stream_live(daemon.url, pcm, start, on_event, timeout_s=180)
            await asyncio.wait_for(watcher, 30)
            assert errors == []
    assert partials, "no transcript.partial arrived"
    text, ends_before = shown[0]
    assert ends_before == 0, "the partial text showed only after utterance.end"
    assert text.endswith("…")
    assert text.removesuffix("…").strip() in {p["text"] for p in partials}
    assert len(ends) == 1


# -- reconnecting ----------------------------------------------------------------


@pytest.mark.data
async def test_reconnect_shows_no_gap(
    server: ServedDaemon, emodb_clips: list[Path]
) -> None:
    """The page's socket is cut twice mid-call, each time just before an
    ``utterance.end``: first with 1013 and an ``after=`` hint 3 below what the page
    has seen (it must resume there and drop the repeats), then as a plain drop,
    resumed 2 s later while events go by. The page shows every utterance once."""
    urls: list[str] = []
    last_sent: list[int] = []  # per connection, the last event id passed to the page
    closing: set[asyncio.Task[None]] = set()

    async def cut(
        page_side: WebSocketRoute, server_side: WebSocketRoute, code: int, reason: str
    ) -> None:
        await server_side.close()
        await page_side.close(code=code, reason=reason)

    async def route(page_side: WebSocketRoute) -> None:
        number = len(urls)
        urls.append(page_side.url)
        last_sent.append(0)
        if number == 2:
            await asyncio.sleep(2.0)  # events go by meanwhile
        server_side = page_side.connect_to_server()
        state = {"ends": 0, "cut": False}

        def relay(message: str | bytes) -> None:
            if state["cut"]:
                return
            event = json.loads(message)
            if event["type"] == "utterance.end":
                if number < 2 and state["ends"] >= 1:
                    state["cut"] = True
                    if number == 0:
                        code, reason = (
                            1013,
                            f"fell behind; resume with after={last_sent[0] - 3}",
                        )
                    else:
                        code, reason = 1001, "going away"
                    task = asyncio.create_task(
                        cut(page_side, server_side, code, reason)
                    )
                    closing.add(task)
                    return
                state["ends"] += 1
            last_sent[number] = event["id"]
            page_side.send(message)

        server_side.on_message(relay)

    stream_id = "dashboard-reconnect"
    start = _call_start(stream_id, "call-reconnect")
    pcm = _mono(_clips(emodb_clips, "T", 2) + _clips(emodb_clips, "N", 3))
    async with open_page("about:blank") as (page, errors):
        await page.route_web_socket("**/v1/events*", route)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        events = await stream_live(server.url, pcm, start, lambda event: None)
        ends = [e for e in events if e["type"] == "utterance.end"]
        assert len(ends) >= 4, f"expected 5 utterances, got {len(ends)}"
        await page.wait_for_selector(
            f'#call-list li.ended[data-stream-id="{stream_id}"]', timeout=10000
        )
        for event in ends:
            await page.wait_for_selector(_line(event), state="attached", timeout=5000)
        assert await page.locator("#call-view li.line").count() == len(ends)
        assert errors == []
    await asyncio.wait_for(asyncio.gather(*closing), 10)

    def after(url: str) -> int:
        return int(url.split("after=")[1].split("&")[0])

    assert len(urls) == 3, urls
    assert after(urls[0]) == 0
    assert after(urls[1]) == last_sent[0] - 3  # the 1013 hint, repeats dropped
    assert after(urls[2]) == last_sent[1]  # a plain drop: the last id seen


@pytest.mark.data
async def test_page_follows_a_restarted_server(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    """The daemon restarts on the same port (its event ids start again at 1): the
    page notices, replays the new server from after=0 and shows its calls."""
    pcm = _mono(_clips(emodb_clips, "N", 2))
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    first = ServedDaemon.spawn(["--no-asr"], tmp_path / "first")
    second: ServedDaemon | None = None
    try:
        await asyncio.to_thread(first.wait_healthy, 180)
        async with open_page(f"http://127.0.0.1:{first.port}/") as (page, errors):
            await page.wait_for_selector('#connection[data-state="live"]')
            start = {"sample_rate": SAMPLE_RATE, "encoding": "pcm_s16le"}
            await stream_live(
                first.url, pcm, {**start, "stream_id": "before"}, lambda event: None
            )
            await page.wait_for_selector('#call-list li.ended[data-stream-id="before"]')
            await asyncio.to_thread(first.stop)
            await page.wait_for_selector('#connection:not([data-state="live"])')
            second = ServedDaemon.spawn(
                ["--no-asr"], tmp_path / "second", port=first.port
            )
            await asyncio.to_thread(second.wait_healthy, 180)
            await page.wait_for_selector(
                '#connection[data-state="live"]', timeout=30000
            )
            events = await stream_live(
                second.url, pcm, {**start, "stream_id": "after"}, lambda event: None
            )
            assert events[0]["id"] == 1  # a new server: ids start again
            await page.wait_for_selector('#call-list li.ended[data-stream-id="after"]')
            await page.click('#call-list li[data-stream-id="after"] button')
            ends = [e for e in events if e["type"] == "utterance.end"]
            assert ends
            for event in ends:
                await page.wait_for_selector(_line(event), state="attached")
            assert await page.locator("#call-view li.line").count() == len(ends)
            # Only the failed connections while no server ran were reported.
            unexpected = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e]
            assert unexpected == []
    finally:
        first.stop()
        if second is not None:
            second.stop()


# -- alerts ----------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.skipif(
    not hasattr(streamser.events, "CallAlert"), reason="call analytics not present"
)
async def test_alert_is_shown(server: ServedDaemon, emodb_clips: list[Path]) -> None:
    stream_id = "dashboard-alert"
    start = _call_start(stream_id, "call-angry")
    pcm = _mono(_clips(emodb_clips, "W", 6))
    async with watched_page(server.port) as (page, errors, watcher):
        alerts: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "call.alert":
                alerts.append(event)
                watcher.expect(
                    f'#call-list li.alerted[data-stream-id="{stream_id}"] '
                    '[data-role="alert-count"]'
                )
                watcher.expect(f'#call-view li.alert[data-rule="{event["rule"]}"]')

        async def subscribe() -> None:
            # Alerts as subscribers (and so the page) get them.
            query = f"/v1/events?stream_id={stream_id}"
            async with connect(f"{server.url}{query}", max_size=None) as ws:
                async for message in ws:
                    event = json.loads(message)
                    on_event(event)
                    if event["type"] == "stream.end":
                        return

        subscriber = asyncio.create_task(subscribe())
        await asyncio.sleep(0.5)  # subscribed before the stream starts
        await stream_live(server.url, pcm, start, lambda event: None)
        await asyncio.wait_for(subscriber, 30)
        assert alerts, "six anger clips raised no call.alert"
        delays = await watcher.delays()
        assert max(delays) <= SHOWN_WITHIN_S, delays
        shown = await page.locator("#call-view li.alert").all_inner_texts()
        for alert in alerts:
            assert any(alert["message"] in text for text in shown), (alert, shown)
        assert errors == []


# -- tokens ----------------------------------------------------------------------


async def test_token_in_page_url_is_passed_on(tmp_path: Path) -> None:
    token = "dashboard-s3cret"
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{token}\n")
    env = {"STREAMSER_SERVER_TOKEN_FILE": str(token_file)}
    with serve(["--no-asr"], tmp_path, env=env) as secured:
        base = f"http://127.0.0.1:{secured.port}/"
        # The page itself is public (it holds no data); its socket is not.
        assert secured.http("/")[0] == 200
        async with open_page(f"{base}?token={token}#call=x") as (page, errors):
            await page.wait_for_selector('#connection[data-state="live"]')
            assert await page.is_hidden("#notice")
            # after the first load the token is out of the address (history,
            # bookmarks, screenshots), and a reload of the tab still connects
            assert token not in page.url and page.url.endswith("/#call=x")
            await page.reload()
            await page.wait_for_selector('#connection[data-state="live"]')
            assert token not in page.url
            assert errors == []
        for query, wording in (("", "requires a token"), ("?token=wrong", "refused")):
            async with open_page(f"{base}{query}") as (page, errors):
                await page.wait_for_selector('#connection[data-state="unauthorized"]')
                notice = await page.inner_text("#notice")
                assert wording in notice and "401" in notice, notice
                # Only the refused handshake is reported, nothing from the page.
                assert not [e for e in errors if "uncaught" in e], errors
        assert "dashboard-s3cret" not in secured.log()


# -- a call sent by ``streamser send`` ---------------------------------------------


def _dominant(summary: dict[str, Any]) -> str:
    """The label with the most seconds over the summary's channels."""
    seconds: dict[str, float] = {}
    for channel in summary["channels"]:
        for label, value in channel["label_seconds"].items():
            seconds[label] = seconds.get(label, 0.0) + value
    return max(seconds, key=lambda label: seconds[label])


async def test_a_sent_call_shows_its_file_names_and_dominant_label(
    server: ServedDaemon, tmp_path: Path
) -> None:
    from test_call_modes import two_channel_call

    wav = two_channel_call(tmp_path / "call-7.wav")
    screenshot = tmp_path / "sent-call.png"
    async with open_page(f"http://127.0.0.1:{server.port}/") as (page, errors):
        await page.wait_for_selector('#connection[data-state="live"]')
        sent = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "streamser", "send", str(wav), "--jsonl"),
            *("--url", server.url, "--channel-names", "agent,customer"),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(sent.communicate(), 300)
        assert sent.returncode == 0
        events = [json.loads(line) for line in stdout.decode().splitlines()]
        stream_id = events[0]["stream_id"]
        item = f'#call-list li.ended[data-stream-id="{stream_id}"]'
        await page.wait_for_selector(item)
        # named by its file, not by the server's random stream id
        assert await page.inner_text(f"{item} .call-title") == "call-7.wav"
        (summary,) = [e for e in events if e["type"] == "call.summary"]
        badge = await page.inner_text(f'{item} [data-role="emotion"]')
        assert badge == _dominant(summary)
        alerts = [e for e in events if e["type"] == "call.alert"]
        assert any(a["rule"] == "long_silence" for a in alerts)
        count = await page.inner_text(f'{item} [data-role="alert-count"]')
        assert count == f"{len(alerts)} alert{'s' if len(alerts) > 1 else ''}"
        await page.click(f"{item} button")
        names = page.locator("#call-view .timeline .channel-name")
        await names.first.wait_for()
        assert await names.all_text_contents() == ["agent", "customer"]
        ends = [e for e in events if e["type"] == "utterance.end"]
        if any(e.get("arousal") is not None for e in ends):
            scale = await page.locator(
                "#call-view .timeline .scale-label"
            ).all_text_contents()
            assert scale[:3] == ["+1", "0", "−1"]
        await page.locator("body").screenshot(path=screenshot)
        # the badge is the label with the most seconds, not the latest one: 5 s of
        # anger, then 1 s of sadness, reads "anger" (the page's own model)
        badge = await page.evaluate(
            """async () => {
              const { Call } = await import("/static/calls.js");
              const call = new Call("c", "2026-01-01T00:00:00.000Z");
              const end = (id, start, stop, label) => call.apply({
                type: "utterance.end", stream_id: "c", utterance_id: id,
                start, end: stop, label, confidence: 0.9 });
              end(0, 0, 5, "anger");
              end(1, 6, 7, "sadness");
              return [call.dominantLabel(), call.currentLabel];
            }"""
        )
        assert badge == ["anger", "sadness"]
        assert errors == []
    assert screenshot.stat().st_size > 10000
