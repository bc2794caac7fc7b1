"""Acoustic emotion on one CPU core: a 4 s utterance through the shipped front end and head.

The training issue's budget is 20 ms per 4 s utterance on one core. Measured here with
every library pinned to one thread: log-mel, the Whisper encoder passes the acoustic
model's front end asks for (``FrontEnd.encoder_layers``; the whole encoder for older
graphs), and the ONNX head, each timed separately over RAVDESS clips cut or padded to 4 s.
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
    from streamser.emotion import EmotionModels
    from streamser.features import encoder_states, log_mel
    from streamser.whisper_layers import load_encoders
    from streamser.whisper_model import default_whisper_dir

    models, models_note = model_dir()
    emotion = EmotionModels.load(models, device="cpu", num_threads=1)
    front_end = emotion.acoustic_model.info.front_end
    layers = front_end.encoder_layers if front_end is not None else None
    folder = default_whisper_dir()
    names = [f"encoder to layer {d}" for d in layers] if layers else ["whole encoder"]
    encoders = list(zip(names, load_encoders(folder, layers), strict=True))
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
            mel = timed("log-mel", log_mel, audio)
            states = [
                timed(name, encoder_states, model, [mel])[0] for name, model in encoders
            ]
            stacked = np.concatenate(states, axis=1)
            timed("emotion head (ONNX)", emotion.acoustic, [stacked])
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
            "CTranslate2 intra_threads 1, onnxruntime 1 thread; emotion graphs: "
            f"{models_note} (front end: {front_end.to_dict() if front_end else 'log-mel'}).",
            "",
            markdown_table(["step", "p50 ms", "p95 ms"], rows),
        ]
    )
    return Section(
        "Acoustic emotion on one core", "benchmarks/acoustic_cost.py", body, data
    )
