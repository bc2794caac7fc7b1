#!/usr/bin/env python3
"""Write ``deploy/systemd/streamser@.service`` from ``systemd/streamser.service``.

The unit of one daemon per port is the single unit with the lines in ``CHANGES``
replaced: the port from the instance name (``%i``), Redis before the daemon, more time
to start (Redis must answer before READY=1), no audio group, log directory or GPU note.
Edit ``systemd/streamser.service`` (or ``CHANGES``), then run

    python3 deploy/systemd/instance_unit.py           # rewrite streamser@.service
    python3 deploy/systemd/instance_unit.py --check   # exit 1 if it is out of date

``tests/test_operations.py`` runs ``--check``. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SINGLE = REPO / "systemd" / "streamser.service"
INSTANCE = REPO / "deploy" / "systemd" / "streamser@.service"

CHANGES: dict[str, list[str]] = {
    '# streamser as a systemd service (see README: "Running under systemd").': [
        "# One streamser daemon per port: "
        "`systemctl enable --now streamser@8801 streamser@8802`",
        "# (deploy/README.md). The same sandbox as systemd/streamser.service; "
        "configuration in",
        "# /etc/streamser/streamser.toml (deploy/streamser.toml), "
        "the port from the instance.",
    ],
    "Description=streamser speech emotion recognition daemon": [
        "Description=streamser speech emotion recognition daemon on port %i"
    ],
    "After=network.target": [
        "After=network-online.target redis-server.service",
        "Wants=network-online.target",
    ],
    "ExecStart=/opt/streamser/bin/streamser serve "
    "--config /etc/streamser/streamser.toml": [
        "ExecStart=/opt/streamser/bin/streamser serve "
        "--config /etc/streamser/streamser.toml --port %i"
    ],
    "# Models load and warm up before READY=1; allow for a slow disk.": [
        "# Models load and warm up, then (sinks.redis.required) Redis must answer "
        "before",
        "# READY=1: allow for both.",
    ],
    "TimeoutStartSec=300": ["TimeoutStartSec=360"],
    "SupplementaryGroups=audio": [],
    "LogsDirectory=streamser": [],
    "# GPU hosts: a drop-in with PrivateDevices=no lets CUDA reach /dev/nvidia*.": [],
}
"""A line of the single unit -> the lines standing for it in the instance unit."""


def instance_unit(single: str) -> str:
    """The instance unit made from the text of the single unit.

    Raises:
        ValueError: a line ``CHANGES`` replaces is not in the single unit.
    """
    lines = single.splitlines()
    missing = [line for line in CHANGES if line not in lines]
    if missing:
        raise ValueError(f"{SINGLE.name} no longer has the lines {missing}")
    out = [new for line in lines for new in CHANGES.get(line, [line])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the instance unit, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is out of date"
    )
    args = parser.parse_args(argv)
    try:
        wanted = instance_unit(SINGLE.read_text("utf-8"))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if INSTANCE.read_text("utf-8") != wanted:
            print(
                f"{INSTANCE.relative_to(REPO)} is out of date: "
                "run python3 deploy/systemd/instance_unit.py",
                file=sys.stderr,
            )
            return 1
        return 0
    INSTANCE.write_text(wanted, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
