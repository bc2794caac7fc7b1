"""Train and evaluate the acoustic emotion model speaker-independently.

``python -m training acoustic`` (``cli``) runs it. The package, one module per job:

- ``options``: architectures, their default configs, ``TrainOptions``;
- ``data``: corpora, labels and feature copies (``load_data``), and what forked fold
  workers share;
- ``streams``: speaker baselines of utterances heard as streams (adapting heads);
- ``loop``: the training loop of one head (``train_one``);
- ``predict``: class probabilities of a trained head;
- ``folds``: speaker-independent cross-validation and the final fit;
- ``report``: per-corpus scores of held-out conditions and calibration;
- ``cli``: the command line and the checkpoint.

Features come from ``training.features_cache`` (computed through
``streamser.recognition.features`` exactly as the runtime does: Whisper-base encoder
states of the unpadded utterance for ``stats``/``attn``, Whisper log-mel for
``cnn``/``cnn-lstm``), clean plus seeded augmented copies.
"""

from __future__ import annotations

from training.acoustic.cli import main
from training.acoustic.data import TrainingData, load_data
from training.acoustic.folds import cross_validate, fit_final
from training.acoustic.loop import train_one
from training.acoustic.options import TrainOptions
from training.datasets import FOLD_TO_NEUTRAL

__all__ = [
    "FOLD_TO_NEUTRAL",
    "TrainOptions",
    "TrainingData",
    "cross_validate",
    "fit_final",
    "load_data",
    "main",
    "train_one",
]
