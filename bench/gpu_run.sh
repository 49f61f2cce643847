#!/usr/bin/env bash
# The GPU run: ONE call that collects the decisive evidence on an NVIDIA GPU in
# at most 7 minutes (every stage under its own `timeout`; the stage timeouts and
# their kill grace add up to at most 420 s, `bash bench/gpu_run.sh plan` prints
# them). Written for the lent H100/H200 machines (cupy-cuda13x, PyTorch with
# cuDNN, NumPy, pytest; no network), usable on any CUDA machine with CuPy.
#
#   here, once (network):  bash bench/gpu_run.sh prepare   # wheels the image lacks -> .whl/
#   there:                 bash bench/gpu_run.sh           # every stage; results in $OUT
#   there, some stages:    bash bench/gpu_run.sh env conv report
#   here, no GPU:          GPU_RUN_DRY=1 bash bench/gpu_run.sh   # every stage's construction, on the CPU
#
# Stages: setup (installs .whl/*.whl into $WORK/site, offline), env, compile,
# tests (pytest -m gpu), bandwidth, conv, step, nccl (engine.distributed on one
# GPU: a one-rank NCCL allreduce and DistributedOptimizer step), sanitizer
# (compute-sanitizer memcheck on the kernel tests), report. A failing stage is
# logged and the next one runs. The measuring stages are bench/gpu_bench.py (see its docstring).
#
# Files: $OUT gets three (the device tool brings back at most 8): summary.txt
# (PASS/MISS lines; also printed last), results.json (every number), and
# gpu-run-logs.tar.gz (every stage's log and JSON, refreshed after each stage,
# so a cut-off run still brings back what it did). Work files live in $WORK
# (default /tmp/engine-gpu-run); the CuPy kernel cache is $WORK/kernel-cache,
# emptied once at the start of a run that includes `compile` (so its times are
# real compilations) and kept across every stage after it.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY="${PYTHON:-python3}"
DRY="${GPU_RUN_DRY:-0}"
WORK="${GPU_RUN_WORK:-/tmp/engine-gpu-run}"
OUT="${OUT:-$ROOT/gpu-results-$(date -u +%Y%m%d-%H%M)}"
KILL_AFTER=3  # seconds between TERM and KILL at a stage's timeout; counted in the budget
BUDGET=420
# name:timeout_seconds, in run order
STAGE_TABLE=(setup:10 env:20 compile:30 tests:135 bandwidth:30 conv:60 step:35 nccl:12 sanitizer:50 report:8)
SANITIZER_TESTS='(im2col_col2im_parity or max_pool2d_parity or avg_pool2d_parity or subnormals) and float32 and not ties and not nan'
WHEELS=("array-api-compat==1.16.0" "array-api-strict==2.6.1")  # pure Python; the image lacks them

stage_timeout() { local s; for s in "${STAGE_TABLE[@]}"; do [ "${s%%:*}" = "$1" ] && { echo "${s##*:}"; return; }; done; echo 0; }
all_stages() { local s; for s in "${STAGE_TABLE[@]}"; do echo "${s%%:*}"; done; }

plan() {  # the stage table and its total: the budget check reads this
    local s total=0
    for s in "${STAGE_TABLE[@]}"; do
        printf '%-10s timeout %4ss + %ss kill grace\n' "${s%%:*}" "${s##*:}" "$KILL_AFTER"
        total=$((total + ${s##*:} + KILL_AFTER))
    done
    echo "total ${total}s (budget ${BUDGET}s)"
    [ "$total" -le "$BUDGET" ]
}

prepare() {  # here, with network: the wheels the GPU image lacks, and what the run will carry
    mkdir -p .whl
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" || return 1
    { git rev-parse HEAD; git status --short -- engine backends kernels bench tests; } > .whl/SOURCE
    ls -l .whl
}

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export CUPY_CACHE_DIR="$WORK/kernel-cache"
export CUPY_TF32=0          # cuBLAS float32 GEMMs in full float32, like cuDNN with TF32 off
unset ENGINE_CUDA_KERNELS   # the backend's default kernel variant ('auto'); the stages compare both
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GPU_RUN_DRY="$DRY" GPU_RUN_WORK="$WORK" OUT PYTHON="$PY"
if [ -z "${GPU_RUN_COMMIT:-}" ]; then
    GPU_RUN_COMMIT="$(git rev-parse HEAD 2>/dev/null || head -n 1 .whl/SOURCE 2>/dev/null || echo unknown)"
    export GPU_RUN_COMMIT
fi
DRYFLAG=()
[ "$DRY" = 1 ] && DRYFLAG=(--dry-run)
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"

pack() {  # the logs so far, into $OUT (refreshed after every stage)
    tar -czf "$OUT/gpu-run-logs.tar.gz.tmp" -C "$WORK" --exclude=./kernel-cache --exclude=./site . 2>/dev/null \
        && mv -f "$OUT/gpu-run-logs.tar.gz.tmp" "$OUT/gpu-run-logs.tar.gz"
}

# run NAME CMD...: the command under the stage's timeout; output to $WORK/NAME.log and stdout
run() {
    local name="$1" t rc start
    shift
    t="$(stage_timeout "$name")"
    { printf '%s\t' "$name"; printf '%q ' timeout --kill-after="$KILL_AFTER" "$t" "$@"; echo; } >> "$WORK/commands.txt"
    echo "== $(date -u +%H:%M:%S) stage $name (timeout ${t}s): $*"
    start=$(date +%s)
    timeout --signal=TERM --kill-after="$KILL_AFTER" "$t" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    tail -n 40 "$WORK/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$t" >> "$WORK/stages.tsv"
    echo "== stage $name: exit $rc (124: timed out) after $(( $(date +%s) - start ))s"
    pack
}

stage_setup() {
    local wheels=(.whl/*.whl)
    if [ ! -e "${wheels[0]}" ]; then
        echo "no .whl/*.whl: nothing to install (run 'bash bench/gpu_run.sh prepare' here first)"
    elif [ "$DRY" = 1 ]; then
        echo "dry run: would install ${wheels[*]} into $WORK/site"
        "$PY" -m pip --version
    else
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "${wheels[@]}" || return 1
    fi
    "$PY" -c "import numpy, array_api_compat, array_api_strict, pytest; from engine import backends; \
print('numpy', numpy.__version__, 'array_api_compat', array_api_compat.__version__, \
'array_api_strict', array_api_strict.__version__, 'pytest', pytest.__version__); \
print('backends usable:', backends.available()); print('cupy:', backends.unavailable_reason('cupy') or 'usable')"
}

stage_env() {
    date -u; uname -a
    command -v nvidia-smi >/dev/null && nvidia-smi && nvidia-smi -q -d CLOCK,POWER,PERFORMANCE | head -60
    echo "commit $GPU_RUN_COMMIT"; cat .whl/SOURCE 2>/dev/null
    "$PY" -m pip list 2>/dev/null | grep -i -E "^(cupy|torch|numpy|nvidia-cudnn|nvidia-cuda-nvrtc|array|pytest)" 
    "$PY" -m engine.bench.gpu_bench env --work "$WORK" "${DRYFLAG[@]}"
}

stage_tests() {
    local cmd=("$PY" -m pytest -m gpu -v -rfEs --durations=25 -p no:cacheprovider tests)
    if [ "$DRY" = 1 ]; then
        echo "dry run: would run ${cmd[*]}"
        "${cmd[@]}" --collect-only -q | tail -n 3
    else
        "${cmd[@]}"
    fi
}

stage_sanitizer() {
    # CuPy's memory pool hands out pieces of large blocks, which would hide an
    # out-of-bounds access from memcheck: ENGINE_CUPY_NO_POOL=1 makes the test
    # module allocate every array with its own cudaMalloc.
    local cmd=("$PY" -m pytest -m gpu -v -p no:cacheprovider tests/test_cupy_backend.py -k "$SANITIZER_TESTS")
    if [ -z "$SANITIZER" ]; then
        echo "compute-sanitizer not found: skipped. Would run: compute-sanitizer --tool memcheck ${cmd[*]}"
        "${cmd[@]}" --collect-only -q | tail -n 1
    elif [ "$DRY" = 1 ]; then
        echo "dry run: would run $SANITIZER --tool memcheck --error-exitcode 9 ${cmd[*]}"
        "${cmd[@]}" --collect-only -q | tail -n 1
    else
        ENGINE_CUPY_NO_POOL=1 "$SANITIZER" --tool memcheck --error-exitcode 9 --print-limit 20 "${cmd[@]}"
    fi
}

case "${1:-}" in
    plan) plan; exit $? ;;
    prepare) prepare; exit $? ;;
    __stage) "stage_$2"; exit $? ;;  # one shell stage, run by run() under its timeout
esac

STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && mapfile -t STAGES < <(all_stages)
for s in "${STAGES[@]}"; do
    [ "$(stage_timeout "$s")" != 0 ] || { echo "unknown stage '$s'; stages: $(all_stages | tr '\n' ' ')plan prepare" >&2; exit 2; }
done

mkdir -p "$OUT" "$WORK"
if printf '%s\n' "${STAGES[@]}" | grep -qx compile; then
    rm -rf "$WORK/kernel-cache"  # once per run, never per stage: compile times are real, later stages reuse
fi
mkdir -p "$WORK/kernel-cache"
: > "$WORK/stages.tsv"
: > "$WORK/commands.txt"
echo "GPU run: stages ${STAGES[*]}; OUT=$OUT WORK=$WORK dry=$DRY python=$PY"
for stage in "${STAGES[@]}"; do
    case "$stage" in
        setup | env | tests | sanitizer) run "$stage" bash "$ROOT/bench/gpu_run.sh" __stage "$stage" ;;
        compile | bandwidth | conv | step | nccl) run "$stage" "$PY" -m engine.bench.gpu_bench "$stage" --work "$WORK" "${DRYFLAG[@]}" ;;
        report) run report "$PY" -m engine.bench.gpu_bench report --work "$WORK" --out "$OUT" "${DRYFLAG[@]}" ;;
    esac
done
pack
echo "== results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ -f "$OUT/summary.txt" ] && { echo; cat "$OUT/summary.txt"; }
exit 0
