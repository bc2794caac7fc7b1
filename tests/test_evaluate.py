"""Metrics (UA/WA/F1/confusion) and the ``python -m training evaluate`` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from training.metrics import score


def test_metrics_on_hand_made_labels() -> None:
    reference = ["anger"] * 4 + ["sadness"] * 2
    predicted = ["anger", "anger", "anger", "sadness", "sadness", "anger"]
    s = score(reference, predicted)
    assert s.labels == ["anger", "sadness"]
    assert s.confusion == [[3, 1], [1, 1]]
    assert s.wa == pytest.approx(4 / 6)
    assert s.ua == pytest.approx((3 / 4 + 1 / 2) / 2)
    f1_anger = 2 * 0.75 * 0.75 / 1.5
    f1_sad = 2 * 0.5 * 0.5 / 1.0
    assert s.macro_f1 == pytest.approx((f1_anger + f1_sad) / 2)
    assert s.per_class_recall == {"anger": 0.75, "sadness": 0.5}
    assert s.n == 6


def test_reference_label_the_model_cannot_output_counts_as_miss() -> None:
    # "boredom" is never predicted (e.g. a RAVDESS-only model): recall 0, still in UA.
    s = score(["boredom", "boredom", "anger"], ["neutral", "anger", "anger"])
    assert s.per_class_recall == {"anger": 1.0, "boredom": 0.0}
    assert s.ua == pytest.approx(0.5)
    assert s.labels == ["anger", "boredom", "neutral"]
    assert s.confusion[1] == [1, 0, 1]


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="predictions"):
        score(["anger"], [])
    with pytest.raises(ValueError, match="no utterances"):
        score([], [])
    with pytest.raises(ValueError, match="not in"):
        score(["anger"], ["fear"], labels=["anger"])


def test_confusion_plot_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from training.evaluate import plot_confusion

    s = score(["anger", "fear", "fear"], ["anger", "fear", "anger"])
    out = tmp_path / "cm.png"
    plot_confusion(s, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from training.evaluate import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        ["--data", f"nosuch:{tmp_path}", "--models", str(tmp_path)], capsys
    )
    assert code == 2
    assert "unknown dataset kind 'nosuch'" in err


def test_cli_wrong_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent"
    code, _, err = _run(
        ["--data", f"emodb:{missing}", "--models", str(tmp_path)], capsys
    )
    assert code == 2
    assert "does not exist" in err and str(missing) in err


def test_cli_missing_models_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "emodb").mkdir()
    models = tmp_path / "no-models"
    code, _, err = _run(
        ["--data", f"emodb:{tmp_path / 'emodb'}", "--models", str(models)], capsys
    )
    assert code == 2
    assert "models folder" in err and str(models) in err


def test_cli_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "emodb").mkdir()
    code, _, err = _run(
        ["--data", f"emodb:{tmp_path / 'emodb'}", "--models", str(tmp_path)], capsys
    )
    assert code == 2
    assert "error:" in err and "emodb" in err


@pytest.mark.data
def test_cli_json_on_real_clips_through_the_runtime(
    emodb_clips: list[Path],
    fixture_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Six real EMO-DB clips in their original naming, scored by the fixture graphs
    # through streamser.recognizer (acoustic only).
    pytest.importorskip("matplotlib")
    folder = tmp_path / "emodb"
    folder.mkdir()
    for clip in emodb_clips[::80][:6]:
        shutil.copy(clip, folder / clip.name)
    plot = tmp_path / "cm.png"
    code, out, err = _run(
        [
            "--data",
            f"emodb:{folder}",
            "--models",
            str(fixture_models),
            "--json",
            "--no-asr",
            "--plot",
            str(plot),
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 6
    for key in ("wa", "ua", "macro_f1", "per_class_recall", "confusion", "labels"):
        assert key in report
    assert sum(map(sum, report["confusion"])) == 6
    assert 0.0 <= report["ua"] <= 1.0
    assert report["per_corpus"]["emodb"]["n"] == 6
    assert plot.is_file()


@pytest.mark.data
def test_cli_scores_each_speaker_as_one_stream(
    emodb_clips: list[Path],
    adaptive_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # With an acoustic model that adapts to a stream's speaker and --streams speaker,
    # a speaker's utterances are one stream, and the report adds the same utterances
    # heard alone, which is what the default (one stream per clip) scores.
    folder = tmp_path / "emodb"
    folder.mkdir()
    for clip in emodb_clips[::40][:8]:
        shutil.copy(clip, folder / clip.name)
    args = ["--data", f"emodb:{folder}", "--models", str(adaptive_models)]
    code, out, err = _run([*args, "--json", "--no-asr", "--streams", "speaker"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["streams"] == "speaker"
    assert report["n"] == report["cold"]["n"] == 8
    code, out, err = _run(
        [*args, "--json", "--no-asr", "--streams", "utterance"], capsys
    )
    assert code == 0, err
    alone = json.loads(out)
    assert alone["streams"] == "clip" and "cold" not in alone
    assert alone["wa"] == report["cold"]["wa"]
    assert alone["per_class_recall"] == report["cold"]["per_class_recall"]


@pytest.mark.data
def test_evaluate_labels_are_those_of_streamser_run(
    datasets: Path, shipped_models: Path
) -> None:
    # The drift check: `training evaluate` cuts and recognises each clip as
    # `streamser run --no-asr --jsonl` does, so both give the same label to every
    # utterance of the same clips (one stream per clip).
    from streamser.recognition.adaptation import SpeakerBaseline
    from streamser.recognition.models import OnnxModel
    from streamser.recognition.recognizer import Recognizer, RecognizerOptions
    from training.evaluate import daemon_clip

    clips = sorted((datasets / "ravdess" / "Actor_03").glob("*.flac"))[::15][:3]
    clips += sorted((datasets / "emodb" / "wav").glob("*.wav"))[::150][:2]
    clips += sorted((datasets / "ased").glob("*.flac"))[::700][:2]
    if len(clips) < 3:
        pytest.skip("too few corpus clips for the drift check")
    command = [
        sys.executable,
        "-m",
        "streamser",
        "run",
        "--no-asr",
        "--jsonl",
        "--model-dir",
        str(shipped_models),
        *map(str, clips),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ran: dict[str, list[str]] = {clip.name: [] for clip in clips}
    affect_declared = bool(
        OnnxModel(
            next(shipped_models.glob("emotion-acoustic-v*.onnx")), device="cpu"
        ).contract.affect
    )
    for line in done.stdout.splitlines():
        event = json.loads(line)
        if event["type"] == "utterance.end":
            ran[event["stream_id"]].append(event["label"])
        if event["type"] in ("utterance.end", "emotion.partial") and affect_declared:
            # a graph with an affect output fills arousal and valence on both
            assert -1.0 <= event["arousal"] <= 1.0
            assert -1.0 <= event["valence"] <= 1.0
    recognizer = Recognizer(
        RecognizerOptions(
            EmotionOptions(model_dir=str(shipped_models), device="cpu"),
            AsrOptions(enabled=False),
        )
    )
    evaluated = {
        clip.name: daemon_clip(recognizer, clip, None, SpeakerBaseline(0)).labels
        for clip in clips
    }
    assert evaluated == ran
    assert sum(len(labels) for labels in ran.values()) >= len(clips) - 1
