"""A generic CSV manifest (``path,label,speaker[,text][,language]``) for any corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from training.datasets.base import label_for
from training.datasets.corpus import Corpus, Item, ManifestRows, Row, required, stem_of


def _csv_row(row: Row, _audio: Path, where: str) -> Item:
    return Item(
        stem_of(row["path"]),
        label_for(row["label"], where),
        required(row, "speaker", where),
        row.get("text") or None,
        row.get("language", "").lower() or None,
    )


load_csv: Final = ManifestRows(
    "csv",
    Corpus("csv", "CSV"),
    ("path", "label", "speaker"),
    _csv_row,
    header="path,label,speaker[,text][,language]",
)
"""Load a CSV manifest with a header row.

Columns ``path`` (audio, relative to the CSV's folder or absolute), ``label`` (any
spelling ``streamser.labels.canonical_label`` knows) and ``speaker`` are required;
``text`` and ``language`` (ISO 639-1) are optional. Speakers become ``csv:SPEAKER``
unless they already carry a ``corpus:`` prefix, and the corpus is ``csv``. ``path``
may be a folder holding ``manifest.csv``. Raises ValueError for a missing column, a
row's unknown label, empty speaker or missing audio file."""
