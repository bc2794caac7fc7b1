"""Tests of streamser.audio.vad: options, webrtcvad and streaming Silero."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from _audio_helpers import voiced as _voiced
from faster_whisper.vad import get_vad_model

from streamser.audio.vad import (
    SileroVad,
    Vad,
    VadOptions,
    WebRtcVad,
    make_vad,
    silero_session,
)

from conftest import REPO, data_root

EMODB_WAV = (data_root() or REPO.parent / "shared" / "datasets") / "emodb" / "wav"


def _quiet(seconds: float, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (1e-3 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def _probabilities(vad: Vad, audio: npt.NDArray[np.float32]) -> list[float]:
    size = vad.frame_samples
    return [
        vad.speech_probability(audio[i : i + size])
        for i in range(0, audio.size - size + 1, size)
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "energy"},
        {"aggressiveness": 4},
        {"aggressiveness": -1},
        {"aggressiveness": 2.5},
        {"aggressiveness": True},
        {"threshold": "0.5"},
        {"frame_ms": 25},
        {"frame_ms": 30.0},
        {"threshold": 0.0},
        {"threshold": 1.0},
    ],
)
def test_bad_options_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="vad"):
        VadOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_webrtc_tells_voice_from_quiet(frame_ms: int) -> None:
    vad = WebRtcVad(VadOptions(frame_ms=frame_ms, aggressiveness=3))
    assert vad.frame_samples == 16 * frame_ms
    assert vad.threshold == 0.5
    voiced = _probabilities(vad, _voiced(2.0, seed=1))
    quiet = _probabilities(vad, _quiet(2.0, seed=2))
    assert set(voiced) | set(quiet) <= {0.0, 1.0}
    assert np.mean(voiced) > 0.95
    assert np.mean(quiet) < 0.1


def test_webrtc_reset_and_frame_check() -> None:
    vad = WebRtcVad(VadOptions())
    audio = np.concatenate([_quiet(0.5, 3), _voiced(1.0, 4), _quiet(0.5, 5)])
    first = _probabilities(vad, audio)
    vad.reset()
    assert _probabilities(vad, audio) == first
    with pytest.raises(ValueError, match="480 samples"):
        vad.speech_probability(np.zeros(479, np.float32))


def _streamed_matches_faster_whisper(audio: npt.NDArray[np.float32]) -> None:
    audio = audio[: audio.size // 512 * 512]
    reference = np.asarray(get_vad_model()(audio)).reshape(-1)
    streamed = _probabilities(SileroVad(VadOptions(kind="silero")), audio)
    assert len(streamed) == reference.size
    np.testing.assert_allclose(streamed, reference, atol=1e-6)


def test_silero_streaming_equals_faster_whisper_batched() -> None:
    _streamed_matches_faster_whisper(
        np.concatenate([_quiet(0.5, 6), _voiced(1.5, 7), _quiet(1.0, 8)])
    )


@pytest.mark.data
def test_silero_streaming_equals_faster_whisper_on_speech() -> None:
    if not EMODB_WAV.is_dir():
        pytest.skip(f"EMO-DB not found at {EMODB_WAV} (set STREAMSER_DATA)")
    audio, rate = soundfile.read(EMODB_WAV / "03a01Fa.wav", dtype="float32")
    assert rate == 16000
    _streamed_matches_faster_whisper(
        np.concatenate([audio, np.zeros(8000, np.float32)])
    )
    probabilities = _probabilities(SileroVad(VadOptions(kind="silero")), audio)
    assert max(probabilities) > 0.9


def test_silero_streams_are_independent_with_a_shared_session() -> None:
    options = VadOptions(kind="silero", threshold=0.6)
    one, two = _voiced(1.0, 9), np.concatenate([_quiet(0.3, 10), _voiced(0.7, 11)])
    alone = [_probabilities(SileroVad(options), x) for x in (one, two)]
    shared = silero_session()
    first, second = SileroVad(options, shared), SileroVad(options, shared)
    interleaved: tuple[list[float], list[float]] = ([], [])
    for i in range(0, 16000 - 511, 512):
        interleaved[0].append(first.speech_probability(one[i : i + 512]))
        interleaved[1].append(second.speech_probability(two[i : i + 512]))
    assert interleaved[0] == alone[0]
    assert interleaved[1] == alone[1]
    assert first.threshold == 0.6
    assert silero_session() is shared  # loaded once per process


def test_silero_reset_restarts_the_state() -> None:
    vad = SileroVad(VadOptions(kind="silero"))
    audio = _voiced(1.0, 12)
    first = _probabilities(vad, audio)
    assert _probabilities(vad, audio) != first  # the state carried over
    vad.reset()
    assert _probabilities(vad, audio) == first
    with pytest.raises(ValueError, match="512 samples"):
        vad.speech_probability(np.zeros(480, np.float32))


def test_make_vad() -> None:
    assert isinstance(make_vad(VadOptions()), WebRtcVad)
    silero = make_vad(VadOptions(kind="silero"))
    assert isinstance(silero, SileroVad)
    assert silero.frame_samples == 512
