"""Tests of streamser.audio.decode and streamser.audio.files: wire decoding, resampling
across chunks, file reading."""

from __future__ import annotations

import importlib
import re
import types
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import soxr

from streamser.audio.decode import ALAW_TABLE, ENCODINGS, MULAW_TABLE, AudioDecoder
from streamser.audio.files import FILE_FORMATS, read_audio_bytes, read_audio_file
from streamser.errors import AudioSourceError, ProtocolError


def _audioop() -> types.ModuleType:
    """The stdlib G.711 reference (Python < 3.13 only), or skip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop (the G.711 reference) is gone in Python >= 3.13")


def _tone(
    seconds: float, rate: int, frequency_hz: float = 440.0, seed: int = 0
) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.4 * np.sin(2 * np.pi * frequency_hz * t) + 0.05 * rng.standard_normal(
        t.size
    )
    return signal.astype(np.float32)


def _chunks(payload: bytes, frame_bytes: int, seed: int) -> list[bytes]:
    """Cuts a payload at random whole-frame boundaries (some chunks empty)."""
    rng = np.random.default_rng(seed)
    out, position = [], 0
    while position < len(payload):
        size = int(rng.integers(0, 700)) * frame_bytes
        out.append(payload[position : position + size])
        position += size
    return out


def _decode_all(decoder: AudioDecoder, chunks: list[bytes]) -> npt.NDArray[np.float32]:
    parts = [decoder.decode(chunk) for chunk in chunks] + [decoder.flush()]
    return np.concatenate(parts)


def test_mulaw_table_matches_stdlib_reference() -> None:
    audioop = _audioop()
    codes = bytes(range(256))
    reference = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype="<i2")
    np.testing.assert_array_equal(MULAW_TABLE * 32768.0, reference)


def test_alaw_table_matches_stdlib_reference() -> None:
    audioop = _audioop()
    codes = bytes(range(256))
    reference = np.frombuffer(audioop.alaw2lin(codes, 2), dtype="<i2")
    np.testing.assert_array_equal(ALAW_TABLE * 32768.0, reference)


def test_g711_known_codes() -> None:
    # Standard anchor points: mu-law 0xFF/0x7F are +0/-0, 0x80 is the positive peak.
    assert MULAW_TABLE[0xFF] == 0.0
    assert MULAW_TABLE[0x80] == pytest.approx(32124 / 32768)
    assert MULAW_TABLE[0x00] == pytest.approx(-32124 / 32768)
    assert ALAW_TABLE[0xD5] == pytest.approx(8 / 32768)
    assert ALAW_TABLE[0x55] == pytest.approx(-8 / 32768)
    assert ALAW_TABLE[0xAA] == pytest.approx(32256 / 32768)


def test_mulaw_stream_decodes_like_stdlib() -> None:
    audioop = _audioop()
    pcm = (_tone(0.5, 8000) * 32767).astype("<i2").tobytes()
    encoded = audioop.lin2ulaw(pcm, 2)
    reference = np.frombuffer(audioop.ulaw2lin(encoded, 2), dtype="<i2") / 32768.0
    decoder = AudioDecoder("mulaw", 8000, 1)
    upsampled = _decode_all(decoder, [encoded])
    expected = soxr.resample(reference.astype(np.float32), 8000, 16000, quality="HQ")
    assert upsampled.shape[0] == pytest.approx(expected.shape[0], abs=2)
    n = min(upsampled.shape[0], expected.shape[0])
    np.testing.assert_allclose(
        upsampled[100 : n - 100], expected[100 : n - 100], atol=2e-3
    )


def test_s16_at_16k_is_exact_passthrough() -> None:
    ints = np.array([0, 1, -1, 32767, -32768, 1000], dtype="<i2")
    decoder = AudioDecoder("pcm_s16le", 16000, 1)
    out = decoder.decode(ints.tobytes())
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ints / 32768.0)
    assert decoder.flush().size == 0
    assert (decoder.samples_in, decoder.samples_out) == (6, 6)


def test_f32_garbage_is_zeroed_and_clipped() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 2.5, -3.0, 0.25], dtype="<f4")
    out = AudioDecoder("pcm_f32le", 16000, 1).decode(values.tobytes())
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 1.0, -1.0, 0.25])


def test_downmix_is_channel_mean() -> None:
    left = np.full(100, 0.5, dtype=np.float32)
    right = np.full(100, -0.25, dtype=np.float32)
    interleaved = np.stack([left, right], axis=1).astype("<f4").tobytes()
    out = AudioDecoder("pcm_f32le", 16000, 2).decode(interleaved)
    np.testing.assert_allclose(out, 0.125)
    assert out.shape == (100,)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_chunked_equals_whole(encoding: str, rate: int) -> None:
    audio = np.stack([_tone(1.3, rate), _tone(1.3, rate, 300.0, seed=1)], axis=1)
    if encoding == "pcm_s16le":
        payload = (audio * 32767).astype("<i2").tobytes()
    elif encoding == "pcm_f32le":
        payload = audio.astype("<f4").tobytes()
    else:
        payload = (
            np.random.default_rng(2).integers(0, 256, audio.size, np.uint8).tobytes()
        )
    frame_bytes = {"pcm_s16le": 2, "pcm_f32le": 4}.get(encoding, 1) * 2
    whole = _decode_all(AudioDecoder(encoding, rate, 2), [payload])
    chunked_decoder = AudioDecoder(encoding, rate, 2)
    chunked = _decode_all(chunked_decoder, _chunks(payload, frame_bytes, seed=rate))
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    # Length is the exact rate ratio up to rounding, and the counters agree.
    assert whole.shape[0] == pytest.approx(audio.shape[0] * 16000 / rate, abs=2)
    assert chunked_decoder.samples_in == audio.shape[0]
    assert chunked_decoder.samples_out == chunked.shape[0]


def test_resampled_tone_keeps_its_frequency() -> None:
    rate = 44100
    pcm = (_tone(1.0, rate, 1000.0) * 32767).astype("<i2").tobytes()
    out = _decode_all(AudioDecoder("pcm_s16le", rate, 1), [pcm])
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak_hz = np.argmax(spectrum) * 16000 / out.size
    assert peak_hz == pytest.approx(1000.0, abs=2.0)


def test_partial_sample_is_rejected_without_corrupting_state() -> None:
    values = (_tone(0.2, 22050) * 32767).astype("<i2")
    payload = np.stack([values, values], axis=1).tobytes()
    reference = _decode_all(AudioDecoder("pcm_s16le", 22050, 2), [payload])
    decoder = AudioDecoder("pcm_s16le", 22050, 2)
    parts = [decoder.decode(payload[:400])]
    with pytest.raises(ProtocolError) as caught:
        decoder.decode(payload[400:403])
    assert caught.value.code == "partial_sample"
    assert not caught.value.fatal
    parts += [decoder.decode(payload[400:]), decoder.flush()]
    np.testing.assert_allclose(np.concatenate(parts), reference, atol=1e-6)


def test_empty_payload_yields_nothing() -> None:
    decoder = AudioDecoder("alaw", 8000, 1)
    assert decoder.decode(b"").size == 0
    assert decoder.samples_in == 0


@pytest.mark.parametrize(
    ("encoding", "rate", "channels", "code"),
    [
        ("mp3", 16000, 1, "unsupported_encoding"),
        ("PCM_S16LE", 16000, 1, "unsupported_encoding"),
        ("pcm_s16le", 7999, 1, "unsupported_sample_rate"),
        ("pcm_s16le", 48001, 1, "unsupported_sample_rate"),
        ("pcm_s16le", True, 1, "unsupported_sample_rate"),
        ("pcm_s16le", 16000, 0, "unsupported_channels"),
        ("pcm_s16le", 16000, 9, "unsupported_channels"),
    ],
)
def test_bad_stream_format_is_fatal(
    encoding: str, rate: int, channels: int, code: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        AudioDecoder(encoding, rate, channels)
    assert caught.value.code == code
    assert caught.value.fatal


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")]
)
def test_read_audio_file_formats(tmp_path: Path, fmt: str, subtype: str) -> None:
    stereo = np.stack([_tone(1.0, 44100), _tone(1.0, 44100)], axis=1)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(path, stereo, 44100, format=fmt, subtype=subtype)
    audio = read_audio_file(path)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert audio.shape[0] == pytest.approx(16000, abs=2)
    expected = soxr.resample(_tone(1.0, 44100), 44100, 16000, quality="HQ")
    tolerance = 2e-3 if fmt != "OGG" else 0.1
    np.testing.assert_allclose(audio[200:-200], expected[200:-200], atol=tolerance)


def test_read_audio_file_sanitizes_float_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    soundfile.write(
        path, np.array([np.nan, 3.0, -0.5], np.float32), 16000, subtype="FLOAT"
    )
    np.testing.assert_array_equal(read_audio_file(path), [0.0, 1.0, -0.5])


def test_read_audio_file_errors_are_clear(tmp_path: Path) -> None:
    cases: dict[str, bytes | None] = {
        "missing.wav": None,
        "empty.wav": b"",
        "text.wav": b"this is not audio at all\n" * 10,
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(AudioSourceError, match=name):
            read_audio_file(path)
    with pytest.raises(AudioSourceError, match="directory"):
        read_audio_file(tmp_path)


def test_read_audio_file_rejects_other_formats_and_no_audio(tmp_path: Path) -> None:
    aiff = tmp_path / "clip.aiff"
    soundfile.write(aiff, _tone(0.1, 16000), 16000, format="AIFF")
    with pytest.raises(AudioSourceError, match="unsupported audio format AIFF"):
        read_audio_file(aiff)
    silent = tmp_path / "nothing.wav"
    soundfile.write(silent, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioSourceError, match="no audio"):
        read_audio_file(silent)


@pytest.mark.skipif(
    "MP3" not in soundfile.available_formats(), reason="libsndfile without MP3"
)
def test_read_audio_file_reads_mp3(tmp_path: Path) -> None:
    assert "MP3" in FILE_FORMATS
    path = tmp_path / "clip.mp3"
    soundfile.write(path, _tone(1.0, 22050), 22050, format="MP3")
    audio = read_audio_file(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # MP3 adds encoder delay and padding: compare length loosely, and the level
    assert audio.shape[0] == pytest.approx(16000, rel=0.1)
    tone_rms = float(np.sqrt(np.mean(_tone(1.0, 16000) ** 2)))
    assert float(np.sqrt(np.mean(audio[2000:-2000] ** 2))) == pytest.approx(
        tone_rms, rel=0.1
    )


def test_read_audio_bytes_equals_the_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.flac"
    soundfile.write(path, _tone(0.5, 44100), 44100, format="FLAC")
    np.testing.assert_array_equal(
        read_audio_bytes(path.read_bytes(), "standard input"), read_audio_file(path)
    )
    with pytest.raises(AudioSourceError, match="standard input: the file is empty"):
        read_audio_bytes(b"", "standard input")
    with pytest.raises(AudioSourceError, match="standard input: cannot read audio"):
        read_audio_bytes(b"not audio" * 20, "standard input")


def test_missing_file_says_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioSourceError, match=re.escape(f"file not found: {path}")):
        read_audio_file(path)
