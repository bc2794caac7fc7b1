"""The ``streamser`` command: argparse, logging and dispatch (serve, run, listen, ...).

What the commands do lives below: ``daemon`` (build, serve, reload, drain),
``audio.sources`` (files, standard input, microphone, demo clip), ``client``
(``send``) and ``console`` (log handler, event lines).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from streamser import __version__, client, daemon
from streamser.analytics.report import (
    CallRecorder,
    check_report_paths,
    write_reports,
)
from streamser.analytics.rules import parse_channel_names
from streamser.audio.sources import (
    AudioSource,
    MicrophoneSource,
    check_microphone,
    demo_source,
    list_input_devices,
)
from streamser.config import Config, load_config
from streamser.console import CallView, setup_logging
from streamser.errors import StreamserError
from streamser.events import Envelope
from streamser.messages import CHANNEL_MODES
from streamser.run import RunOptions, run_files
from streamser.sinks.jsonl import stdout_sink

_LOGGER = logging.getLogger("streamser")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


# -- argument parsing ---------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", type=Path, help="TOML settings file")
    add("--debug", action="store_true", help="log at DEBUG level")
    add("--log-format", choices=("text", "json"), default="text", help="default: text")
    add("--model-dir", help="folder of emotion-*.onnx graphs (default: bundled)")
    add("--no-asr", action="store_true", help="no transcription (acoustic only)")
    add("--whisper-model", help="faster-whisper model folder or size name")
    add(
        "--inference-device",
        choices=("auto", "cpu", "cuda"),
        help="where models run (default: auto, CUDA when available)",
    )
    add(
        "--vad",
        choices=("webrtc", "silero"),
        help="voice activity detector (default: webrtc)",
    )
    add("--jsonl-log", help="also append every event to this JSONL file")


_COMMAND_HELP: Final = {
    "serve": "run the WebSocket daemon (PROTOCOL.md)",
    "run": "recognise audio files; one stream per file",
    "send": "stream audio files to a running daemon; one stream per file",
    "listen": "microphone to a live terminal view",
    "models": "list the models in use and check they load",
    "config": "print the effective configuration (TOML)",
    "devices": "list audio input devices",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamser", description="Real-time speech emotion recognition."
    )
    parser.add_argument(
        "--version", action="version", version=f"streamser {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = {name: sub.add_parser(name, help=h) for name, h in _COMMAND_HELP.items()}
    for name in ("serve", "run", "listen", "models", "config"):
        _common(command[name])
    serve, run, listen = command["serve"], command["run"], command["listen"]
    serve.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default: 8765; 0 picks one)")
    run.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="WAV, FLAC, OGG or MP3 files; - reads one from standard input",
    )
    run.add_argument("--jsonl", action="store_true", help="print events as JSON lines")
    run.add_argument("--realtime", action="store_true", help="play at real-time pace")
    run.add_argument("--channels", choices=CHANNEL_MODES, help="default downmix")
    _send_arguments(command["send"])
    for reporting in (run, command["send"]):
        reporting.add_argument(
            "--report", type=Path, help="write an HTML call report here"
        )
        reporting.add_argument(
            "--csv", type=Path, help="write one CSV row per utterance here"
        )
    listen.add_argument(
        "--device", help="input device name or index (see 'streamser devices')"
    )
    listen.add_argument("--port", type=int, help="port for /v1/events (default: 8765)")
    listen.add_argument(
        "--demo",
        action="store_true",
        help="play the bundled demo clip (also the fallback without a microphone)",
    )
    for live in (run, listen, command["send"]):  # the commands that open streams
        live.add_argument(
            "--language", help="ISO 639-1 code of the speech (default: detect)"
        )
        live.add_argument(
            "--channel-names",
            type=_channel_names,
            metavar="NAMES",
            help="name the channels, e.g. agent,customer (implies --channels "
            "separate; run and listen: also [analytics] channel_names)",
        )
    return parser


def _channel_names(text: str) -> str:
    """``--channel-names``, checked (argparse reports a bad one as a usage error)."""
    try:
        parse_channel_names(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _send_arguments(send: argparse.ArgumentParser) -> None:
    add = send.add_argument
    add("files", nargs="+", help="WAV, FLAC, OGG or MP3 files; - reads standard input")
    add("--url", default=client.DEFAULT_URL, help="the daemon (default: %(default)s)")
    add("--realtime", action="store_true", help="send at real-time pace")
    add(
        "--channels",
        choices=client.CHANNEL_MODES,
        help="mix channels to mono, or keep each apart (default: downmix)",
    )
    add("--jsonl", action="store_true", help="print events as JSON lines")
    add("--token-file", help="file holding the bearer token (first token line)")
    add("--debug", action="store_true", help="log at DEBUG level")


def _config_from(args: argparse.Namespace) -> Config:
    flag = vars(args).get  # --host and --port belong to some commands only
    device = args.inference_device
    asr = False if args.no_asr else None  # None: as the config file says
    overrides: dict[str, dict[str, Any]] = {
        "server": {"host": flag("host"), "port": flag("port")},
        "emotion": {"model_dir": args.model_dir, "device": device},
        "asr": {"model": args.whisper_model, "device": device, "enabled": asr},
        "vad": {"kind": args.vad},
        "output": {"jsonl": args.jsonl_log},
        "analytics": {"channel_names": flag("channel_names")},
    }
    return load_config(args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamser`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    flag = vars(args).get  # devices has neither --debug nor --log-format
    setup_logging(flag("debug", False), flag("log_format", "text"))
    try:
        if args.command in ("devices", "send"):  # neither loads a configuration
            return _devices() if args.command == "devices" else _send(args)
        return _COMMANDS[args.command](_config_from(args), args)
    except StreamserError as err:
        _LOGGER.error("%s", err)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output left (| head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


# -- commands -----------------------------------------------------------------------


def _devices() -> int:
    for line in list_input_devices():
        print(line)
    return EXIT_OK


def _config(config: Config, args: argparse.Namespace) -> int:
    sys.stdout.write(config.to_toml())
    return EXIT_OK


def _models(config: Config, args: argparse.Namespace) -> int:
    print("\n".join(daemon.describe_models(config)))
    return EXIT_OK


def _serve(config: Config, args: argparse.Namespace) -> int:
    asyncio.run(daemon.serve(config, lambda: _config_from(args)))
    return EXIT_OK


def _channel_mode(chosen: str | None, names: Sequence[str]) -> str:
    """``--channels``, or "separate" when the channels are named."""
    return chosen or ("separate" if names else "downmix")


def _run(config: Config, args: argparse.Namespace) -> int:
    sink = stdout_sink() if args.jsonl else CallView()
    names = config.analytics.names
    options = RunOptions(
        args.language,
        args.realtime,
        _channel_mode(args.channels, names),
        args.report,
        args.csv,
        names,
    )
    ok = asyncio.run(run_files(config, args.files, options, sink))
    return EXIT_OK if ok else EXIT_FAILURE


def _listen(config: Config, args: argparse.Namespace) -> int:
    source: AudioSource = demo_source() if args.demo else MicrophoneSource(args.device)
    if not args.demo and args.device is not None:
        check_microphone(args.device)  # a device asked for by name: fail if absent
    elif not args.demo:
        try:
            check_microphone(args.device)
        except StreamserError as err:
            _LOGGER.warning("%s; playing the bundled demo clip instead", err)
            source = demo_source()
    asyncio.run(daemon.listen(config, source, args.language, CallView()))
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    token = client.read_token(args.token_file) if args.token_file else None
    names = parse_channel_names(args.channel_names or "")
    options = client.SendOptions(
        args.url,
        args.realtime,
        _channel_mode(args.channels, names),
        args.language,
        token,
        names,
    )
    check_report_paths(args.report, args.csv)
    recorder = CallRecorder()
    view = CallView()

    def show(name: str, text: str, envelope: Envelope | None) -> None:
        if envelope is not None:
            recorder(envelope)
        if args.jsonl:
            print(text, flush=True)
        elif envelope is not None:
            view(envelope, name)

    ok = asyncio.run(client.send_files(args.files, options, show))
    write_reports(list(recorder.calls.values()), args.csv, args.report)
    return EXIT_OK if ok else EXIT_FAILURE


_COMMANDS: Final[dict[str, Callable[[Config, argparse.Namespace], int]]] = {
    "config": _config,
    "models": _models,
    "serve": _serve,
    "run": _run,
    "listen": _listen,
}

if __name__ == "__main__":
    sys.exit(main())
