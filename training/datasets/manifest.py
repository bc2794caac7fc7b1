"""A generic CSV manifest (``path,label,speaker[,text][,language]``) for any corpus."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Final

from training.datasets.base import Utterance, label_for

_REQUIRED: Final = ("path", "label", "speaker")


def load_csv(path: Path) -> list[Utterance]:
    """Load a CSV manifest with a header row.

    Columns ``path`` (audio, relative to the CSV's folder or absolute), ``label``
    (any spelling ``streamser.labels.canonical_label`` knows) and ``speaker`` are
    required; ``text`` and ``language`` (ISO 639-1) are optional. Speakers become
    ``csv:SPEAKER`` unless they already carry a ``corpus:`` prefix, and the corpus
    is ``csv``. ``path`` may be a folder holding ``manifest.csv``.

    Raises:
        ValueError: a column is missing, a row's label is unknown, its speaker is
            empty or its audio file is missing.
    """
    if path.is_dir():
        path = path / "manifest.csv"
        if not path.is_file():
            raise ValueError(f"csv: no manifest.csv in {path.parent}")
    utterances = []
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in _REQUIRED if name not in columns]
        if missing:
            raise ValueError(
                f"csv: {path} lacks columns {', '.join(missing)} "
                "(header must be path,label,speaker[,text][,language])"
            )
        reader.fieldnames = columns
        for line, row in enumerate(reader, start=2):
            where = f"csv: {path} line {line}"
            audio = path.parent / (row["path"] or "").strip()
            if not (row["path"] or "").strip() or not audio.is_file():
                raise ValueError(f"{where}: audio file {audio} not found")
            speaker = (row["speaker"] or "").strip()
            if not speaker:
                raise ValueError(f"{where}: empty speaker")
            text = (row.get("text") or "").strip() or None
            language = (row.get("language") or "").strip().lower() or None
            relative = Path((row["path"] or "").strip()).with_suffix("")
            utterances.append(
                Utterance(
                    utt_id=f"csv:{relative.as_posix()}",
                    path=audio,
                    label=label_for(row["label"] or "", where),
                    speaker=speaker if ":" in speaker else f"csv:{speaker}",
                    corpus="csv",
                    text=text,
                    language=language,
                )
            )
    return utterances
