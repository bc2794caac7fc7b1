"""Whisper: the bundled model's assembly, transcription, and no text on noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamser.errors import ConfigError, ModelError
from streamser.recognition.asr import WhisperAsr
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.features import log_mel
from streamser.recognition.whisper_model import default_whisper_dir


@pytest.fixture(scope="module")
def asr() -> WhisperAsr:
    return WhisperAsr(AsrOptions(device="cpu"))


def test_assembly_is_checked_and_rebuilt(tmp_path: Path) -> None:
    folder = default_whisper_dir(tmp_path)
    model = folder / "model.bin"
    marker = json.loads((folder / "streamser-assembled.json").read_text())
    assert model.stat().st_size == marker["size"]
    # a half-written model.bin (a crash mid-copy) is detected and rebuilt
    with model.open("r+b") as handle:
        handle.truncate(1000)
    assert default_whisper_dir(tmp_path) == folder
    assert model.stat().st_size == marker["size"]
    # so is a corrupted one of the right size
    with model.open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"\xff" * 64)
    default_whisper_dir(tmp_path)
    assert json.loads((folder / "streamser-assembled.json").read_text()) == marker
    assert not list(tmp_path.glob(".whisper-*")), "temporary folder left behind"


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        AsrOptions(device="tpu")
    with pytest.raises(ConfigError):
        AsrOptions(audio_context_s=0.5)


def test_missing_model_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model.bin"):
        WhisperAsr(AsrOptions(model=str(tmp_path)))


def test_no_text_on_noise(asr: WhisperAsr) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(48000) / 16000
    noises = [
        (level * rng.standard_normal(40000)).astype(np.float32)
        for level in (0.05, 0.2, 0.5)
    ] + [
        (0.3 * rng.standard_normal(48000) * (0.5 + 0.5 * np.sin(8 * np.pi * t))).astype(
            np.float32
        )
    ]
    transcripts = asr.transcribe_batch(
        [log_mel(n) for n in noises], [None] * len(noises)
    )
    assert [t.text for t in transcripts] == [""] * len(noises)
    assert all(t.rejected for t in transcripts)


@pytest.mark.data
def test_transcribes_german_and_english_in_one_batch(
    asr: WhisperAsr, datasets: Path
) -> None:
    german, _ = sf.read(datasets / "emodb" / "wav" / "03a01Fa.wav", dtype="float32")
    english, _ = sf.read(
        datasets / "ravdess" / "Actor_01" / "03-01-01-01-01-01-01.flac", dtype="float32"
    )
    first, second = asr.transcribe_batch(
        [log_mel(german), log_mel(english)], [None, None]
    )
    # "Der Lappen liegt auf dem Eisschrank": int8 kernels of other CPUs may hear
    # "Lacken", so the test reads the rest of the sentence.
    assert first.language == "de" and "auf dem Eisschrank" in first.text
    assert second.language == "en" and "door" in second.text.lower()
    fixed = asr.transcribe(german, "de")
    assert fixed.language == "de" and fixed.language_probability == 1.0
