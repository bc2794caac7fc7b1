"""Corpus loaders: ``KIND:PATH`` -> labelled utterances, audio and speaker folds.

Every loader returns :class:`Utterance` records with canonical labels and
corpus-prefixed speaker ids, so corpora can be combined. Kinds:

- ``ased``: ASED (Amharic) ``manifest.csv``; acoustic only, its words never used.
- ``emodb``: EMO-DB manifest or original-named files (``03a01Fa.wav``).
- ``emovo``: EMOVO (Italian) ``manifest.csv``; 6 actors, 7 emotions.
- ``rakshak``: Indian EmoSpeech Command ``manifest.csv``; 105 non-actors on phones,
  anger, calm, fear, happiness; its keywords never used as text.
- ``ravdess``: ``Actor_NN/03-01-EE-II-SS-RR-NN.(wav|flac)``, speech only.
- ``shemo``: ShEMO's ``female/``, ``male/`` folders of ``F01A01.wav`` + transcripts.
- ``shemo-json``: the Modified ShEMO JSON (corrected labels and transcripts).
- ``shemo-text``: the ShEMO transcript JSONL (no audio; ``path`` is None).
- ``crema-d``: ``1001_DFA_ANG_XX.wav``.
- ``tess``: ``OAF_back_angry.wav``.
- ``savee``: ``DC_a01.wav`` or ``DC/a01.wav``.
- ``asvp-esd``: ``actor_N/03-01-EE-II-SS-AA-...wav``, speech with canonical labels.
- ``meld-text``: one MELD split CSV (dialogue lines, emotion and sentiment; no audio).
- ``csv``: a manifest ``path,label,speaker[,text][,language]``.

Each loader fills in the one pattern of ``training.datasets.corpus``: a file-name
scheme (``NamedFiles``) or a CSV manifest (``ManifestRows``), with a small function
saying what a name or a row means; adding a corpus is one such module and a line in
``KINDS``.

Rows with an unknown label raise ``ValueError`` naming the file and row. Only two
loaders skip material on purpose: ``ravdess`` drops song and non-audio modalities,
``asvp-esd`` drops non-speech sounds and its emotions without a canonical label
(excited, pleasure, pain, disappointment, breath).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final

from training.datasets.acted import load_asvp_esd, load_emodb, load_ravdess
from training.datasets.ased import load_ased
from training.datasets.base import (
    FOLD_TO_NEUTRAL,
    Utterance,
    fold_to_neutral,
    load_audio,
    log_loaded,
)
from training.datasets.emovo import load_emovo
from training.datasets.english import load_crema_d, load_savee, load_tess
from training.datasets.folds import Fold, speaker_folds, speaker_streams
from training.datasets.manifest import load_csv
from training.datasets.meld import load_meld_text
from training.datasets.rakshak import load_rakshak
from training.datasets.shemo import load_shemo, load_shemo_json, load_shemo_text

__all__ = [
    "FOLD_TO_NEUTRAL",
    "KINDS",
    "Fold",
    "Utterance",
    "data_parser",
    "fold_to_neutral",
    "load_audio",
    "load_dataset",
    "speaker_folds",
    "speaker_streams",
]

KINDS: Final[dict[str, Callable[[Path], list[Utterance]]]] = {
    "ased": load_ased,
    "emodb": load_emodb,
    "emovo": load_emovo,
    "ravdess": load_ravdess,
    "rakshak": load_rakshak,
    "shemo": load_shemo,
    "shemo-json": load_shemo_json,
    "shemo-text": load_shemo_text,
    "crema-d": load_crema_d,
    "tess": load_tess,
    "savee": load_savee,
    "asvp-esd": load_asvp_esd,
    "meld-text": load_meld_text,
    "csv": load_csv,
}
"""Dataset kind -> loader taking the path of ``KIND:PATH``."""


def load_dataset(spec: str) -> list[Utterance]:
    """Load a dataset named ``KIND:PATH`` (e.g. ``emodb:../shared/datasets/emodb``).

    Args:
        spec: the kind, a colon, and the corpus folder or file.

    Returns:
        The utterances, in a deterministic (sorted file) order.

    Raises:
        ValueError: the kind is unknown, the path does not exist, the dataset is
            empty, or a row or file name carries an unknown label.
    """
    kind, sep, raw_path = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not raw_path:
        raise ValueError(
            f"dataset {spec!r} must be KIND:PATH; kinds: {', '.join(KINDS)}"
        )
    loader = KINDS.get(kind)
    if loader is None:
        raise ValueError(
            f"unknown dataset kind {kind!r} in {spec!r}; known: {', '.join(KINDS)}"
        )
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise ValueError(f"dataset {spec!r}: {path} does not exist")
    utterances = loader(path)
    if not utterances:
        raise ValueError(f"dataset {spec!r}: no utterances found in {path}")
    log_loaded(kind, path, utterances)
    return utterances


def data_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of ``python -m training COMMAND``, with its repeatable
    ``--data KIND:PATH``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m training {command}", description=description
    )
    parser.add_argument(
        "--data", action="append", required=True, help="KIND:PATH (repeatable)"
    )
    return parser
