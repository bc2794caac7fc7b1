#!/usr/bin/env bash
# The GPU check in one call, on a machine with a CUDA GPU:
#   benchmarks/gpu_check.sh OUTPUT_FOLDER
# installs streamser with the gpu extra into a fresh virtual environment, leaves only
# the GPU onnxruntime wheel in it (README, "GPU"), runs the gpu tests and
# `python -m benchmarks --parts gpu`, and copies into OUTPUT_FOLDER: the JSON, the
# BENCHMARKS.md section, the test and benchmark logs, nvidia-smi and the providers.
#
# Environment:
#   WHEELS=DIR        install offline from this wheelhouse (pip --no-index --find-links);
#                     make one elsewhere with: pip download '.[gpu,dev]' -d DIR
#   VENV=DIR          the virtual environment (default: a new one under /tmp)
#   SKIP_INSTALL=1    use VENV as it is (already installed by an earlier call)
#   SYSTEM_SITE=1     create VENV with --system-site-packages, so that CUDA wheels
#                     already on the machine are reused and only what is missing is
#                     installed (for a machine that cannot reach a package index)
#   STREAMSER_DATA    the corpora (default ../shared/datasets)
# Time: install 2-4 min (about 2 GB of CUDA wheels), tests about 1 min, benchmark
# under 8 min; each step has its own timeout so that the outputs always come back.
set -uo pipefail

out=${1:?usage: benchmarks/gpu_check.sh OUTPUT_FOLDER}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
venv=${VENV:-$(mktemp -d /tmp/streamser-gpu-XXXXXX)}
python=${PYTHON:-python3}
step() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$out/steps.txt"; }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step "install into $venv"
    venv_args=()
    [ "${SYSTEM_SITE:-0}" = 1 ] && venv_args+=(--system-site-packages)
    "$python" -m venv "${venv_args[@]}" "$venv" || exit 1
    pip=("$venv/bin/pip" install -q)
    [ -n "${WHEELS:-}" ] && pip+=(--no-index --find-links "$WHEELS")
    timeout 420 "${pip[@]}" '.[gpu,dev]' >"$out/install.txt" 2>&1 \
        || { echo "install failed: see install.txt" | tee -a "$out/steps.txt"; exit 1; }
    # onnxruntime (a core dependency) and onnxruntime-gpu share one import folder:
    # keep only the GPU wheel, reinstalled so that its files are whole.
    gpu=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')
    "$venv/bin/pip" uninstall -y -q onnxruntime >>"$out/install.txt" 2>&1
    timeout 120 "${pip[@]}" --force-reinstall --no-deps "onnxruntime-gpu==$gpu" \
        >>"$out/install.txt" 2>&1
fi
py="$venv/bin/python"

step "devices"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
"$py" - >"$out/providers.txt" 2>&1 <<'EOF'
import ctranslate2, onnxruntime
from streamser.recognition.cuda import cuda_device_count, onnxruntime_conflict, preload_cuda_libraries
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("ctranslate2", ctranslate2.__version__, "CUDA devices:", cuda_device_count())
print("preloaded:", ", ".join(preload_cuda_libraries()) or "nothing")
print("conflict:", onnxruntime_conflict())
EOF
cat "$out/providers.txt"

step "gpu tests"
timeout 300 "$py" -m pytest -q -rs -m gpu tests/test_gpu.py >"$out/pytest-gpu.txt" 2>&1
echo "pytest exit $?" | tee -a "$out/steps.txt"
tail -5 "$out/pytest-gpu.txt"

step "benchmark"
cp BENCHMARKS.md "$out/BENCHMARKS.md"
timeout 540 "$py" -m benchmarks --parts gpu --output "$out/BENCHMARKS.md" \
    --json "$out/gpu-run.json" >"$out/benchmark.txt" 2>&1
echo "benchmark exit $?" | tee -a "$out/steps.txt"
cp artifacts/gpu-benchmark.json "$out/" 2>/dev/null
# The section alone, as it was written into BENCHMARKS.md.
awk '/^### GPU: /{p=1} p&&/^### /&&!/^### GPU: /{p=0} p' "$out/BENCHMARKS.md" \
    >"$out/gpu-section.md"
tail -40 "$out/benchmark.txt"
step "done"
