"""EMOVO (Italian, acted): ``emovo:PATH`` with ``manifest.csv``.

Columns ``path,speaker,gender,emotion,sentence,duration_s`` (paths relative to the
manifest's folder); 6 actors (speakers ``emovo:f1`` ... ``emovo:m3``), 7 emotions
(anger, disgust, fear, happiness, neutral, sadness, surprise), each of the 14
sentences once per actor and emotion, so the words carry no label (they are not passed
on: ``text`` stays None). Recording traits, not emotion, mark f1's neutral clips (one
microphone) and f2 (a noise gate); evaluate leave-one-speaker-out. Reference:
Costantini et al., "EMOVO Corpus: an Italian Emotional Speech Database", LREC 2014.
"""

from __future__ import annotations

from typing import Final

from training.datasets.corpus import Corpus, emotion_manifest

EMOVO_EMOTIONS: Final = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
)  # fmt: skip

load_emovo: Final = emotion_manifest(Corpus("emovo", "EMOVO", "it"), EMOVO_EMOTIONS)
"""Load EMOVO from its folder (or the ``manifest.csv`` itself)."""
