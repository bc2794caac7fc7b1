"""Which emotion graphs of a model folder to load: those named in ``[emotion]``, else
the newest of each kind (and text language).

Graphs are named ``emotion-KIND[-LANG]-vN.onnx`` (KIND acoustic, text or fusion);
the newest is the highest N. A name in the configuration is the file name without
``.onnx``; one that is not in the folder is an error listing what is there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from streamser.errors import ModelError

_LOGGER = logging.getLogger(__name__)

MODEL_NAME: Final = re.compile(
    r"^emotion-(acoustic|text|fusion)(?:-([a-z]{2}|multi))?-v(\d+)\.onnx$"
)
"""A graph's file name: kind, language (text graphs of one language) and version."""


@dataclass(frozen=True)
class ModelFile:
    """One graph file of a model folder, as its name describes it.

    Attributes:
        path: the ``.onnx`` file.
        kind: "acoustic", "text" or "fusion".
        language: the ISO 639-1 code in the name; "" when it names none.
        version: N of ``-vN``.
    """

    path: Path
    kind: str
    language: str
    version: int

    @property
    def name(self) -> str:
        """The name a configuration uses: the file name without ``.onnx``."""
        return self.path.name.removesuffix(".onnx")


@dataclass(frozen=True)
class ModelChoice:
    """The graphs to load from one folder.

    Attributes:
        acoustic: the acoustic graph.
        text: text graphs loaded for whatever languages they read, the newest per
            name language ("" included), in name order (a graph of one language
            serves it before a multilingual one).
        named_text: language to the text graph ``[emotion.text]`` names for it.
        fusion: the newest fusion graph, if any.
        acoustic_named: whether ``acoustic`` was named (else it is the newest).
    """

    acoustic: ModelFile
    text: tuple[ModelFile, ...]
    named_text: Mapping[str, ModelFile]
    fusion: ModelFile | None
    acoustic_named: bool


def model_files(model_dir: Path) -> list[ModelFile]:
    """The graphs of ``model_dir`` named ``emotion-KIND[-LANG]-vN.onnx``, in name
    order (others are logged and left out).

    Raises:
        ModelError: the folder does not exist.
    """
    if not model_dir.is_dir():
        raise ModelError(f"model folder not found: {model_dir}")
    found = []
    for path in sorted(model_dir.glob("emotion-*.onnx")):
        match = MODEL_NAME.match(path.name)
        if match is None:
            _LOGGER.warning("Ignoring %s: not named emotion-KIND[-LANG]-vN.onnx", path)
            continue
        kind, language, version = match.groups()
        found.append(ModelFile(path, kind, language or "", int(version)))
    return found


def _newest(files: Sequence[ModelFile]) -> dict[tuple[str, str], ModelFile]:
    """The highest version of each (kind, name language), in key order."""
    newest: dict[tuple[str, str], ModelFile] = {}
    for file in files:
        key = (file.kind, file.language)
        if key not in newest or file.version > newest[key].version:
            newest[key] = file
    return dict(sorted(newest.items()))


def _named(
    files: Sequence[ModelFile], kind: str, name: str, setting: str, model_dir: Path
) -> ModelFile:
    """The graph of ``kind`` called ``name``.

    Raises:
        ModelError: none is, with the names of that kind that are there.
    """
    wanted = name.removesuffix(".onnx")
    for file in files:
        if file.name == wanted and file.kind == kind:
            return file
    there = ", ".join(f.name for f in files if f.kind == kind) or "none"
    raise ModelError(
        f"{setting} = {name!r}: no such {kind} model in {model_dir} "
        f"({kind} models there: {there})"
    )


def choose_models(
    model_dir: Path, acoustic: str = "", text: Mapping[str, str] | None = None
) -> ModelChoice:
    """The graphs of ``model_dir`` to load.

    Args:
        model_dir: the model folder.
        acoustic: the acoustic graph's name; "" for the newest.
        text: language to text graph name; languages not in it get the newest
            graph that reads them.

    Raises:
        ModelError: the folder is missing or has no acoustic graph, or a named graph
            is not there.
    """
    files = model_files(model_dir)
    newest = _newest(files)
    newest_of = {
        kind: [f for (k, _), f in newest.items() if k == kind]
        for kind in ("acoustic", "fusion")
    }
    if acoustic:
        chosen = _named(files, "acoustic", acoustic, "[emotion] acoustic", model_dir)
    elif newest_of["acoustic"]:
        chosen = newest_of["acoustic"][0]
    else:
        raise ModelError(f"{model_dir}: no emotion-acoustic-vN.onnx model")
    named = {
        language: _named(files, "text", name, f"[emotion.text] {language}", model_dir)
        for language, name in (text or {}).items()
    }
    default_text = tuple(
        file
        for (kind, language), file in newest.items()
        if kind == "text" and language not in named
    )
    return ModelChoice(
        acoustic=chosen,
        text=default_text,
        named_text=named,
        fusion=newest_of["fusion"][-1] if newest_of["fusion"] else None,
        acoustic_named=bool(acoustic),
    )
