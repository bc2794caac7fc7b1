"""The inputs an exported graph is checked on (``export.verify``).

Acoustic graphs get features of real EMO-DB and RAVDESS clips computed through
``streamser.recognition.features`` (several lengths, singly and as one zero-padded
batch; where the graph runs Whisper's first encoder layers itself, the states of the
prefix graph); text graphs get real ShEMO transcripts through
``streamser.recognition.features.TextTokenizer`` (an empty one too); fusion graphs
get embeddings from the real acoustic and text graphs. Without the corpora, seeded
synthetic inputs stand in (said so in the description).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import ctranslate2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from torch import nn

from export.checkpoint import Checkpoint, VerificationError, adapts, fusion_dims
from streamser.recognition.features import (
    FrontEnd,
    TextTokenizer,
    encoder_states,
    log_mel,
    pad_batch,
)
from streamser.recognition.models import OnnxModel, bundled_model_dir
from streamser.recognition.whisper_model import default_whisper_dir
from training.datasets import load_audio, load_dataset
from training.features_cache import default_cache_dir, kind_of, load_features
from training.whisper_prefix import PrefixRunner, prefix_graph

_LOGGER = logging.getLogger(__name__)

_REPO_ROOT: Final = Path(__file__).resolve().parent.parent
_SHEMO_TEXT: Final = "shemo-text/shemo_text.jsonl"

Batch = dict[str, npt.NDArray[Any]]
"""One input of a graph: its input names and arrays, in the graph's input order."""


def data_root() -> Path | None:
    """The corpora folder: ``STREAMSER_DATA``, else ``../shared/datasets``; None if absent."""
    value = os.environ.get("STREAMSER_DATA")
    root = Path(value) if value else _REPO_ROOT.parent / "shared" / "datasets"
    return root if root.is_dir() else None


def _clip_paths(root: Path) -> list[Path]:
    emodb = sorted((root / "emodb").rglob("*.wav"))
    ravdess = sorted((root / "ravdess").rglob("*.flac")) + sorted(
        (root / "ravdess").rglob("*.wav")
    )
    picks = (
        emodb[:: max(1, len(emodb) // 3)][:3]
        + ravdess[:: max(1, len(ravdess) // 3)][:3]
    )
    return [path for path in picks if path.is_file()]


def acoustic_rows(
    front_end: FrontEnd, root: Path, *, whisper: Any = None
) -> list[npt.NDArray[np.float32]]:
    """The graph's input arrays (time, dim) for real clips at several lengths: log-mel
    frames, or the whole Whisper encoder's final states (``whisper``: a loaded
    CTranslate2 Whisper, else the bundled one is loaded)."""
    audios = [load_audio(path) for path in _clip_paths(root)]
    if not audios:
        raise VerificationError(f"no EMO-DB/RAVDESS clips under {root}")
    audios += [audios[0][:4800], audios[-1][:16000]]  # 0.3 s and 1 s cuts
    mels = [log_mel(audio) for audio in audios]
    if front_end.type == "log-mel":
        return mels
    if whisper is None:
        whisper = ctranslate2.models.Whisper(
            str(default_whisper_dir()), compute_type="int8"
        )
    return encoder_states(whisper, mels)


def prefix_states(
    prefix_path: Path, mels: list[npt.NDArray[np.float32]]
) -> list[npt.NDArray[np.float32]]:
    """The Whisper prefix graph's states of each log-mel array (the head's inputs)."""
    runner = PrefixRunner(prefix_path)
    return [runner.states(mel) for mel in mels]


def padded_batches(
    groups: Sequence[Sequence[npt.NDArray[Any]]], name: str, dtype: npt.DTypeLike
) -> list[Batch]:
    """A batch of each group of rows, zero-padded (an empty row stays [1, 0]): the
    rows as input ``name``, their lengths as ``lengths``."""
    return [
        dict(zip((name, "lengths"), pad_batch(group, dtype, min_width=0), strict=True))
        for group in groups
    ]


def acoustic_batches(
    rows: list[npt.NDArray[np.float32]], *, adaptive: bool = False
) -> list[Batch]:
    """One batch per row, plus one zero-padded batch of all rows; for a graph that
    adapts to the speaker, with baselines too (``with_baselines``)."""
    batches = padded_batches([[row] for row in rows] + [rows], "features", np.float32)
    return [with_baselines(b, b["features"]) for b in batches] if adaptive else batches


def with_baselines(batch: Batch, frames: npt.NDArray[np.float32]) -> Batch:
    """``batch`` plus ``baseline`` and ``baseline_count`` inputs: each row's baseline
    is the pooled vector of the row before it (of ``frames``, the states the head
    reads, zero-padded as the batch's lengths say), counts cycle 1, 2, 0."""
    lengths = batch["lengths"]
    mask = (np.arange(frames.shape[1])[None, :] < lengths[:, None])[..., None]
    count = np.maximum(lengths, 1)[:, None].astype(np.float64)
    mean = (frames * mask).sum(1) / count
    std = np.sqrt((((frames - mean[:, None]) * mask) ** 2).sum(1) / count)
    pooled = np.concatenate([mean, std], axis=1).astype(np.float32)
    counts = ((np.arange(len(lengths)) + 1) % 3).astype(np.float32)
    return {
        **batch,
        "baseline": np.roll(pooled, 1, axis=0),
        "baseline_count": counts,
    }


def text_rows(root: Path, tokenizer: TextTokenizer, count: int = 8) -> list[np.ndarray]:
    """Token ids of real ShEMO transcripts of varied lengths, and of an empty one."""
    path = root / _SHEMO_TEXT
    if not path.is_file():
        raise VerificationError(f"ShEMO transcripts not found at {path}")
    transcripts = [
        json.loads(line)["transcript"]
        for line in path.read_text("utf-8").splitlines()
        if line.strip()
    ]
    transcripts.sort(key=len)
    step = max(1, len(transcripts) // count)
    picks = transcripts[::step][:count] + [transcripts[-1], ""]
    return [tokenizer.encode(text) for text in picks]


def text_batches(rows: list[np.ndarray]) -> list[Batch]:
    """One batch per row (the empty one as shape [1, 0]) and one padded batch."""
    return padded_batches([[row] for row in rows] + [rows], "token_ids", np.int64)


def fusion_batches(
    acoustic_embeddings: npt.NDArray[np.float32],
    text_embeddings: npt.NDArray[np.float32],
) -> list[Batch]:
    """Pairs of real embeddings with text present, absent and mixed."""
    count = min(len(acoustic_embeddings), len(text_embeddings))
    acoustic = acoustic_embeddings[:count].astype(np.float32)
    text = text_embeddings[:count].astype(np.float32)
    present = (np.arange(count) % 2 == 0).astype(np.float32)
    absent_text = text * present[:, None]
    batches = [
        {
            "acoustic_embedding": acoustic,
            "text_embedding": text,
            "text_present": np.ones(count, np.float32),
        },
        {
            "acoustic_embedding": acoustic,
            "text_embedding": absent_text,
            "text_present": present,
        },
        {
            "acoustic_embedding": acoustic[:1],
            "text_embedding": np.zeros_like(text[:1]),
            "text_present": np.zeros(1, np.float32),
        },
    ]
    return batches


def graph_embeddings(onnx_path: Path, batches: list[Batch]) -> npt.NDArray[np.float32]:
    """The ``embedding`` output of a graph for each single-row batch, stacked."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    singles = [batch for batch in batches if next(iter(batch.values())).shape[0] == 1]
    if any(i.name == "baseline" for i in session.get_inputs()):
        singles = [with_baselines(b, b["features"]) for b in singles]
    rows = [session.run(["embedding"], batch)[0][0] for batch in singles]
    return np.stack(rows).astype(np.float32)


def synthetic_batches(checkpoint: Checkpoint, module: nn.Module) -> list[Batch]:
    generator = np.random.default_rng(0)
    kind = checkpoint.kind
    if kind == "acoustic":
        dim = checkpoint.head_input_dim
        rows = [
            generator.standard_normal((n, dim)).astype(np.float32)
            for n in (1, 7, 50, 150)
        ]
        return acoustic_batches(rows, adaptive=adapts(module))
    if kind == "text":
        rows = [
            generator.integers(220, 2000, n).astype(np.int64) for n in (0, 1, 5, 40)
        ]
        return text_batches(rows)
    acoustic_dim, text_dim = fusion_dims(module, checkpoint)
    return fusion_batches(
        generator.standard_normal((6, acoustic_dim)).astype(np.float32),
        generator.standard_normal((6, text_dim)).astype(np.float32),
    )


def _find_graph(kind: str, out_dir: Path | None, given: Path | None) -> Path | None:
    if given is not None:
        return given
    for folder in (out_dir, bundled_model_dir()):
        if folder is not None and folder.is_dir():
            found = sorted(folder.glob(f"emotion-{kind}*.onnx"))
            found = [path for path in found if ".int8" not in path.name]
            if found:
                return found[0]
    return None


def real_batches(
    checkpoint: Checkpoint,
    module: nn.Module,
    *,
    out_dir: Path | None = None,
    reference_graphs: dict[str, Path] | None = None,
    whisper: Any = None,
) -> tuple[list[Batch], str]:
    """Parity inputs for a checkpoint's graph, and a description of where they came from.

    Falls back to seeded synthetic inputs (with a warning, and said so in the
    description) when the corpora or, for fusion, the acoustic/text graphs are absent.
    """
    kind = checkpoint.kind
    root = data_root()
    if root is None:
        _LOGGER.warning(
            "corpora not found (STREAMSER_DATA); verifying on synthetic inputs"
        )
        return synthetic_batches(checkpoint, module), "synthetic (corpora absent)"
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    if kind == "acoustic":
        front_end = checkpoint.acoustic_front_end
        rows = acoustic_rows(front_end, root, whisper=whisper)
        what = front_end.type
        if front_end.runs_whisper_layers:
            rows = prefix_states(prefix_graph(front_end, default_cache_dir()), rows)
            what = f"Whisper layers {list(front_end.encoder_layers or ())} states"
        return acoustic_batches(rows, adaptive=adapts(module)), (
            f"{len(rows)} real EMO-DB/RAVDESS clips ({what}), "
            f"{min(len(r) for r in rows)}-{max(len(r) for r in rows)} frames, "
            "singly and as one zero-padded batch"
        )
    if kind == "text":
        rows = text_rows(root, tokenizer)
        return text_batches(rows), (
            f"{len(rows)} real ShEMO transcripts (one empty), "
            f"{min(len(r) for r in rows)}-{max(len(r) for r in rows)} tokens, "
            "singly and as one zero-padded batch"
        )
    graphs = reference_graphs or {}
    acoustic_path = _find_graph("acoustic", out_dir, graphs.get("acoustic"))
    text_path = _find_graph("text", out_dir, graphs.get("text"))
    acoustic_dim, text_dim = fusion_dims(module, checkpoint)
    if acoustic_path is not None and text_path is not None:
        acoustic_model = OnnxModel(acoustic_path, device="cpu")
        front_end = acoustic_model.contract.front_end
        acoustic = graph_embeddings(
            acoustic_path,
            acoustic_batches(acoustic_rows(front_end, root, whisper=whisper)),
        )
        text = graph_embeddings(text_path, text_batches(text_rows(root, tokenizer)))
        if acoustic.shape[1] == acoustic_dim and text.shape[1] == text_dim:
            return fusion_batches(acoustic, text), (
                f"embeddings of real clips from {acoustic_path.name} and of real "
                f"transcripts from {text_path.name}, text present/absent/mixed"
            )
        _LOGGER.warning(
            "graphs %s/%s give embeddings of %d/%d, fusion expects %d/%d",
            acoustic_path.name,
            text_path.name,
            acoustic.shape[1],
            text.shape[1],
            acoustic_dim,
            text_dim,
        )
    _LOGGER.warning(
        "no matching acoustic/text graphs; verifying fusion on synthetic embeddings"
    )
    return synthetic_batches(checkpoint, module), "synthetic embeddings"


def labelled_batches(
    checkpoint: Checkpoint, *, batch_size: int = 32
) -> tuple[list[Batch], list[str], str] | None:
    """Real labelled inputs for measuring a variant's accuracy change, or None.

    Acoustic: every EMO-DB clip (features from the training cache, as training
    computed them); text: every ShEMO transcript. Labels outside the model's are
    dropped. These are training data of a shipped model, so absolute accuracy is
    optimistic; the change between fp32 and a variant is what is measured.
    """
    root = data_root()
    if root is None or checkpoint.kind == "fusion":
        return None
    labels = list(checkpoint.labels)
    if checkpoint.kind == "acoustic":
        utterances = [
            u for u in load_dataset(f"emodb:{root / 'emodb'}") if u.label in labels
        ]
        front_end = checkpoint.acoustic_front_end
        kind = kind_of(front_end)
        rows = load_features(
            utterances,
            kind=kind,
            copy=0,
            progress=False,
            front_end=front_end if kind == "encoder" else None,
        )
        name, dtype, source = "features", np.float32, "EMO-DB, all clips"
    else:
        spec = f"shemo-text:{root / _SHEMO_TEXT}"
        utterances = [u for u in load_dataset(spec) if u.label in labels]
        tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
        rows = [tokenizer.encode(u.text or "") for u in utterances]
        name, dtype, source = "token_ids", np.int64, "ShEMO, all transcripts"
    groups = [
        rows[start : start + batch_size] for start in range(0, len(rows), batch_size)
    ]
    return padded_batches(groups, name, dtype), [u.label for u in utterances], source
