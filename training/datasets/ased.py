"""ASED (Amharic Speech Emotion Dataset v1): ``ased:PATH`` with ``manifest.csv``.

Columns ``path,speaker,gender,emotion,sentence,repetition,duration_s`` (paths relative
to the manifest's folder); 5 emotions (anger, fear, happiness, neutral, sadness).
Most sentences were written for one emotion, so the words leak the label: the loader
never passes the sentence or any text on (``text`` stays None) and the corpus is for
acoustic models only. Reference: Retta et al., ACM TALLIP 22(1), 2023.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Final

from training.datasets.base import Utterance, label_for

_COLUMNS: Final = ("path", "speaker", "emotion")
ASED_EMOTIONS: Final = ("anger", "fear", "happiness", "neutral", "sadness")


def load_ased(root: Path) -> list[Utterance]:
    """Load ASED from its folder (or the ``manifest.csv`` itself).

    Speakers become ``ased:NN``; the language is Amharic (``am``).

    Raises:
        ValueError: no manifest, a column missing, an emotion outside ASED's five,
            an empty speaker or a missing audio file (each naming file and line).
    """
    manifest = root if root.is_file() else root / "manifest.csv"
    if not manifest.is_file():
        raise ValueError(f"ased: no manifest.csv in {root}")
    utterances = []
    with manifest.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in _COLUMNS if name not in columns]
        if missing:
            raise ValueError(f"ased: {manifest} lacks columns {', '.join(missing)}")
        reader.fieldnames = columns
        for line, row in enumerate(reader, start=2):
            where = f"ased: {manifest} line {line}"
            name = (row["path"] or "").strip()
            audio = manifest.parent / name
            if not name or not audio.is_file():
                raise ValueError(f"{where}: audio file {audio} not found")
            emotion = (row["emotion"] or "").strip().lower()
            if emotion not in ASED_EMOTIONS:
                raise ValueError(f"{where}: emotion {emotion!r} is not one of ASED's")
            speaker = (row["speaker"] or "").strip()
            if not speaker:
                raise ValueError(f"{where}: empty speaker")
            utterances.append(
                Utterance(
                    utt_id=f"ased:{Path(name).with_suffix('').as_posix()}",
                    path=audio,
                    label=label_for(emotion, where),
                    speaker=f"ased:{speaker}",
                    corpus="ased",
                    language="am",
                )
            )
    return utterances
