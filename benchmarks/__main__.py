"""``python -m benchmarks [--quick] [--no-append] [--parts ...]``: run the suite.

Results go to stdout and, unless ``--no-append``, to the end of BENCHMARKS.md with the
exact command, git commit, date, host (CPU, cores, RAM, GPU) and the machine's load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .common import (
    REPO,
    Section,
    busy_processes,
    git_commit,
    gpu_memory_used_mb,
    host_description,
    load_average,
)

_LOGGER = logging.getLogger("benchmarks")
PARTS = (
    "asr_context",
    "segmentation",
    "acoustic_cost",
    "stages",
    "latency",
    "capacity",
    "tuning",
)


def _runner(part: str) -> Callable[[bool], Section]:
    from importlib import import_module

    module = import_module(f"benchmarks.{part}")
    return module.run  # type: ignore[no-any-return]


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="streamser's benchmark suite"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long smoke run (tiny subsets; numbers not meaningful)",
    )
    parser.add_argument(
        "--no-append", action="store_true", help="do not append to BENCHMARKS.md"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="which parts to run (default: all)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPO / "BENCHMARKS.md", help="results file"
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    return parser


def report(
    sections: Sequence[Section],
    command: str,
    started: datetime.datetime,
    seconds: float,
    load: tuple[str, str, list[str]],
    quick: bool,
    commit: str | None = None,
) -> str:
    """The markdown block appended to BENCHMARKS.md."""
    host = host_description()
    load_before, load_after, busy = load
    lines = [
        f"## Run {started:%Y-%m-%d %H:%M} UTC{' (quick smoke run)' if quick else ''}",
        "",
        f"- command: `{command}`",
        f"- git commit at start: {commit or git_commit()}",
        f"- host: {host['cpu']}, {host['cores']} cores, {host['ram']} RAM, GPU: "
        f"{host['gpu']}; {host['os']}, Python {host['python']}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}",
        "- other busy processes at start: "
        + ("; ".join(f"`{b}`" for b in busy) if busy else "none"),
        f"- wall time: {seconds / 60:.1f} min",
    ]
    gpu = gpu_memory_used_mb()
    if gpu is not None:
        lines.append(f"- GPU memory in use at the end: {gpu:.0f} MiB")
    for section in sections:
        lines += ["", f"### {section.title} (`{section.script}`)", "", section.body]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("faster_whisper", "streamser", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command = "python -m benchmarks " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    started = datetime.datetime.now(datetime.UTC)
    load_before, busy, commit = load_average(), busy_processes(), git_commit()
    clock = time.monotonic()
    sections = []
    for part in args.parts:
        _LOGGER.info("running %s", part)
        part_clock = time.monotonic()
        try:
            section = _runner(part)(args.quick)
        except FileNotFoundError as err:
            print(f"benchmarks: {err}", file=sys.stderr)
            return 2
        _LOGGER.info("%s took %.0f s", part, time.monotonic() - part_clock)
        sections.append(section)
        print(f"\n### {section.title}\n\n{section.body}\n", flush=True)
    text = report(
        sections,
        command.strip(),
        started,
        time.monotonic() - clock,
        (load_before, load_average(), busy),
        args.quick,
        commit,
    )
    if not args.no_append:
        with args.output.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)
        _LOGGER.info("appended to %s", args.output)
    if args.json:
        args.json.write_text(
            json.dumps({s.script: s.data for s in sections}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
