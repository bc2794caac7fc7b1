"""SpeakerBaseline: what a stream keeps of its earlier utterances."""

from __future__ import annotations

import numpy as np

from streamser.recognition.adaptation import NO_BASELINE, SpeakerBaseline


def test_baseline_is_the_mean_of_the_last_window_utterances() -> None:
    stream = SpeakerBaseline(window=2)
    assert stream.snapshot() == NO_BASELINE
    for value in (1.0, 2.0, 4.0):
        stream.add(np.full(3, value, np.float32))
    snapshot = stream.snapshot()
    assert snapshot.count == 2 and snapshot.version == 3
    assert snapshot.mean is not None
    np.testing.assert_allclose(snapshot.mean, [3.0, 3.0, 3.0])


def test_a_model_that_does_not_adapt_keeps_nothing() -> None:
    off = SpeakerBaseline(window=0)
    off.add(np.ones(3, np.float32))
    assert off.snapshot() == NO_BASELINE
    on = SpeakerBaseline(window=4)
    on.add(None)  # the graph gave no pooled vector
    assert on.snapshot() == NO_BASELINE


def test_a_vector_of_another_width_starts_over() -> None:
    # models reloaded mid-stream (SIGHUP) with another width: the old ones are dropped
    stream = SpeakerBaseline(window=4)
    stream.add(np.ones(3, np.float32))
    stream.add(np.full(5, 2.0, np.float32))
    snapshot = stream.snapshot()
    assert snapshot.count == 1 and snapshot.mean is not None
    assert snapshot.mean.shape == (5,)
    assert snapshot.version == 2
