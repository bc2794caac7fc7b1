"""CUDA on a host set up by ``pip install 'streamser[gpu]'``: devices, libraries, providers.

The ``gpu`` extra installs cuBLAS, cuDNN and the CUDA runtime as ``nvidia-*-cu12``
wheels, which put their shared libraries under ``site-packages/nvidia/<name>/lib``: a
folder the dynamic loader does not search. CTranslate2 opens ``libcublas.so.12`` with
``dlopen`` when Whisper is first placed on CUDA, and onnxruntime's CUDA provider needs
cuDNN 9, cuFFT and cuRAND; ``LD_LIBRARY_PATH`` is read only when a process starts, so
``preload_cuda_libraries`` loads each library once with ``RTLD_GLOBAL`` instead, and a
later ``dlopen`` of the same soname finds it already loaded (as torch does with the
same wheels). It runs only when CUDA is about to be used, and loads nothing on a host
without the wheels (a system CUDA install is then found the usual way).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import logging
import re
import sys
from pathlib import Path
from typing import Final

_LOGGER = logging.getLogger(__name__)

_LIBRARY: Final = re.compile(
    r"^lib(cudart|cublasLt|cublas|cufft|curand|nvrtc|nvJitLink|cudnn[a-z_]*)\.so\.\d+$"
)
"""The sonames worth preloading: what CTranslate2 and onnxruntime's CUDA provider open."""

CUDA_PROVIDER: Final = "CUDAExecutionProvider"
CPU_PROVIDER: Final = "CPUExecutionProvider"


def cuda_device_count() -> int:
    """CUDA devices the driver shows (0 without a driver or a GPU).

    Asks CTranslate2, which needs only the driver (``libcuda.so.1``), so the answer
    does not depend on which onnxruntime wheel is installed.
    """
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken driver raises from deep inside CTranslate2
        return 0


def library_folders() -> list[Path]:
    """The ``lib`` folders of the installed ``nvidia-*`` wheels, sorted."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    folders: set[Path] = set()
    for root in spec.submodule_search_locations:
        folders.update(p for p in Path(root).glob("*/lib") if p.is_dir())
    return sorted(folders)


@functools.cache
def preload_cuda_libraries() -> tuple[str, ...]:
    """Load the CUDA libraries of the ``nvidia-*`` wheels into the process, once.

    Libraries that need another one are retried after it has loaded; one that still
    fails (a wheel for another CUDA major) is logged and left to the loader.

    Returns:
        The file names loaded (empty off Linux or without the wheels).
    """
    if not sys.platform.startswith("linux"):
        return ()
    pending = [
        path
        for folder in library_folders()
        for path in sorted(folder.iterdir())
        if _LIBRARY.match(path.name)
    ]
    loaded: list[str] = []
    errors: dict[str, str] = {}
    while pending:
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as err:
                failed.append(path)
                errors[path.name] = str(err)
            else:
                loaded.append(path.name)
        if len(failed) == len(pending):
            break
        pending = failed
    for path in pending:
        _LOGGER.warning("CUDA library %s not preloaded: %s", path, errors[path.name])
    if loaded:
        _LOGGER.info("Preloaded %d CUDA libraries from the nvidia wheels", len(loaded))
    return tuple(loaded)


def onnxruntime_conflict() -> str | None:
    """Why onnxruntime has no CUDA provider although ``onnxruntime-gpu`` is installed.

    Both wheels install the same ``onnxruntime`` import folder; whichever pip wrote
    last wins, and uninstalling one removes files of the other.

    Returns:
        A one-line fix, or None when there is no such conflict.
    """
    import onnxruntime as ort

    if CUDA_PROVIDER in ort.get_available_providers():
        return None
    try:
        gpu = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return None
    return (
        f"onnxruntime-gpu {gpu} is installed but the CPU onnxruntime wheel shadows it: "
        f"pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps "
        f"onnxruntime-gpu=={gpu}"
    )


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ("auto", "cpu" or "cuda").

    "auto" takes CUDA only when onnxruntime has the provider and a GPU is present;
    "cuda" takes it whenever onnxruntime has it. Without the provider, a warning
    (once) says why: "cuda" was asked for, or onnxruntime-gpu is installed but
    shadowed by the CPU wheel. The CPU provider comes last, so a
    node without a CUDA kernel still runs. The CUDA libraries are preloaded first.
    """
    import onnxruntime as ort

    if device == "cpu":
        return [CPU_PROVIDER]
    has_provider = CUDA_PROVIDER in ort.get_available_providers()
    if has_provider and (device == "cuda" or cuda_device_count() > 0):
        preload_cuda_libraries()
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if not has_provider:
        conflict = onnxruntime_conflict()
        if device == "cuda" or conflict:
            _warn_once(
                "CUDA requested but onnxruntime has no CUDA provider; using CPU (%s)"
                if device == "cuda"
                else "onnxruntime runs on CPU: %s",
                conflict or "pip install 'streamser[gpu]'",
            )
    return [CPU_PROVIDER]


@functools.cache
def _warn_once(message: str, detail: str) -> None:
    """One warning per process, not one per model loaded."""
    _LOGGER.warning(message, detail)
