"""Check an exported graph against its torch model on real inputs.

Acoustic graphs get features of real EMO-DB and RAVDESS clips computed through
``streamser.recognition.features`` (several lengths, one zero-padded batch); where the graph runs
Whisper's first encoder layers itself, the trained head is checked on the states of
the prefix graph, and the joined graph against prefix-then-head on log-mel frames; text graphs get real
ShEMO transcripts through ``streamser.recognition.features.TextTokenizer`` (an empty one too);
fusion graphs get embeddings from the real acoustic and text graphs. Fails above
``TOLERANCE`` max abs difference in fp32, and runs ``onnx.checker``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export.checkpoint import Checkpoint, VerificationError, adapts, fusion_dims
from export.whisper_prefix import PrefixRunner, prefix_graph
from streamser.recognition.features import (
    FrontEnd,
    TextTokenizer,
    encoder_states,
    log_mel,
    pad_batch,
)

_LOGGER = logging.getLogger(__name__)

TOLERANCE: Final = 1e-4
_REPO_ROOT: Final = Path(__file__).resolve().parent.parent
_SHEMO_TEXT: Final = "shemo-text/shemo_text.jsonl"

Batch = dict[str, npt.NDArray[Any]]


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
    from training.datasets import load_audio

    audios = [load_audio(path) for path in _clip_paths(root)]
    if not audios:
        raise VerificationError(f"no EMO-DB/RAVDESS clips under {root}")
    audios += [audios[0][:4800], audios[-1][:16000]]  # 0.3 s and 1 s cuts
    mels = [log_mel(audio) for audio in audios]
    if front_end.type == "log-mel":
        return mels
    if whisper is None:
        import ctranslate2

        from streamser.recognition.whisper_model import default_whisper_dir

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


def compare_joined(
    joined_path: Path, prefix_path: Path, head_path: Path, front_end: FrontEnd
) -> dict[str, Any]:
    """Check the joined graph against the prefix graph then the head graph, on log-mel
    frames of real clips (seeded noise when the corpora are absent).

    Raises:
        VerificationError: they differ by more than ``TOLERANCE``.
    """
    root = data_root()
    if root is not None:
        mels, source = acoustic_rows(front_end, root), "real EMO-DB/RAVDESS clips"
    else:
        generator = np.random.default_rng(0)
        mels = [
            generator.standard_normal((n, front_end.dim)).astype(np.float32)
            for n in (2, 14, 100, 300)
        ]
        source = "synthetic log-mel (corpora absent)"
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    prefix = ort.InferenceSession(str(prefix_path), providers=["CPUExecutionProvider"])
    joined = ort.InferenceSession(str(joined_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    outputs = [o.name for o in head.get_outputs()]
    adaptive = _takes_baseline(head_path)
    for batch in acoustic_batches(mels):
        states, state_lengths = prefix.run(None, batch)
        head_batch = {"features": states, "lengths": state_lengths}
        if adaptive:
            head_batch = with_baselines(head_batch, states)
            batch = {
                **batch,
                **{k: head_batch[k] for k in ("baseline", "baseline_count")},
            }
        want = head.run(outputs, head_batch)
        got = joined.run(outputs, batch)
        for a, b in zip(want, got, strict=True):
            worst = max(worst, float(np.max(np.abs(a - b))))
    if worst > TOLERANCE:
        raise VerificationError(
            f"{joined_path}: the joined graph differs from prefix then head by "
            f"{worst:.3g} (tolerance {TOLERANCE:g})"
        )
    _LOGGER.info("%s: joined parity max abs diff %.3g", joined_path.name, worst)
    return {"max_abs_diff": worst, "inputs": f"{len(mels)} {source}"}


def acoustic_batches(
    rows: list[npt.NDArray[np.float32]], *, adaptive: bool = False
) -> list[Batch]:
    """One batch per row, plus one zero-padded batch of all rows; for a graph that
    adapts to the speaker, with baselines too (``with_baselines``)."""
    batches = []
    for row in rows:
        features, lengths = pad_batch([row], np.float32, min_width=0)
        batches.append({"features": features, "lengths": lengths})
    features, lengths = pad_batch(rows, np.float32, min_width=0)
    batches.append({"features": features, "lengths": lengths})
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


def _takes_baseline(onnx_path: Path) -> bool:
    """Whether a graph takes a speaker baseline (``baseline`` input)."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return any(i.name == "baseline" for i in session.get_inputs())


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
    batches = []
    for row in rows:
        ids, lengths = pad_batch([row], np.int64, min_width=0)
        batches.append({"token_ids": ids, "lengths": lengths})
    ids, lengths = pad_batch(rows, np.int64, min_width=0)
    batches.append({"token_ids": ids, "lengths": lengths})
    return batches


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


def compare(
    onnx_path: Path,
    module: nn.Module,
    batches: list[Batch],
    *,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Run torch and onnxruntime on the same batches; raise above ``tolerance``.

    Returns:
        ``{"max_abs_diff": float, "per_output": {...}, "batches": n, "tolerance": t}``.

    Raises:
        VerificationError: onnx.checker fails or any output differs by more.
    """
    try:
        onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    except onnx.checker.ValidationError as err:
        raise VerificationError(f"{onnx_path}: onnx.checker failed: {err}") from err
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    worst: dict[str, float] = dict.fromkeys(names, 0.0)
    module = module.eval()
    for batch in batches:
        with torch.no_grad():
            expected = module(*(torch.from_numpy(value) for value in batch.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = session.run(names, batch)
        for name, want, got in zip(names, expected, actual, strict=True):
            if not np.all(np.isfinite(got)):
                raise VerificationError(f"{onnx_path}: output {name} is not finite")
            diff = float(np.max(np.abs(want.numpy() - got))) if got.size else 0.0
            worst[name] = max(worst[name], diff)
    result = {
        "max_abs_diff": max(worst.values()),
        "per_output": worst,
        "batches": len(batches),
        "tolerance": tolerance,
    }
    if result["max_abs_diff"] > tolerance:
        raise VerificationError(
            f"{onnx_path}: onnxruntime differs from torch by {result['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:g}): {worst}"
        )
    _LOGGER.info(
        "%s: parity max abs diff %.3g over %d batches",
        onnx_path.name,
        result["max_abs_diff"],
        len(batches),
    )
    return result


def variant_change(
    reference_path: Path, variant_path: Path, batches: list[Batch]
) -> dict[str, Any]:
    """How much a quantised/fp16 variant changes the probabilities on ``batches``.

    Returns:
        Max abs probability difference, top-1 agreement with the fp32 graph, sizes.
    """
    reference = ort.InferenceSession(
        str(reference_path), providers=["CPUExecutionProvider"]
    )
    variant = ort.InferenceSession(
        str(variant_path), providers=["CPUExecutionProvider"]
    )
    diffs, agree, total = [], 0, 0
    for batch in batches:
        want = reference.run(["probs"], batch)[0]
        feed = {
            item.name: batch[item.name].astype(np.float16)
            if item.type == "tensor(float16)"
            else batch[item.name]
            for item in variant.get_inputs()
        }
        got = variant.run(["probs"], feed)[0].astype(np.float32)
        diffs.append(float(np.max(np.abs(want - got))))
        agree += int(np.sum(want.argmax(-1) == got.argmax(-1)))
        total += want.shape[0]
    return {
        "max_abs_prob_diff": max(diffs),
        "top1_agreement": agree / total,
        "rows": total,
        "size_bytes": variant_path.stat().st_size,
    }


def _synthetic_batches(checkpoint: Checkpoint, module: nn.Module) -> list[Batch]:
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
    from streamser.recognition.models import bundled_model_dir

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
    from streamser.recognition.models import OnnxModel
    from streamser.recognition.whisper_model import default_whisper_dir

    kind = checkpoint.kind
    root = data_root()
    if root is None:
        _LOGGER.warning(
            "corpora not found (STREAMSER_DATA); verifying on synthetic inputs"
        )
        return _synthetic_batches(checkpoint, module), "synthetic (corpora absent)"
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    if kind == "acoustic":
        front_end = checkpoint.acoustic_front_end
        rows = acoustic_rows(front_end, root, whisper=whisper)
        what = front_end.type
        if front_end.runs_whisper_layers:
            from training.features_cache import default_cache_dir

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
    return _synthetic_batches(checkpoint, module), "synthetic embeddings"


def labelled_batches(
    checkpoint: Checkpoint, *, batch_size: int = 32
) -> tuple[list[Batch], list[str], str] | None:
    """Real labelled inputs for measuring a variant's accuracy change, or None.

    Acoustic: every EMO-DB clip (features from the training cache, as training
    computed them); text: every ShEMO transcript. Labels outside the model's are
    dropped. These are training data of a shipped model, so absolute accuracy is
    optimistic; the change between fp32 and a variant is what is measured.
    """
    from streamser.recognition.whisper_model import default_whisper_dir
    from training.datasets import load_dataset

    root = data_root()
    if root is None or checkpoint.kind == "fusion":
        return None
    labels = list(checkpoint.labels)
    if checkpoint.kind == "acoustic":
        from training.features_cache import kind_of, load_features

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
        names, dtype, source = ("features", "lengths"), np.float32, "EMO-DB, all clips"
    else:
        spec = f"shemo-text:{root / _SHEMO_TEXT}"
        utterances = [u for u in load_dataset(spec) if u.label in labels]
        tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
        rows = [tokenizer.encode(u.text or "") for u in utterances]
        names, dtype, source = (
            ("token_ids", "lengths"),
            np.int64,
            "ShEMO, all transcripts",
        )
    batches = []
    for start in range(0, len(rows), batch_size):
        values, lengths = pad_batch(
            rows[start : start + batch_size], dtype, min_width=0
        )
        batches.append({names[0]: values, names[1]: lengths})
    return batches, [u.label for u in utterances], source


def accuracy_change(
    reference_path: Path,
    variant_path: Path,
    batches: list[Batch],
    truth: list[str],
    labels: list[str],
) -> dict[str, float]:
    """Accuracy (WA) of the fp32 graph and of a variant on the same labelled rows."""
    scores = {}
    for key, path in (("fp32", reference_path), ("variant", variant_path)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        predicted = np.concatenate(
            [session.run(["probs"], b)[0].argmax(1) for b in batches]
        )
        scores[key] = float(
            np.mean([labels[i] == t for i, t in zip(predicted, truth, strict=True)])
        )
    return {
        "wa_fp32": scores["fp32"],
        "wa_variant": scores["variant"],
        "wa_change": scores["variant"] - scores["fp32"],
    }
