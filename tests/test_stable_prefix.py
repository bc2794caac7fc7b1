"""``StablePrefix``: LocalAgreement of consecutive hypotheses, and revisions."""

from __future__ import annotations

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
