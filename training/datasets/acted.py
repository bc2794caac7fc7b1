"""Loaders for acted emotional-speech corpora named by their file-naming schemes.

EMO-DB, RAVDESS, CREMA-D, TESS, SAVEE and ASVP-ESD encode speaker and emotion in each
file's name; these loaders parse the names (and EMO-DB's manifest when present).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from training.datasets.base import Utterance, code_label, label_for
from training.datasets.corpus import (
    MANIFEST_COLUMNS,
    Corpus,
    Item,
    ManifestRows,
    NamedFiles,
    Row,
    required,
)

# --- EMO-DB -----------------------------------------------------------------------

EMODB_CODES: Final[dict[str, str]] = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
"""EMO-DB emotion letter (6th character of the file name) -> canonical label."""

EMODB_SENTENCES: Final[dict[str, str]] = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe "
    "Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
"""The ten EMO-DB sentences by text code (characters 3-5 of the file name)."""

_EMODB_NAME: Final = re.compile(r"^(\d\d)([ab]\d\d)([A-Za-z])([a-z]?)$")
EMODB: Final = Corpus("emodb", "EMO-DB", "de")


def _emodb_name(path: Path, match: re.Match[str], where: str) -> Item:
    speaker, sentence, code, _version = match.groups()
    label = code_label(code, EMODB_CODES, where)
    return Item(path.stem, label, speaker, EMODB_SENTENCES.get(sentence))


def _emodb_row(row: Row, audio: Path, where: str) -> Item:
    label = label_for(row["emotion"], where)
    speaker = required(row, "speaker", where)
    return Item(audio.stem, label, speaker, row.get("text") or None)


_EMODB_FILES: Final = NamedFiles(EMODB, "03a01Fa.wav", _EMODB_NAME, _emodb_name)
_EMODB_MANIFEST: Final = ManifestRows("emodb", EMODB, MANIFEST_COLUMNS, _emodb_row)


def load_emodb(root: Path) -> list[Utterance]:
    """Load EMO-DB from its manifest or from original-named files.

    ``root`` is either a ``manifest.csv`` (columns ``path,speaker,emotion`` and
    optionally ``text``; paths relative to the CSV), a folder holding one, or a folder
    of original-named files such as ``03a01Fa.wav`` (searched recursively): speaker
    = characters 1-2, sentence = 3-5, emotion letter = 6th character (W anger,
    L boredom, E disgust, A fear, F happiness, T sadness, N neutral). Without a
    manifest the text is the sentence the code names.

    Raises:
        ValueError: a manifest row or file name does not parse, or names an unknown
            emotion, or a manifest row's audio file is missing.
    """
    manifest = root if root.is_file() else root / "manifest.csv"
    if manifest.is_file():
        return _EMODB_MANIFEST(manifest)
    return _EMODB_FILES(root)


# --- RAVDESS ----------------------------------------------------------------------

RAVDESS_CODES: Final[dict[str, str]] = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
"""RAVDESS emotion code (3rd field of the file name) -> canonical label."""

RAVDESS_STATEMENTS: Final[dict[str, str]] = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}
"""RAVDESS statement code (5th field) -> the sentence spoken."""

_RAVDESS_NAME: Final = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
RAVDESS: Final = Corpus("ravdess", "RAVDESS", "en")


def _ravdess_name(path: Path, match: re.Match[str], where: str) -> Item | None:
    modality, channel, emotion, _intensity, statement, _rep, actor = match.groups()
    if modality != "03" or channel != "01":
        return None  # song or another modality: skipped on purpose
    label = code_label(emotion, RAVDESS_CODES, where)
    text = RAVDESS_STATEMENTS.get(statement)
    return Item(path.stem, label, actor, text)


load_ravdess: Final = NamedFiles(
    RAVDESS, "03-01-EE-II-SS-RR-NN.wav", _RAVDESS_NAME, _ravdess_name
)
"""Load RAVDESS speech from ``Actor_NN/MM-VV-EE-II-SS-RR-NN.(wav|flac)`` files.

Files are searched recursively. Only audio-only speech is kept (modality 03, vocal
channel 01); song files (vocal channel 02) and other modalities are skipped on
purpose. The speaker is the actor number (last field)."""


# --- ASVP-ESD ---------------------------------------------------------------------

ASVP_ESD_CODES: Final[dict[str, str]] = {
    **RAVDESS_CODES,
    "01": "boredom",
    "02": "neutral",
}
"""ASVP-ESD emotion codes (3rd field) that map onto the canonical labels.

The corpus names them boredom/sigh, neutral/calm, happy/laugh, sad/cry,
angry/grunt/frustration, fearful/scream/panic, disgust/dislike/contempt and
surprised/gasp/amazed.
"""

ASVP_ESD_SKIPPED: Final[dict[str, str]] = {
    "09": "excited",
    "10": "pleasure",
    "11": "pain",
    "12": "disappointment",
    "13": "breath",
}
"""ASVP-ESD emotion codes without a canonical label: skipped on purpose."""

_ASVP_NAME: Final = re.compile(r"^\d+(?:-\d+){6,}$")
ASVP_ESD: Final = Corpus("asvp-esd", "ASVP-ESD")
"""The language is left unset: the corpus mixes languages and codes them
inconsistently."""


def _asvp_esd_name(path: Path, match: re.Match[str], where: str) -> Item | None:
    fields = match.group(0).split("-")
    channel, emotion, actor = fields[1], fields[2], fields[5]
    if channel != "01" or emotion in ASVP_ESD_SKIPPED:
        return None  # non-speech, or an emotion without a canonical label
    label = code_label(emotion, ASVP_ESD_CODES, where)
    return Item(path.stem, label, actor, None)


load_asvp_esd: Final = NamedFiles(
    ASVP_ESD,
    "03-01-EE-II-SS-AA[-age-source-language].wav",
    _ASVP_NAME,
    _asvp_esd_name,
)
"""Load ASVP-ESD speech from ``actor_N/MM-VV-EE-II-SS-AA-...wav`` files.

ASVP-ESD extends RAVDESS's naming: modality, vocal channel (01 speech, 02 non-speech),
emotion, intensity, statement, actor, then optional age, source and language fields.
Files are searched recursively. Kept: vocal channel 01 (speech) with emotion codes
01-08 (see ``ASVP_ESD_CODES``; code 02 "neutral, calm" maps to neutral). Skipped on
purpose: non-speech sounds and codes 09-13 (excited, pleasure, pain, disappointment,
breath), which have no canonical label. The speaker is the actor field."""
