"""The settings of an acoustic training run: architectures, their defaults, options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

FEATURE_KIND: Final = {
    "attn": "encoder",
    "stats": "encoder",
    "cnn": "mel",
    "cnn-lstm": "mel",
}
"""Architecture -> the feature kind it reads (``features_cache.FRONT_ENDS``)."""
DEFAULT_CONFIG: Final[dict[str, dict[str, Any]]] = {
    "attn": {
        "hidden": 256,
        "embedding": 128,
        "blocks": 1,
        "kernel": 5,
        "pool": 2,
        "dropout": 0.3,
    },
    "stats": {"hidden": 256, "embedding": 128, "dropout": 0.3},
    "cnn": {"channels": [32, 64, 96], "embedding": 128, "dropout": 0.3},
    "cnn-lstm": {
        "channels": [32, 64, 96],
        "embedding": 128,
        "lstm": 96,
        "dropout": 0.3,
    },
}
"""Architecture -> its default constructor kwargs (``--config`` overrides them)."""
LABEL_MODES: Final = ("fold", "union", "mask")
"""``--labels``: calm and boredom read as neutral; every corpus's labels; those, with
each corpus's loss over its own labels only."""


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation and augmentation settings of one training run.

    Attributes:
        epochs: maximum epochs (early stopping picks the best on validation).
        batch_size: utterances per step.
        lr: peak AdamW learning rate (one-cycle cosine schedule).
        weight_decay: AdamW weight decay.
        label_smoothing: cross-entropy label smoothing.
        time_masks: SpecAugment time masks per utterance (each <= 10% of frames).
        feature_masks: SpecAugment feature masks per utterance.
        feature_mask_width: maximal width of a feature mask, in dims.
        copies: feature copies to sample from: the clean one and ``copies - 1``
            augmented ones (``features_cache.augment_audio``; 1 = clean only). The
            shipped model's 3 keep it right on telephone audio (MODEL_CARD.md).
        mixup: mixup alpha (0 = off).
        seeds: seeds of the ensemble members.
        val_fraction: share of training speakers held out for early stopping.
        history_sizes: for a head that adapts to the speaker, how many other
            utterances of its speaker a training example's baseline averages (drawn
            uniformly from these, capped by the window and the speaker's utterances);
            0 trains the unadapted path a stream's first utterance takes.
        history_mixes: which of the speaker's utterances such a baseline is drawn
            from, one mix per example: "any", "calm" (calm or neutral ones), "same"
            (the example's own emotion) or "one" (all in one random emotion). The
            last three keep the head from taking "sounds like the speaker's recent
            speech" for "calm" (MODEL_CARD.md, speaker adaptation).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    time_masks: int = 0
    feature_masks: int = 0
    feature_mask_width: int = 48
    copies: int = 3
    mixup: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.15
    history_sizes: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)
    history_mixes: tuple[str, ...] = ("any", "calm", "same", "one")
    affect_weight: float = 1.0
    """Weight of the (arousal, valence) regression loss of a head with ``affect``."""
    valence_weight: float = 1.0
    """Extra factor on the valence column of that loss (arousal's is 1)."""
    balance: str = "none"
    """"corpus": draw every corpus equally often in an epoch (sampling with
    replacement, weights 1 / corpus size); "none": every utterance once."""
    corpus_adversary: float = 0.0
    """Weight of a corpus classifier trained through gradient reversal on the
    embedding (0 = off): the head is pushed towards features that do not tell the
    training corpora apart (Ganin and Lempitsky, 2015). The weight ramps up from 0
    over training; the classifier is not exported."""
    corpus_norm: str = ""
    """Standardise each corpus's features by its own statistics, a held-out corpus
    included (``data.normalise_by_corpus``), over "all" its clips or its clips of
    one label ("neutral"); "" = off. A measurement of what a running
    normalisation over a deployment's traffic would give; not exported."""
    crop_probability: float = 0.0
    """Chance that a training example of a head trained on ``summaries`` is the
    summary of a random window of its utterance instead of the whole (0 = off): a
    single word is summarised over fewer frames than an acted sentence, and its
    standard deviations are smaller (``data.window_summary``)."""
    crop_seconds: tuple[float, float] = (0.4, 1.5)
    """Length range of those windows, in seconds (capped by the utterance)."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``features_cache.AugmentOptions`` for the augmented copies, e.g.
    ``{"reverb_probability": 1.0, "noise_probability": 0.0}``."""
