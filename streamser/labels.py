"""The canonical emotion labels shared by training and runtime.

Every corpus label is mapped onto this set; each model stores the subset it was trained
on, in output order, in its ONNX metadata.
"""

from __future__ import annotations

from typing import Final

CANONICAL_LABELS: Final[tuple[str, ...]] = (
    "anger",
    "boredom",
    "calm",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)

_ALIASES: Final[dict[str, str]] = {
    "angry": "anger",
    "ang": "anger",
    "bored": "boredom",
    "disgusted": "disgust",
    "dis": "disgust",
    "fearful": "fear",
    "fea": "fear",
    "happy": "happiness",
    "hap": "happiness",
    "joy": "happiness",
    "neu": "neutral",
    "sad": "sadness",
    "surprised": "surprise",
    "pleasant_surprise": "surprise",
    "ps": "surprise",
    "sur": "surprise",
}


def canonical_label(name: str) -> str:
    """Map a corpus label onto the canonical set.

    Args:
        name: a label as a corpus spells it ("angry", "Happy", "ps", ...).

    Returns:
        The canonical label.

    Raises:
        ValueError: the label is not known.
    """
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    label = _ALIASES.get(key, key)
    if label not in CANONICAL_LABELS:
        raise ValueError(
            f"unknown emotion label {name!r}; known: {', '.join(CANONICAL_LABELS)}"
        )
    return label


def voice_and_words(voice: str, words: str | None, sentiment: str | None) -> str | None:
    """The voice's label beside the words' when they differ, e.g. ``voice neutral ·
    words anger (negative)``; None when they agree or the words have no label.

    Args:
        voice: the utterance's label (the voice's own).
        words: the text model's label (``modalities.text``), or None.
        sentiment: the words' sentiment label, or None.
    """
    if words is None or words == voice:
        return None
    said = f"words {words}" + (f" ({sentiment})" if sentiment else "")
    return f"voice {voice} \u00b7 {said}"
