"""Whisper's encoder cut after its first layers, for the acoustic emotion model.

Emotion lives in the middle of Whisper's encoder more than at its top (measured:
pooled states after layer 3 of 6 of Whisper base beat the final states by more
than 10 points UA on EMO-DB, speaker-independent). CTranslate2 only returns the final
states, so this module rewrites the model's ``model.bin`` in memory without the
encoder layers past ``layers`` (and without all but one decoder layer and the decoder's
embeddings, which CTranslate2 requires but the encoder never runs: they become small
placeholders) and loads that. Its output is the encoder's
final layer norm applied to the state after ``layers`` layers.
"""

from __future__ import annotations

import logging
import mmap
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .errors import ModelError

_LOGGER = logging.getLogger(__name__)

SUPPORTED_BINARY_VERSIONS: Final = (5, 6)
"""CTranslate2 model.bin layouts this parser reads (4.x writes version 6)."""
_SIDE_FILES: Final = (
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
    "vocabulary.json",
)
_DECODER_EMBEDDINGS: Final = "decoder/embeddings/weight"
"""Required by CTranslate2 but never used by ``encode``: kept as a (vocabulary, 1)
placeholder of zeros, which saves 50 MB per cut model for Whisper base."""


def _layer(name: str, stack: str) -> int | None:
    """The layer index of variable ``name`` in ``stack`` ("encoder" or "decoder")."""
    parts = name.split("/")
    if len(parts) > 2 and parts[0] == stack and parts[1].startswith("layer_"):
        index = parts[1].removeprefix("layer_")
        if index.isdigit():
            return int(index)
    return None


def _placeholder(
    name_record: memoryview, rows: int, dtype: int, itemsize: int
) -> bytes:
    """A variable record: ``name_record`` (its name), then a (rows, 1) zero array."""
    return b"".join(
        [
            bytes(name_record),
            struct.pack("<B2IBI", 2, rows, 1, dtype, rows * itemsize),
            bytes(rows * itemsize),
        ]
    )


def truncated_model_bin(data: bytes | memoryview, layers: int) -> bytes:
    """``model.bin`` bytes without encoder layers >= ``layers`` and decoder layers >= 1,
    the decoder embeddings replaced by a placeholder (the encoder never reads them).

    Raises:
        ModelError: the bytes are not a CTranslate2 Whisper model this parser reads,
            or it has fewer than ``layers`` encoder layers.
    """
    view = memoryview(data)
    try:
        return _truncate(view, layers)
    finally:
        view.release()  # so that a memory map behind ``data`` can be closed


def _truncate(view: memoryview, layers: int) -> bytes:
    position = 0

    def take(size: int) -> memoryview:
        nonlocal position
        if position + size > len(view):
            raise ModelError("model.bin is truncated")
        chunk = view[position : position + size]
        position += size
        return chunk

    def string() -> str:
        (length,) = struct.unpack("<H", take(2))
        return bytes(take(length)[:-1]).decode("utf-8")

    (version,) = struct.unpack("<I", take(4))
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelError(f"model.bin binary version {version} is not supported")
    spec = string()
    if spec != "WhisperSpec":
        raise ModelError(f"model.bin holds a {spec}, not a Whisper model")
    take(4)  # spec revision
    header_end = position
    (count,) = struct.unpack("<I", take(4))
    kept: list[bytes] = []
    encoder_layers = 0
    for _ in range(count):
        begin = position
        name = string()
        name_end = position
        (rank,) = struct.unpack("<B", take(1))
        dims = struct.unpack(f"<{rank}I", take(4 * rank))
        (dtype,) = struct.unpack("<B", take(1))
        (size,) = struct.unpack("<I", take(4))
        take(size)
        encoder_layer = _layer(name, "encoder")
        decoder_layer = _layer(name, "decoder")
        if encoder_layer is not None:
            encoder_layers = max(encoder_layers, encoder_layer + 1)
        if (encoder_layer is not None and encoder_layer >= layers) or (
            decoder_layer is not None and decoder_layer >= 1
        ):
            continue
        if name == _DECODER_EMBEDDINGS and rank == 2 and dims[0] * dims[1]:
            itemsize = size // (dims[0] * dims[1])
            kept.append(_placeholder(view[begin:name_end], dims[0], dtype, itemsize))
            continue
        kept.append(bytes(view[begin:position]))  # copied: no view outlives the map
    if not 1 <= layers <= encoder_layers:
        raise ModelError(
            f"the acoustic model wants {layers} encoder layers; this Whisper has "
            f"{encoder_layers}"
        )
    header, aliases = bytes(view[:header_end]), bytes(view[position:])
    return b"".join([header, struct.pack("<I", len(kept)), *kept, aliases])


def load_encoder_layers(
    model_dir: str | Path,
    layers: int,
    *,
    device: str = "cpu",
    compute_type: str = "int8",
    threads: int = 1,
) -> Any:
    """A ``ctranslate2.models.Whisper`` whose ``encode`` stops after ``layers`` layers.

    Args:
        model_dir: a CTranslate2 Whisper model folder (faster-whisper's format).
        layers: encoder layers to keep, 1 to the model's count.
        device, compute_type, threads: as for the full model.

    Raises:
        ModelError: the folder has no readable model.bin, or it cannot be cut.
    """
    import ctranslate2

    folder = Path(model_dir)
    try:
        with (
            open(folder / "model.bin", "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
            memoryview(mapped) as view,
        ):
            # Mapped, not read: the layers left out are never paged in.
            files = {"model.bin": truncated_model_bin(view, layers)}
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ModelError(f"cannot read {folder / 'model.bin'}: {reason}") from err
    for name in _SIDE_FILES:
        if (folder / name).is_file():
            files[name] = (folder / name).read_bytes()
    try:
        model = ctranslate2.models.Whisper(
            f"{folder}#encoder-{layers}",
            device=device,
            compute_type=compute_type,
            intra_threads=threads,
            files=files,
        )
    except (RuntimeError, ValueError) as err:
        raise ModelError(
            f"cannot load Whisper encoder layers from {folder}: {err}"
        ) from err
    _LOGGER.info("Loaded Whisper encoder layers 1-%d from %s", layers, folder)
    return model


def load_encoders(
    model_dir: str | Path,
    layers: Sequence[int] | None,
    *,
    device: str = "cpu",
    compute_type: str = "int8",
    threads: int = 1,
) -> list[Any]:
    """The encoders whose states a front end puts side by side
    (``FrontEnd.encoder_layers``, for ``features.stacked_encoder_states``): one cut
    model per depth, or the whole model when ``layers`` is None.

    Raises:
        ModelError: the folder has no loadable model, or it cannot be cut.
    """
    if layers is not None:
        return [
            load_encoder_layers(
                model_dir,
                depth,
                device=device,
                compute_type=compute_type,
                threads=threads,
            )
            for depth in layers
        ]
    import ctranslate2

    try:
        whole = ctranslate2.models.Whisper(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            intra_threads=threads,
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise ModelError(f"cannot load Whisper from {model_dir}: {err}") from err
    return [whole]
