"""Tests for training.datasets: every loader on real audio, folds and bad input."""

from __future__ import annotations

import collections
import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from streamser.audio import SAMPLE_RATE_HZ
from streamser.errors import AudioSourceError
from streamser.labels import CANONICAL_LABELS
from training.datasets import (
    KINDS,
    Utterance,
    load_audio,
    load_dataset,
    speaker_folds,
)
from training.datasets.acted import EMODB_CODES, RAVDESS_STATEMENTS

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    """STREAMSER_DATA, else ../shared/datasets beside the repository."""
    env = os.environ.get("STREAMSER_DATA")
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "datasets"


DATA = _data_root()
EMODB = DATA / "emodb"
RAVDESS = DATA / "ravdess"
SHEMO_TEXT = DATA / "shemo-text" / "shemo_text.jsonl"


def _needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not path.exists(), reason=f"corpus not found at {path} (set STREAMSER_DATA)"
    )


needs_emodb = _needs(EMODB / "wav")
needs_ravdess = _needs(RAVDESS)
needs_shemo_text = _needs(SHEMO_TEXT)


@pytest.fixture(scope="module")
def emodb_clips() -> list[Path]:
    """Eight real EMO-DB clips to copy under other corpora's file names."""
    clips = sorted((EMODB / "wav").glob("*.wav"))[:8]
    if len(clips) < 8:
        pytest.skip(f"EMO-DB clips not found in {EMODB / 'wav'}")
    return clips


def _build(root: Path, names: list[str], clips: list[Path]) -> list[Path]:
    """Copy clips to ``root/name`` for each name (cycling through the clips)."""
    paths = []
    for index, name in enumerate(names):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[index % len(clips)], target)
        paths.append(target)
    return paths


def _by_id(utterances: list[Utterance]) -> dict[str, Utterance]:
    ids = [utt.utt_id for utt in utterances]
    assert len(ids) == len(set(ids)), "utterance ids must be unique"
    return {utt.utt_id: utt for utt in utterances}


# --- real corpora -----------------------------------------------------------------


@pytest.mark.data
@needs_emodb
def test_emodb_manifest() -> None:
    utterances = load_dataset(f"emodb:{EMODB}")
    assert len(utterances) == 457
    assert len({utt.speaker for utt in utterances}) == 8
    assert len({utt.label for utt in utterances}) == 7
    for utt in utterances:
        assert utt.path is not None and utt.path.is_file()
        assert utt.corpus == "emodb" and utt.language == "de"
        # The manifest's label agrees with the emotion letter of the file name.
        assert utt.label == EMODB_CODES[utt.path.stem[5]]
        assert utt.speaker == f"emodb:{utt.path.stem[:2]}"
        assert utt.text


@pytest.mark.data
@needs_emodb
def test_emodb_original_names_match_manifest() -> None:
    from_names = _by_id(load_dataset(f"emodb:{EMODB / 'wav'}"))
    from_manifest = _by_id(load_dataset(f"emodb:{EMODB / 'manifest.csv'}"))
    assert from_names.keys() == from_manifest.keys()
    for utt_id, utt in from_names.items():
        other = from_manifest[utt_id]
        assert (utt.label, utt.speaker, utt.path) == (
            other.label,
            other.speaker,
            other.path,
        )
        assert utt.text == other.text


@pytest.mark.data
@_needs(DATA / "ased" / "manifest.csv")
def test_ased() -> None:
    utterances = load_dataset(f"ased:{DATA / 'ased'}")
    assert len(utterances) == 2108
    assert len({utt.speaker for utt in utterances}) == 53
    assert {utt.label for utt in utterances} == {
        "anger", "fear", "happiness", "neutral", "sadness",
    }  # fmt: skip
    for utt in utterances:
        # its sentences leak the label: never passed on as text
        assert utt.text is None and utt.language == "am" and utt.corpus == "ased"
        assert utt.path is not None and utt.path.is_file()
    assert len(_by_id(utterances)) == 2108


@pytest.mark.parametrize(
    ("kind", "manifest", "error"),
    [
        ("rakshak", "x.flac,ab12cd34,anger\nx.flac,ab12cd34,sadness\n",
         r"line 3: emotion 'sadness' is not one of Rakshak's"),
        ("emovo", "x.flac,f1,calm\n", "not one of EMOVO's"),
        ("emovo", "x.flac,,anger\n", "line 2: empty speaker"),
        ("ased", "x.flac,01,rage\n", "line 2: unknown emotion label 'rage'"),
    ],
)  # fmt: skip
def test_emotion_manifests_reject_bad_rows(
    tmp_path: Path, kind: str, manifest: str, error: str
) -> None:
    (tmp_path / "x.flac").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text("path,speaker,emotion\n" + manifest)
    with pytest.raises(ValueError, match=error):
        load_dataset(f"{kind}:{tmp_path}")


def test_ased_rejects_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,speaker,emotion\nx.flac,01,anger\n")
    with pytest.raises(ValueError, match="line 2: audio file"):
        load_dataset(f"ased:{tmp_path}")
    (tmp_path / "x.flac").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text("path,speaker,emotion\nx.flac,01,calm\n")
    with pytest.raises(ValueError, match="not one of ASED's"):
        load_dataset(f"ased:{tmp_path}")
    (tmp_path / "manifest.csv").write_text("path,emotion\nx.flac,anger\n")
    with pytest.raises(ValueError, match="lacks columns speaker"):
        load_dataset(f"ased:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no manifest"):
        load_dataset(f"ased:{tmp_path / 'empty'}")


def _matches_manifest(kind: str, language: Any) -> list[Utterance]:
    """Load ``kind`` from ``DATA/kind`` and check each utterance against its row:
    audio, label, speaker, language (``language(row)``), and no text."""
    folder = DATA / kind
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    utterances = load_dataset(f"{kind}:{folder}")
    assert len(utterances) == len(rows) == len(_by_id(utterances))
    for utt, row in zip(utterances, rows, strict=True):
        assert utt.path == folder / row["path"] and utt.path.is_file()
        assert (utt.label, utt.speaker) == (row["emotion"], f"{kind}:{row['speaker']}")
        # sentences or keywords are fixed or leak the label: never passed on as text
        assert utt.text is None and utt.corpus == kind
        assert utt.language == language(row)
    return utterances


@pytest.mark.data
@_needs(DATA / "emovo" / "manifest.csv")
def test_emovo_matches_its_manifest() -> None:
    utterances = _matches_manifest("emovo", lambda row: "it")
    assert len(utterances) == 588
    assert {u.speaker for u in utterances} == {
        f"emovo:{s}" for s in ("f1", "f2", "f3", "m1", "m2", "m3")
    }
    assert collections.Counter(u.label for u in utterances) == {
        label: 84
        for label in (
            "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
        )
    }  # fmt: skip


@pytest.mark.data
@_needs(DATA / "rakshak" / "manifest.csv")
def test_rakshak_matches_its_manifest() -> None:
    utterances = _matches_manifest(
        "rakshak",
        lambda row: {"bacho": "hi", "unknown": None}.get(row["keyword"], "en"),
    )
    assert len(utterances) == 1240
    assert len({u.speaker for u in utterances}) == 105
    assert collections.Counter(u.label for u in utterances) == {
        "anger": 310, "calm": 310, "fear": 310, "happiness": 310,
    }  # fmt: skip


@pytest.mark.data
@needs_ravdess
def test_ravdess() -> None:
    utterances = load_dataset(f"ravdess:{RAVDESS}")
    assert len(utterances) == 1200
    assert len({utt.speaker for utt in utterances}) == 20
    assert {utt.label for utt in utterances} == {
        "neutral",
        "calm",
        "happiness",
        "sadness",
        "anger",
        "fear",
        "disgust",
        "surprise",
    }
    for utt in utterances:
        assert utt.path is not None
        assert utt.path.parent.name == f"Actor_{utt.speaker.split(':')[1]}"
        assert utt.text in RAVDESS_STATEMENTS.values()
        assert utt.language == "en"


@pytest.mark.data
@needs_ravdess
def test_ravdess_accepts_wav_and_skips_song(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    _build(
        tmp_path,
        [
            "Actor_01/03-01-05-02-01-01-01.wav",
            "Actor_02/03-01-02-01-02-02-02.wav",
            "Actor_02/03-02-03-01-01-01-02.wav",  # song: skipped
        ],
        emodb_clips,
    )
    flac = sorted(RAVDESS.glob("Actor_03/*.flac"))[0]
    shutil.copyfile(flac, tmp_path / flac.name)
    found = _by_id(load_dataset(f"ravdess:{tmp_path}"))
    assert len(found) == 3
    assert found["ravdess:03-01-05-02-01-01-01"].label == "anger"
    assert found["ravdess:03-01-02-01-02-02-02"].label == "calm"
    assert found["ravdess:03-01-02-01-02-02-02"].text == "Dogs are sitting by the door"
    assert found[f"ravdess:{flac.stem}"].speaker == "ravdess:03"


@pytest.mark.data
@needs_shemo_text
def test_shemo_text() -> None:
    utterances = load_dataset(f"shemo-text:{SHEMO_TEXT}")
    assert len(utterances) == 2267
    assert len({utt.speaker for utt in utterances}) == 68
    assert {utt.label for utt in utterances} <= set(CANONICAL_LABELS)
    for utt in utterances:
        assert utt.path is None and utt.text
        assert utt.language == "fa" and utt.corpus == "shemo"
        assert utt.speaker == f"shemo:{utt.utt_id.split(':')[1][:3]}"
    # The folder form finds the same file.
    assert load_dataset(f"shemo-text:{SHEMO_TEXT.parent}") == utterances


# --- corpora built from EMO-DB clips under their real names ---------------------


@pytest.mark.data
def test_shemo_original_layout(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(
        tmp_path,
        [
            "female/F01A01.wav",
            "female/F01H02.wav",
            "female/F14F09.wav",
            "male/M02S01.wav",
            "male/M02W03.wav",
            "male/M10N100.wav",
        ],
        emodb_clips,
    )
    (tmp_path / "transcript").mkdir()
    (tmp_path / "transcript" / "F01A01.ort").write_text(
        "دیگه نمی‌تونم تحمل کنم.\n", encoding="utf-8"
    )
    (tmp_path / "transcript" / "M02W03.txt").write_text("چی؟", encoding="utf-8")
    (tmp_path / "shemo.json").write_text(
        json.dumps(
            {
                "M02S01": {
                    "speaker_id": "M02",
                    "gender": "male",
                    "emotion": "sadness",
                    "transcript": "خیلی خسته‌ام",
                    "ipa": "xejli xæsteæm",
                }
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    found = _by_id(load_dataset(f"shemo:{tmp_path}"))
    expected = {
        "shemo:F01A01": ("anger", "shemo:F01", "دیگه نمی‌تونم تحمل کنم."),
        "shemo:F01H02": ("happiness", "shemo:F01", None),
        "shemo:F14F09": ("fear", "shemo:F14", None),
        "shemo:M02S01": ("sadness", "shemo:M02", "خیلی خسته‌ام"),
        "shemo:M02W03": ("surprise", "shemo:M02", "چی؟"),
        "shemo:M10N100": ("neutral", "shemo:M10", None),
    }
    assert {key: (u.label, u.speaker, u.text) for key, u in found.items()} == expected
    assert all(
        u.language == "fa" and u.path and u.path.is_file() for u in found.values()
    )


@pytest.mark.data
def test_shemo_json(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(tmp_path, ["shemo/F21N05.wav", "shemo/M03S07.wav"], emodb_clips)
    entries = {
        "F21N05.wav": {
            "path": "shemo/F21N05.wav",
            "gender": "female",
            "speech_name": "F21N05",
            "text_name": "F21N37",
            "emotion": "neutral",
            "transcript": "مگه من به تو نگفته بودم",
            "ipa": "mӕge mæn be to nægofte budӕm",
        },
        # A corrected label: the file name says sadness, Modified ShEMO says anger.
        "M03S07.wav": {
            "path": "shemo/M03S07.wav",
            "gender": "male",
            "speech_name": "M03S07",
            "text_name": "M03S07",
            "emotion": "anger",
            "transcript": "برو بیرون",
            "ipa": "boro birun",
        },
    }
    json_path = tmp_path / "modified_shemo.json"
    json_path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    for spec in (f"shemo-json:{json_path}", f"shemo-json:{tmp_path}"):
        found = _by_id(load_dataset(spec))
        assert found["shemo:F21N05"].label == "neutral"
        assert found["shemo:F21N05"].speaker == "shemo:F21"
        assert found["shemo:F21N05"].text == "مگه من به تو نگفته بودم"
        assert found["shemo:F21N05"].path == tmp_path / "shemo" / "F21N05.wav"
        assert found["shemo:M03S07"].label == "anger"
        assert found["shemo:M03S07"].speaker == "shemo:M03"
        assert found["shemo:M03S07"].language == "fa"


@pytest.mark.data
def test_crema_d(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(
        tmp_path,
        [
            "AudioWAV/1001_DFA_ANG_XX.wav",
            "AudioWAV/1001_IEO_HAP_HI.wav",
            "AudioWAV/1002_TSI_DIS_LO.wav",
            "AudioWAV/1091_WSI_FEA_MD.wav",
            "AudioWAV/1091_ITH_NEU_XX.wav",
            "AudioWAV/1091_IOM_SAD_XX.wav",
        ],
        emodb_clips,
    )
    found = _by_id(load_dataset(f"crema-d:{tmp_path}"))
    assert {key: (u.label, u.speaker) for key, u in found.items()} == {
        "crema-d:1001_DFA_ANG_XX": ("anger", "crema-d:1001"),
        "crema-d:1001_IEO_HAP_HI": ("happiness", "crema-d:1001"),
        "crema-d:1002_TSI_DIS_LO": ("disgust", "crema-d:1002"),
        "crema-d:1091_WSI_FEA_MD": ("fear", "crema-d:1091"),
        "crema-d:1091_ITH_NEU_XX": ("neutral", "crema-d:1091"),
        "crema-d:1091_IOM_SAD_XX": ("sadness", "crema-d:1091"),
    }
    assert found["crema-d:1001_DFA_ANG_XX"].text == "Don't forget a jacket."
    assert all(u.language == "en" for u in found.values())


@pytest.mark.data
def test_tess(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(
        tmp_path,
        [
            "OAF_angry/OAF_back_angry.wav",
            "OAF_disgust/OAF_bar_disgust.wav",
            "OAF_neutral/OA_bite_neutral.wav",
            "YAF_fear/YAF_germ_fear.wav",
            "YAF_happy/YAF_dog_happy.wav",
            "YAF_pleasant_surprised/YAF_youth_ps.wav",
            "YAF_sad/YAF_chalk_sad.wav",
        ],
        emodb_clips,
    )
    found = _by_id(load_dataset(f"tess:{tmp_path}"))
    assert {key: (u.label, u.speaker) for key, u in found.items()} == {
        "tess:OAF_back_angry": ("anger", "tess:OAF"),
        "tess:OAF_bar_disgust": ("disgust", "tess:OAF"),
        "tess:OA_bite_neutral": ("neutral", "tess:OAF"),
        "tess:YAF_germ_fear": ("fear", "tess:YAF"),
        "tess:YAF_dog_happy": ("happiness", "tess:YAF"),
        "tess:YAF_youth_ps": ("surprise", "tess:YAF"),
        "tess:YAF_chalk_sad": ("sadness", "tess:YAF"),
    }
    assert found["tess:OAF_back_angry"].text == "Say the word back"


@pytest.mark.data
@pytest.mark.parametrize("layout", ["flat", "folders"])
def test_savee(tmp_path: Path, emodb_clips: list[Path], layout: str) -> None:
    names = [
        ("DC", "a01"),
        ("DC", "d02"),
        ("JE", "f03"),
        ("JE", "h04"),
        ("JK", "n05"),
        ("JK", "sa06"),
        ("KL", "su15"),
    ]
    if layout == "flat":
        files = [f"ALL/{speaker}_{code}.wav" for speaker, code in names]
    else:
        files = [f"AudioData/{speaker}/{code}.wav" for speaker, code in names]
    _build(tmp_path, files, emodb_clips)
    found = _by_id(load_dataset(f"savee:{tmp_path}"))
    assert {key: (u.label, u.speaker) for key, u in found.items()} == {
        "savee:DC_a01": ("anger", "savee:DC"),
        "savee:DC_d02": ("disgust", "savee:DC"),
        "savee:JE_f03": ("fear", "savee:JE"),
        "savee:JE_h04": ("happiness", "savee:JE"),
        "savee:JK_n05": ("neutral", "savee:JK"),
        "savee:JK_sa06": ("sadness", "savee:JK"),
        "savee:KL_su15": ("surprise", "savee:KL"),
    }


@pytest.mark.data
def test_asvp_esd(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(
        tmp_path,
        [
            "Audio/actor_01/03-01-05-01-02-01-02-02-01.wav",
            "Audio/actor_01/03-01-02-01-01-01-02-01-02.wav",
            "Audio/actor_01/03-02-03-02-01-01-02-01.wav",  # non-speech: skipped
            "Audio/actor_02/03-01-01-02-02-02-02-02.wav",
            "Audio/actor_02/03-01-08-01-01-02-03-01.wav",
            "Audio/actor_02/03-01-10-01-01-02-02-01.wav",  # pleasure: skipped
            "Audio/actor_02/03-01-13-01-01-02-02-01.wav",  # breath: skipped
        ],
        emodb_clips,
    )
    found = _by_id(load_dataset(f"asvp-esd:{tmp_path}"))
    assert {key: (u.label, u.speaker) for key, u in found.items()} == {
        "asvp-esd:03-01-05-01-02-01-02-02-01": ("anger", "asvp-esd:01"),
        "asvp-esd:03-01-02-01-01-01-02-01-02": ("neutral", "asvp-esd:01"),
        "asvp-esd:03-01-01-02-02-02-02-02": ("boredom", "asvp-esd:02"),
        "asvp-esd:03-01-08-01-01-02-03-01": ("surprise", "asvp-esd:02"),
    }


@pytest.mark.data
def test_csv_manifest(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(tmp_path, ["audio/a.wav", "audio/sub/b.flac.wav"], emodb_clips)
    elsewhere = _build(tmp_path / "other", ["c.wav"], emodb_clips)[0]
    rows = [
        ["path", "label", "speaker", "text"],
        ["audio/a.wav", "Angry", "s1", "hello there"],
        ["audio/sub/b.flac.wav", "pleasant surprise", "s2", ""],
        [str(elsewhere), "neutral", "mine:7", "absolute path"],
    ]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows(rows)
    for spec in (f"csv:{manifest}", f"csv:{tmp_path}"):
        utterances = load_dataset(spec)
        assert [(u.label, u.speaker, u.text) for u in utterances] == [
            ("anger", "csv:s1", "hello there"),
            ("surprise", "csv:s2", None),
            ("neutral", "mine:7", "absolute path"),
        ]
        assert utterances[0].path == tmp_path / "audio" / "a.wav"
        assert utterances[2].path == elsewhere


@pytest.mark.data
def test_fixture_audio_loads(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(tmp_path, ["AudioWAV/1001_DFA_ANG_XX.wav"], emodb_clips)
    (utt,) = load_dataset(f"crema-d:{tmp_path}")
    assert utt.path is not None
    audio = load_audio(utt.path)
    reference, rate = soundfile.read(emodb_clips[0], dtype="float32")
    assert rate == SAMPLE_RATE_HZ
    np.testing.assert_array_equal(audio, reference)


# --- load_audio -------------------------------------------------------------------


@pytest.mark.data
def test_load_audio_downmixes_and_resamples(
    tmp_path: Path, emodb_clips: list[Path]
) -> None:
    mono, rate = soundfile.read(emodb_clips[0], dtype="float32")
    assert rate == SAMPLE_RATE_HZ
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    path = tmp_path / "stereo_8k.flac"
    # Written with an 8 kHz header: load_audio must resample it to twice the length.
    soundfile.write(path, stereo, 8000)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 2 * len(mono)) <= 2
    assert np.max(np.abs(audio)) <= 1.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.01


@pytest.mark.data
@needs_ravdess
def test_load_audio_flac() -> None:
    flac = sorted(RAVDESS.glob("Actor_01/*.flac"))[0]
    audio = load_audio(flac)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == soundfile.info(flac).frames


def test_load_audio_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file")
    with pytest.raises(AudioSourceError, match="broken.wav"):
        load_audio(garbage)
    with pytest.raises(AudioSourceError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), SAMPLE_RATE_HZ)
    with pytest.raises(AudioSourceError, match="no samples"):
        load_audio(empty)


# --- errors -----------------------------------------------------------------------


def test_unknown_kind_lists_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset kind 'iemocap'") as info:
        load_dataset(f"iemocap:{tmp_path}")
    for kind in KINDS:
        assert kind in str(info.value)


def test_spec_without_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="KIND:PATH"):
        load_dataset(str(tmp_path).lstrip("/").replace(":", ""))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_missing_path(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"{kind}:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize(
    "kind", ["emodb", "ravdess", "shemo", "crema-d", "tess", "savee", "asvp-esd"]
)
def test_empty_folder(tmp_path: Path, kind: str) -> None:
    (tmp_path / "notes.txt").write_text("no audio here", encoding="utf-8")
    with pytest.raises(ValueError, match="no utterances"):
        load_dataset(f"{kind}:{tmp_path}")


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,label,speaker\n", encoding="utf-8")
    (tmp_path / "shemo_text.jsonl").write_text("\n", encoding="utf-8")
    (tmp_path / "modified_shemo.json").write_text("{}", encoding="utf-8")
    for kind in ("csv", "shemo-text", "shemo-json"):
        with pytest.raises(ValueError, match="no utterances"):
            load_dataset(f"{kind}:{tmp_path}")


@pytest.mark.data
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("emodb", "03a01Xa.wav"),
        ("ravdess", "Actor_01/03-01-09-01-01-01-01.wav"),
        ("shemo", "female/F01X01.wav"),
        ("crema-d", "1001_DFA_XYZ_XX.wav"),
        ("tess", "OAF_back_contempt.wav"),
        ("savee", "DC_x01.wav"),
        ("asvp-esd", "actor_01/03-01-14-01-01-01-02-01.wav"),
    ],
)
def test_unknown_label_in_name(
    tmp_path: Path, emodb_clips: list[Path], kind: str, name: str
) -> None:
    _build(tmp_path, [name], emodb_clips)
    with pytest.raises(ValueError, match=Path(name).stem):
        load_dataset(f"{kind}:{tmp_path}")


@pytest.mark.data
def test_unknown_label_in_rows(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(tmp_path, ["a.wav", "shemo/F01A01.wav"], emodb_clips)
    (tmp_path / "manifest.csv").write_text(
        "path,label,speaker\na.wav,anger,s1\na.wav,excited,s1\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"manifest.csv line 3.*'excited'"):
        load_dataset(f"csv:{tmp_path}")
    (tmp_path / "shemo_text.jsonl").write_text(
        json.dumps(
            {"id": "F01A01", "speaker": "F01", "emotion": "contempt", "transcript": "x"}
        )
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"line 1.*'contempt'"):
        load_dataset(f"shemo-text:{tmp_path}")
    (tmp_path / "modified_shemo.json").write_text(
        json.dumps({"F01A01.wav": {"path": "shemo/F01A01.wav", "emotion": "rage"}}),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"F01A01.wav.*'rage'"):
        load_dataset(f"shemo-json:{tmp_path}")


@pytest.mark.data
def test_manifest_rows_need_audio(tmp_path: Path, emodb_clips: list[Path]) -> None:
    (tmp_path / "manifest.csv").write_text(
        "path,label,speaker\ngone.wav,anger,s1\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"line 2.*gone.wav"):
        load_dataset(f"csv:{tmp_path}")
    (tmp_path / "manifest.csv").write_text("path,emotion\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lacks columns label, speaker"):
        load_dataset(f"csv:{tmp_path}")


@pytest.mark.data
def test_names_outside_the_scheme(tmp_path: Path, emodb_clips: list[Path]) -> None:
    _build(tmp_path, ["Actor_01/recording.wav"], emodb_clips)
    with pytest.raises(ValueError, match="RAVDESS naming scheme"):
        load_dataset(f"ravdess:{tmp_path}")


# --- folds ------------------------------------------------------------------------


def _synthetic(speakers: int, per_speaker: int) -> list[Utterance]:
    labels = ("anger", "happiness", "neutral", "sadness")
    return [
        Utterance(
            utt_id=f"synthetic:{speaker}-{index}",
            path=None,
            label=labels[(speaker + index) % len(labels)],
            speaker=f"synthetic:{speaker:02d}",
            corpus="synthetic",
            text="",
        )
        for speaker in range(speakers)
        for index in range(per_speaker)
    ]


def _check_disjoint(utterances: list[Utterance], folds: list) -> None:
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(utterances)))
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0
        assert len(train) + len(test) == len(utterances)
        train_speakers = {utterances[i].speaker for i in train}
        test_speakers = {utterances[i].speaker for i in test}
        assert train_speakers.isdisjoint(test_speakers)


def test_loso_folds() -> None:
    utterances = _synthetic(speakers=6, per_speaker=5)
    folds = speaker_folds(utterances, "loso")
    assert len(folds) == 6
    _check_disjoint(utterances, folds)
    assert [{utterances[i].speaker for i in test} for _, test in folds] == [
        {f"synthetic:{s:02d}"} for s in range(6)
    ]


def test_loco_folds_hold_out_one_corpus_each() -> None:
    first = _synthetic(speakers=3, per_speaker=2)
    second = [
        Utterance(
            utt_id=f"other:{i}", path=None, label="anger", speaker=f"other:{i % 2}",
            corpus="other",
        )
        for i in range(4)
    ]  # fmt: skip
    both = first + second
    folds = speaker_folds(both, "loco")
    assert len(folds) == 2
    _check_disjoint(both, folds)
    assert [{both[i].corpus for i in test} for _, test in folds] == [
        {"other"},
        {"synthetic"},
    ]
    with pytest.raises(ValueError, match="at least 2 corpora"):
        speaker_folds(first, "loco")


@pytest.mark.train
def test_kfold_reproducible() -> None:
    pytest.importorskip("sklearn")
    utterances = _synthetic(speakers=20, per_speaker=4)
    first = speaker_folds(utterances, "kfold", k=5, seed=3)
    again = speaker_folds(utterances, "kfold", k=5, seed=3)
    other = speaker_folds(utterances, "kfold", k=5, seed=4)
    assert len(first) == 5
    _check_disjoint(utterances, first)
    for (train_a, test_a), (train_b, test_b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)
    assert any(
        not np.array_equal(a.test, b.test) for a, b in zip(first, other, strict=True)
    )


def test_fold_errors() -> None:
    utterances = _synthetic(speakers=3, per_speaker=2)
    with pytest.raises(ValueError, match="unknown fold kind"):
        speaker_folds(utterances, "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        speaker_folds(utterances, "kfold", k=4)
    with pytest.raises(ValueError, match="at least 2 speakers"):
        speaker_folds(_synthetic(speakers=1, per_speaker=3), "loso")


@pytest.mark.data
@pytest.mark.train
@needs_emodb
@needs_ravdess
def test_folds_on_real_corpora() -> None:
    pytest.importorskip("sklearn")
    emodb = load_dataset(f"emodb:{EMODB}")
    loso = speaker_folds(emodb, "loso")
    assert len(loso) == 8
    _check_disjoint(emodb, loso)
    both = emodb + load_dataset(f"ravdess:{RAVDESS}")
    folds = speaker_folds(both, "kfold", k=5, seed=0)
    _check_disjoint(both, folds)
    again = speaker_folds(both, "kfold", k=5, seed=0)
    assert all(
        np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True)
    )
    # Stratified: every fold's test set holds every label of the union.
    labels = collections.Counter(utt.label for utt in both)
    for _, test in folds:
        assert {both[i].label for i in test} == set(labels)


@pytest.mark.data
@pytest.mark.train
@_needs(DATA / "emovo" / "manifest.csv")
@_needs(DATA / "rakshak" / "manifest.csv")
def test_loco_and_speaker_folds_on_emovo_and_rakshak() -> None:
    pytest.importorskip("sklearn")
    emovo = load_dataset(f"emovo:{DATA / 'emovo'}")
    rakshak = load_dataset(f"rakshak:{DATA / 'rakshak'}")
    both = emovo + rakshak
    loco = speaker_folds(both, "loco")
    assert [len(test) for _, test in loco] == [588, 1240]
    _check_disjoint(both, loco)
    _check_disjoint(emovo, speaker_folds(emovo, "loso"))
    kfold = speaker_folds(rakshak, "kfold", k=5, seed=0)
    _check_disjoint(rakshak, kfold)
    for _, test in kfold:  # stratified over 105 speakers: every fold has all four
        assert {rakshak[i].label for i in test} == {
            "anger",
            "calm",
            "fear",
            "happiness",
        }


@pytest.mark.data
@pytest.mark.train
@needs_shemo_text
def test_kfold_on_shemo_text() -> None:
    pytest.importorskip("sklearn")
    utterances = load_dataset(f"shemo-text:{SHEMO_TEXT}")
    folds = speaker_folds(utterances, "kfold", k=5, seed=0)
    assert len(folds) == 5
    _check_disjoint(utterances, folds)
