"""A training checkpoint, typed: what export reads, and the torch module it rebuilds.

``python -m training ...`` writes a checkpoint as a ``torch.save``d dict (training
does not import export); ``Checkpoint.load`` reads and checks it once, so the rest of
export works on typed fields. Also here: the front end and input widths a checkpoint
implies, and ``VerificationError``, shared by ``to_onnx``, ``verify`` and ``card``.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from streamser.labels import CANONICAL_LABELS
from streamser.recognition.contract import AFFECT_DIMENSIONS, KINDS, ModelContract
from streamser.recognition.features import LOG_MEL, WHISPER_ENCODER_TOP, FrontEnd
from training.acoustic_models import AdaptiveHead, CalibratedHead, adaptation_window

_REQUIRED: Final = ("kind", "arch", "config", "state_dict", "labels")
_BUILDERS: Final[dict[str, str]] = {
    "acoustic": "training.acoustic_models",
    "text": "training.text_models",
    "fusion": "training.fusion_models",
}


class VerificationError(RuntimeError):
    """The ONNX graph disagrees with its torch model (or fails onnx.checker)."""


def front_end_from(value: Any) -> FrontEnd:
    """The acoustic front end a checkpoint names.

    Accepts a ``FrontEnd``, its dict, or the type name ("whisper-encoder", "log-mel";
    none: the whole encoder's final states, as in the first checkpoints).

    Raises:
        ValueError: an unknown front end.
    """
    if isinstance(value, FrontEnd):
        return value
    if isinstance(value, dict):
        return FrontEnd.from_dict(value)
    if value in (None, WHISPER_ENCODER_TOP.type):
        return WHISPER_ENCODER_TOP
    if value == LOG_MEL.type:
        return LOG_MEL
    raise ValueError(f"unknown front end {value!r}")


@dataclass(frozen=True)
class Checkpoint:
    """A training checkpoint (``kind``, ``arch``, ``config``, ``state_dict``,
    ``labels`` required; the rest as training wrote it)."""

    kind: str
    """acoustic, text or fusion."""
    arch: str
    """Architecture name the kind's ``build_model`` knows."""
    config: dict[str, Any]
    """Keyword arguments of the architecture."""
    state_dict: dict[str, Any]
    """Weights of the model (of the first member of an ensemble)."""
    labels: tuple[str, ...]
    """Canonical labels in output order."""
    front_end: FrontEnd | None = None
    """Acoustic: the front end it was trained on (``front_end_from``)."""
    languages: tuple[str, ...] = ()
    """Text: the languages of its transcripts."""
    name: str = ""
    """Model name, when training set one; else ``default_name()``."""
    version: str = ""
    """Model version, when training set one; else the name's ``-vN``."""
    ensemble: list[Any] = field(default_factory=list)
    """Members averaged by soft voting: state dicts, or dicts with ``state_dict``
    and optional ``arch``/``config``; empty for one model."""
    builder: str = ""
    """``package.module:function`` building the module, when not the kind's
    ``build_model``."""
    metrics: Any = None
    """Evaluation results (into the card)."""
    data: Any = None
    """Training data specs (into the card, and its licence)."""
    protocol: Any = None
    """Evaluation protocol (into the card)."""
    command: Any = None
    """The training command line (into the card)."""
    notes: Any = None
    """Free-text notes (into the card)."""
    inputs: Any = None
    """Fusion: the acoustic and text graphs it was fit to (the card's
    ``fused_with``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other key training wrote, kept for ``save``."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} not in {KINDS}")
        if self.kind == "acoustic" and self.front_end is None:
            raise ValueError("an acoustic checkpoint needs its front end")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        """Check and type a checkpoint dict.

        Raises:
            ValueError: missing keys, unknown kind or front end, non-canonical labels.
        """
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(f"{source} lacks {missing}")
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"{source}: kind {kind!r} not in {KINDS}")
        labels = tuple(data["labels"])
        if not labels or any(label not in CANONICAL_LABELS for label in labels):
            raise ValueError(f"{source}: labels must be canonical: {list(labels)}")
        front_end = data.get("front_end")
        known = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        return cls(
            kind=kind,
            arch=data["arch"],
            config=dict(data["config"] or {}),
            state_dict=data["state_dict"],
            labels=labels,
            front_end=(
                front_end_from(front_end)
                if kind == "acoustic" or front_end is not None
                else None
            ),
            languages=tuple(data.get("languages") or ()),
            name=str(data.get("name") or ""),
            version=str(data.get("version") or ""),
            ensemble=list(data.get("ensemble") or []),
            builder=str(data.get("builder") or ""),
            metrics=data.get("metrics"),
            data=data.get("data"),
            protocol=data.get("protocol"),
            command=data.get("command"),
            notes=data.get("notes"),
            inputs=data.get("inputs"),
            extra={key: value for key, value in data.items() if key not in known},
        )

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read and check a checkpoint file.

        Raises:
            ValueError: missing or unreadable file, not a checkpoint dict, or as
                ``from_dict``.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"checkpoint {path} not found")
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # torch raises pickle/zip errors of many types
            raise ValueError(f"checkpoint {path} is not readable: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"checkpoint {path} is not a dict")
        return cls.from_dict(data, f"checkpoint {path}")

    def to_dict(self) -> dict[str, Any]:
        """The dict training writes (``load`` reads it back)."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "arch": self.arch,
            "config": self.config,
            "state_dict": self.state_dict,
            "labels": list(self.labels),
        }
        if self.front_end is not None:
            data["front_end"] = self.front_end.to_dict()
        if self.languages:
            data["languages"] = list(self.languages)
        for key in ("name", "version", "ensemble", "builder"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        for key in ("metrics", "data", "protocol", "command", "notes", "inputs"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data | self.extra

    def save(self, path: str | Path) -> None:
        """Write the checkpoint as training does (``torch.save`` of ``to_dict()``)."""
        torch.save(self.to_dict(), Path(path))

    @property
    def acoustic_front_end(self) -> FrontEnd:
        """The front end of an acoustic checkpoint.

        Raises:
            ValueError: the checkpoint has none (text, fusion).
        """
        if self.front_end is None:
            raise ValueError(f"a {self.kind} checkpoint has no acoustic front end")
        return self.front_end

    @property
    def runs_whisper_layers(self) -> bool:
        """Whether its graph runs Whisper encoder layers (``training.whisper_prefix``,
        joined in front of the trained head)."""
        return self.front_end is not None and self.front_end.runs_whisper_layers

    @property
    def head_input_dim(self) -> int:
        """Width of the frames the trained module reads (the Whisper states for a
        front end with layers in the graph, else the graph input)."""
        dim = self.config.get("input_dim")
        if dim:
            return int(dim)
        return (self.front_end or WHISPER_ENCODER_TOP).dim

    def default_name(self) -> str:
        """The name training set, else ``emotion-KIND[-LANG]-vN``."""
        if self.name:
            return self.name
        version = self.version or "1"
        if self.kind == "text" and len(self.languages) == 1:
            return f"emotion-text-{self.languages[0]}-v{version}"
        return f"emotion-{self.kind}-v{version}"

    def version_for(self, name: str) -> str:
        """Model version: the checkpoint's, else the ``-vN`` suffix of ``name``."""
        if self.version:
            return self.version
        suffix = name.rsplit("-v", 1)
        return suffix[1] if len(suffix) == 2 and suffix[1].isdigit() else "1"

    def contract(self, name: str, embedding_dim: int) -> ModelContract:
        """The metadata contract of its graph named ``name``."""
        window = int(self.config.get("adaptation_window", 0))
        return ModelContract(
            name=name,
            kind=self.kind,
            version=self.version_for(name),
            labels=self.labels,
            embedding_dim=embedding_dim,
            front_end=self.front_end if self.kind == "acoustic" else None,
            languages=self.languages if self.kind == "text" else (),
            adaptation_window=window if self.arch == "stats" else 0,
            affect=(
                AFFECT_DIMENSIONS
                if self.kind == "acoustic" and self.config.get("affect")
                else ()
            ),
        )


class SoftVotingEnsemble(nn.Module):
    """Averages member probabilities; the embedding is the members' concatenated.

    Members are independently trained, so their embeddings live in different spaces:
    concatenating keeps each intact for a downstream fusion model.
    """

    def __init__(self, members: list[nn.Module], *, has_embedding: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.has_embedding = has_embedding

    def forward(self, *inputs: torch.Tensor) -> Any:  # noqa: D102
        outputs = [member(*inputs) for member in self.members]
        if not self.has_embedding:
            return torch.stack(outputs).mean(dim=0)
        probs = torch.stack([out[0] for out in outputs]).mean(dim=0)
        embedding = torch.cat([out[1] for out in outputs], dim=-1)
        return probs, embedding


def _builder(checkpoint: Checkpoint) -> Any:
    """``build_model(arch, config)`` of the checkpoint's kind, or its ``builder``."""
    spec = checkpoint.builder or f"{_BUILDERS[checkpoint.kind]}:build_model"
    module_name, _, function = spec.partition(":")
    return getattr(importlib.import_module(module_name), function or "build_model")


def build_module(checkpoint: Checkpoint) -> nn.Module:
    """Rebuild the torch module of a checkpoint (ensembles included), in eval mode."""
    build = _builder(checkpoint)
    if not checkpoint.ensemble:
        module = build(checkpoint.arch, checkpoint.config)
        module.load_state_dict(checkpoint.state_dict)
    else:
        members = []
        for spec in checkpoint.ensemble:
            if isinstance(spec, dict) and "state_dict" in spec:
                state = spec["state_dict"]
                arch = spec.get("arch") or checkpoint.arch
                config = spec.get("config") or checkpoint.config
            else:
                state, arch, config = spec, checkpoint.arch, checkpoint.config
            member = build(arch, config)
            member.load_state_dict(state)
            members.append(member)
        module = SoftVotingEnsemble(members, has_embedding=checkpoint.kind != "fusion")
    if checkpoint.kind == "acoustic":
        temperature = checkpoint.extra.get("temperature")
        affect = bool(checkpoint.config.get("affect"))
        if adaptation_window(module) > 0:
            module = AdaptiveHead(module)
        elif temperature is not None or affect:
            module = CalibratedHead(module, float(temperature or 1.0), affect)
    return module.eval()


def adapts(module: nn.Module) -> bool:
    """Whether a built module takes speaker baselines (an acoustic ``AdaptiveHead``)."""
    return isinstance(module, AdaptiveHead)


def fusion_dims(module: nn.Module, checkpoint: Checkpoint) -> tuple[int, int]:
    """Acoustic and text embedding widths a fusion model expects."""
    inner = module.members[0] if isinstance(module, SoftVotingEnsemble) else module
    acoustic_dim = (
        getattr(inner, "acoustic_dim", None) or checkpoint.config["acoustic_dim"]
    )
    text_dim = getattr(inner, "text_dim", None) or checkpoint.config["text_dim"]
    return int(acoustic_dim), int(text_dim)
