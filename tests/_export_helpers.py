"""Shared helpers of the export, text and fusion tests: a tiny acoustic model."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from streamser.recognition.features import LOG_MEL, log_mel

_REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMSER_DATA", _REPO_ROOT.parent / "shared" / "datasets"))
EMODB = DATA / "emodb"
LABELS = ["anger", "boredom", "neutral", "sadness"]
_CODES = {"W": "anger", "L": "boredom", "N": "neutral", "T": "sadness"}
_LABELS = LABELS
_EMODB = EMODB


def _emodb_clips(count: int) -> list[tuple[Path, str]]:
    clips = []
    for path in sorted((_EMODB / "wav").glob("*.wav")):
        label = _CODES.get(path.stem[5])
        if label is not None:
            clips.append((path, label))
    return clips[:: max(1, len(clips) // count)][:count]


def train_tiny_acoustic(checkpoint_path: Path) -> None:
    """A tiny log-mel CNN trained for a few steps on real EMO-DB clips."""
    from training.acoustic_models import build_model
    from training.datasets import load_audio

    torch.manual_seed(0)
    clips = _emodb_clips(16)
    mels = [torch.from_numpy(log_mel(load_audio(path))) for path, _ in clips]
    lengths = torch.tensor([mel.shape[0] for mel in mels])
    features = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True)
    targets = torch.tensor([_LABELS.index(label) for _, label in clips])
    config = {
        "n_labels": len(_LABELS),
        "input_dim": 80,
        "channels": [8, 16],
        "embedding": 16,
    }
    model = build_model("cnn", config)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        probs, _ = model(features, lengths)
        loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-8), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.save(
        {
            "kind": "acoustic",
            "arch": "cnn",
            "config": config,
            "state_dict": model.state_dict(),
            "labels": _LABELS,
            "front_end": LOG_MEL.to_dict(),
            "metrics": {"note": "test model, 3 steps"},
            "data": ["emodb:" + str(_EMODB)],
            "protocol": "none (test)",
            "command": "pytest tests/test_export.py",
        },
        checkpoint_path,
    )
