"""The service lifecycle: build, warm up, serve, reload (SIGHUP), drain, sd_notify.

``Daemon`` is what one process serves with: the warm models in an ``Engine``, the
event hub (in memory, or reading Redis) and the sinks (JSONL, Redis), and the
``StreamServer`` once bound. ``serve`` (the ``streamser serve`` daemon) and
``listen`` (a live source plus ``/v1/events``) drive it here; ``streamser run``
(files, standard input) drives it from ``streamser.run``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from streamser.audio.sources import (
    AudioSource,
    drive,
)
from streamser.config import Config
from streamser.console import metric_lines, provider_line
from streamser.errors import StreamserError
from streamser.events import Envelope, default_origin
from streamser.messages import local_start_message
from streamser.metrics import Metrics
from streamser.pipeline import Engine, StreamSession
from streamser.recognition.cuda import onnxruntime_conflict
from streamser.recognition.recognizer import Recognizer
from streamser.serve import handshake
from streamser.serve.hub import EventHub, Hub
from streamser.serve.redis_hub import RedisHub
from streamser.serve.server import StreamServer
from streamser.serve.systemd import Notifier
from streamser.sinks.jsonl import JsonlSink
from streamser.sinks.redis import RedisSink, where

_LOGGER = logging.getLogger(__name__)

EventSink = Callable[[Envelope], None]
"""Where events go: called once per event, in ``id`` order."""


class Daemon:
    """Warm models wired into an engine, an event hub and the sinks; one per process.

    Use from one event loop. ``build`` loads; ``start_io`` starts the hub and the
    Redis sink (``start_server`` does it too) and binds; ``drain`` ends the streams;
    ``close_io`` flushes the Redis sink; ``close`` releases the executor and files.
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        hub: Hub,
        jsonl: JsonlSink | None,
        redis: RedisSink | None = None,
    ) -> None:
        """Hold built parts; use ``build`` to make them from a ``Config``."""
        self.config = config
        self.engine = engine
        self.hub = hub
        self.jsonl = jsonl
        self.redis = redis
        self.server: StreamServer | None = None
        self._io_started = False

    @classmethod
    def build(cls, config: Config) -> Daemon:
        """Load and warm up every model, then wire the engine, hub and JSONL sink.

        Blocks for as long as the models take to load.

        Raises:
            ModelError: a model is missing or breaks its contract.
            ConfigError: a setting the models need is wrong.
        """
        metrics = Metrics()
        started = time.perf_counter()
        recognizer = _load(config)
        metrics.models_loaded.set(1)
        _LOGGER.info("Models loaded and warm in %.1f s", time.perf_counter() - started)
        engine = Engine(
            recognizer,
            config.pipeline,
            config.vad,
            config.segmenter,
            metrics,
            config.analytics,
        )
        engine.sequencer.origin = config.hub.origin or default_origin(
            config.server.port
        )
        jsonl = None
        if config.output.jsonl:
            jsonl = JsonlSink(Path(config.output.jsonl), metrics, engine.emit)
            engine.add_sink(jsonl)
        redis = None
        if config.sinks.redis.url:
            redis = RedisSink(config.sinks.redis, metrics)
            engine.add_sink(redis)
        hub: Hub = (
            RedisHub(config.hub, metrics, config.sinks.redis)
            if config.hub.backend == "redis"
            else EventHub(config.hub, metrics)
        )
        daemon = cls(config, engine, hub, jsonl, redis)
        daemon.show_models()
        return daemon

    def show_models(self) -> None:
        """Export the models in use as ``streamser_model_info``."""
        metrics = self.engine.metrics
        metrics.model_info.clear()
        for model in self.engine.recognizer.models.all_models:
            info = model.contract
            metrics.model_info.labels(
                info.kind, info.name, info.version, model.sha256[:12]
            ).set(1)

    async def start_server(self) -> StreamServer:
        """Bind ``config.server``'s address and accept connections.

        Raises:
            ConfigError: unreadable token file, certificate or key.
            StreamserError: the address cannot be bound ("Cannot listen on
                127.0.0.1:8765: Address already in use").
        """
        await self.start_io()
        server = StreamServer(self.config.server, self.engine, self.hub)
        try:
            await server.start()
        except OSError as err:
            host, port = self.config.server.host, self.config.server.port
            where = f"[{host}]" if ":" in host else host or "*"
            raise StreamserError(
                f"Cannot listen on {where}:{port}: {_reason(err)}"
            ) from err
        self.server = server
        return server

    async def start_io(self) -> None:
        """Start the hub and the Redis sink's writer (once)."""
        if self._io_started:
            return
        self._io_started = True
        if self.redis is not None:
            await self.redis.start()
        await self.hub.start()

    async def wait_for_redis(self) -> None:
        """With ``sinks.redis.required``, hold readiness until Redis answers.

        ``/healthz`` says 503 meanwhile.

        Raises:
            StreamserError: Redis did not answer within ``startup_timeout_s``.
        """
        if self.redis is None or not self.config.sinks.redis.required:
            return
        options = self.config.sinks.redis
        if self.server is not None:
            self.server.ready = False
        if not self.redis.connected.is_set():
            _LOGGER.info(
                "Waiting up to %.0f s for Redis at %s (sinks.redis.required)",
                options.startup_timeout_s,
                where(options.url),
            )
        if not await self.redis.wait_ready(options.startup_timeout_s):
            raise StreamserError(
                f"Redis at {where(options.url)} did not answer within "
                f"{options.startup_timeout_s:g} s and sinks.redis.required is on"
            )
        if self.server is not None:
            self.server.ready = True

    async def close_io(self) -> None:
        """Stop the hub and flush the Redis sink (up to 5 s)."""
        if self._io_started:
            self._io_started = False
            await self.hub.close()
            if self.redis is not None:
                await self.redis.close()

    async def drain(self) -> None:
        """Finish the server's streams and close it (no-op before ``start_server``)."""
        if self.server is not None:
            await self.server.drain()

    def close(self) -> None:
        """Stop the recognition executor and close the JSONL file."""
        self.engine.close()
        if self.jsonl is not None:
            self.jsonl.close()

    async def reload(
        self, load_config: Callable[[], Config], notifier: Notifier
    ) -> None:
        """SIGHUP: load the new configuration and models, then swap them in.

        The old models keep serving while the new ones load (in a thread) and
        whenever anything about the new ones is wrong; streams are never interrupted.
        """
        engine = self.engine
        _LOGGER.info("SIGHUP: reloading configuration and models")
        notifier.notify("RELOADING=1\nSTATUS=reloading models")
        try:
            config = load_config()
            started = time.perf_counter()
            recognizer = await asyncio.to_thread(_load, config)
            if self.server is not None:
                self.server.reload(config.server)
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
            engine.replace(
                recognizer,
                config.vad,
                config.segmenter,
                config.pipeline,
                config.analytics,
            )
            self.show_models()
            if (config.sinks, config.hub) != (self.config.sinks, self.config.hub):
                _LOGGER.warning(
                    "[sinks.redis], [hub] changed: take effect after a restart"
                )
            engine.metrics.reloads.labels("ok").inc()
            _LOGGER.info(
                "Reloaded in %.1f s; new utterances use %s",
                time.perf_counter() - started,
                ", ".join(
                    f"{m['name']} v{m['version']}" for m in recognizer.model_versions()
                ),
            )
        port = self.server.port if self.server is not None else self.config.server.port
        notifier.notify(f"READY=1\nSTATUS=serving on port {port}")


def _load(config: Config) -> Recognizer:
    """Load the models of ``config`` and run each once, so the first stream is fast."""
    recognizer = Recognizer(config.recognizer_options())
    recognizer.warm_up()
    return recognizer


def describe_models(config: Config) -> list[str]:
    """Load the models of ``config`` (``streamser models``) and describe each.

    Returns:
        Lines of text: name, version, kind, hash, file, labels, front end, metrics,
        the onnxruntime providers it runs on and "load: ok" per emotion model, then
        the Whisper model and its CTranslate2 device.

    Raises:
        StreamserError: a model is missing or breaks its contract.
    """
    recognizer = Recognizer(config.recognizer_options())
    lines = []
    for model in recognizer.models.all_models:
        info = model.contract
        lines.append(
            f"{info.name}  v{info.version}  {info.kind}  sha256 {model.sha256[:12]}"
        )
        lines.append(f"  file: {model.path}")
        lines.append(f"  labels: {', '.join(info.labels)}")
        if info.languages:
            lines.append(f"  languages: {', '.join(info.languages)}")
        elif info.kind == "text":
            lines.append("  languages: any without its own text model")
        if info.encoder:
            lines.append(f"  encoder: {info.encoder}")
        if (front_end := info.front_end) is not None:
            layers = "+".join(map(str, front_end.encoder_layers or ()))
            depth = (
                f", {front_end.whisper} encoder layers {layers} in the graph"
                if layers
                else ""
            )
            level = (
                f", level {front_end.mel_level:g}"
                if front_end.mel_level is not None
                else ""
            )
            lines.append(
                f"  features: {front_end.type}{level}{depth} (dim {front_end.dim})"
            )
        if metrics := model.card.get("metrics", {}):
            lines.extend(metric_lines(metrics))
        lines.append(f"  runs on: {provider_line(model.session.get_providers())}")
        lines.append("  load: ok")
    if (conflict := onnxruntime_conflict()) is not None:
        lines.append(f"note: {conflict}")
    if (asr := recognizer.asr) is not None:
        lines.append(f"{asr.name}  {asr.device}/{asr.compute_type}")
        lines.append(f"  runs on: CTranslate2 {asr.device} ({asr.compute_type})")
        lines.append(f"  folder: {asr.model_path}")
        lines.append(f"  transcription: {'on' if config.asr.enabled else 'off'}")
    return lines


def _reason(err: OSError) -> str:
    """ "Address already in use", without asyncio's "error while attempting..."."""
    if isinstance(err, socket.gaierror) or not err.errno:
        return err.strerror or str(err)
    return os.strerror(err.errno)


async def serve(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """The daemon: load, warm up, serve until SIGTERM or SIGINT, then drain.

    Tells systemd ``STATUS=loading models``, ``READY=1`` once serving, ``WATCHDOG=1``
    from the event loop and ``STOPPING=1`` on the way out. SIGHUP reloads the
    configuration and the models through ``reload`` (ignored when None).

    Args:
        config: the settings.
        reload: reads the configuration again (the same files and flags).

    Raises:
        StreamserError: a model, a setting or the port failed at startup.
    """
    # Handlers first: a signal during the (blocking) model load is handled after it,
    # instead of SIGHUP's default action killing the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    serving: list[Daemon] = []
    reloading: list[asyncio.Task[None]] = []

    def on_hangup() -> None:
        if reload is None or not serving or stop.is_set():
            _LOGGER.warning("SIGHUP ignored: not serving yet, or stopping")
        elif reloading and not reloading[-1].done():
            _LOGGER.warning("SIGHUP ignored: a reload is already running")
        else:
            reloading[:] = [asyncio.create_task(serving[0].reload(reload, notifier))]

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    handshake.check_security(config.server)  # in a second, not after the models
    notifier.status("loading models")
    daemon = Daemon.build(config)
    try:
        await asyncio.sleep(0.05)  # run the handlers of signals that came while loading
        if stop.is_set():
            _LOGGER.info("Stopped before serving")
            return
        server = await daemon.start_server()
        try:
            await daemon.wait_for_redis()
        except StreamserError:
            await daemon.drain()
            raise
        serving.append(daemon)
        _LOGGER.info("Ready")
        notifier.ready(f"serving on port {server.port}")
        watchdog = asyncio.create_task(notifier.watchdog_loop())
        await stop.wait()
        _LOGGER.info("Stopping: draining streams")
        notifier.stopping()
        loop.remove_signal_handler(signal.SIGHUP)
        for task in reloading:
            task.cancel()
        await daemon.drain()
        watchdog.cancel()
    finally:
        await daemon.close_io()
        daemon.close()
    _LOGGER.info("Stopped")


async def listen(
    config: Config, source: AudioSource, language: str | None, sink: EventSink
) -> None:
    """One live stream from ``source`` to ``sink``, also served on ``/v1/events``.

    Runs until the source ends or SIGTERM/SIGINT, then finishes the stream's
    utterances and drains the server.

    Args:
        config: the settings (``server`` says where ``/v1/events`` listens).
        source: the microphone or the demo clip.
        language: ISO 639-1 code of the speech; None to detect it.
        sink: gets every event.

    Raises:
        StreamserError: a model or a setting failed, or the port cannot be bound.
    """
    handshake.check_security(config.server)
    daemon = Daemon.build(config)
    try:
        await daemon.start_server()
        daemon.engine.add_sink(sink)
        session = StreamSession(
            daemon.engine,
            local_start_message(source.name, language, 1, config.analytics.names),
            source.name,
            live=source.live,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _LOGGER.info("Listening... (Ctrl+C to stop)")
        try:
            await drive(source, session, stop)
        finally:
            await daemon.drain()
    finally:
        await daemon.close_io()
        daemon.close()
