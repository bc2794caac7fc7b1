"""``StreamPace``: a live stream keeps its real-time pace until its audio runs more
than 1 s ahead; then it is bulk for the rest of the stream (times are plain numbers)."""

from __future__ import annotations

import math

from streamser.pipeline.pace import StreamPace

RATE = 16000


def test_a_stream_at_its_pace_is_live_once_a_second_has_come() -> None:
    pace = StreamPace("call", live=True)
    pace.opened_at = 100.0
    # the first second: not yet known to keep pace
    assert not pace.keeps_pace(RATE // 2, now=100.5)
    assert pace.keeps_pace(2 * RATE, now=102.0)
    assert pace.keeps_pace(3 * RATE, now=102.5)  # half a second ahead is fine
    assert pace.arrival(3 * RATE, closed_at=102.5) == 103.0


def test_a_stream_that_runs_ahead_is_bulk_for_good() -> None:
    pace = StreamPace("upload", live=True)
    pace.opened_at = 100.0
    assert not pace.keeps_pace(10 * RATE, now=100.1)  # 10 s of audio in 0.1 s
    assert pace.bulk
    assert not pace.keeps_pace(11 * RATE, now=111.0)  # back at its pace: still bulk
    assert math.isinf(pace.arrival(11 * RATE, closed_at=111.0))


def test_a_source_that_is_not_live_never_keeps_pace() -> None:
    pace = StreamPace("file", live=False)
    pace.opened_at = 0.0
    assert not pace.keeps_pace(2 * RATE, now=2.0)
    assert math.isinf(pace.arrival(2 * RATE, closed_at=2.0))
