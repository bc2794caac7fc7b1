"""Loader for MELD's dialogue lines in their official CSV form (``meld-text``).

MELD (Poria et al. 2019, GPL-3.0) labels each line of a Friends dialogue with one of
seven emotions and a sentiment. Columns used: ``Utterance``, ``Speaker``, ``Emotion``,
``Sentiment``, ``Dialogue_ID``, ``Utterance_ID``. There is no audio (``path`` is None);
utterances keep the file's order, so the lines of one dialogue stay together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from training.datasets.base import label_for
from training.datasets.corpus import Corpus, Item, ManifestRows, Row

SENTIMENTS: Final[tuple[str, ...]] = ("negative", "neutral", "positive")
"""MELD's sentiment classes, in the order the English text graph outputs them."""

_COLUMNS: Final = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID")

# MELD's CSVs carry Windows-1252 punctuation decoded as Latin-1 in some rows.
_FIXES: Final[dict[str, str]] = {
    "\u0092": "'",
    "\u0091": "'",
    "\u0093": '"',
    "\u0094": '"',
    "\u0096": "-",
    "\u0097": "-",
    "\u0085": "...",
    "\u2019": "'",
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
}


def clean_text(text: str) -> str:
    """Normalise MELD's punctuation quirks (curly quotes, stray cp1252 bytes)."""
    for bad, good in _FIXES.items():
        text = text.replace(bad, good)
    return " ".join(text.split())


def _meld_row(row: Row, manifest: Path, where: str) -> Item:
    sentiment = row["Sentiment"].lower()
    if sentiment not in SENTIMENTS:
        raise ValueError(f"{where}: unknown sentiment {row['Sentiment']!r}")
    dialogue = row["Dialogue_ID"]
    return Item(
        f"{manifest.stem}:{dialogue}_{row.get('Utterance_ID', '')}",
        label_for(row["Emotion"], where),
        dialogue,
        clean_text(row["Utterance"]),
        sentiment=sentiment,
    )


load_meld_text: Final = ManifestRows(
    "meld-text",
    Corpus("meld", "MELD", "en"),
    _COLUMNS,
    _meld_row,
    file_name=None,
    audio=False,
)
"""Load one MELD split CSV (``train.csv``, ``dev.csv`` or ``test.csv``).

Speakers are ``meld:<dialogue>`` (one dialogue, several characters), so that grouped
folds keep a dialogue's lines together. Raises ValueError for a folder, a missing
column or a row with an unknown label."""
