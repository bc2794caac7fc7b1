"""Shared by the text-model tests: the shipped text graphs without Whisper, and
``python -m training evaluate`` run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import Recognizer, RecognizerOptions

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "streamser" / "models"


def text_recognizer(models: Path = MODELS) -> Recognizer:
    """The graphs of ``models``, ASR off: text graphs with their own front ends."""
    return Recognizer(
        RecognizerOptions(
            EmotionOptions(model_dir=str(models)), AsrOptions(enabled=False)
        )
    )


def run_evaluate(data: str, models: Path = MODELS) -> subprocess.CompletedProcess[str]:
    """``python -m training evaluate --data DATA --models MODELS --json``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "evaluate",
            "--data",
            data,
            "--models",
            str(models),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        check=False,
    )
