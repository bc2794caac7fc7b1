"""The user cache: where streamser builds what it assembles on first use (the default
Whisper model, the multilingual-e5-small graph), and how it builds there safely."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


def cache_dir() -> Path:
    """The folder for streamser's caches.

    ``STREAMSER_CACHE`` wins, then systemd's ``CACHE_DIRECTORY``, then
    ``$XDG_CACHE_HOME/streamser`` or ``~/.cache/streamser``.
    """
    for var in ("STREAMSER_CACHE", "CACHE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "streamser"


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def build_into(
    folder: Path, write: Callable[[Path], Mapping[str, object]], marker: str
) -> None:
    """Build ``folder`` so that no reader ever sees it half written: ``write`` fills
    a temporary folder beside it and returns what the marker file ``marker`` records
    (written last); the temporary folder then replaces ``folder``.

    Raises:
        OSError: the cache cannot be written.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        facts = write(tmp)
        (tmp / marker).write_text(json.dumps(dict(facts)))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
