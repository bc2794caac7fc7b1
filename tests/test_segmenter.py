"""Tests of streamser.audio.segmenter: utterances from VAD frames, for any chunking."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from _audio_helpers import voiced as _voiced

from streamser.audio.segmenter import (
    Segmenter,
    SegmenterOptions,
    SegmentEvent,
    SpeechStarted,
    UtteranceEnded,
    UtteranceEnding,
)
from streamser.audio.vad import SileroVad, VadOptions, WebRtcVad

from conftest import REPO, data_root

EMODB_WAV = (data_root() or REPO.parent / "shared" / "datasets") / "emodb" / "wav"
RATE = 16000
CHUNK_SIZES = [1, 160, 512, 1000, 16000]


def _quiet(seconds: float, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (3e-4 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def _webrtc() -> WebRtcVad:
    return WebRtcVad(VadOptions())


def _run(
    audio: npt.NDArray[np.float32],
    chunk: int | None,
    vad: WebRtcVad | SileroVad | None = None,
    options: SegmenterOptions | None = None,
) -> list[SegmentEvent]:
    """Pushes ``audio`` in chunks of ``chunk`` samples (all at once when None), flushes."""
    segmenter = Segmenter(vad or _webrtc(), options)
    events: list[SegmentEvent] = []
    step = chunk or max(audio.size, 1)
    for offset in range(0, audio.size, step):
        events += segmenter.push(audio[offset : offset + step])
    events += segmenter.flush()
    assert segmenter.samples_seen == audio.size
    return events


def _ended(events: list[SegmentEvent]) -> list[UtteranceEnded]:
    return [event for event in events if isinstance(event, UtteranceEnded)]


def _endings_expected(options: SegmenterOptions, frame: int) -> bool:
    """Whether a silence close is always announced by ``UtteranceEnding`` first:
    some silence run shorter than the hangover covers both early_end and end pad."""
    if not options.early_end_ms:
        return False
    early = max(1, -(-options.early_end_ms * 16 // frame))
    pad = -(-min(options.end_pad_ms, options.hangover_ms) * 16 // frame)
    hangover = max(1, -(-options.hangover_ms * 16 // frame))
    return max(early, pad) < hangover


def _check_consistent(
    events: list[SegmentEvent],
    audio: npt.NDArray[np.float32],
    options: SegmenterOptions | None = None,
    frame: int = 480,
) -> None:
    """Every start has its end, indices run 0.., audio is the stream's slice, and
    a silence close is announced by a matching ``UtteranceEnding`` exactly when the
    timings allow one."""
    announced = _endings_expected(options or SegmenterOptions(), frame)
    expected_index, open_start = 0, None
    previous: SegmentEvent | None = None
    for event in events:
        if isinstance(event, SpeechStarted):
            assert open_start is None
            assert event.utterance_index == expected_index
            open_start = event.start_sample
        else:
            assert (event.utterance_index, event.start_sample) == (
                expected_index,
                open_start,
            )
            assert event.end_sample > event.start_sample
            np.testing.assert_array_equal(
                event.audio, audio[event.start_sample : event.end_sample]
            )
            if isinstance(event, UtteranceEnding):
                assert announced
            else:
                if event.reason == "silence" and announced:
                    assert isinstance(previous, UtteranceEnding)
                    assert previous.matches(event)
                expected_index, open_start = expected_index + 1, None
        previous = event
    assert open_start is None


# Three voiced bursts (1.0 s, 0.8 s, 1.2 s) between quiet stretches.
BURSTS = [(1.0, 1.0), (3.0, 0.8), (4.8, 1.2)]
"""(start, duration) in seconds."""


def _synthetic() -> npt.NDArray[np.float32]:
    parts, position = [], 0.0
    for index, (start, duration) in enumerate(BURSTS):
        parts += [
            _quiet(start - position, seed=10 + index),
            _voiced(duration, seed=index),
        ]
        position = start + duration
    parts.append(_quiet(1.0, seed=20))
    return np.concatenate(parts)


def test_bad_options_raise_value_error() -> None:
    for kwargs in (
        {"hangover_ms": 0},
        {"start_speech_ms": 0},
        {"min_utterance_ms": -1},
        {"max_utterance_ms": 999},
        {"max_utterance_ms": 30001},
        {"max_utterance_ms": 1000, "pre_speech_pad_ms": 500, "min_utterance_ms": 500},
        {"pre_speech_pad_ms": 1.5},
    ):
        with pytest.raises(ValueError, match="segmenter"):
            SegmenterOptions(**kwargs)  # type: ignore[arg-type]


def test_synthetic_bursts_become_utterances() -> None:
    audio = _synthetic()
    events = _run(audio, None)
    _check_consistent(events, audio)
    ended = _ended(events)
    assert len(ended) == len(BURSTS)
    frame = 480
    for utterance, (start_s, duration_s) in zip(ended, BURSTS, strict=True):
        onset, offset = int(start_s * RATE), int((start_s + duration_s) * RATE)
        # Start: the onset minus the 300 ms pad; end: the offset plus the end pad
        # (webrtcvad itself keeps saying "speech" for a few frames after an offset).
        assert abs(utterance.start_sample - (onset - 300 * 16)) <= 2 * frame
        tail = SegmenterOptions().end_pad_ms * 16
        assert -frame <= utterance.end_sample - (offset + tail) <= 300 * 16
        assert utterance.reason == "silence"


@pytest.mark.parametrize("kind", ["webrtc", "silero"])
def test_same_events_for_every_chunking(kind: str) -> None:
    audio = _synthetic()

    def vad() -> WebRtcVad | SileroVad:
        return _webrtc() if kind == "webrtc" else SileroVad(VadOptions(kind="silero"))

    reference = _run(audio, None, vad())
    assert len(_ended(reference)) >= 2
    for chunk in CHUNK_SIZES:
        assert _run(audio, chunk, vad()) == reference, f"chunk {chunk}"
    # Random chunk sizes, empty chunks included.
    rng = np.random.default_rng(0)
    segmenter, events, offset = Segmenter(vad()), [], 0
    while offset < audio.size:
        size = int(rng.choice([0, 1, 7, 333, 480, 4096, 20000]))
        events += segmenter.push(audio[offset : offset + size])
        offset += size
    assert events + segmenter.flush() == reference


def test_exact_multiples_and_short_inputs() -> None:
    audio = _synthetic()
    whole = audio[: audio.size // 480 * 480]  # an exact multiple of the frame
    reference = _run(whole, None)
    assert _run(whole, 480, _webrtc()) == reference
    assert _run(whole, 960, _webrtc()) == reference
    segmenter = Segmenter(_webrtc())
    assert segmenter.push(np.zeros(0, np.float32)) == []
    assert segmenter.push(_voiced(0.01, seed=1)) == []  # under one frame
    assert segmenter.samples_seen == 160
    assert segmenter.flush() == []
    assert not segmenter.active
    with pytest.raises(ValueError, match="1-D"):
        segmenter.push(np.zeros((2, 480), np.float32))


@pytest.mark.parametrize(
    ("burst_s", "min_utterance_ms", "reported"),
    [(0.12, 300, False), (0.6, 300, True), (0.5, 1000, False), (1.2, 1000, True)],
)
def test_min_utterance_length(
    burst_s: float, min_utterance_ms: int, reported: bool
) -> None:
    audio = np.concatenate([_quiet(1.0, 1), _voiced(burst_s, 2), _quiet(1.0, 3)])
    options = SegmenterOptions(min_utterance_ms=min_utterance_ms)
    events = _run(audio, 1000, options=options)
    assert (len(_ended(events)) == 1) == reported
    assert reported or events == []


def test_long_speech_is_cut_at_the_quietest_point() -> None:
    options = SegmenterOptions(max_utterance_ms=5000)
    dip_at = int(4.8 * RATE)  # inside the last 30% of the first 5 s window
    audio = np.concatenate([_quiet(1.0, 1), _voiced(11.0, 2), _quiet(1.0, 3)])
    audio[dip_at : dip_at + 960] *= 0.01  # 60 ms, too short to close the utterance
    events = _run(audio, 1000, options=options)
    _check_consistent(events, audio)
    ended = _ended(events)
    assert ended[0].reason == "max_length"
    assert dip_at <= ended[0].end_sample <= dip_at + 960
    for before, after in zip(ended, ended[1:], strict=False):
        assert after.start_sample == before.end_sample  # cut without a gap
    for utterance in ended:
        assert utterance.end_sample - utterance.start_sample <= 5000 * 16
    assert ended[-1].reason == "silence"
    voiced_end = int(12.0 * RATE)
    tail = options.end_pad_ms * 16
    assert -480 <= ended[-1].end_sample - (voiced_end + tail) <= 300 * 16
    assert _run(audio, 1, options=options) == events


def test_flush_mid_utterance_and_continue() -> None:
    segmenter = Segmenter(_webrtc())
    audio = np.concatenate([_quiet(1.0, 1), _voiced(2.0, 2)])
    events = segmenter.push(audio[:24000])
    assert [type(event) for event in events] == [SpeechStarted]
    assert segmenter.active
    start = segmenter.active_start_sample
    assert start == events[0].start_sample
    partial = segmenter.active_audio()
    np.testing.assert_array_equal(partial, audio[start : start + partial.size])
    assert start + partial.size == 24000  # 24000 is a whole number of frames
    ended = segmenter.flush()
    assert len(ended) == 1
    first = ended[0]
    assert isinstance(first, UtteranceEnded)
    assert (first.reason, first.end_sample) == ("flush", 24000)
    assert not segmenter.active
    assert segmenter.active_audio().size == 0
    assert segmenter.active_start_sample is None
    # Speech goes on: a new utterance opens after start_speech_ms, with no overlap.
    later = segmenter.push(audio[24000:]) + segmenter.push(_quiet(1.0, 3))
    assert [type(event) for event in later] == [
        SpeechStarted,
        UtteranceEnding,
        UtteranceEnded,
    ]
    assert later[0].utterance_index == 1
    assert later[0].start_sample == first.end_sample


def test_flush_drops_unconfirmed_and_idle_flush_is_empty() -> None:
    segmenter = Segmenter(_webrtc())
    assert segmenter.flush() == []
    segmenter.push(np.concatenate([_quiet(1.0, 1), _voiced(0.15, 2)]))
    assert not segmenter.active
    assert segmenter.flush() == []


def test_memory_is_bounded() -> None:
    segmenter = Segmenter(_webrtc())
    for seed in range(30):  # a minute of background
        segmenter.push(_quiet(2.0, seed))
    assert segmenter.retained_samples <= (300 + 90 + 30) * 16
    long = Segmenter(_webrtc(), SegmenterOptions(max_utterance_ms=2000))
    for seed in range(8):
        long.push(_voiced(1.0, seed))
        assert long.retained_samples <= 2000 * 16 + 480


def _emodb_stream() -> tuple[npt.NDArray[np.float32], list[int]]:
    if not EMODB_WAV.is_dir():
        pytest.skip(f"EMO-DB not found at {EMODB_WAV} (set STREAMSER_DATA)")
    rng = np.random.default_rng(0)
    parts, onsets, position = [], [], 0
    for name in ("03a01Fa.wav", "03b01Lb.wav", "03a05Wa.wav"):
        clip, rate = soundfile.read(EMODB_WAV / name, dtype="float32")
        assert rate == RATE
        gap = (3e-4 * rng.standard_normal(24000)).astype(np.float32)
        parts += [gap, clip]
        onsets.append(position + gap.size)
        position += gap.size + clip.size
    parts.append(np.zeros(16000, np.float32))
    return np.concatenate(parts), onsets


@pytest.mark.data
@pytest.mark.parametrize("kind", ["webrtc", "silero"])
def test_emodb_speech_chunk_invariance(kind: str) -> None:
    audio, onsets = _emodb_stream()

    def vad() -> WebRtcVad | SileroVad:
        return _webrtc() if kind == "webrtc" else SileroVad(VadOptions(kind="silero"))

    reference = _run(audio, None, vad())
    _check_consistent(reference, audio)
    ended = _ended(reference)
    assert len(ended) == 3
    for utterance, onset in zip(ended, onsets, strict=True):
        # Each utterance lies within its 2 s clip plus pad, tail and VAD lag.
        assert onset - 300 * 16 <= utterance.start_sample < onset + RATE
        assert utterance.end_sample <= onset + 2 * RATE + 500 * 16
        assert utterance.end_sample - utterance.start_sample >= RATE
    for chunk in CHUNK_SIZES:
        assert _run(audio, chunk, vad()) == reference, f"chunk {chunk}"


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_and_options(seed: int) -> None:
    """Seeded random bursts, timings and VADs: invariance, consistency, max length."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(int(rng.integers(1, 6))):
        parts.append(_quiet(rng.uniform(0, 1.5), int(rng.integers(10**6))))
        level = rng.uniform(0.05, 0.5)
        parts.append(_voiced(rng.uniform(0.05, 4), int(rng.integers(10**6)), level))
    audio = np.concatenate(parts)
    hangover_ms = int(rng.choice([30, 100, 300, 600]))
    options = SegmenterOptions(
        pre_speech_pad_ms=int(rng.choice([0, 100, 300])),
        start_speech_ms=int(rng.choice([10, 30, 90, 200])),
        hangover_ms=hangover_ms,
        min_utterance_ms=int(rng.choice([0, 100, 300])),
        max_utterance_ms=int(rng.choice([1000, 1500, 3000])),
        end_pad_ms=int(rng.choice([0, 90, 150])),
        early_end_ms=int(rng.choice([0, 60, 90, 150, 400])),
    )
    frame_ms = int(rng.choice([10, 20, 30]))
    silero = seed % 4 == 3

    def vad() -> WebRtcVad | SileroVad:
        if silero:
            return SileroVad(VadOptions(kind="silero"))
        return WebRtcVad(VadOptions(frame_ms=frame_ms))

    frame = 512 if silero else frame_ms * 16
    reference = _run(audio, None, vad(), options)
    _check_consistent(reference, audio, options, frame)
    for chunk in (7, 160, 1000):
        assert _run(audio, chunk, vad(), options) == reference, f"chunk {chunk}"
    for utterance in _ended(reference):
        length = utterance.end_sample - utterance.start_sample
        assert length <= options.max_utterance_ms * 16 + frame


def test_ending_is_stale_when_speech_resumes() -> None:
    """A pause longer than early_end_ms but shorter than the hangover announces an
    ending that the close does not match; the final silence announces the one it does."""
    audio = np.concatenate(
        [
            _quiet(1.0, 1),
            _voiced(1.0, 2),
            _quiet(0.35, 3),
            _voiced(1.0, 4),
            _quiet(1.0, 5),
        ]
    )
    events = _run(audio, 320)
    _check_consistent(events, audio)
    kinds = [type(event) for event in events]
    assert kinds == [SpeechStarted, UtteranceEnding, UtteranceEnding, UtteranceEnded]
    stale, final, ended = events[1], events[2], events[3]
    assert isinstance(stale, UtteranceEnding) and isinstance(final, UtteranceEnding)
    assert isinstance(ended, UtteranceEnded)
    assert not stale.matches(ended) and stale.end_sample < int(2.5 * RATE)
    assert final.matches(ended) and final == _run(audio, None)[2]
    off = _run(audio, 320, options=SegmenterOptions(early_end_ms=0))
    assert [type(event) for event in off] == [SpeechStarted, UtteranceEnded]
    assert off[1] == ended
