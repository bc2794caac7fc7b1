"""Indian EmoSpeech Command (RakshakTeam): ``rakshak:PATH`` with ``manifest.csv``.

Columns ``path,speaker,emotion,keyword,environment,place,duration_s`` (paths relative
to the manifest's folder). Non-actors on their own phones each say one keyword (help,
bacho, stop, no, go, yes, or ``unknown``) in a requested emotion: anger, calm, fear or
happiness. Calm stays "calm" here, as RAVDESS's does; training's ``--labels fold`` and
the reports read it as neutral. The keyword is not passed on as text: keywords are not
balanced across emotions (``help`` is anger in 100 of its 247 clips), so it would leak
the label. The language is Hindi for ``bacho``, English for the other keywords and
unset for ``unknown``. Speakers are the first 8 hex digits of the user hash; evaluate
grouped by speaker. Reference: Banga et al., arXiv:1910.13801 (2019).
"""

from __future__ import annotations

from typing import Final

from training.datasets.corpus import Corpus, Row, emotion_manifest

RAKSHAK_EMOTIONS: Final = ("anger", "calm", "fear", "happiness")
KEYWORD_LANGUAGES: Final = {
    "bacho": "hi",
    "help": "en",
    "stop": "en",
    "no": "en",
    "go": "en",
    "yes": "en",
}
"""The language of each keyword; any other (``unknown``, or no keyword column) leaves
it unset."""


def _language(row: Row) -> str | None:
    return KEYWORD_LANGUAGES.get(row.get("keyword", "").lower())


load_rakshak: Final = emotion_manifest(
    Corpus("rakshak", "Rakshak"), RAKSHAK_EMOTIONS, _language
)
"""Load the Rakshak subsample from its folder (or the ``manifest.csv`` itself);
speakers become ``rakshak:HASH8``."""
