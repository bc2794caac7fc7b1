"""Loaders for English acted corpora: CREMA-D, TESS and SAVEE (file-name schemes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from training.datasets.base import (
    Utterance,
    audio_files,
    code_label,
    label_for,
    require_dir,
)

_LANGUAGE: Final = "en"

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

_CREMA_D_NAME: Final = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def load_crema_d(root: Path) -> list[Utterance]:
    """Load CREMA-D from ``AAAA_SSS_EEE_II.wav`` files (e.g. ``1001_DFA_ANG_XX.wav``).

    Fields: actor (1001-1091), sentence code, emotion (ANG, DIS, FEA, HAP, NEU,
    SAD), intensity (LO, MD, HI, XX). Files are searched recursively (the corpus
    keeps them in ``AudioWAV/``).

    Raises:
        ValueError: a file name does not parse or has an unknown emotion code.
    """
    require_dir(root, "crema-d")
    utterances = []
    for path in audio_files(root):
        match = _CREMA_D_NAME.match(path.stem)
        if match is None:
            raise ValueError(
                f"crema-d: {path} does not follow the CREMA-D naming scheme "
                "(1001_DFA_ANG_XX.wav)"
            )
        actor, sentence, emotion, _intensity = match.groups()
        utterances.append(
            Utterance(
                utt_id=f"crema-d:{path.stem}",
                path=path,
                label=code_label(emotion, CREMA_D_CODES, f"crema-d: {path}"),
                speaker=f"crema-d:{actor}",
                corpus="crema-d",
                text=CREMA_D_SENTENCES.get(sentence),
                language=_LANGUAGE,
            )
        )
    return utterances


# --- TESS -------------------------------------------------------------------------

_TESS_NAME: Final = re.compile(r"^(OAF|YAF|OA|YA)_([A-Za-z']+)_([A-Za-z_]+)$")


def load_tess(root: Path) -> list[Utterance]:
    """Load TESS from ``OAF_back_angry.wav``-style files (in any folders).

    Fields: speaker (OAF older, YAF younger talker; the ``OA_``/``YA_`` spelling
    of some files is read as the same speaker), the target word, and the emotion
    (angry, disgust, fear, happy, neutral, ps = pleasant surprise, sad). The text
    is the carrier phrase "Say the word WORD".

    Raises:
        ValueError: a file name does not parse or has an unknown emotion.
    """
    require_dir(root, "tess")
    utterances = []
    for path in audio_files(root):
        match = _TESS_NAME.match(path.stem)
        if match is None:
            raise ValueError(
                f"tess: {path} does not follow the TESS naming scheme "
                "(OAF_back_angry.wav)"
            )
        speaker, word, emotion = match.groups()
        speaker = speaker if len(speaker) == 3 else f"{speaker}F"
        utterances.append(
            Utterance(
                utt_id=f"tess:{path.stem}",
                path=path,
                label=label_for(emotion, f"tess: {path}"),
                speaker=f"tess:{speaker}",
                corpus="tess",
                text=f"Say the word {word.lower()}",
                language=_LANGUAGE,
            )
        )
    return utterances


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

_SAVEE_NAME: Final = re.compile(r"^(?:([A-Z]{2})_)?([a-z]{1,2})(\d\d)$")


def load_savee(root: Path) -> list[Utterance]:
    """Load SAVEE from ``DC_a01.wav`` files or ``DC/a01.wav`` (original ``AudioData``).

    Speakers DC, JE, JK, KL (from the name's prefix, else the parent folder);
    emotion prefixes a anger, d disgust, f fear, h happiness, n neutral,
    sa sadness, su surprise; then the sentence number.

    Raises:
        ValueError: a file name does not parse or has an unknown emotion code.
    """
    require_dir(root, "savee")
    utterances = []
    for path in audio_files(root):
        match = _SAVEE_NAME.match(path.stem)
        if match is None:
            raise ValueError(
                f"savee: {path} does not follow the SAVEE naming scheme "
                "(DC_a01.wav or DC/a01.wav)"
            )
        prefix, code, _number = match.groups()
        speaker = prefix or path.parent.name
        if not re.fullmatch(r"[A-Z]{2}", speaker):
            raise ValueError(
                f"savee: {path}: no speaker (expected DC_a01.wav or DC/a01.wav)"
            )
        utterances.append(
            Utterance(
                utt_id=f"savee:{speaker}_{path.stem.rpartition('_')[2]}",
                path=path,
                label=code_label(code, SAVEE_CODES, f"savee: {path}"),
                speaker=f"savee:{speaker}",
                corpus="savee",
                language=_LANGUAGE,
            )
        )
    return utterances
