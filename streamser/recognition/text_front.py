"""Text front ends a text graph may name besides Whisper's BPE (its ``tokenizer`` field).

- ``wordpiece:FILE``: a ``tokenizers`` JSON (e.g. MiniLM's WordPiece) shipped beside
  the graph; ids with the special tokens (``[CLS] ... [SEP]``), at most
  ``MAX_WORDPIECE_TOKENS``.
- ``char-ngrams:FILE``: word-bounded character n-grams, as scikit-learn's
  ``TfidfVectorizer(analyzer="char_wb")`` cuts them; the ids are the sorted distinct
  vocabulary indices of the n-grams present (the graph weighs them itself).

Both are pure Python over files in the model folder: nothing is downloaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from streamser.errors import ModelError

MAX_WORDPIECE_TOKENS: Final = 64
"""WordPiece ids fed to a graph, special tokens included."""

_WHITE_SPACES: Final = re.compile(r"\s\s+")


class TokenEncoder(Protocol):
    """Turns a transcript into a text graph's ``token_ids`` row."""

    def encode(self, text: str) -> npt.NDArray[np.int64]:
        """Token ids (empty for an empty transcript)."""
        ...


class WordPieceEncoder:
    """A ``tokenizers`` JSON file (WordPiece/BPE), with its special tokens."""

    def __init__(self, path: Path) -> None:
        """Load ``path``.

        Raises:
            ModelError: the file is missing or not a tokenizer.
        """
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises its own untyped errors
            raise ModelError(f"{path}: not a loadable tokenizer ({err})") from err
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_WORDPIECE_TOKENS)

    def encode(self, text: str) -> npt.NDArray[np.int64]:
        """Ids of ``text``; empty when it has no words."""
        text = " ".join(text.split())
        if not text:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self._tokenizer.encode(text).ids, dtype=np.int64)


def char_wb_ngrams(text: str, low: int, high: int, lowercase: bool = True) -> list[str]:
    """Character n-grams inside word boundaries, exactly as scikit-learn's
    ``char_wb`` analyzer makes them (each word padded with one space each side)."""
    if lowercase:
        text = text.lower()
    text = _WHITE_SPACES.sub(" ", text)
    grams = []
    for word in text.split():
        word = f" {word} "
        width = len(word)
        for n in range(low, high + 1):
            offset = 0
            grams.append(word[offset : offset + n])
            while offset + n < width:
                offset += 1
                grams.append(word[offset : offset + n])
            if offset == 0:  # a word shorter than n counts once
                break
    return grams


class CharNgramEncoder:
    """Word-bounded character n-grams mapped onto a vocabulary file.

    The file is JSON: ``{"ngram_range": [low, high], "lowercase": bool,
    "vocabulary": [n-gram, ...]}`` (an n-gram's id is its index).
    """

    def __init__(self, path: Path) -> None:
        """Load ``path``.

        Raises:
            ModelError: the file is missing or malformed.
        """
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            low, high = (int(n) for n in data["ngram_range"])
            vocabulary = data["vocabulary"]
            if not isinstance(vocabulary, list) or not 1 <= low <= high:
                raise ValueError("bad vocabulary or ngram_range")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelError(
                f"{path}: not a character n-gram vocabulary ({err})"
            ) from err
        self.ngram_range = (low, high)
        self.lowercase = bool(data.get("lowercase", True))
        self._ids = {str(gram): index for index, gram in enumerate(vocabulary)}

    def encode(self, text: str) -> npt.NDArray[np.int64]:
        """Sorted distinct ids of the n-grams of ``text`` that are in the vocabulary."""
        grams = char_wb_ngrams(text, *self.ngram_range, lowercase=self.lowercase)
        ids = {self._ids[g] for g in grams if g in self._ids}
        return np.asarray(sorted(ids), dtype=np.int64)


def encoder_for(tokenizer: str, model_dir: Path) -> TokenEncoder | None:
    """The encoder a graph's ``tokenizer`` field names; None for Whisper's BPE ("").

    Raises:
        ModelError: the file it names is missing or malformed.
    """
    if not tokenizer:
        return None
    kind, _, name = tokenizer.partition(":")
    path = model_dir / name
    if not path.is_file():
        raise ModelError(f"{path}: tokenizer file named by the text graph not found")
    if kind == "wordpiece":
        return WordPieceEncoder(path)
    return CharNgramEncoder(path)
