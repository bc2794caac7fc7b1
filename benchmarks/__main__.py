"""``python -m benchmarks [--quick] [--no-write] [--parts ...]``: run the suite.

Results go to stdout and into the "## Latest runs" section of BENCHMARKS.md (or
``--output``): each part that ran replaces its own subsection there, headed
``### <title> (`benchmarks/<part>.py`)`` and giving the date, the exact command, the
git commit, the machine (CPU, cores, RAM, GPU) and its load. Parts that did not run
keep their subsection; older runs live in the file's git history. ``--no-write`` (old
name ``--no-append``) writes nothing; a ``--quick`` run writes only to an explicit
``--output``, so its meaningless numbers never replace real ones. What is written
names no absolute path (see ``common.scrub_paths``) and no other process's arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import shlex
import sys
import textwrap
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
    scrub_paths,
)

_LOGGER = logging.getLogger("benchmarks")
PARTS = (
    "asr_context",
    "segmentation",
    "acoustic_cost",
    "text_cost",
    "e5_onnx",
    "text_neutral",
    "stages",
    "latency",
    "capacity",
    "asr_fairness",
    "word_timings",
    "partials",
    "tuning",
    "gpu",
    "redis",
    "uploads",
)
DEFAULT_PARTS = tuple(
    part for part in PARTS if part not in ("gpu", "e5_onnx", "text_neutral")
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
        help="a seconds-long smoke run (tiny subsets; numbers not meaningful); "
        "writes a results file only when --output names one",
    )
    parser.add_argument(
        "--no-write",
        "--no-append",
        dest="no_write",
        action="store_true",
        help="leave the results file alone (stdout and --json only)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(DEFAULT_PARTS),
        help="which parts to run (default: all but gpu, so that a run on a host "
        "without a GPU never replaces the GPU section, and but the model checks "
        "e5_onnx and text_neutral)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="results file whose latest-run subsections are replaced "
        "(default: BENCHMARKS.md; none for --quick)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    return parser


LATEST_RUNS = "## Latest runs"
LATEST_RUNS_INTRO = (
    "Written by `python -m benchmarks`: each part it runs replaces its own subsection "
    "below. Older runs are in the git history of this file."
)
_PART_HEADING = re.compile(r"^### .*\(`benchmarks/(\w+)\.py`\)\s*$")


PROSE_WIDTH = 100
"""Prose lines of the results file are wrapped to this width (tables are not)."""


def wrap_prose(text: str) -> str:
    """``text`` with each prose line longer than ``PROSE_WIDTH`` wrapped (a list
    item with a hanging indent); table rows, headings and fenced code stay whole."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or len(line) <= PROSE_WIDTH or line.startswith(("|", "#", "```")):
            lines.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        lines += textwrap.wrap(
            line,
            PROSE_WIDTH,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def report(
    sections: Sequence[Section],
    command: str,
    started: datetime.datetime,
    seconds: float,
    load: tuple[str, str, list[str]],
    quick: bool,
    commit: str | None = None,
) -> str:
    """One ``### <title> (`benchmarks/<part>.py`)`` subsection per part that ran.

    Each subsection stands alone (date, command, commit, machine, load, then the
    part's tables), so that it can replace that part's previous one. ``seconds`` is
    the run's wall time, used for a section that does not record its own.
    """
    host = host_description()
    load_before, load_after, busy = load
    run = (
        f"- run: {started:%Y-%m-%d %H:%M} UTC"
        + (" (quick smoke run)" if quick else "")
        + f", `{command}`, git commit at start: {commit or git_commit()}"
    )
    details = [
        f"- machine: {host['cpu']}, {host['cores']} cores, {host['ram']} RAM, GPU: "
        f"{host['gpu']}; {host['os']}, Python {host['python']}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}; "
        "other busy programs at start: " + ("; ".join(busy) if busy else "none"),
    ]
    gpu = gpu_memory_used_mb()
    if gpu is not None:
        details.append(f"- GPU memory in use at the end: {gpu:.0f} MiB")
    blocks = []
    for section in sections:
        took = seconds if section.seconds is None else section.seconds
        blocks.append(
            "\n".join(
                [
                    f"### {section.title} (`{section.script}`)",
                    "",
                    f"{run}, {took / 60:.1f} min",
                    *details,
                    "",
                    section.body.strip(),
                ]
            )
        )
    return wrap_prose(scrub_paths("\n\n".join(blocks) + "\n"))


def _blocks(lines: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split lines into the text before the first ``### `` heading and the
    subsections, each keyed by its part (or by its heading when it names none)."""
    intro: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("### ") and not fenced:
            match = _PART_HEADING.match(line)
            blocks.append((match.group(1) if match else line, [line]))
        elif blocks:
            blocks[-1][1].append(line)
        else:
            intro.append(line)
    return intro, blocks


def _trimmed(lines: Sequence[str]) -> list[str]:
    """Lines without leading and trailing blank ones."""
    kept = list(lines)
    while kept and not kept[0].strip():
        kept.pop(0)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def merge_latest_runs(document: str, subsections: str) -> str:
    """``document`` with ``subsections`` (``report``'s text) in its "## Latest runs"
    section: each replaces the subsection of the same part, or is added; the others
    stay; subsections are kept in the order of ``PARTS``. The section is added at
    the end of the document when it has none."""
    lines = document.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == LATEST_RUNS)
    except StopIteration:
        lines = [*_trimmed(lines), "", LATEST_RUNS, "", LATEST_RUNS_INTRO]
        start = len(lines) - 3
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))),
        len(lines),
    )
    intro, old = _blocks(lines[start + 1 : end])
    merged = dict(old)
    merged.update(_blocks(subsections.splitlines())[1])
    order = sorted(
        merged, key=lambda part: PARTS.index(part) if part in PARTS else len(PARTS)
    )
    body = [LATEST_RUNS, ""]
    if _trimmed(intro):
        body += [*_trimmed(intro), ""]
    for part in order:
        body += [*_trimmed(merged[part]), ""]
    after = _trimmed(lines[end:])
    return "\n".join([*lines[:start], *body, *after]).rstrip() + "\n"


def write_latest_runs(path: Path, subsections: str) -> None:
    """Merge ``subsections`` into the results file at ``path`` (created if absent)."""
    document = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else "# streamser benchmarks\n"
    )
    path.write_text(merge_latest_runs(document, subsections), encoding="utf-8")


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
    output = args.output
    if output is None and not args.quick:
        output = REPO / "BENCHMARKS.md"
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
        section.seconds = time.monotonic() - part_clock
        _LOGGER.info("%s took %.0f s", part, section.seconds)
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
    if output is not None and not args.no_write:
        write_latest_runs(output, text)
        _LOGGER.info("latest runs of %s written to %s", ", ".join(args.parts), output)
    if args.json:
        args.json.write_text(
            json.dumps({s.script: s.data for s in sections}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
