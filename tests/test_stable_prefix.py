"""``StablePrefix``: LocalAgreement of consecutive hypotheses, and revisions; and the
terminal's view of partial transcripts."""

from __future__ import annotations

import io
import sys

import pytest

from streamser.console import CallView
from streamser.events import Envelope, TranscriptPartial, UtteranceEnd
from streamser.pipeline.stable_prefix import StablePrefix


def test_words_two_hypotheses_agree_on_become_stable() -> None:
    prefix = StablePrefix()
    assert prefix.update("I can") == ""  # one hypothesis agrees with nothing yet
    assert prefix.update("I can't believe") == "I"
    assert prefix.update("I can't believe you did") == "I can't believe"
    # Case and punctuation do not make words differ.
    assert prefix.update("i can't believe you did that.") == "i can't believe you did"
    assert prefix.revisions == 0


def test_a_changed_stable_word_is_a_revision() -> None:
    prefix = StablePrefix()
    prefix.update("the cat sat")
    assert prefix.update("the cat sat on") == "the cat sat"
    # "cat" and "sat" were stable: both are revised; "the" stays.
    assert prefix.update("the hat sat on the") == "the"
    assert prefix.revisions == 2
    assert prefix.update("the hat sat on the mat") == "the hat sat on the"
    assert prefix.finish("The hat sat on the mat.") == 0
    assert prefix.finish("A hat sat on the mat.") == 5
    assert prefix.revisions == 7


def test_a_shorter_hypothesis_revises_what_it_drops() -> None:
    prefix = StablePrefix()
    prefix.update("one two three")
    prefix.update("one two three four")
    assert prefix.update("one two") == "one two"
    assert prefix.revisions == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_rewrites_the_current_line_with_partials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, partial transcripts rewrite the current line and the
    utterance's line replaces the last of them; elsewhere they print nothing."""
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    view = CallView()
    for text in ("Dogs are", "Dogs are sitting"):
        partial = TranscriptPartial(0, 0.5, 1.5, text, "Dogs are", 0)
        view(Envelope(1, "call", 1, "t", partial))
    end = UtteranceEnd(
        0, 0.5, 2.9, "Dogs are sitting by the door.", "en", "neutral", 0.8, {}
    )
    view(Envelope(3, "call", 3, "t", end))
    output = screen.getvalue()
    assert output.count("\r\033[K") == 3
    assert "… Dogs are sitting" in output
    last = output.rsplit("\r\033[K", 1)[1]
    assert last.endswith("\n") and "Dogs are sitting by the door." in last
    lines: list[str] = []
    CallView(lines.append)(Envelope(1, "call", 1, "t", partial))
    assert lines == []
