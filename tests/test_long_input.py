"""``run`` (a file and standard input) and ``send`` hold a long input in bounded memory:
the peak RSS on 10 minutes of 48 kHz stereo is that on one second, give or take, where
decoding the whole file at once would add hundreds of megabytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _ops_helpers import FAST, REPO, running

RATE = 48000
LONG_S = 600
WHOLE_FILE_MIB = LONG_S * RATE * 2 * 4 / 2**20
"""What the decoded file alone would take as float32 (about 220 MiB)."""
MARGIN_MIB = 60


def quiet_stereo(path: Path, seconds: int) -> Path:
    """Low noise (-60 dBFS: no speech), 48 kHz 16-bit stereo, written a minute at a
    time."""
    rng = np.random.default_rng(7)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as handle:
        for start in range(0, seconds, 60):
            frames = min(60, seconds - start) * RATE
            handle.write((rng.standard_normal((frames, 2)) * 0.001).astype(np.float32))
    return path


def peak_rss_mib(args: list[str], stdin: Path | None = None) -> float:
    """Peak RSS of ``python -m streamser ARGS``, measured by a parent of its own."""
    measure = (
        "import resource, subprocess, sys\n"
        "stdin = open(sys.argv[1], 'rb') if sys.argv[1] else None\n"
        "done = subprocess.run(sys.argv[2:], stdin=stdin, stdout=subprocess.DEVNULL)\n"
        "assert done.returncode == 0, done.returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, str(stdin or "")]
        + [sys.executable, "-m", "streamser", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip()) / 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("long")
    return quiet_stereo(folder / "short.wav", 1), quiet_stereo(
        folder / "long.wav", LONG_S
    )


def test_run_holds_a_long_file_and_stdin_in_bounded_memory(
    files: tuple[Path, Path],
) -> None:
    short, long = files
    base = peak_rss_mib(["run", str(short), "--jsonl", *FAST])
    assert WHOLE_FILE_MIB > 3 * MARGIN_MIB
    for args, stdin in (
        (["run", str(long), "--jsonl", *FAST], None),
        (["run", "-", "--jsonl", *FAST], long),
        (["run", str(long), "--jsonl", "--channels", "separate", *FAST], None),
    ):
        peak = peak_rss_mib(args, stdin)
        assert peak - base < MARGIN_MIB, (args, base, peak)


def test_send_holds_a_long_file_in_bounded_memory(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    short, long = files
    with running(FAST, tmp_path) as server:
        base = peak_rss_mib(["send", str(short), "--url", server.url, "--jsonl"])
        peak = peak_rss_mib(["send", str(long), "--url", server.url, "--jsonl"])
    assert peak - base < MARGIN_MIB, (base, peak)
