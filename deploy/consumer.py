#!/usr/bin/env python3
"""Store streamser's ``utterance.end`` and ``call.summary`` events in SQLite.

A Redis consumer group reads the stream every daemon writes (``[sinks.redis]``);
each batch is written to the database in one transaction, then acknowledged
(``XACK``), so an entry is stored at least once even if this process dies between
the two, and a restart first finishes the entries it had read but not acknowledged.
Rows are unique per ``(origin, id)``: the copy of an event the sink wrote twice is
ignored. Run several consumers with different ``--consumer`` names to share the work.

    python3 deploy/consumer.py --redis-url redis://127.0.0.1:6379 --db calls.sqlite

Needs only the standard library and redis-py (``pip install redis``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sqlite3
import sys
from typing import Any

import redis

_LOGGER = logging.getLogger("streamser-consumer")

SCHEMA = """
CREATE TABLE IF NOT EXISTS utterances (
    origin TEXT NOT NULL,          -- the daemon that recognised it
    event_id INTEGER NOT NULL,     -- the event's id on that daemon
    entry_id TEXT NOT NULL,        -- the Redis stream entry it came from
    stream_id TEXT NOT NULL,       -- the call
    time TEXT NOT NULL,            -- when the daemon emitted it (RFC 3339, UTC)
    utterance_id INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    transcript TEXT,
    language TEXT,
    event TEXT NOT NULL,           -- the whole event as JSON
    PRIMARY KEY (origin, event_id)
);
CREATE INDEX IF NOT EXISTS utterances_by_call ON utterances (stream_id, start_s);
CREATE TABLE IF NOT EXISTS call_summaries (
    origin TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    entry_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    time TEXT NOT NULL,
    event TEXT NOT NULL,           -- the whole event as JSON
    PRIMARY KEY (origin, event_id)
);
"""


def store(db: sqlite3.Connection, entry_id: str, event: dict[str, Any]) -> bool:
    """Insert one event if it is one we keep; whether it was."""
    common = (
        event["origin"],
        event["id"],
        entry_id,
        event["stream_id"],
        event["time"],
    )
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    if event["type"] == "utterance.end":
        db.execute(
            "INSERT OR IGNORE INTO utterances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *common,
                event["utterance_id"],
                event["start"],
                event["end"],
                event["label"],
                event["confidence"],
                event.get("transcript"),
                event.get("language"),
                text,
            ),
        )
        return True
    if event["type"] == "call.summary":
        db.execute(
            "INSERT OR IGNORE INTO call_summaries VALUES (?,?,?,?,?,?)",
            (*common, text),
        )
        return True
    return False


def consume(
    client: redis.Redis,
    db: sqlite3.Connection,
    stream: str,
    group: str,
    consumer: str,
    *,
    once: bool = False,
    block_ms: int = 5000,
    batch: int = 200,
) -> int:
    """Read, store and acknowledge until stopped (or, with ``once``, until idle).

    Returns:
        How many events were stored.
    """
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
        _LOGGER.info("Created consumer group %s on %s", group, stream)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise
    stored = 0
    pending = True  # first the entries this consumer read but did not acknowledge
    while not STOP:
        reply = client.xreadgroup(
            group,
            consumer,
            {stream: "0" if pending else ">"},
            count=batch,
            block=None if pending or once else block_ms,
        )
        entries = reply[0][1] if reply else []
        if not entries:
            if pending:
                pending = False
                continue
            if once:
                break
            continue
        with db:  # one transaction per batch, committed before XACK
            for entry_id, fields in entries:
                try:
                    event = json.loads(fields["event"])
                    stored += store(db, entry_id, event)
                except (KeyError, TypeError, ValueError) as err:
                    _LOGGER.warning("Skipping malformed entry %s: %s", entry_id, err)
        client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    return stored


STOP = False


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--stream", default="streamser:events")
    parser.add_argument("--group", default="sqlite")
    parser.add_argument("--consumer", default=socket.gethostname())
    parser.add_argument("--db", default="streamser-calls.sqlite")
    parser.add_argument(
        "--once", action="store_true", help="exit when no entries are left"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )

    def stop(*_: object) -> None:
        global STOP
        STOP = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = redis.Redis.from_url(
        args.redis_url, decode_responses=True, socket_timeout=30
    )
    db = sqlite3.connect(args.db)
    db.executescript(SCHEMA)
    try:
        stored = consume(
            client, db, args.stream, args.group, args.consumer, once=args.once
        )
    except redis.ConnectionError as err:
        _LOGGER.error("Redis at %s unreachable: %s", args.redis_url, err)
        return 1
    finally:
        db.close()
    _LOGGER.info("Stopped; %d event(s) stored", stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
