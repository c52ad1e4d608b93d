#!/usr/bin/env bash
# The GPU session's checks and benchmarks in one script, for a lent GPU machine (python3 there has a CUDA
# torch and nvcc; nothing can be downloaded). Run from the repository root:
#
#   scripts/gpu_benchmarks.sh train    # build both, GPU tests, train the full-resolution scene with the
#                                      # fast preset (gsplat_py, then gsplat)
#   scripts/gpu_benchmarks.sh scaling  # bench_cuda.py unpacked and --packed; train the bundled resolution
#                                      # (factor 4) on the GPU;
#                                      # CPU thread scaling (render; training step from that run)
#   scripts/gpu_benchmarks.sh check    # build; the CUDA tests; bench_cuda.py --profile (gsplat_py alone);
#                                      # the whole test suite with the GPU visible
#   scripts/gpu_benchmarks.sh default [gsplat_py|gsplat]
#                                      # the default preset (30k steps) at full resolution with one
#                                      # renderer (building what it needs): a call of its own for each
#
# gsplat is built in /tmp/gsplat (kept while the machine is), gsplat_py in place.
# Inputs beside the tree in .dev/ (ignored by git; copied there by hand): gsplat/ (gsplat 1.5.3's source
# with its glm submodule), snowmiku/ (../shared/data/snowmiku: the full-resolution photos), whl/ (wheels
# that python3 there lacks: plyfile). Logs and JSON go to $OUT (default /tmp/gpu_out); each phase has a
# time limit, so the script ends with what it has.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT" /tmp/bench
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 OMP_WAIT_POLICY=PASSIVE
SCENE=$PWD/.dev/snowmiku
say() { echo "[gpu_benchmarks +${SECONDS}s] $*"; }

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD

build() {
    if ! python3 -c "import torch, gsplat_py._C" 2>/dev/null; then
        say "building gsplat_py"
        MAX_JOBS=${1:-6} python3 setup.py build_ext --inplace -j "${1:-6}" >"$OUT/build_gsplat_py.log" 2>&1 ||
            { tail -30 "$OUT/build_gsplat_py.log"; exit 1; }
    fi
    python3 -m gsplat_py info 2>&1 | tee "$OUT/info.txt"
}

copy_json() { cp /tmp/bench/*.json "$OUT/" 2>/dev/null; }

if [ "${1:-}" = train ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
    lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/\(Flags:\).*\(avx512f\).*/\1 ... \2 .../' | tee -a "$OUT/gpu.txt"
    rm -rf /tmp/gsplat && cp -r .dev/gsplat /tmp/gsplat
    (cd /tmp/gsplat && MAX_JOBS=10 timeout 330 python3 setup.py build_ext --inplace >"$OUT/build_gsplat.log" 2>&1;
        echo "gsplat build exit $? after ${SECONDS}s" >>"$OUT/build_gsplat.log") &
    gsplat_build=$!
    build
    say "GPU tests"
    timeout 200 python3 -m pytest -q -n 6 -p no:cacheprovider tests/test_cuda.py tests/test_optimizer.py \
        tests/test_2dgs_render.py tests/test_distributed_rendering.py tests/test_render_cli.py \
        tests/test_rendering_api.py >"$OUT/tests_gpu.log" 2>&1
    tail -25 "$OUT/tests_gpu.log"
    say "waiting for gsplat's build"
    wait $gsplat_build
    tail -3 "$OUT/build_gsplat.log"
    say "training, fast preset, full resolution: gsplat_py"
    timeout 140 python3 scripts/bench_train.py --data "$SCENE" --data-factor 1 --config fast \
        --set train.device cuda --output /tmp/bench 2>&1 | tail -16
    copy_json
    say "training, fast preset, full resolution: gsplat 1.5.3"
    PYTHONPATH=$PYTHONPATH:/tmp/gsplat timeout $((580 - SECONDS)) python3 scripts/bench_train.py \
        --data "$SCENE" --data-factor 1 --config fast --set train.device cuda --renderer gsplat \
        --output /tmp/bench 2>&1 | tail -16
    copy_json
elif [ "${1:-}" = scaling ]; then
    build
    for mode in unpacked packed; do
        say "bench_cuda, both renderers $mode"
        PYTHONPATH=$PYTHONPATH:/tmp/gsplat timeout 90 python3 scripts/bench_cuda.py --sizes 1000000,3000000 \
            --cameras 1,4 $([ $mode = packed ] && echo --packed) --out "$OUT/bench_cuda_$mode.json" 2>&1 | tail -14
    done
    say "training, fast preset, bundled resolution (factor 4), gsplat_py on the GPU"
    timeout 120 python3 scripts/bench_train.py --data "$SCENE" --data-factor 4 --config fast \
        --set train.device cuda --set train.output /tmp/run_fast4 --output /tmp/bench 2>&1 | tail -14
    copy_json
    say "CPU thread scaling: render"
    timeout 120 python3 scripts/bench_render.py --sizes 100000 --reference-max-n 0 --sh-degree 3 \
        --threads 1 2 4 8 16 --output "$OUT/bench_render_threads.json" 2>&1 | grep -A12 "Thread scaling"
    say "CPU thread scaling: training step"
    timeout 150 python3 scripts/bench_train_threads.py /tmp/run_fast4 --threads 1 2 4 8 16 --steps 40 \
        --warmup 5 --output /tmp/bench 2>&1 | tail -10
    copy_json
elif [ "${1:-}" = check ]; then
    build 14
    say "CUDA tests"
    timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda.py tests/test_optimizer.py \
        tests/test_2dgs_render.py tests/test_render_cli.py >"$OUT/tests_gpu.log" 2>&1
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests_gpu.log" | tail -12
    say "bench_cuda --profile"
    timeout 90 python3 scripts/bench_cuda.py --sizes 3000000 --cameras 1,4 --no-gsplat --packed --profile \
        --out "$OUT/bench_cuda_profile.json" 2>&1 | grep -v "^\[bench_cuda\]" | tail -32
    say "the whole test suite"
    timeout $((225 - SECONDS)) python3 -m pytest -v -n 14 -p no:cacheprovider tests >"$OUT/tests_all.log" 2>&1
    echo "pytest exit $?"
    grep -E "(FAILED|ERROR) tests|passed|failed" "$OUT/tests_all.log" | tail -30
    grep -c PASSED "$OUT/tests_all.log"
elif [ "${1:-}" = default ]; then
    renderer=${2:-gsplat_py}
    build 14
    if [ "$renderer" = gsplat ] && [ ! -e /tmp/gsplat/gsplat/csrc.so ]; then
        say "building gsplat"
        rm -rf /tmp/gsplat && cp -r .dev/gsplat /tmp/gsplat
        (cd /tmp/gsplat && MAX_JOBS=14 python3 setup.py build_ext --inplace >"$OUT/build_gsplat.log" 2>&1)
    fi
    say "training, default preset, full resolution: $renderer"
    PYTHONPATH=$PYTHONPATH:/tmp/gsplat timeout $((590 - SECONDS)) python3 scripts/bench_train.py --data "$SCENE" \
        --data-factor 1 --steps 30000 --eval-steps 7000,15000,30000 --set train.device cuda \
        --renderer "$renderer" --output /tmp/bench 2>&1 | tail -12
    copy_json
else
    echo "usage: scripts/gpu_benchmarks.sh train|scaling|check|default [gsplat_py|gsplat]" >&2
    exit 2
fi
say "done"
