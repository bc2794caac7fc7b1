"""The ``streamser`` command: serve, run, listen, models, config, devices."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from streamser.audio import SAMPLE_RATE_HZ
from streamser.config import Config, load_config
from streamser.errors import StreamserError

_LOGGER = logging.getLogger("streamser")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _version() -> str:
    try:
        return metadata.version("streamser")
    except metadata.PackageNotFoundError:
        return "unknown"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(debug: bool, log_format: str) -> None:
    """Configure logging on stderr: text (no timestamps under systemd) or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("websockets", "faster_whisper", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- argument parsing ---------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="default: text"
    )
    parser.add_argument(
        "--model-dir", help="folder of emotion-*.onnx graphs (default: bundled)"
    )
    parser.add_argument(
        "--no-asr", action="store_true", help="no transcription (acoustic only)"
    )
    parser.add_argument(
        "--whisper-model", help="faster-whisper model folder or size name"
    )
    parser.add_argument(
        "--language", help="ISO 639-1 code of the speech (default: detect)"
    )
    parser.add_argument(
        "--inference-device",
        choices=("auto", "cpu", "cuda"),
        help="where models run (default: auto, CUDA when available)",
    )
    parser.add_argument(
        "--vad",
        choices=("webrtc", "silero"),
        help="voice activity detector (default: webrtc)",
    )
    parser.add_argument(
        "--jsonl-log", help="also append every event to this JSONL file"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamser", description="Real-time speech emotion recognition."
    )
    parser.add_argument(
        "--version", action="version", version=f"streamser {_version()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the WebSocket daemon (PROTOCOL.md)")
    _common(serve)
    serve.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default: 8765; 0 picks one)")
    run = sub.add_parser("run", help="recognise audio files; one stream per file")
    _common(run)
    run.add_argument("files", nargs="+", type=Path, help="WAV, FLAC or OGG files")
    run.add_argument("--jsonl", action="store_true", help="print events as JSON lines")
    run.add_argument(
        "--realtime", action="store_true", help="play files at real-time pace"
    )
    listen = sub.add_parser("listen", help="microphone to a live terminal view")
    _common(listen)
    listen.add_argument(
        "--device",
        help="microphone: input device name or index (see 'streamser devices')",
    )
    listen.add_argument("--port", type=int, help="port for /v1/events (default: 8765)")
    listen.add_argument(
        "--demo",
        action="store_true",
        help="play the bundled demo clip (also the fallback when there is no microphone)",
    )
    models = sub.add_parser("models", help="list the models in use and check they load")
    _common(models)
    config = sub.add_parser("config", help="print the effective configuration (TOML)")
    _common(config)
    sub.add_parser("devices", help="list audio input devices")
    return parser


def _config_from(args: argparse.Namespace) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "server": {
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
        },
        "emotion": {"model_dir": args.model_dir, "device": args.inference_device},
        "asr": {
            "model": args.whisper_model,
            "device": args.inference_device,
            "enabled": False if args.no_asr else None,
        },
        "vad": {"kind": args.vad},
        "output": {"jsonl": args.jsonl_log},
    }
    return load_config(args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamser`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "devices":
        setup_logging(False, "text")
        return _devices()
    setup_logging(args.debug, args.log_format)
    try:
        config = _config_from(args)
        if args.command == "config":
            sys.stdout.write(config.to_toml())
            return EXIT_OK
        if args.command == "models":
            return _models(config)
        if args.command == "serve":
            return asyncio.run(_serve(config, lambda: _config_from(args)))
        if args.command == "run":
            return asyncio.run(
                _run(config, args.files, args.jsonl, args.realtime, args.language)
            )
        if args.command == "listen":
            return asyncio.run(_listen(config, args))
    except StreamserError as err:
        _LOGGER.error("%s", err)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


# -- commands -----------------------------------------------------------------------


def _devices() -> int:
    from streamser.audio.sources import list_input_devices

    try:
        for line in list_input_devices():
            print(line)
    except StreamserError as err:
        _LOGGER.error("%s", err)
        return EXIT_FAILURE
    return EXIT_OK


def _models(config: Config) -> int:
    from streamser.recognition.recognizer import Recognizer

    recognizer = Recognizer(config.recognizer_options())
    for model in recognizer.models.all_models:
        info = model.info
        metrics = info.card.get("metrics", {})
        print(f"{info.name}  v{info.version}  {info.kind}  sha256 {info.sha256[:12]}")
        print(f"  file: {model.path}")
        print(f"  labels: {', '.join(info.labels)}")
        if info.languages:
            print(f"  languages: {', '.join(info.languages)}")
        if info.front_end is not None:
            layers = info.front_end.encoder_layers
            depth = (
                f", {info.front_end.whisper} encoder layers {'+'.join(map(str, layers))}"
                " in the graph"
                if layers
                else ""
            )
            print(
                f"  features: {info.front_end.type}{depth} (dim {info.front_end.dim})"
            )
        if metrics:
            print(f"  metrics: {json.dumps(metrics, ensure_ascii=False)[:400]}")
        print("  load: ok")
    if recognizer.asr is not None:
        print(
            f"{recognizer.asr.name}  {recognizer.asr.device}/{recognizer.asr.compute_type}"
        )
        print(f"  folder: {recognizer.asr.model_path}")
        print(f"  transcription: {'on' if config.asr.enabled else 'off'}")
    return EXIT_OK


def _build(config: Config) -> tuple[Any, Any, Any]:
    """Load models and wire the engine and hub (shared by serve and listen)."""
    from streamser.metrics import Metrics
    from streamser.pipeline import Engine
    from streamser.recognition.recognizer import Recognizer
    from streamser.serve.hub import EventHub
    from streamser.sinks.jsonl import JsonlSink

    metrics = Metrics()
    started = time.perf_counter()
    recognizer = Recognizer(config.recognizer_options())
    recognizer.warm_up()
    metrics.models_loaded.set(1)
    _LOGGER.info("Models loaded and warm in %.1f s", time.perf_counter() - started)
    engine = Engine(recognizer, config.pipeline, config.vad, config.segmenter, metrics)
    if config.output.jsonl:
        engine.sinks.append(JsonlSink(Path(config.output.jsonl), metrics, engine.emit))
    hub = EventHub(config.hub, metrics)
    return engine, hub, metrics


async def _serve(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads via ``reload``."""
    from streamser.serve.server import StreamServer
    from streamser.serve.systemd import Notifier

    # Handlers first: a signal during the (blocking) model load is handled after it,
    # instead of SIGHUP's default action killing the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[StreamServer] = []
    reloading: list[asyncio.Task[None]] = []

    def on_hangup() -> None:
        if reload is None or not servers or stop.is_set():
            _LOGGER.warning("SIGHUP ignored: not serving yet, or stopping")
        elif reloading and not reloading[-1].done():
            _LOGGER.warning("SIGHUP ignored: a reload is already running")
        else:
            task = asyncio.create_task(_reload(reload, servers[0], notifier))
            reloading[:] = [task]

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    notifier = Notifier()
    notifier.status("loading models")
    engine, hub, metrics = _build(config)
    server = StreamServer(config.server, engine, hub)
    _show_models(engine.recognizer, metrics)
    await asyncio.sleep(0.05)  # run the handlers of signals that came while loading
    if stop.is_set():
        _LOGGER.info("Stopped before serving")
        engine.close()
        return EXIT_OK
    servers.append(server)
    try:
        await server.start()
    except OSError as err:
        _LOGGER.error(
            "Cannot listen on %s:%d: %s",
            config.server.host,
            config.server.port,
            err.strerror,
        )
        return EXIT_FAILURE
    _LOGGER.info("Ready")
    notifier.ready(f"serving on port {server.port}")
    watchdog = asyncio.create_task(notifier.watchdog_loop())
    await stop.wait()
    _LOGGER.info("Stopping: draining streams")
    notifier.stopping()
    loop.remove_signal_handler(signal.SIGHUP)
    for task in reloading:
        task.cancel()
    await server.drain()
    watchdog.cancel()
    engine.close()
    for sink in engine.sinks:
        if hasattr(sink, "close"):
            sink.close()
    _LOGGER.info("Stopped")
    return EXIT_OK


def _show_models(recognizer: Any, metrics: Any) -> None:
    """Export the models in use as ``streamser_model_info``."""
    metrics.model_info.clear()
    for model in recognizer.models.all_models:
        info = model.info
        metrics.model_info.labels(
            info.kind, info.name, info.version, info.sha256[:12]
        ).set(1)


async def _reload(reload: Callable[[], Config], server: Any, notifier: Any) -> None:
    """SIGHUP: load the new configuration and models, then swap them in.

    The old models keep serving while the new ones load (in a thread) and whenever
    anything about the new ones is wrong; streams are never interrupted.
    """
    from streamser.recognition.recognizer import Recognizer

    engine = server.engine
    _LOGGER.info("SIGHUP: reloading configuration and models")
    notifier.notify("RELOADING=1\nSTATUS=reloading models")
    try:
        config = reload()
        started = time.perf_counter()

        def load() -> Any:
            recognizer = Recognizer(config.recognizer_options())
            recognizer.warm_up()
            return recognizer

        recognizer = await asyncio.to_thread(load)
        server.reload(config.server)
    except StreamserError as err:
        engine.metrics.reloads.labels("failed").inc()
        _LOGGER.error("Reload rejected, still serving the old models: %s", err)
    except Exception as err:  # anything a broken model may raise: keep serving
        engine.metrics.reloads.labels("failed").inc()
        _LOGGER.error(
            "Reload rejected, still serving the old models: %s: %s",
            type(err).__name__,
            err,
        )
    else:
        engine.replace(recognizer, config.vad, config.segmenter, config.pipeline)
        _show_models(recognizer, engine.metrics)
        engine.metrics.reloads.labels("ok").inc()
        _LOGGER.info(
            "Reloaded in %.1f s; new utterances use %s",
            time.perf_counter() - started,
            ", ".join(
                f"{m['name']} v{m['version']}" for m in recognizer.model_versions()
            ),
        )
    notifier.notify(f"READY=1\nSTATUS=serving on port {server.port}")


def _human_line(envelope: Any) -> str | None:
    body = envelope.body
    if body.TYPE != "utterance.end":
        if body.TYPE == "error":
            return f"{envelope.stream_id}  error {body.code}: {body.message}"
        return None
    bar = "#" * round(body.confidence * 20)
    text = f'  "{body.transcript}"' if body.transcript else ""
    return (
        f"{envelope.stream_id}  {body.start:7.2f}-{body.end:7.2f}s  "
        f"{body.label:<10} {body.confidence:5.2f} {bar:<20}{text}"
    )


async def _run(
    config: Config, files: list[Path], jsonl: bool, realtime: bool, language: str | None
) -> int:
    from streamser.audio.decode import read_audio_file
    from streamser.messages import StartMessage
    from streamser.pipeline import StreamSession
    from streamser.sinks.jsonl import stdout_sink

    audios = {}
    failed = False
    for path in files:
        try:
            audios[path] = read_audio_file(path)
        except StreamserError as err:
            _LOGGER.error("%s", err)
            failed = True
    if not audios:
        return EXIT_FAILURE
    engine, _, _ = _build(config)
    if jsonl:
        engine.sinks.append(stdout_sink())
    else:

        def show(envelope: Any) -> None:
            line = _human_line(envelope)
            if line:
                print(line, flush=True)

        engine.sinks.append(show)

    async def play(path: Path, audio: Any) -> None:
        start = StartMessage(
            sample_rate=SAMPLE_RATE_HZ,
            encoding="pcm_f32le",
            language=language,
            stream_id=path.name,
        )
        session = StreamSession(engine, start, path.name)
        session.open()
        chunk = 1600  # 100 ms
        began = time.monotonic()
        for offset in range(0, audio.shape[0], chunk):
            session.feed_audio(audio[offset : offset + chunk])
            if realtime:
                due = began + (offset + chunk) / SAMPLE_RATE_HZ
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            else:
                await session.wait_for_room()
                await asyncio.sleep(0)
        await session.close()

    try:
        await asyncio.gather(*(play(p, a) for p, a in audios.items()))
    finally:
        engine.close()
    return EXIT_FAILURE if failed else EXIT_OK


async def _listen(config: Config, args: argparse.Namespace) -> int:
    from streamser.audio.sources import demo_clip, microphone_chunks
    from streamser.messages import StartMessage
    from streamser.pipeline import StreamSession
    from streamser.serve.server import StreamServer

    demo = args.demo
    if not demo:
        from streamser.audio.sources import check_microphone

        try:
            check_microphone(args.device)
        except StreamserError as err:
            _LOGGER.warning("%s; playing the bundled demo clip instead", err)
            demo = True
    engine, hub, _ = _build(config)
    server = StreamServer(config.server, engine, hub)
    with contextlib.suppress(OSError):
        await server.start()

    def show(envelope: Any) -> None:
        line = _human_line(envelope)
        if line:
            print(line, flush=True)

    engine.sinks.append(show)
    start = StartMessage(
        sample_rate=SAMPLE_RATE_HZ, encoding="pcm_f32le", language=args.language
    )
    session = StreamSession(engine, start, "demo" if demo else "microphone")
    session.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("Listening... (Ctrl+C to stop)", file=sys.stderr)
    try:
        if demo:
            audio = demo_clip()
            for offset in range(0, audio.shape[0], 1600):
                if stop.is_set():
                    break
                session.feed_audio(audio[offset : offset + 1600])
                await asyncio.sleep(0.1)
        else:
            async for chunk in microphone_chunks(args.device, stop):
                session.feed_audio(chunk)
    finally:
        await session.close()
        await server.drain()
        engine.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
