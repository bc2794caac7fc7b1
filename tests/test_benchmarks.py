"""The benchmark suite: a seconds-long smoke run so it cannot rot, and its scoring."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import PROSE_WIDTH, merge_latest_runs, report
from benchmarks.common import (
    Section,
    busy_processes,
    edit_distance,
    markdown_table,
    portable_path,
    scrub_paths,
    speech_end_sample,
    word_errors,
)

REPO = Path(__file__).resolve().parents[1]


def test_word_errors_counts_substitutions_insertions_deletions() -> None:
    assert word_errors(
        "Kids are talking by the door.", "kids are talking by the door", prefix=False
    ) == (0, 6)
    assert word_errors(
        "kids talking by a door door", "Kids are talking by the door", prefix=False
    ) == (3, 6)
    assert edit_distance([], ["a", "b"]) == 2
    assert edit_distance(["a", "b"], []) == 2


def test_prefix_scoring_uses_the_words_a_cut_clip_holds() -> None:
    # A 2 s EMO-DB clip holds the sentence's first words only.
    reference = "Der Lappen liegt auf dem Eisschrank."
    assert word_errors("Der Lappen liegt", reference, prefix=True) == (0, 3)
    assert word_errors("Der Lappen lügt", reference, prefix=True) == (1, 3)
    assert word_errors("Der Lappen liegt", reference, prefix=False) == (3, 6)


def test_speech_end_ignores_trailing_silence() -> None:
    rng = np.random.default_rng(0)
    speech = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    clip = np.concatenate(
        [np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)]
    )
    end = speech_end_sample(clip)
    assert 24000 - 320 <= end <= 24000 + 320


def test_report_names_command_commit_and_host() -> None:
    section = Section(
        "T", "benchmarks/x.py", markdown_table(["a", "b"], [[1, 2.5]]), {}
    )
    text = report(
        [section],
        "python -m benchmarks --quick",
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        12.0,
        ("1.00 / 1.00 / 1.00", "2.00 / 1.00 / 1.00", []),
        True,
    )
    assert "`python -m benchmarks --quick`" in text
    assert "git commit at start:" in text and "cores" in text and "GPU:" in text
    assert "### T (`benchmarks/x.py`)" in text
    assert "| 1 | 2.500 |" in text


def _latest(part: str, title: str, table: str, command: str) -> str:
    section = Section(title, f"benchmarks/{part}.py", table, {}, 60.0)
    return report(
        [section],
        command,
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        60.0,
        ("1.00 / 1.00 / 1.00", "1.00 / 1.00 / 1.00", []),
        False,
        "abc1234",
    )


def test_a_run_replaces_the_latest_run_of_the_parts_it_ran() -> None:
    document = "# streamser benchmarks\n\nSummary.\n"
    first = merge_latest_runs(
        document,
        _latest("stages", "Stages", "| old stages |", "python -m benchmarks")
        + "\n"
        + _latest("latency", "Latency", "| old latency |", "python -m benchmarks"),
    )
    assert first.startswith(document)
    assert "## Latest runs" in first and "git history" in first
    second = merge_latest_runs(
        first,
        _latest("stages", "Stages", "| new stages |", "python -m benchmarks --parts x"),
    )
    assert "| new stages |" in second and "| old stages |" not in second
    assert "| old latency |" in second  # parts that did not run keep their section
    assert second.count("### Stages (`benchmarks/stages.py`)") == 1
    assert second.count("## Latest runs") == 1
    # Sections stay in the suite's order, and merging is stable.
    assert second.index("benchmarks/stages.py") < second.index("benchmarks/latency.py")
    assert merge_latest_runs(second, "") == second


def test_written_results_name_no_absolute_path_or_process_arguments(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    text = _latest(
        "stages",
        "Stages",
        f"| {REPO / 'streamser'} |",
        f"python -m benchmarks --json {out}",
    )
    assert "--json bench.json`" in text and "| streamser |" in text
    assert str(tmp_path) not in text and str(REPO) not in text
    data = f"emodb:{REPO.parent}/shared/datasets/emodb"
    assert scrub_paths(data) == "emodb:$STREAMSER_DATA/emodb"
    assert (
        scrub_paths("over `/v1/stream`, 1/5/15 min") == "over `/v1/stream`, 1/5/15 min"
    )
    assert portable_path("tests/data/models") == "tests/data/models"
    assert all("/" not in busy for busy in busy_processes(min_cpu=0.0))


@pytest.mark.data
def test_quick_run_measures_every_part(datasets: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    md = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--output",
            str(md),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "STREAMSER_DATA": str(datasets),
            "PYTHONPATH": str(REPO),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    asr = data["benchmarks/asr_context.py"]
    ten = asr["streamser WhisperAsr, window 10 s"]
    assert 0 <= ten["ravdess_wer_pct"] <= 100 and ten["encoder_ms"] > 0
    segmentation = data["benchmarks/segmentation.py"]["RAVDESS@400"]
    assert segmentation["clips"] == 20 and segmentation["none"] == 0
    assert segmentation["ending_p50_ms"] < segmentation["close_p50_ms"]
    cost = data["benchmarks/acoustic_cost.py"]
    assert 0 < cost["acoustic graph"]["p50_ms"] < cost["total"]["p50_ms"]
    stages = data["benchmarks/stages.py"]
    assert stages["full_ms"] > 0 and stages["peer_a_ms"] > 0 and stages["peer_b_ms"] > 0
    assert all(v >= 0 for v in stages["stages_ms"].values())
    latency = data["benchmarks/latency.py"]["RAVDESS"]
    assert latency["missed"] == 0 and math.isfinite(latency["server_p50_ms"])
    capacity = data["benchmarks/capacity.py"]["streamser, ASR off, dense"]
    assert capacity["steps"] and capacity["steps"][0]["utterances"] > 0
    tuning = data["benchmarks/tuning.py"]["defaults"]
    assert math.isfinite(tuning["client_p50_ms"])
    uploads = data["benchmarks/uploads.py"]
    assert uploads["wav"]["status"] == 200 and uploads["wav"]["utterances"] > 0
    assert uploads["300 MB Content-Length"]["status"] == 413
    text = md.read_text()
    assert "python -m benchmarks --quick" in text and "benchmarks/capacity.py" in text


def test_simd_level_names_the_widest_vector_instructions() -> None:
    """Hosts called "AMD EPYC" alike run int8 graphs at different speeds: the report
    says which vector instructions the CPU has."""
    from benchmarks.common import simd_level

    assert simd_level({"sse4_2", "avx", "avx2", "fma"}) == "AVX2"
    assert simd_level({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert simd_level({"avx2", "avx512f"}) == "AVX-512"
    assert simd_level({"sse2"}) == ""


def test_report_wraps_prose_but_not_tables() -> None:
    """Prose in a part's body and the run lines are wrapped to the width; a table
    row longer than that stays one line."""
    row = "| " + " | ".join(f"column {i}" for i in range(20)) + " |"
    prose = "A long note about the load. " * 10
    text = _latest("stages", "Stages", f"{prose}\n\n{row}", "python -m benchmarks")
    lines = text.splitlines()
    assert row in lines
    assert all(len(line) <= PROSE_WIDTH for line in lines if not line.startswith("|"))
    assert " ".join(prose.split()) in " ".join(text.split())
