"""CUDA: the models on CUDA providers and one utterance end to end on a GPU (marked
``gpu``, skipped without one), and on any host the CPU side of the same code: provider
choice, the library preloader and the ``streamser models`` line."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from streamser.config import Config
from streamser.console import provider_line
from streamser.messages import StartMessage
from streamser.metrics import Metrics
from streamser.pipeline import BATCH_DEFAULTS, Engine, StreamSession
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.cuda import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    cuda_device_count,
    library_folders,
    onnx_providers,
    onnxruntime_conflict,
    preload_cuda_libraries,
)
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions


def _cuda_reason() -> str | None:
    """Why the GPU tests cannot run here, or None when they can."""
    if cuda_device_count() == 0:
        return "no CUDA device (CTranslate2 sees none)"
    if CUDA_PROVIDER not in ort.get_available_providers():
        return "onnxruntime has no CUDA provider: " + (
            onnxruntime_conflict() or "pip install 'streamser[gpu]'"
        )
    return None


_REASON = _cuda_reason()
needs_cuda = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def cuda_recognizer(shipped_models: Path) -> Recognizer:
    options = RecognizerOptions(
        EmotionOptions(model_dir=str(shipped_models), device="cuda"),
        AsrOptions(device="cuda"),
    )
    recognizer = Recognizer(options)
    recognizer.warm_up()
    return recognizer


@pytest.mark.gpu
@pytest.mark.data
@needs_cuda
def test_models_load_on_cuda_providers(cuda_recognizer: Recognizer) -> None:
    assert preload_cuda_libraries() or not library_folders()
    for model in cuda_recognizer.models.all_models:
        providers = model.session.get_providers()
        assert providers[0] == CUDA_PROVIDER, (model.path, providers)
        assert provider_line(providers).startswith("CUDA")
    asr = cuda_recognizer.asr
    assert asr is not None
    assert (asr.device, asr.compute_type) == ("cuda", "float16")


@pytest.mark.gpu
@pytest.mark.data
@needs_cuda
async def test_one_utterance_end_to_end_on_cuda(
    cuda_recognizer: Recognizer, emodb_clips: list[Path]
) -> None:
    clip, rate = sf.read(emodb_clips[0], dtype="float32")
    assert rate == 16000
    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([silence, clip, silence])
    config = Config()
    engine = Engine(
        cuda_recognizer, config.pipeline, config.vad, config.segmenter, Metrics()
    )
    assert engine.options.max_batch == BATCH_DEFAULTS["cuda"][0]
    events: list[dict[str, Any]] = []
    engine.add_sink(lambda envelope: events.append(envelope.to_dict()))
    session = StreamSession(engine, StartMessage(language="de"), "gpu")

    async def play() -> None:
        session.open()
        for offset in range(0, audio.size, 3200):
            session.feed_audio(audio[offset : offset + 3200])
        await session.close()

    try:
        await asyncio.wait_for(play(), 120)
    finally:
        engine.close()
    ends = [e for e in events if e["type"] == "utterance.end"]
    assert len(ends) == 1
    assert ends[0]["asr"] == "ok" and ends[0]["transcript"]
    assert sum(ends[0]["scores"].values()) == pytest.approx(1.0, abs=1e-3)


# -- the CPU side of the same code, on every host ------------------------------------


def test_cpu_is_always_last_and_alone_when_asked() -> None:
    assert onnx_providers("cpu") == [CPU_PROVIDER]
    for device in ("auto", "cuda"):
        providers = onnx_providers(device)
        assert providers[-1] == CPU_PROVIDER
        if _REASON is not None:  # no usable GPU: CUDA is never chosen
            assert providers == [CPU_PROVIDER]


def test_without_the_nvidia_wheels_nothing_is_preloaded() -> None:
    if library_folders():
        pytest.skip("the nvidia-* wheels are installed here")
    assert preload_cuda_libraries() == ()


def test_provider_line_names_the_fallback() -> None:
    assert provider_line([CPU_PROVIDER]) == "CPU"
    assert provider_line([CUDA_PROVIDER, CPU_PROVIDER]) == (
        "CUDA (CPU for nodes without a CUDA kernel)"
    )
    assert provider_line([]) == "none"


def test_models_command_says_where_each_model_runs(shipped_models: Path) -> None:
    from streamser.daemon import describe_models

    config = dataclasses.replace(Config(), asr=AsrOptions(device="cpu"))
    config = dataclasses.replace(
        config,
        emotion=dataclasses.replace(
            config.emotion, model_dir=str(shipped_models), device="cpu"
        ),
    )
    lines = describe_models(config)
    runs_on = [line for line in lines if line.startswith("  runs on: ")]
    assert "  runs on: CPU" in runs_on
    assert any(line.startswith("  runs on: CTranslate2 cpu (") for line in runs_on)


def test_the_gpu_benchmark_says_why_its_gpu_parts_are_absent() -> None:
    from benchmarks.gpu import cuda_status

    usable, line = cuda_status()
    assert usable == (_REASON is None)
    assert "CTranslate2 CUDA devices: " in line and "onnxruntime providers: " in line
