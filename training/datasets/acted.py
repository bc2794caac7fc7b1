"""Loaders for acted emotional-speech corpora named by their file-naming schemes.

EMO-DB, RAVDESS, CREMA-D, TESS, SAVEE and ASVP-ESD encode speaker and emotion in each
file's name; these loaders parse the names (and EMO-DB's manifest when present).
"""

from __future__ import annotations

import csv
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
_EMODB_COLUMNS: Final = ("path", "speaker", "emotion")


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
        return _load_emodb_manifest(manifest)
    require_dir(root, "emodb")
    utterances = []
    for path in audio_files(root):
        match = _EMODB_NAME.match(path.stem)
        if match is None:
            raise ValueError(
                f"emodb: {path} does not follow the EMO-DB naming scheme (03a01Fa.wav)"
            )
        speaker, sentence, code, _version = match.groups()
        utterances.append(
            Utterance(
                utt_id=f"emodb:{path.stem}",
                path=path,
                label=code_label(code, EMODB_CODES, f"emodb: {path}"),
                speaker=f"emodb:{speaker}",
                corpus="emodb",
                text=EMODB_SENTENCES.get(sentence),
                language="de",
            )
        )
    return utterances


def _load_emodb_manifest(manifest: Path) -> list[Utterance]:
    utterances = []
    with manifest.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        columns = reader.fieldnames or []
        missing = [col for col in _EMODB_COLUMNS if col not in columns]
        if missing:
            raise ValueError(f"emodb: {manifest} lacks columns {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            where = f"emodb: {manifest} line {line}"
            path = manifest.parent / row["path"]
            if not path.is_file():
                raise ValueError(f"{where}: audio file {path} not found")
            utterances.append(
                Utterance(
                    utt_id=f"emodb:{path.stem}",
                    path=path,
                    label=label_for(row["emotion"], where),
                    speaker=f"emodb:{row['speaker'].strip()}",
                    corpus="emodb",
                    text=(row.get("text") or "").strip() or None,
                    language="de",
                )
            )
    return utterances


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


def load_ravdess(root: Path) -> list[Utterance]:
    """Load RAVDESS speech from ``Actor_NN/MM-VV-EE-II-SS-RR-NN.(wav|flac)`` files.

    Files are searched recursively. Only audio-only speech is kept (modality 03,
    vocal channel 01); song files (vocal channel 02) and other modalities are
    skipped on purpose. The speaker is the actor number (last field).

    Raises:
        ValueError: a file name does not parse or has an unknown emotion code.
    """
    require_dir(root, "ravdess")
    utterances = []
    for path in audio_files(root):
        match = _RAVDESS_NAME.match(path.stem)
        if match is None:
            raise ValueError(
                f"ravdess: {path} does not follow the RAVDESS naming scheme "
                "(03-01-EE-II-SS-RR-NN.wav)"
            )
        modality, channel, emotion, _intensity, statement, _rep, actor = match.groups()
        if modality != "03" or channel != "01":
            continue
        utterances.append(
            Utterance(
                utt_id=f"ravdess:{path.stem}",
                path=path,
                label=code_label(emotion, RAVDESS_CODES, f"ravdess: {path}"),
                speaker=f"ravdess:{actor}",
                corpus="ravdess",
                text=RAVDESS_STATEMENTS.get(statement),
                language="en",
            )
        )
    return utterances


# --- ASVP-ESD ---------------------------------------------------------------------

ASVP_ESD_CODES: Final[dict[str, str]] = {
    "01": "boredom",
    "02": "neutral",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
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


def load_asvp_esd(root: Path) -> list[Utterance]:
    """Load ASVP-ESD speech from ``actor_N/MM-VV-EE-II-SS-AA-...wav`` files.

    ASVP-ESD extends RAVDESS's naming: modality, vocal channel (01 speech,
    02 non-speech), emotion, intensity, statement, actor, then optional age,
    source and language fields. Files are searched recursively. Kept: vocal
    channel 01 (speech) with emotion codes 01-08 (see ``ASVP_ESD_CODES``; code 02
    "neutral, calm" maps to neutral). Skipped on purpose: non-speech sounds and
    codes 09-13 (excited, pleasure, pain, disappointment, breath), which have no
    canonical label. The speaker is the actor field; the language is left unset
    because the corpus mixes languages and codes it inconsistently.

    Raises:
        ValueError: a file name does not parse or has an unknown emotion code.
    """
    require_dir(root, "asvp-esd")
    utterances = []
    for path in audio_files(root):
        if _ASVP_NAME.match(path.stem) is None:
            raise ValueError(
                f"asvp-esd: {path} does not follow the ASVP-ESD naming scheme "
                "(03-01-EE-II-SS-AA[-age-source-language].wav)"
            )
        fields = path.stem.split("-")
        channel, emotion, actor = fields[1], fields[2], fields[5]
        if channel != "01" or emotion in ASVP_ESD_SKIPPED:
            continue
        utterances.append(
            Utterance(
                utt_id=f"asvp-esd:{path.stem}",
                path=path,
                label=code_label(emotion, ASVP_ESD_CODES, f"asvp-esd: {path}"),
                speaker=f"asvp-esd:{actor}",
                corpus="asvp-esd",
            )
        )
    return utterances
