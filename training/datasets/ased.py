"""ASED (Amharic Speech Emotion Dataset v1): ``ased:PATH`` with ``manifest.csv``.

Columns ``path,speaker,gender,emotion,sentence,repetition,duration_s`` (paths relative
to the manifest's folder); 5 emotions (anger, fear, happiness, neutral, sadness).
Most sentences were written for one emotion, so the words leak the label: the loader
never passes the sentence or any text on (``text`` stays None) and the corpus is for
acoustic models only. Speakers become ``ased:NN``; the language is Amharic (``am``).
Reference: Retta et al., ACM TALLIP 22(1), 2023.
"""

from __future__ import annotations

from typing import Final

from training.datasets.corpus import Corpus, emotion_manifest

ASED_EMOTIONS: Final = ("anger", "fear", "happiness", "neutral", "sadness")

load_ased: Final = emotion_manifest(Corpus("ased", "ASED", "am"), ASED_EMOTIONS)
"""Load ASED from its folder (or the ``manifest.csv`` itself)."""
