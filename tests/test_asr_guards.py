"""Whisper's guards: no repetition loops, no text on noise, transcripts on telephone
audio (8 kHz mu-law), with either VAD and on clips cut off mid-word."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from _cli_helpers import run_command

from streamser.errors import ConfigError
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.transcript_checks import (
    Decoding,
    choose_transcript,
    compression_ratio,
    cut_repeated_ngrams,
    judge,
)

from conftest import FIXTURE_MODELS

STATEMENTS = {
    "01": "kids are talking by the door",
    "02": "dogs are sitting by the door",
}
# Several actors (both sexes), emotions, intensities and both statements.
CLIPS = (
    "Actor_02/03-01-05-02-01-01-02.flac",
    "Actor_05/03-01-07-02-02-02-05.flac",
    "Actor_08/03-01-03-01-01-01-08.flac",
    "Actor_11/03-01-06-02-02-01-11.flac",
    "Actor_14/03-01-04-01-01-02-14.flac",
    "Actor_17/03-01-08-02-02-01-17.flac",
)
NO_WAIT = "[pipeline]\nasr_max_lag_ms = 3600000\n"
"""Every utterance transcribed however slow this machine: the test is about Whisper."""


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("door door door door door door door door", "door"),
        ("Kids are talking by the door door door door", "Kids are talking by the door"),
        ("Door. door, DOOR! door", "Door."),
        ("by the door. By the door. by the door", "by the door."),
        ("a b a b a b a c", "a b a c"),
        ("very very good", "very very good"),
        ("Dogs are sitting by the door.", "Dogs are sitting by the door."),
        ("", ""),
    ],
)
def test_repeated_ngrams_are_cut(text: str, cut: str) -> None:
    assert cut_repeated_ngrams(text) == cut


def test_compression_ratio_flags_loops_not_sentences() -> None:
    assert compression_ratio("") == 0.0
    assert compression_ratio("Kids are talking by the door.") < 1.5
    assert compression_ratio(" ".join(["door"] * 13)) > 2.4
    assert compression_ratio("Thank you. " * 12) > 2.4
    sentence = "The quick brown fox jumps over the lazy dog near the river bank."
    assert compression_ratio(sentence) < 2.4


def _decoding(
    text: str, logprob: float, *, silent: bool = False, looping: bool = False
) -> Decoding:
    return Decoding(text, logprob, silent, looping, confident=logprob >= -1.0)


def test_the_first_passing_decoding_wins_else_loops_are_cut_or_rejected() -> None:
    loop = " ".join(["door"] * 13)
    passing = _decoding("Kids are talking by the door.", -0.3)
    assert choose_transcript(
        [_decoding(loop, -0.1, looping=True), passing], 2.4, -1.25
    ) == ("Kids are talking by the door.")
    # a loop on its own is rejected; one after real words is cut
    assert choose_transcript([_decoding(loop, -0.1, looping=True)], 2.4, -1.25) is None
    tail = "Kids are talking by the door door door door"
    assert choose_transcript([_decoding(tail, -0.2, looping=True)], 2.4, -1.25) == (
        "Kids are talking by the door"
    )
    # unsure text is kept above the low threshold only, silence never
    assert choose_transcript([_decoding("dogs are sitting by", -1.1)], 2.4, -1.25) == (
        "dogs are sitting by"
    )
    assert choose_transcript([_decoding("Till next week.", -1.6)], 2.4, -1.25) is None
    assert choose_transcript([_decoding("you", -1.1, silent=True)], 2.4, -1.25) is None
    assert choose_transcript([_decoding("...", -0.1)], 2.4, -1.25) is None
    # a loop without spaces (Whisper on noise) is rejected; numbers are not loops
    for loop in ("1,5,5,5,5,5,5,5,5,5,5,5,5,", "1.5x4.5x4.5x4.5x4.5x4.5x4."):
        assert (
            choose_transcript([_decoding(loop, -0.4, looping=True)], 2.4, -1.25) is None
        )
    for text in ("It costs 10000 dollars.", "1,000,000", "Call 555-5555."):
        assert (
            choose_transcript([_decoding(text, -0.4, looping=True)], 2.4, -1.25) == text
        )


def test_fallback_options() -> None:
    assert AsrOptions().temperatures == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert AsrOptions(max_temperature=0.0).temperatures == []
    with pytest.raises(ConfigError):
        AsrOptions(temperature_step=0.0)
    with pytest.raises(ConfigError):
        AsrOptions(log_prob_low_threshold=-0.5)


def _run(files: list[Path], config: Path, *flags: str) -> list[dict[str, object]]:
    result = run_command(
        *("streamser", "run", "--jsonl", "--config", config, *flags, *files),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return [e for e in events if e["type"] == "utterance.end"]


def test_noise_is_rejected_not_transcribed(tmp_path: Path) -> None:
    """Bursts of noise and a hum open utterances; none gets a transcript."""
    rng = np.random.default_rng(5)
    rate = 16000
    hum = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)
    quiet = np.zeros(rate)
    audio = np.concatenate(
        [
            quiet,
            0.3 * rng.standard_normal(rate),
            quiet,
            hum + 0.05 * rng.standard_normal(rate),
            quiet,
        ]
    ).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, audio, rate)
    config = tmp_path / "streamser.toml"
    config.write_text(NO_WAIT)
    ends = _run([path], config, "--model-dir", str(FIXTURE_MODELS))
    assert ends, "the VAD heard no utterance in the noise"
    for end in ends:
        assert end["asr"] == "rejected" and end["transcript"] is None, end
        assert end["language"] is None and end["label"], end


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in " '" else " " for c in text).split()


@pytest.mark.data
@pytest.mark.parametrize("vad", ["webrtc", "silero"])
@pytest.mark.parametrize("cut", [False, True])
def test_telephone_audio_gets_clean_transcripts(
    datasets: Path, tmp_path: Path, vad: str, cut: bool
) -> None:
    """RAVDESS clips as 8 kHz mu-law WAV (and one MP3), whole or cut off mid-word:
    each gets a transcript, none loops, none runs past 12 words."""
    files: list[Path] = []
    expected: list[str] = []
    for n, name in enumerate(CLIPS):
        audio, rate = sf.read(datasets / "ravdess" / name, dtype="float32")
        if cut:  # stop inside the sentence's last words
            audio = audio[: int(len(audio) * (0.6 + 0.03 * n))]
        phone = soxr.resample(audio, rate, 8000)
        files.append(tmp_path / f"{n}.wav")
        sf.write(files[-1], phone, 8000, subtype="ULAW")
        expected.append(STATEMENTS[Path(name).stem.split("-")[4]])
    files.append(tmp_path / "0.mp3")
    sf.write(files[-1], sf.read(datasets / "ravdess" / CLIPS[0])[0], rate)
    expected.append(expected[0])
    config = tmp_path / "streamser.toml"
    config.write_text(NO_WAIT)
    ends = _run(files, config, "--language", "en", "--vad", vad)
    by_file: dict[str, list[str]] = {}
    for end in ends:
        assert end["asr"] in ("ok", "rejected"), end
        assert (end["transcript"] is None) == (end["asr"] == "rejected"), end
        texts = by_file.setdefault(str(end["stream_id"]), [])
        texts.append(str(end["transcript"] or ""))
    # The silero VAD misses some telephone clips outright (no utterance at all): a
    # segmentation matter, not Whisper's. Every clip with an utterance is checked.
    if vad == "webrtc":
        assert set(by_file) == {p.name for p in files}, by_file
    for path, sentence in zip(files, expected, strict=True):
        if path.name not in by_file:
            continue
        text = " ".join(by_file[path.name])
        words = [w.lower() for w in _words(text)]
        assert set(words) & set(sentence.split()), (path.name, text)
        assert len(words) <= 12, (path.name, text)
        assert all(words[i : i + 4] != [words[i]] * 4 for i in range(len(words))), (
            path.name,
            text,
        )


def test_fallback_decodes_the_failing_rows_of_a_batch() -> None:
    """The encoder output of a batch's failing rows, sliced, equals theirs alone."""
    import ctranslate2

    from streamser.recognition.asr import WhisperAsr

    asr = WhisperAsr(AsrOptions(device="cpu", num_threads=1))
    rng = np.random.default_rng(2)
    batch = rng.standard_normal((3, 80, 200)).astype(np.float32)
    encoded = asr.encoder.encode(ctranslate2.StorageView.from_array(batch))
    rows = asr._subset(encoded, batch, [2, 0])
    alone = asr.encoder.encode(ctranslate2.StorageView.from_array(batch[[2, 0]]))
    np.testing.assert_allclose(np.asarray(rows), np.asarray(alone), atol=1e-3)
    assert asr._subset(encoded, batch, [0, 1, 2]) is encoded


def test_a_phrase_said_three_times_is_speech_not_a_loop() -> None:
    """A phrase repeated at a speaking pace passes; faster than speech, or a word or
    a pair of words repeated, it is a loop."""
    options = AsrOptions()
    said = "Kids are talking by the door. " * 3
    assert judge(said, -0.1, 0.0, options, seconds=5.4).passed
    assert judge(said, -0.1, 0.0, options, seconds=3.0).looping  # 6 words a second
    assert judge("no no no", -0.1, 0.0, options, seconds=3.0).looping
    assert judge("by the door door door door", -0.1, 0.0, options, seconds=9.0).looping
    assert judge("Thank you for watching. " * 5, -0.2, 0.0, options, 2.0).looping


def _said_three_times(datasets: Path, actor: str) -> np.ndarray:
    """A RAVDESS actor's first three takes of "kids are talking by the door",
    trimmed of quiet and joined by 0.15 s of silence (16 kHz)."""
    folder = datasets / "ravdess" / f"Actor_{actor}"
    clips = sorted(folder.glob(f"03-01-0[1-4]-0?-01-0?-{actor}.*"))[:3]
    assert len(clips) == 3
    parts = []
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32")
        audio = soxr.resample(audio, rate, 16000) if rate != 16000 else audio
        loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
        parts += [audio[loud[0] : loud[-1] + 1], np.zeros(2400, np.float32)]
    return np.concatenate(parts)


def test_a_statement_said_three_times_gets_its_transcript(datasets: Path) -> None:
    """Real speech: RAVDESS actors saying the same statement three times in one
    utterance are transcribed, repetitions and all, not rejected as loops."""
    from streamser.recognition.asr import WhisperAsr
    from streamser.recognition.features import log_mel

    asr = WhisperAsr(AsrOptions(device="cpu"))
    texts = []
    for actor in ("01", "03", "06"):
        mel = log_mel(_said_three_times(datasets, actor))
        transcript = asr.transcribe_batch([mel], ["en"])[0]
        assert not transcript.rejected, actor
        texts.append(transcript.text.lower())
    # Whisper may merge a repetition; it must not lose the utterance for one.
    assert all(t.count("kids are talking") >= 2 for t in texts), texts
    assert any(t.count("kids are talking") == 3 for t in texts), texts


def test_fallback_decodings_stop_when_asked(datasets: Path) -> None:
    """Real speech whose first decoding loops (RAVDESS actor 13 saying one
    statement three times): Whisper's fallback asks before each temperature
    whether to go on, and stops at the first no, as it does under load while
    live utterances wait for the worker."""
    from streamser.recognition.asr import WhisperAsr
    from streamser.recognition.features import log_mel

    mel = log_mel(_said_three_times(datasets, "13"))
    asr = WhisperAsr(AsrOptions(device="cpu"))
    answers: list[bool] = []

    def never() -> bool:
        answers.append(False)
        return False

    stopped = asr.transcribe_batch([mel], ["en"], fallback=never)
    assert answers == [False]  # asked once, before the first fallback, and stopped
    assert stopped[0].rejected  # the looping first decoding alone is not a transcript
    answers.clear()

    def once() -> bool:
        answers.append(not answers)
        return answers[-1]

    asr.transcribe_batch([mel], ["en"], fallback=once)
    assert answers[0] and len(answers) <= 2  # one fallback ran; it passed or stopped
