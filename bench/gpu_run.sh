#!/usr/bin/env bash
# Run ONCE on a CUDA machine with CuPy installed (and ideally torch with CUDA):
#   OUT=/some/dir bash bench/gpu_run.sh            # every stage
#   OUT=/some/dir bash bench/gpu_run.sh tests full # chosen stages
# Stages: env tests quick full sweep f64 cpu-core. Everything lands under $OUT
# (default ./gpu-results-DATE): env.txt, pytest-gpu.txt, gpu-*.{json,csv,txt,png},
# *.log, status.txt. A failing stage is logged and the next one runs anyway.
# Each bench stage is capped by STAGE_TIMEOUT seconds (default 540); on the cap
# the bench still writes what it measured (it catches SIGTERM). Where one command
# may run only ~10 minutes, run the stages in several calls with the same OUT:
#   bash bench/gpu_run.sh env tests ; bash bench/gpu_run.sh quick full ; bash bench/gpu_run.sh sweep f64 cpu-core
set -x
set -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/gpu-results-$(date -u +%Y%m%d-%H%M)}"
mkdir -p "$OUT"
# An empty kernel cache: the first call of each RawKernel really compiles, so
# the '1st ms' column shows the compile time.
export CUPY_CACHE_DIR="$OUT/cupy-kernel-cache"
STAGE_TIMEOUT="${STAGE_TIMEOUT:-540}"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(env tests quick full sweep f64 cpu-core)
PY="${PYTHON:-python}"

note() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT/status.txt"; }

bench() {  # bench NAME ARGS...: one bench run, its table in NAME.txt, its log in NAME.log
    local name="$1"; shift
    timeout --signal=TERM --kill-after=30 "$STAGE_TIMEOUT" \
        "$PY" -m bench "$@" --quiet --save "$OUT/$name" 2>&1 | tee "$OUT/$name.log"
    note "$name: exit ${PIPESTATUS[0]} (0 ok, 3 some path WRONG/ERROR, 124 timed out, 2 unusable)"
}

for stage in "${STAGES[@]}"; do
    note "stage $stage"
    case "$stage" in
    env)
        {
            date -u; uname -a; nvidia-smi; nvidia-smi -q -d CLOCK,POWER,PERFORMANCE | head -80
            git rev-parse HEAD; git status --short
            "$PY" -c "import cupy; cupy.show_config()"
            "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
            "$PY" -c "import backends; print('backends usable:', backends.available()); print(backends.unavailable_reason('cupy'))"
            "$PY" -m pip list 2>/dev/null | grep -i -E "cupy|torch|numpy|nvidia|array"
        } > "$OUT/env.txt" 2>&1
        note "env: exit $?"
        ;;
    tests)
        timeout "$STAGE_TIMEOUT" "$PY" -m pytest -m gpu -v -rs --durations=15 2>&1 | tee "$OUT/pytest-gpu.txt"
        note "pytest -m gpu: exit ${PIPESTATUS[0]}"
        timeout "$STAGE_TIMEOUT" "$PY" -m pytest -q tests/test_bench.py 2>&1 | tee "$OUT/pytest-bench.txt"
        note "pytest tests/test_bench.py: exit ${PIPESTATUS[0]}"
        ;;
    quick) bench gpu-quick --backend cupy --suite quick ;;
    full) bench gpu-full --backend cupy --suite full ;;
    sweep) bench gpu-sweep --backend cupy --suite sweep ;;
    f64) bench gpu-quick-f64 --backend cupy --suite quick --dtype float64 ;;
    cpu-core) bench cpu-core --backend numpy --suite core ;;
    *) note "unknown stage $stage (known: env tests quick full sweep f64 cpu-core)" ;;
    esac
done
note "done; results in $OUT"
ls -la "$OUT"
exit 0
