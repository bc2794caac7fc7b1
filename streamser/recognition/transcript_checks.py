"""Checks on Whisper's text: non-speech, low confidence and repetition loops, and the
choice of an utterance's transcript among its decodings (as faster-whisper's
``transcribe`` judges them)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from streamser.recognition.asr_options import AsrOptions

_NO_WORDS: Final = re.compile(r"^[\W_]*$")
_PUNCTUATION: Final = re.compile(r"[^\w']+")
_CHARACTER_LOOP: Final = re.compile(r"(\S{2,6}?)\1{3,}|(\S)\2{7,}")
"""A unit of 2-6 characters 4 or more times in a row with no space ("1,5,5,5,5,",
"4.5x4.5x4.5x4.5x"), or one character 8 or more times: a loop that neither the
word n-grams nor, in a short text, compression reveal ("10000" is not one)."""
_LOOP_REPEATS: Final = 3
"""An n-gram this many times in a row is a repetition loop."""
_MAX_NGRAM: Final = 8
"""The longest n-gram ``cut_repeated_ngrams`` looks for, in words."""
SPOKEN_WORDS_PER_S: Final = 4.0
"""Faster than this, text cannot have been said in the audio: a phrase repeated at
this pace or slower was said ("Kids are talking by the door" three times in 5 s);
faster, it is a loop (Whisper's fill ``max_length``, 12 tokens a second)."""


@dataclass(frozen=True)
class Decoding:
    """One decoding of one utterance, judged by faster-whisper's checks."""

    text: str
    avg_logprob: float
    silent: bool
    """Whisper judged the audio non-speech and is unsure of the text."""
    looping: bool
    """The text repeats itself (compression ratio, or an n-gram 3+ times in a row)."""
    confident: bool
    """The average token log-probability is at least ``log_prob_threshold``."""

    @property
    def passed(self) -> bool:
        """Words, confident, not looping, not silence."""
        return (
            self.confident
            and not self.looping
            and not self.silent
            and not _NO_WORDS.match(self.text)
        )

    @property
    def needs_fallback(self) -> bool:
        """Decode again at the next temperature."""
        return not self.passed and not self.silent


def judge(
    text: str,
    avg_logprob: float,
    no_speech_prob: float,
    options: AsrOptions,
    seconds: float = 0.0,
) -> Decoding:
    """One decoding's text and its checks under ``options``' thresholds.

    ``seconds``: the audio's length. A phrase (three or more words) said three
    times in a row is speech, not a loop, when the whole text fits the audio at a
    speaking pace (``SPOKEN_WORDS_PER_S``); a word or a pair of words repeated so
    is always a loop.
    """
    return Decoding(
        text=text,
        avg_logprob=avg_logprob,
        # Whisper hallucinates on noise and silence: text that Whisper itself
        # thinks is non-speech and is unsure of is not decoded again.
        silent=no_speech_prob > options.no_speech_threshold
        and avg_logprob < options.log_prob_threshold,
        looping=compression_ratio(text) > options.compression_ratio_threshold
        or (cut_repeated_ngrams(text) != text and not _said(text, seconds))
        or _CHARACTER_LOOP.search(text) is not None,
        confident=avg_logprob >= options.log_prob_threshold,
    )


def choose_transcript(
    attempts: Sequence[Decoding], max_compression: float, min_log_prob: float
) -> str | None:
    """The transcript of an utterance's decodings, or None to reject it.

    The first that passed every check wins. Failing that, the most probable of those
    that are not silence and score at least ``min_log_prob``, its loop cut
    (``cut_repeated_ngrams``) if the cut leaves most of its words: "by the door door
    door door" becomes "by the door", while a bare loop ("door door door ...") is
    rejected, as is anything wordless.
    """
    for attempt in attempts:
        if attempt.passed:
            return attempt.text
    kept: list[tuple[float, str]] = []
    for attempt in attempts:
        if attempt.silent or attempt.avg_logprob < min_log_prob:
            continue
        cut = cut_repeated_ngrams(attempt.text)
        if _NO_WORDS.match(cut) or 2 * len(cut.split()) < len(attempt.text.split()):
            continue
        if compression_ratio(cut) > max_compression or _CHARACTER_LOOP.search(cut):
            continue
        kept.append((attempt.avg_logprob, cut))
    return max(kept)[1] if kept else None


def _said(text: str, seconds: float) -> bool:
    """Whether ``text``'s repetitions are of phrases and it fits ``seconds`` of
    audio at a speaking pace."""
    return (
        cut_repeated_ngrams(text, max_ngram=2) == text
        and len(text.split()) <= SPOKEN_WORDS_PER_S * seconds
    )


def compression_ratio(text: str) -> float:
    """How much zlib compresses ``text``: above 2.4, Whisper's text is likely a loop
    (the threshold of Whisper and faster-whisper)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _word_key(word: str) -> str:
    return _PUNCTUATION.sub("", word.casefold()) or word


def cut_repeated_ngrams(text: str, max_ngram: int = _MAX_NGRAM) -> str:
    """``text`` with every run of an n-gram (up to ``max_ngram`` words) said three or
    more times in a row cut to its first occurrence; words compare without case and
    punctuation. Twice in a row is kept ("very very").
    """
    words = text.split()
    keys = [_word_key(w) for w in words]
    kept: list[str] = []
    i = 0
    while i < len(words):
        best_n, best_count = 1, 1
        for n in range(1, min(max_ngram, (len(words) - i) // _LOOP_REPEATS) + 1):
            count = 1
            while keys[i + count * n : i + (count + 1) * n] == keys[i : i + n]:
                count += 1
            if count >= _LOOP_REPEATS and n * count > best_n * best_count:
                best_n, best_count = n, count
        kept += words[i : i + best_n]
        i += best_n * best_count
    return " ".join(kept) if kept != words else text
