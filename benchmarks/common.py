"""What every benchmark shares: corpora subsets, WER, host facts, timing helpers."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

REPO: Final = Path(__file__).resolve().parents[1]
SHIPPED_MODELS: Final = REPO / "streamser" / "models"
FIXTURE_MODELS: Final = REPO / "tests" / "data" / "models"
RAVDESS_STATEMENTS: Final = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}


def data_root() -> Path | None:
    """STREAMSER_DATA, else ../shared/datasets beside the repository, if it exists."""
    value = os.environ.get("STREAMSER_DATA")
    root = Path(value) if value else REPO.parent / "shared" / "datasets"
    return root if root.is_dir() else None


def require_data() -> Path:
    """The corpora folder.

    Raises:
        FileNotFoundError: naming the setting to fix.
    """
    root = data_root()
    if root is None:
        raise FileNotFoundError(
            "corpora not found: set STREAMSER_DATA or provide ../shared/datasets"
        )
    return root


def model_dir() -> tuple[Path, str]:
    """The emotion graphs to benchmark and a phrase saying which they are."""
    if list(SHIPPED_MODELS.glob("emotion-acoustic-v*.onnx")):
        return SHIPPED_MODELS, "shipped models (streamser/models)"
    return FIXTURE_MODELS, "tiny fixture graphs (tests/data/models; none shipped yet)"


@dataclass(frozen=True)
class Clip:
    """One corpus utterance with its reference sentence.

    Attributes:
        path: the audio file.
        corpus: "ravdess" or "emodb".
        language: ISO 639-1 code of the speech.
        reference: the spoken sentence.
        truncated: the audio may stop inside the sentence (EMO-DB's 2 s cut).
    """

    path: Path
    corpus: str
    language: str
    reference: str
    truncated: bool = False

    def audio(self) -> npt.NDArray[np.float32]:
        """16 kHz mono float32 samples."""
        from streamser.audio.files import read_audio_file

        return read_audio_file(self.path)


def ravdess_clips(count: int, seed: int = 0) -> list[Clip]:
    """A seeded subset of RAVDESS, spread evenly over the 20 actors."""
    root = require_data() / "ravdess"
    actors = sorted(p for p in root.glob("Actor_*") if p.is_dir())
    rng = np.random.default_rng(seed)
    per_actor = -(-count // max(1, len(actors)))
    chosen: list[Path] = []
    for actor in actors:
        files = sorted([*actor.glob("*.flac"), *actor.glob("*.wav")])
        picks = rng.choice(len(files), size=min(per_actor, len(files)), replace=False)
        chosen += [files[i] for i in sorted(picks)]
    order = rng.permutation(len(chosen))[:count]
    return [
        Clip(
            chosen[i],
            "ravdess",
            "en",
            RAVDESS_STATEMENTS[chosen[i].stem.split("-")[4]],
        )
        for i in sorted(order)
    ]


def emodb_clips(count: int, seed: int = 0) -> list[Clip]:
    """A seeded subset of EMO-DB, spread evenly over the 8 speakers."""
    import csv

    root = require_data() / "emodb"
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["path"])
    speakers = sorted({r["speaker"] for r in rows})
    rng = np.random.default_rng(seed)
    per_speaker = -(-count // max(1, len(speakers)))
    chosen = []
    for speaker in speakers:
        mine = [r for r in rows if r["speaker"] == speaker]
        picks = rng.choice(len(mine), size=min(per_speaker, len(mine)), replace=False)
        chosen += [mine[i] for i in sorted(picks)]
    order = sorted(rng.permutation(len(chosen))[:count])
    return [
        Clip(
            root / chosen[i]["path"],
            "emodb",
            "de",
            chosen[i]["text"],
            truncated=float(chosen[i]["duration_s"]) <= 2.0,
        )
        for i in order
    ]


_PUNCTUATION: Final = re.compile(r"[^\w\s']|_")


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation (Whisper-style normalisation, light)."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
    """Word-level Levenshtein distance."""
    previous = list(range(len(reference) + 1))
    for i, word in enumerate(hypothesis, 1):
        current = [i] + [0] * len(reference)
        for j, ref in enumerate(reference, 1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != ref)
            )
        previous = current
    return previous[-1]


def word_errors(hypothesis: str, reference: str, *, prefix: bool) -> tuple[int, int]:
    """(errors, reference words) of one transcript.

    With ``prefix`` (audio cut inside the sentence), the reference is the prefix of
    the sentence that gives the fewest errors: the words the clip still holds.
    """
    hyp, ref = words(hypothesis), words(reference)
    if not prefix:
        return edit_distance(hyp, ref), len(ref)
    best = min(
        ((edit_distance(hyp, ref[:k]), k) for k in range(1, len(ref) + 1)),
        key=lambda pair: (pair[0] / pair[1], -pair[1]),
    )
    return best


SPEECH_FLOOR_DB: Final = -30.0
"""A 20 ms frame within this much of a clip's loudest frame counts as speech."""


def speech_end_sample(audio: npt.NDArray[np.float32]) -> int:
    """End of speech in a clip: the end of its last 20 ms frame within 30 dB of the
    loudest frame (the clips' own trailing silence excluded). An energy criterion,
    independent of streamser's VAD; on RAVDESS it falls about 0.1-0.2 s before the
    segmenter's utterance end (which adds 150 ms of pad)."""
    frames = audio[: audio.shape[0] // 320 * 320].reshape(-1, 320)
    if not frames.size:
        return int(audio.shape[0])
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > SPEECH_FLOOR_DB)[0]
    return int((loud.max() + 1) * 320)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear), NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


@contextlib.contextmanager
def stopwatch(into: dict[str, float], key: str) -> Iterator[None]:
    """Add the elapsed seconds of the block to ``into[key]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - started


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of another process, MiB; NaN if unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other programs using the CPU now (ps), to record what the run shared it with.

    Each entry is a program name with its summed CPU% and process count, e.g.
    ``python 174.2% (7 processes)``: no arguments and no paths, which could name
    files of the machine the run happened on.
    """
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,pid,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    cpu_by_program: dict[str, list[float]] = {}
    for line in out.splitlines():
        fields = line.strip().split(None, 2)
        if len(fields) < 3:
            continue
        cpu, pid, program = float(fields[0]), int(fields[1]), fields[2].strip()
        if cpu < min_cpu or pid == os.getpid() or program == "ps":
            continue
        program = program.split("/", 1)[0] or program  # kworker/0:1 -> kworker
        cpu_by_program.setdefault(program, []).append(cpu)
    ranked = sorted(cpu_by_program.items(), key=lambda item: -sum(item[1]))
    return [
        f"{program} {sum(cpus):.1f}%"
        + (f" ({len(cpus)} processes)" if len(cpus) > 1 else "")
        for program, cpus in ranked
    ]


_ABSOLUTE_PATH: Final = re.compile(r"(?<![\w./~-])/(?=[\w.])[^\s`'\",;:)\]|]*")


def portable_path(path: str) -> str:
    """A path fit to publish: relative to the repository when inside it, else
    ``$STREAMSER_DATA/...`` for a corpus file (a path through a ``datasets`` folder),
    else just the file name. Relative paths are returned unchanged."""
    if not path.startswith("/"):
        return path
    absolute = Path(path)
    with contextlib.suppress(ValueError):
        return str(absolute.relative_to(REPO)) or "."
    parts = absolute.parts
    if "datasets" in parts:
        after = parts[len(parts) - parts[::-1].index("datasets") :]
        return "/".join(("$STREAMSER_DATA", *after))
    return absolute.name or path


def scrub_paths(text: str) -> str:
    """``text`` with every absolute file path made portable (``portable_path``).

    Only paths whose first component exists at the file-system root (``/home``,
    ``/tmp``, ...) count, so URL paths such as ``/v1/stream`` are left alone.
    """

    def replace(match: re.Match[str]) -> str:
        path = match.group(0)
        top = path.split("/")[1]
        if not top or not Path("/", top).exists():
            return path
        return portable_path(path)

    return _ABSOLUTE_PATH.sub(replace, text)


def gpu_description() -> str:
    """nvidia-smi's name and memory of each GPU, or "none"."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none (nvidia-smi failed)"
    return "; ".join(out.splitlines()) or "none"


def gpu_memory_used_mb() -> float | None:
    """Device memory in use now (all GPUs, MiB), None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return float(sum(float(v) for v in out.split()))


def simd_level(flags: set[str]) -> str:
    """The widest vector instructions of a CPU with these /proc/cpuinfo ``flags`` that
    onnxruntime's and CTranslate2's kernels use: hosts sold under one model name
    ("AMD EPYC") differ here: the int8 acoustic graph ran about twice as fast on the
    AVX-512 VNNI hosts seen than on an AVX2 one."""
    for flag, name in (
        ("avx512_vnni", "AVX-512 VNNI"),
        ("avx512f", "AVX-512"),
        ("avx_vnni", "AVX-VNNI"),
        ("avx2", "AVX2"),
        ("avx", "AVX"),
    ):
        if flag in flags:
            return name
    return ""


def host_description() -> dict[str, str]:
    """CPU model and vector instructions, cores, RAM, GPU and load of this machine."""
    cpu = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
    cpu = fields.get("model name", cpu)
    simd = simd_level(set(fields.get("flags", "").split()))
    if simd:
        cpu = f"{cpu} ({simd})"
    ram_gb = float("nan")
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{ram_gb:.1f} GiB",
        "gpu": gpu_description(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit() -> str:
    """HEAD's short hash, with "+dirty" when benchmarks/ or streamser/ has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "streamser", "benchmarks"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@dataclass
class Section:
    """One benchmark's output: a title, markdown body and raw numbers.

    Attributes:
        title: the heading.
        script: the module that produced it (named in BENCHMARKS.md).
        body: markdown (tables and notes).
        data: the numbers behind the tables, for JSON output and tests.
        seconds: how long the part ran (set by ``__main__``).
    """

    title: str
    script: str
    body: str
    data: dict[str, Any]
    seconds: float | None = None

    @property
    def part(self) -> str:
        """The part's name: its script's file name without ``.py`` (``stages``)."""
        return Path(self.script).stem
