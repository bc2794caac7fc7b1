"""Acoustic emotion on one CPU core: a 4 s utterance through the shipped acoustic path.

The training issue's budget is 20 ms per 4 s utterance on one core. Measured here with
every library pinned to one thread, over RAVDESS clips cut or padded to 4 s: log-mel,
then the acoustic graph (for the shipped one: Whisper base's first three encoder layers,
int8, and the emotion head, in one ONNX graph), or for a graph that reads the whole
encoder's final states, the CTranslate2 encoder pass and then the graph.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import numpy as np

from .common import Section, markdown_table, model_dir, percentile, ravdess_clips

_LOGGER = logging.getLogger(__name__)

SECONDS: Final = 4.0


def run(quick: bool = False) -> Section:
    """Time the acoustic path of 4 s utterances on one thread."""
    from streamser.recognition.emotion import EmotionModels
    from streamser.recognition.features import encoder_states, log_mel

    models, models_note = model_dir()
    emotion = EmotionModels.load(models, device="cpu", num_threads=1)
    front_end = emotion.acoustic_model.contract.front_end
    whisper = None
    if front_end is not None and front_end.type == "whisper-encoder":
        import ctranslate2

        from streamser.recognition.whisper_model import default_whisper_dir

        whisper = ctranslate2.models.Whisper(
            str(default_whisper_dir()), compute_type="int8", intra_threads=1
        )
    layers = front_end.encoder_layers if front_end is not None else None
    graph_note = (
        f"the acoustic graph runs Whisper layers 1-{max(layers)} (int8) and the head"
        if layers
        else "the acoustic graph is the head alone"
    )
    samples = int(SECONDS * 16000)
    audios = []
    for clip in ravdess_clips(4 if quick else 40, seed=3):
        audio = clip.audio()[:samples]
        audios.append(np.pad(audio, (0, samples - audio.shape[0])))
    times: dict[str, list[float]] = {}

    def timed(key: str, func, *args):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = func(*args)
        times.setdefault(key, []).append(time.perf_counter() - started)
        return result

    for warm in (True, False):
        for audio in audios[:1] if warm else audios:
            inputs = [timed("log-mel", log_mel, audio)]
            if whisper is not None:
                inputs = timed(
                    "whole encoder (CTranslate2)", encoder_states, whisper, inputs
                )
            timed("acoustic graph", emotion.acoustic, inputs)
        if warm:
            times.clear()
    totals = [sum(values) for values in zip(*times.values(), strict=True)]
    rows = [
        [key, 1000 * percentile(values, 50), 1000 * percentile(values, 95)]
        for key, values in times.items()
    ]
    rows.append(["total", 1000 * percentile(totals, 50), 1000 * percentile(totals, 95)])
    data = {row[0]: {"p50_ms": row[1], "p95_ms": row[2]} for row in rows}
    body = "\n".join(
        [
            f"{len(audios)} RAVDESS clips cut or zero-padded to {SECONDS:g} s; "
            "onnxruntime (and CTranslate2, where used) 1 thread; emotion graphs: "
            f"{models_note} (front end: {front_end.to_dict() if front_end else 'log-mel'}; "
            f"{graph_note}).",
            "",
            markdown_table(["step", "p50 ms", "p95 ms"], rows),
        ]
    )
    return Section(
        "Acoustic emotion on one core", "benchmarks/acoustic_cost.py", body, data
    )
