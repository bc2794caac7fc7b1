"""Loaders for English acted corpora: CREMA-D, TESS and SAVEE (file-name schemes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from training.datasets.base import code_label, label_for
from training.datasets.corpus import Corpus, Item, NamedFiles

# --- CREMA-D ----------------------------------------------------------------------

CREMA_D_CODES: Final[dict[str, str]] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
"""CREMA-D emotion code (3rd field) -> canonical label."""

CREMA_D_SENTENCES: Final[dict[str, str]] = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
"""CREMA-D sentence code (2nd field) -> the sentence spoken."""


def _crema_d_name(path: Path, match: re.Match[str], where: str) -> Item:
    actor, sentence, emotion, _intensity = match.groups()
    label = code_label(emotion, CREMA_D_CODES, where)
    return Item(path.stem, label, actor, CREMA_D_SENTENCES.get(sentence))


load_crema_d: Final = NamedFiles(
    Corpus("crema-d", "CREMA-D", "en"),
    "1001_DFA_ANG_XX.wav",
    re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$"),
    _crema_d_name,
)
"""Load CREMA-D from ``AAAA_SSS_EEE_II.wav`` files (e.g. ``1001_DFA_ANG_XX.wav``).

Fields: actor (1001-1091), sentence code, emotion (ANG, DIS, FEA, HAP, NEU, SAD),
intensity (LO, MD, HI, XX). Files are searched recursively (the corpus keeps them in
``AudioWAV/``)."""


# --- TESS -------------------------------------------------------------------------


def _tess_name(path: Path, match: re.Match[str], where: str) -> Item:
    speaker, word, emotion = match.groups()
    speaker = speaker if len(speaker) == 3 else f"{speaker}F"
    label = label_for(emotion, where)
    return Item(path.stem, label, speaker, f"Say the word {word.lower()}")


load_tess: Final = NamedFiles(
    Corpus("tess", "TESS", "en"),
    "OAF_back_angry.wav",
    re.compile(r"^(OAF|YAF|OA|YA)_([A-Za-z']+)_([A-Za-z_]+)$"),
    _tess_name,
)
"""Load TESS from ``OAF_back_angry.wav``-style files (in any folders).

Fields: speaker (OAF older, YAF younger talker; the ``OA_``/``YA_`` spelling of some
files is read as the same speaker), the target word, and the emotion (angry, disgust,
fear, happy, neutral, ps = pleasant surprise, sad). The text is the carrier phrase
"Say the word WORD"."""


# --- SAVEE ------------------------------------------------------------------------

SAVEE_CODES: Final[dict[str, str]] = {
    "a": "anger",
    "d": "disgust",
    "f": "fear",
    "h": "happiness",
    "n": "neutral",
    "sa": "sadness",
    "su": "surprise",
}
"""SAVEE emotion prefix of the file name -> canonical label."""


def _savee_name(path: Path, match: re.Match[str], where: str) -> Item:
    prefix, code, _number = match.groups()
    speaker = prefix or path.parent.name
    if not re.fullmatch(r"[A-Z]{2}", speaker):
        raise ValueError(f"{where}: no speaker (expected DC_a01.wav or DC/a01.wav)")
    label = code_label(code, SAVEE_CODES, where)
    return Item(f"{speaker}_{path.stem.rpartition('_')[2]}", label, speaker, None)


load_savee: Final = NamedFiles(
    Corpus("savee", "SAVEE", "en"),
    "DC_a01.wav or DC/a01.wav",
    re.compile(r"^(?:([A-Z]{2})_)?([a-z]{1,2})(\d\d)$"),
    _savee_name,
)
"""Load SAVEE from ``DC_a01.wav`` files or ``DC/a01.wav`` (original ``AudioData``).

Speakers DC, JE, JK, KL (from the name's prefix, else the parent folder); emotion
prefixes a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise;
then the sentence number."""
