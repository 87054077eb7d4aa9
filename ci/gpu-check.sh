#!/usr/bin/env bash
# Every GPU check of mlp in one command, for a CUDA machine without network
# (docs/testing.md, "The GPU check"):
#   1. the GPU cells of the test matrix, with MLP_REQUIRE_BACKENDS (a skip is a failure)
#   2. `python -m mlp train --device gpu --backend X` for X in cupy, jax, torch
#   3. the GPU benchmark, `benchmarks/bench_train.py --device gpu`
# then a summary table. Installs nothing from the network.
#
#   bash ci/gpu-check.sh                      # with the python on PATH
#   PYTHON=.venv/bin/python bash ci/gpu-check.sh
#   WHEELS=/path/to/wheels bash ci/gpu-check.sh   # missing pure-Python packages from there
#
# Environment:
#   PYTHON                 the interpreter (default: python3, else python)
#   WHEELS                 a folder of wheels: the missing ones of array-api-compat,
#                          array-api-strict, pytest, hypothesis, threadpoolctl are
#                          installed from it (pip --no-index) into $OUT/site, put on PYTHONPATH
#   OUT                    where logs and bench-gpu.json go (default: gpu-check-<date>)
#   MLP_REQUIRE_BACKENDS   the GPU backends that must run (default: cupy,jax:gpu,torch:cuda)
#   GPU_BACKENDS           backends for `mlp train` (default: cupy jax torch)
#   BENCH_ARGS             extra options for the benchmark (e.g. "--quick")
#   CUDA_VISIBLE_DEVICES   set empty (or -1): no GPU is visible, so nothing is checked
#
# Exit status: 0 when every step passed, or when this machine has no CUDA device
# (it says so: there is nothing to check); 1 when a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

cuda_devices() {
    # Prints how many CUDA devices this process would see (0 when none).
    if [[ -v CUDA_VISIBLE_DEVICES && ( -z "$CUDA_VISIBLE_DEVICES" || "$CUDA_VISIBLE_DEVICES" == "-1" ) ]]; then
        echo 0
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
    else
        ls /dev/nvidia[0-9]* 2>/dev/null | wc -l
    fi
}

if [[ "$(cuda_devices)" -eq 0 ]]; then
    echo "gpu-check: no CUDA device on this machine (no nvidia-smi GPU, no /dev/nvidia*," \
         "or CUDA_VISIBLE_DEVICES hides them): nothing to check."
    exit 0
fi

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
OUT="${OUT:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX shares the card with CuPy and PyTorch here
export MLP_REQUIRE_BACKENDS="${MLP_REQUIRE_BACKENDS:-cupy,jax:gpu,torch:cuda}"
GPU_BACKENDS="${GPU_BACKENDS:-cupy jax torch}"

NAMES=()
STATUS=()
record() {  # record NAME EXIT_CODE
    NAMES+=("$1")
    STATUS+=("$2")
}

run_step() {  # run_step NAME LOGFILE COMMAND...: runs it, shows and logs its output
    local name="$1" log="$2"
    shift 2
    echo
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$log"
    record "$name" "${PIPESTATUS[0]}"
}

echo "gpu-check: $(cuda_devices) CUDA device(s); python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')" \
     "($PYTHON); logs in $OUT"
nvidia-smi -L 2>/dev/null || true

# 0. Missing pure-Python packages, from the wheel folder only.
if [[ -n "${WHEELS:-}" ]]; then
    missing=()
    for pair in array_api_compat:array-api-compat array_api_strict:array-api-strict pytest:pytest \
                hypothesis:hypothesis threadpoolctl:threadpoolctl; do
        "$PYTHON" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
    done
    if ((${#missing[@]})); then
        export PYTHONPATH="$OUT/site:$PYTHONPATH"
        run_step "wheels (${missing[*]})" "$OUT/wheels.log" \
            "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --target "$OUT/site" "${missing[@]}"
    fi
fi

# 1. The GPU cells of the matrix: a GPU backend that cannot run fails instead of skipping.
run_step "pytest GPU cells ($MLP_REQUIRE_BACKENDS)" "$OUT/pytest.log" \
    "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu "$ROOT/tests"

# 2. The command a user types, on each GPU backend.
for backend in $GPU_BACKENDS; do
    run_step "mlp train --device gpu --backend $backend" "$OUT/train-$backend.log" \
        "$PYTHON" -m mlp train --device gpu --backend "$backend" --epochs 5
done

# 3. The GPU benchmark (small, large and huge configs against the hand-written references).
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
run_step "benchmark --device gpu" "$OUT/bench-gpu.md" \
    "$PYTHON" "$ROOT/benchmarks/bench_train.py" --device gpu --json "$OUT/bench-gpu.json" ${BENCH_ARGS:-}

echo
echo "=== gpu-check summary ($(date -u +'%Y-%m-%d %H:%M') UTC; logs in $OUT)"
failed=0
for i in "${!NAMES[@]}"; do
    if [[ "${STATUS[$i]}" -eq 0 ]]; then
        result="passed"
    else
        result="FAILED (exit ${STATUS[$i]})"
        failed=1
    fi
    printf '| %-60s | %s |\n' "${NAMES[$i]}" "$result"
done
exit "$failed"
