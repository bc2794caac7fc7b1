"""Loaders for ShEMO (Sharif Emotional Speech Database, Persian) in its three forms.

- ``shemo``: the original layout, ``female/`` and ``male/`` folders of ``F01A01.wav``
  files, with transcripts beside them.
- ``shemo-json``: the Modified ShEMO JSON (corrected transcripts and labels).
- ``shemo-text``: the transcript-only JSONL in ``../shared/datasets/shemo-text``.

Speakers are ``shemo:F01`` in all three, so they can be compared and combined.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

from training.datasets.base import Utterance, code_label, label_for, require_dir
from training.datasets.corpus import Corpus, Item, NamedFiles

SHEMO_CODES: Final[dict[str, str]] = {
    "A": "anger",
    "H": "happiness",
    "N": "neutral",
    "S": "sadness",
    "W": "surprise",
    "F": "fear",
}
"""ShEMO emotion letter (4th character of ``F01A01``) -> canonical label."""

EMOTION_SENTIMENT: Final[dict[str, str]] = {
    "anger": "negative",
    "fear": "negative",
    "sadness": "negative",
    "happiness": "positive",
    "neutral": "neutral",
}
"""ShEMO's emotions read as sentiment (ShEMO has no sentiment labels; surprise can be
either, so it gives none). ``shemo-text`` utterances carry it as ``sentiment``."""

TRANSCRIPT_SUFFIXES: Final[tuple[str, ...]] = (".ort", ".txt")
"""Per-utterance transcript files: ShEMO's own ``.ort`` or plain ``.txt``."""

_SHEMO_ID: Final = re.compile(r"^([FM])(\d\d)([A-Z])(\d+)$")
SHEMO: Final = Corpus("shemo", "ShEMO", "fa")


def _parse_id(utt_id: str, where: str) -> tuple[str, str]:
    """Split a ShEMO id such as ``F01A01`` into (speaker ``F01``, emotion letter)."""
    match = _SHEMO_ID.match(utt_id)
    if match is None:
        raise ValueError(
            f"{where}: {utt_id!r} does not follow the ShEMO naming scheme (F01A01)"
        )
    gender, number, code, _index = match.groups()
    return f"{gender}{number}", code


def load_shemo(root: Path) -> list[Utterance]:
    """Load ShEMO in its original layout.

    Audio files named ``F01A01.wav`` (gender F/M, speaker number, emotion letter
    A anger, H happiness, N neutral, S sadness, W surprise, F fear, index) are
    searched recursively (the distribution has ``female/`` and ``male/``). Labels
    are the original ones from the file names; use ``shemo-json`` for the corrected
    labels of Modified ShEMO.

    Transcripts, all optional, in order of preference:

    1. one UTF-8 file per utterance named like its audio with suffix ``.ort``
       (ShEMO's orthographic transcripts) or ``.txt``, anywhere under ``root``
       (for example ``transcript/F01A01.ort``);
    2. ``shemo.json`` in ``root``: an object keyed by id (``"F01A01"`` or
       ``"F01A01.wav"``) whose values hold ``"transcript"``, as distributed with
       the corpus.

    Raises:
        ValueError: an audio file name does not parse or has an unknown emotion.
    """
    require_dir(root, "shemo")
    texts = _json_transcripts(root / "shemo.json")
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in TRANSCRIPT_SUFFIXES and _SHEMO_ID.match(path.stem):
            texts[path.stem] = path.read_text(encoding="utf-8").strip()

    def parse(path: Path, match: re.Match[str], where: str) -> Item:
        gender, number, code, _index = match.groups()
        label = code_label(code, SHEMO_CODES, where)
        return Item(path.stem, label, f"{gender}{number}", texts.get(path.stem))

    return NamedFiles(SHEMO, "F01A01.wav", _SHEMO_ID, parse)(root)


def _json_transcripts(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    entries = _read_json_object(path, "shemo")
    texts = {}
    for key, entry in entries.items():
        if isinstance(entry, dict) and isinstance(entry.get("transcript"), str):
            texts[Path(key).stem] = entry["transcript"].strip()
    return texts


def _read_json_object(path: Path, kind: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{kind}: {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{kind}: {path} must hold a JSON object keyed by utterance")
    return data


def load_shemo_json(path: Path) -> list[Utterance]:
    """Load the Modified ShEMO JSON (``modified_shemo.json``).

    The file is an object keyed by audio name (``"F21N05.wav"``); each value has
    ``"path"`` (audio, relative to the JSON's folder), ``"emotion"`` (the corrected
    label, e.g. ``"anger"``) and optionally ``"transcript"``, ``"speech_name"``
    (id of the audio in the original corpus), ``"speaker_id"`` or ``"speaker"``.
    The speaker is ``speaker_id``/``speaker`` when given, otherwise it is read from
    ``speech_name`` or the key (``F21N05`` -> ``F21``). ``path`` may be a folder
    holding ``modified_shemo.json``.

    Raises:
        ValueError: an entry lacks ``path`` or ``emotion``, its audio file is
            missing, its label is unknown, or its speaker cannot be determined.
    """
    if path.is_dir():
        path = path / "modified_shemo.json"
        if not path.is_file():
            raise ValueError(f"shemo-json: no modified_shemo.json in {path.parent}")
    utterances = []
    for key, entry in sorted(_read_json_object(path, "shemo-json").items()):
        where = f"shemo-json: {path} entry {key!r}"
        if not isinstance(entry, dict) or "path" not in entry or "emotion" not in entry:
            raise ValueError(f"{where}: needs an object with 'path' and 'emotion'")
        audio = path.parent / str(entry["path"])
        if not audio.is_file():
            raise ValueError(f"{where}: audio file {audio} not found")
        name = str(entry.get("speech_name") or Path(key).stem)
        speaker = entry.get("speaker_id") or entry.get("speaker")
        if not speaker:
            speaker, _code = _parse_id(name, where)
        transcript = entry.get("transcript")
        label = label_for(str(entry["emotion"]), where)
        text = transcript.strip() if isinstance(transcript, str) else None
        utterances.append(SHEMO.utterance(Item(name, label, str(speaker), text), audio))
    return utterances


_TEXT_FIELDS: Final = ("id", "speaker", "emotion", "transcript")


def load_shemo_text(path: Path) -> list[Utterance]:
    """Load the ShEMO transcript JSONL (transcripts only, ``path`` None).

    One JSON object per line with ``id, speaker, gender, emotion, transcript, ipa``
    (``gender`` and ``ipa`` unused). ``path`` may be a folder holding
    ``shemo_text.jsonl``.

    Raises:
        ValueError: a line is not JSON, lacks a field or has an unknown label.
    """
    if path.is_dir():
        path = path / "shemo_text.jsonl"
        if not path.is_file():
            raise ValueError(f"shemo-text: no shemo_text.jsonl in {path.parent}")
    utterances = []
    with path.open(encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"shemo-text: {path} line {line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON: {err}") from err
            missing = [name for name in _TEXT_FIELDS if name not in row]
            if missing:
                raise ValueError(f"{where}: lacks {', '.join(missing)}")
            label = label_for(str(row["emotion"]), where)
            text = str(row["transcript"]).strip()
            item = Item(
                str(row["id"]),
                label,
                str(row["speaker"]),
                text,
                sentiment=EMOTION_SENTIMENT.get(label),
            )
            utterances.append(SHEMO.utterance(item, None))
    return utterances
