"""``StablePrefix``: which words of an open utterance's partial transcripts are final,
by LocalAgreement (the policy of whisper_streaming): the words two consecutive
hypotheses agree on. A revision is a stable word that a later hypothesis (or the
final transcript) changes; they are counted."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NOT_WORD = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    """A word as compared: lower case, without punctuation ("Again." is "again")."""
    return _NOT_WORD.sub("", word.lower())


def _agreed(a: list[str], b: list[str]) -> int:
    """How many first words ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if _key(x) != _key(y):
            break
        count += 1
    return count


@dataclass
class StablePrefix:
    """The stable words of one utterance's hypotheses so far."""

    stable: int = 0
    """How many first words of the latest hypothesis are stable."""
    revisions: int = 0
    """Stable words changed by a later hypothesis or the final transcript."""
    _stable_words: list[str] = field(default_factory=list)
    _previous: list[str] | None = None

    @property
    def heard(self) -> bool:
        """Whether a hypothesis has been taken (the utterance had partial text)."""
        return self._previous is not None

    def update(self, hypothesis: str) -> str:
        """Take the next hypothesis; return its stable prefix.

        Stable words it contradicts are revisions and stop being stable; then the
        words it shares with the previous hypothesis become stable.
        """
        words = hypothesis.split()
        self._revise(words)
        if self._previous is not None:
            self.stable = max(self.stable, _agreed(self._previous, words))
        self._stable_words = words[: self.stable]
        self._previous = words
        return " ".join(self._stable_words)

    def finish(self, transcript: str) -> int:
        """Count the stable words the final transcript changes; return how many."""
        before = self.revisions
        self._revise(transcript.split())
        return self.revisions - before

    def _revise(self, words: list[str]) -> None:
        kept = _agreed(self._stable_words, words)
        self.revisions += len(self._stable_words) - kept
        self.stable = kept
        self._stable_words = self._stable_words[:kept]
