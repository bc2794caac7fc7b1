"""Fine-tuning Whisper's third encoder layer with v4's head: a lever of the five-corpus
selection (MODEL_CARD.md), measured under leave-one-corpus-out.

The shipped front end reads the states after Whisper base's encoder layers 2 and 3,
both frozen. Here layer 3 is rebuilt in torch from faster-whisper's weights
(``training.whisper_prefix``) with low-rank adapters (``training.lora``) on its four
linear layers, and trained together with v4's head (``stats`` with the arousal and
valence head, mixup, feature masks) on the residual stream after layer 2. That stream
is computed once per clip (the daemon's utterance, log-mel at ``--mel-level``) and
cached beside the other features. ``--rank 0`` runs the same loop with layer 3 frozen:
the control that isolates what the adapters give.

``python -m training acoustic-layer3 --data KIND:PATH ... --rank 8 --out DIR`` writes
``DIR/oof-loco.npz``, which ``python -m training held-out`` scores (UA, shares, anger
precision, ECE). It measures; it does not export a graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamser.labels import CANONICAL_LABELS
from streamser.recognition import features
from streamser.recognition.whisper_model import default_whisper_dir
from training.acoustic.data import SHARED, TrainingData, moments
from training.acoustic.loop import (
    fit_scalers,
    length_batches,
    loss_function,
    spec_augment,
    unweighted_accuracy,
    validation_split,
)
from training.acoustic.options import DEFAULT_CONFIG, TrainOptions
from training.acoustic.predict import pad, predict_outputs
from training.acoustic.rescore import main as held_out_main
from training.acoustic_models import StatsHead
from training.daemon_path import daemon_audio, daemon_view
from training.datasets import Utterance, fold_to_neutral, load_dataset, speaker_folds
from training.features_cache import default_cache_dir, read_cache, write_cache
from training.lora import AdaptedLinear
from training.whisper_prefix import (
    WhisperPrefix,
    attention_mask,
    prefix_key,
    read_encoder_weights,
)

_LOGGER = logging.getLogger(__name__)

LAYER2_VERSION = 1
"""Bumped whenever the cached layer-2 states change (part of their cache key)."""
ADAPTED = ("qkv", "attention_out", "mlp_in", "mlp_out")
"""The linear layers of Whisper's layer 3 that carry adapters."""


class Layer3Front(nn.Module):
    """Whisper base's encoder layer 3 (with adapters when ``rank`` > 0) and its final
    layer norm: the residual stream after layer 2 (batch, frames, 512) to the shipped
    front end's features, the normed states after layers 2 and 3 side by side
    (batch, frames, 1024). Untrained adapters change nothing."""

    def __init__(self, weights: dict[str, npt.NDArray[np.float32]], rank: int) -> None:
        super().__init__()
        prefix = WhisperPrefix(weights, (2, 3))
        self.layer = prefix.layers[2]
        self.final_norm = prefix.final_norm
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for name in ADAPTED if rank else ():
            linear = getattr(self.layer, name)
            adapted = AdaptedLinear(
                linear.weight.detach().numpy(), linear.bias.detach().numpy(), rank
            )
            setattr(self.layer, name, adapted)

    def forward(self, residual: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(lengths, residual.shape[1])
        after = self.layer(residual, mask)
        states = torch.cat([self.final_norm(residual), self.final_norm(after)], dim=-1)
        valid = mask[:, 0, 0, :, None].to(states.dtype)
        return states * valid  # padded frames read as zeros, as the head's input


class Layer3Model(nn.Module):
    """``Layer3Front`` then v4's ``StatsHead``; ``logits``/``affect_of`` as the head's."""

    def __init__(self, front: Layer3Front, head: StatsHead) -> None:
        super().__init__()
        self.front, self.head = front, head

    @property
    def affect_head(self) -> nn.Module | None:
        """The head's arousal and valence layer (None without affect)."""
        return self.head.affect_head

    def logits(
        self, residual: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores and embedding of the residual stream after layer 2."""
        return self.head.logits(self.front(residual, lengths), lengths)

    def affect_of(self, embedding: torch.Tensor) -> torch.Tensor:
        """(arousal, valence) of an embedding (the head's)."""
        return self.head.affect_of(embedding)


def residual_states(
    utterances: Sequence[Utterance],
    mel_level: float | None,
    cache_dir: Path | None = None,
) -> list[npt.NDArray[np.float32]]:
    """The residual stream after Whisper base's layer 2 (frames, 512) of each
    utterance's daemon view (the segmenter's longest utterance), computed in float32
    torch and cached per corpus as float16."""
    model_bin = default_whisper_dir() / "model.bin"
    front_end = features.WHISPER_LAYERS
    if mel_level is not None:
        front_end = replace(front_end, mel_level=mel_level)
    key = json.dumps(
        {
            "version": LAYER2_VERSION,
            "prefix": prefix_key(model_bin, (2,)),
            "front_end": front_end.to_dict(),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    folder = cache_dir or default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    prefix: WhisperPrefix | None = None
    found: dict[str, npt.NDArray[np.float32]] = {}
    for corpus in sorted({u.corpus for u in utterances}):
        path = folder / f"{corpus}-layer2-residual-{digest}.npz"
        cached = read_cache(path)
        missing = [
            u for u in utterances if u.corpus == corpus and u.utt_id not in cached
        ]
        if missing:
            if prefix is None:
                prefix = WhisperPrefix(read_encoder_weights(model_bin), (2,)).eval()
            started = time.monotonic()
            for utt in missing:
                if utt.path is None:
                    raise ValueError(f"utterance {utt.utt_id} has no audio")
                audio = daemon_view(daemon_audio(utt.path))
                mel = front_end.levelled(features.log_mel(audio))
                with torch.no_grad():
                    (states,), _ = prefix.residuals(
                        torch.from_numpy(mel[np.newaxis].astype(np.float32)),
                        torch.tensor([mel.shape[0]]),
                    )
                cached[utt.utt_id] = states[0].numpy().astype(np.float16)
            write_cache(path, cached)
            _LOGGER.info(
                "layer-2 states of %d %s clips in %.0f s",
                len(missing),
                corpus,
                time.monotonic() - started,
            )
        found.update(cached)
    return [found[u.utt_id].astype(np.float32) for u in utterances]


def _crop(
    states: npt.NDArray[np.float32], frames: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """A random window of at most ``frames`` frames."""
    if states.shape[0] <= frames:
        return states
    start = int(rng.integers(0, states.shape[0] - frames + 1))
    return states[start : start + frames]


def train_fold(
    weights: dict[str, npt.NDArray[np.float32]],
    states: list[npt.NDArray[np.float32]],
    train_idx: npt.NDArray[np.int64],
    val_idx: npt.NDArray[np.int64],
    rank: int,
    options: TrainOptions,
    adapter_lr: float,
    crop: int,
    seed: int,
) -> Layer3Model:
    """Train layer 3's adapters and v4's head on ``train_idx``; keep the epoch of best
    validation UA. Needs ``SHARED["data"]`` and the frozen features' ``moments``."""
    data: TrainingData = SHARED["data"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = {**DEFAULT_CONFIG["stats"], "affect": True}
    head = StatsHead(len(data.labels), input_dim=1024, **config)
    fill = fit_scalers(head, train_idx)
    model = Layer3Model(Layer3Front(weights, rank), head)
    adapters = [p for p in model.front.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": list(head.parameters()), "lr": options.lr}
    ]
    if adapters:
        groups.append({"params": adapters, "lr": adapter_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
    steps = options.epochs * math.ceil(len(train_idx) / options.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in groups],
        total_steps=steps,
        pct_start=0.15,
    )
    loss_fn = loss_function(model, data, train_idx, options)
    lengths = np.array([min(s.shape[0], crop) for s in states], dtype=np.int64)
    val_states = [states[i] for i in val_idx]
    best: dict[str, Any] | None = None
    best_ua = -1.0
    for epoch in range(1, options.epochs + 1):
        model.train()
        for rows in length_batches(train_idx, lengths, options.batch_size, rng):
            x, lens = pad([_crop(states[i], crop, rng) for i in rows])
            with torch.set_grad_enabled(bool(adapters)):
                feats = model.front(x, lens)
            feats = spec_augment(feats, lens, options, rng, fill)
            target = torch.from_numpy(data.y[rows])
            lam = float(rng.beta(options.mixup, options.mixup))
            perm = torch.from_numpy(rng.permutation(len(rows)))
            feats = lam * feats + (1 - lam) * feats[perm]
            logits, emb = head.logits(feats, torch.maximum(lens, lens[perm]))
            loss = lam * loss_fn(logits, target, rows, emb) + (1 - lam) * loss_fn(
                logits, target[perm], rows[perm.numpy()], emb
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for g in groups for p in g["params"]], 5.0
            )
            optimizer.step()
            scheduler.step()
        probs, _ = predict_outputs(model, val_states, batch_size=32)
        ua = unweighted_accuracy(data.y[val_idx], probs.argmax(1))
        _LOGGER.info("epoch %d: validation UA %.3f", epoch, ua)
        if ua > best_ua:
            best_ua = ua
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best)
    return model.eval()


def frozen_moments(
    weights: dict[str, npt.NDArray[np.float32]], states: list[npt.NDArray[np.float32]]
) -> tuple[Any, Any, Any]:
    """Frame counts, means and standard deviations of each utterance's features
    through the frozen layer 3 (what the head's scalers are fit on)."""
    front = Layer3Front(weights, 0).eval()
    feats = []
    with torch.no_grad():
        for start in range(0, len(states), 32):
            part = states[start : start + 32]
            x, lens = pad(part)
            out = front(x, lens).numpy()
            feats += [out[i, : int(lens[i])] for i in range(len(part))]
    return moments(feats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training acoustic-layer3 --data KIND:PATH ... --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m training acoustic-layer3")
    parser.add_argument("--data", action="append", required=True, help="KIND:PATH")
    parser.add_argument("--rank", type=int, default=8, help="adapter rank; 0: frozen")
    parser.add_argument("--adapter-lr", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crop", type=int, default=64, help="training frames (20 ms)")
    parser.add_argument("--mel-level", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="print held-out as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    utts = fold_to_neutral([u for spec in args.data for u in load_dataset(spec)])
    present = {u.label for u in utts}
    labels = [k for k in CANONICAL_LABELS if k in present]
    y = np.array([labels.index(u.label) for u in utts], dtype=np.int64)
    data = TrainingData(utts, labels, y)
    weights = read_encoder_weights(default_whisper_dir() / "model.bin")
    states = residual_states(utts, args.mel_level)
    SHARED["data"] = data
    SHARED["moments"], SHARED["moments_of"] = frozen_moments(weights, states), data
    options = TrainOptions(
        epochs=args.epochs,
        mixup=0.2,
        feature_masks=4,
        feature_mask_width=96,
        copies=1,
        seeds=(args.seed,),
    )
    probs = np.zeros((len(utts), len(labels)), dtype=np.float32)
    affect = np.zeros((len(utts), 2), dtype=np.float32)
    for fold in speaker_folds(utts, "loco"):
        started = time.monotonic()
        train_idx, val_idx = validation_split(
            fold.train, options.val_fraction, args.seed
        )
        model = train_fold(
            weights,
            states,
            train_idx,
            val_idx,
            args.rank,
            options,
            args.adapter_lr,
            args.crop,
            args.seed,
        )
        test_probs, test_affect = predict_outputs(
            model, [states[i] for i in fold.test], batch_size=32
        )
        probs[fold.test] = test_probs
        if test_affect is not None:
            affect[fold.test] = test_affect
        _LOGGER.info(
            "held out %s: %d clips, %.0f s",
            utts[int(fold.test[0])].corpus,
            len(fold.test),
            time.monotonic() - started,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "oof-loco.npz"
    np.savez(
        path,
        probs=probs,
        affect=affect,
        y=y,
        ids=np.array([u.utt_id for u in utts]),
        labels=np.array(labels),
    )
    return held_out_main([str(path), *(["--json"] if args.json else [])])


if __name__ == "__main__":
    sys.exit(main())
