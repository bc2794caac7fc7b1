"""The one pattern every corpus loader fills in: a corpus and how its files are listed.

A corpus is read either from its audio files' names (``NamedFiles``: walk the folder,
parse each name) or from a CSV manifest (``ManifestRows``: one row per utterance).
Each corpus module only says what a name or a row means, by a small function that
returns an ``Item`` (key, label, speaker, text) or None to skip it on purpose;
``Corpus.utterance`` turns an item into an ``Utterance``, and walking, parsing, checks
and error messages live here, once. ``emotion_manifest`` is the whole spec of a corpus
whose manifest has ``path,speaker,emotion`` columns.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from training.datasets.base import Utterance, audio_files, label_for, require_dir

Row = dict[str, str]
"""A manifest row: column -> value, without surrounding ASCII whitespace ("" for an
empty cell)."""
_BLANKS: Final = " \t\r\n\f\v"
"""What is stripped from cells: ASCII whitespace only, so that a corpus's own
characters at a cell's edge (MELD's stray cp1252 bytes, e.g. U+0085) stay for its
parser to read."""


class Item(NamedTuple):
    """What a file name or a manifest row says about one utterance.

    Attributes:
        key: the utterance's id within its corpus (e.g. the file's stem).
        label: canonical emotion label.
        speaker: speaker id within the corpus, or one already ``corpus:``-prefixed.
        text: transcript, or None where unknown or unsafe to use: every corpus says
            which, because words that recur with one emotion leak the label.
        language: ISO 639-1 code where it differs by utterance (default: the
            corpus's).
        sentiment: sentiment label, for corpora that carry one.
    """

    key: str
    label: str
    speaker: str
    text: str | None
    language: str | None = None
    sentiment: str | None = None


@dataclass(frozen=True)
class Corpus:
    """What every utterance of one corpus shares.

    Attributes:
        name: the corpus name, also the prefix of its utterance and speaker ids.
        title: how the corpus names itself, for errors (e.g. "EMO-DB").
        language: ISO 639-1 code of its speech, or None (mixed or unknown).
    """

    name: str
    title: str
    language: str | None = None

    def utterance(self, item: Item, path: Path | None) -> Utterance:
        """The utterance of ``item`` (audio ``path``): id ``NAME:key``, speaker
        ``NAME:speaker`` (kept as is when it already carries a ``corpus:`` prefix),
        the corpus's language unless the item has its own."""
        return Utterance(
            utt_id=f"{self.name}:{item.key}",
            path=path,
            label=item.label,
            speaker=item.speaker
            if ":" in item.speaker
            else f"{self.name}:{item.speaker}",
            corpus=self.name,
            text=item.text,
            language=item.language or self.language,
            sentiment=item.sentiment,
        )


NameParser = Callable[[Path, "re.Match[str]", str], "Item | None"]
"""(audio file, its name's match, where for errors) -> the item, or None to skip the
file on purpose."""

RowParser = Callable[[Row, Path, str], Item]
"""(row, its file, where for errors) -> the item. The file is the row's audio file,
or for a manifest without audio (``ManifestRows.audio`` False) the manifest."""


@dataclass(frozen=True)
class NamedFiles:
    """A corpus whose audio file names carry speaker and emotion.

    Calling it with a folder loads every audio file below it (recursively, sorted,
    hidden files skipped); every name must match ``pattern`` (the file's stem).

    Attributes:
        corpus: the corpus (its name is the dataset kind).
        example: an example file name, for errors.
        pattern: the stem's regular expression.
        parse: what a matching name means.
    """

    corpus: Corpus
    example: str
    pattern: re.Pattern[str]
    parse: NameParser

    def __call__(self, root: Path) -> list[Utterance]:
        """Load the corpus from ``root``.

        Raises:
            ValueError: ``root`` is not a folder, or a name does not follow the
                scheme, or ``parse`` rejects it.
        """
        kind = self.corpus.name
        require_dir(root, kind)
        utterances = []
        for path in audio_files(root):
            match = self.pattern.match(path.stem)
            if match is None:
                raise ValueError(
                    f"{kind}: {path} does not follow the {self.corpus.title} naming "
                    f"scheme ({self.example})"
                )
            item = self.parse(path, match, f"{kind}: {path}")
            if item is not None:
                utterances.append(self.corpus.utterance(item, path))
        return utterances


@dataclass(frozen=True)
class ManifestRows:
    """A corpus listed in a CSV manifest with a header row (UTF-8, BOM allowed).

    Calling it with the manifest, or a folder holding ``file_name``, loads one
    utterance per row. With ``audio`` the ``path`` column names each row's audio file,
    relative to the manifest's folder, and the file must exist.

    Attributes:
        kind: the dataset kind, for errors.
        corpus: the corpus.
        columns: the columns every row needs.
        parse: what a row means.
        file_name: the manifest's name inside a folder; None: a file must be given.
        audio: whether rows name audio files (column ``path``).
        header: the expected header, named in the missing-columns error.
    """

    kind: str
    corpus: Corpus
    columns: tuple[str, ...]
    parse: RowParser
    file_name: str | None = "manifest.csv"
    audio: bool = True
    header: str = ""

    def manifest(self, path: Path) -> Path:
        """The manifest file that ``path`` names.

        Raises:
            ValueError: there is none.
        """
        if path.is_file():
            return path
        if self.file_name is None:
            raise ValueError(f"{self.kind}: {path} is a folder; give the CSV file")
        if not (path / self.file_name).is_file():
            raise ValueError(f"{self.kind}: no {self.file_name} in {path}")
        return path / self.file_name

    def __call__(self, path: Path) -> list[Utterance]:
        """Load the corpus from its manifest.

        Raises:
            ValueError: no manifest, a column missing, a row's audio file missing,
                or ``parse`` rejecting a row (each naming file and line).
        """
        manifest = self.manifest(path)
        utterances = []
        with manifest.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            names = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in self.columns if name not in names]
            if missing:
                hint = f" (header must be {self.header})" if self.header else ""
                raise ValueError(
                    f"{self.kind}: {manifest} lacks columns {', '.join(missing)}{hint}"
                )
            reader.fieldnames = names
            for line, raw in enumerate(reader, start=2):
                where = f"{self.kind}: {manifest} line {line}"
                row = {k: (v or "").strip(_BLANKS) for k, v in raw.items() if k}
                source = self._source(row, manifest, where)
                item = self.parse(row, source, where)
                audio = source if self.audio else None
                utterances.append(self.corpus.utterance(item, audio))
        return utterances

    def _source(self, row: Row, manifest: Path, where: str) -> Path:
        if not self.audio:
            return manifest
        audio = manifest.parent / row["path"]
        if not row["path"] or not audio.is_file():
            raise ValueError(f"{where}: audio file {audio} not found")
        return audio


def required(row: Row, column: str, where: str) -> str:
    """A row's non-empty value of ``column``.

    Raises:
        ValueError: it is empty, naming ``where``.
    """
    value = row.get(column, "")
    if not value:
        raise ValueError(f"{where}: empty {column}")
    return value


def stem_of(relative: str) -> str:
    """A manifest path without its suffix, as an utterance key (``a/b.wav`` -> ``a/b``)."""
    return Path(relative).with_suffix("").as_posix()


MANIFEST_COLUMNS: Final = ("path", "speaker", "emotion")
"""The columns of the manifests in ``../shared/datasets`` that every loader reads."""


def emotion_manifest(
    corpus: Corpus,
    emotions: tuple[str, ...] | None = None,
    language: Callable[[Row], str | None] | None = None,
) -> ManifestRows:
    """The loader of a corpus whose ``manifest.csv`` has ``path,speaker,emotion``.

    Each row becomes an utterance keyed by its path without suffix, with no text
    (these corpora's words are fixed or leak the label).

    Args:
        corpus: the corpus (its name is the dataset kind).
        emotions: the canonical labels the corpus has; a row with another is an
            error (None: any canonical label).
        language: a row's language (default: the corpus's).
    """

    def parse(row: Row, _audio: Path, where: str) -> Item:
        label = label_for(row["emotion"], where)
        if emotions is not None and label not in emotions:
            raise ValueError(
                f"{where}: emotion {label!r} is not one of {corpus.title}'s "
                f"({', '.join(emotions)})"
            )
        speaker = required(row, "speaker", where)
        row_language = language(row) if language is not None else None
        return Item(stem_of(row["path"]), label, speaker, None, row_language)

    return ManifestRows(corpus.name, corpus, MANIFEST_COLUMNS, parse)
