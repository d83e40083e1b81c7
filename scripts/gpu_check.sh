#!/usr/bin/env bash
# Everything in gpunn that needs a GPU, in one short run (a few minutes on a fresh GPU machine).
#
#   bash scripts/gpu_check.sh LOGDIR
#
# Steps: install carried wheels (.whl/, if present) and gpunn itself; nvidia-smi; then what the
# GPU targets need first, three `gpunn bench` runs, each with PyTorch and both CUDA-graph
# contenders (gpunn-graph, torch-graph):
#   bench            784-256-256-10 and 784-1024-1024-1024-10 at batch 128 and 512, cpu and cuda
#   bench-4096       4096-4096-4096-4096-1000 at batch 4096, cuda only, float32
#   bench-4096-tf32  the same with --tf32
#   bench-4096-amp   the same with --amp: float16 autocast + GradScaler, gpunn-amp against torch-amp
#                    (issue 19: at most 1.05x torch-amp, at least 3x faster than gpunn's float32 step)
# (results in LOGDIR/bench-*/bench.{csv,json,png}); tests/cuda/test_gpu.py (pytest-gpu: fast paths
# against the generic ones, graphs, the 50-step trajectories, whose measured drifts go into
# LOGDIR/pytest-gpu.xml as properties); tests/cuda/test_cupy_contract.py (cupy-contract: the CuPy rules
# the fake CuPy of tests/cuda/fake_cuda keeps, and its names, checked on real CuPy); CPU/CUDA parity of
# a seeded training run; `gpunn train` on CUDA with and without --compile; the fused optimizer
# benchmark; a cProfile of the eager CUDA step (where its host time goes); NVRTC compiles of the
# CUDA kernel sources; and last the cuda case of every device-parametrized test (cuda-cases: the
# longest step, CuPy compiling its kernels on a fresh machine; spread over 8 workers where
# pytest-xdist is installed). Each step's output goes to
# LOGDIR/<step>.log as well as to the terminal; a failed step does not stop the next one. The CUDA
# steps report SKIP (with gpunn's reason) where no CUDA device is usable, so the script also runs on
# a CPU-only machine. Ends with a table: step, status, seconds. Exit status 0 unless a step failed
# or ran past STEP_TIMEOUT seconds (default 180) or was not run: one that would start after BUDGET
# seconds (default 450) is not, so the table is written before a lent machine's command limit.
# ARCHIVE, if set, names a .tar.gz of LOGDIR rewritten after every step: a lent machine returns
# only a few files, and this one comes back even if the command is cut. PYTHON picks the
# interpreter (default python3).
#
# The GPU machine has numpy, cupy, torch, pytest, hypothesis, safetensors, tqdm and matplotlib but
# no network and no array-api-compat: put its wheel (and array-api-strict's) in .whl/ first, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl array-api-compat array-api-strict
# The data-parallel steps (ddp-1, ddp-2: scripts/ddp_gpu_check.py under mpiexec -n 1 and -n 2; NCCL's
# version, DDP equal to one process, a captured DDP step) need mpi4py and mpich as well, carried the
# same way (.whl/ is not ignored by git, so it travels with the working tree to a lent machine):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#       -d .whl mpi4py mpich
# mpich's wheel brings mpiexec (into /tmp/site/bin); without them those steps SKIP.
# If the editable install still fails, gpunn runs from this tree, with a link gpunn/backends ->
# ../backends standing in for the installed package's layout (a fallback for a lent machine).
set -o pipefail
set -u

if [ $# -ne 1 ]; then
    echo "usage: bash scripts/gpu_check.sh LOGDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
LOGDIR=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-180}  # seconds per step: a hung step becomes TIMEOUT instead of eating the lease
BUDGET=${BUDGET:-450}  # seconds: no step starts later than this
ARCHIVE=${ARCHIVE:-}
began=$(date +%s)

names=()
statuses=()
durations=()

record() {  # record NAME STATUS SECONDS
    names+=("$1")
    statuses+=("$2")
    durations+=("$3")
}

step() {  # step NAME COMMAND...: run it with a time limit, tee into LOGDIR/NAME.log, record the outcome
    local name=$1
    shift
    if (($(date +%s) - began > BUDGET)); then  # not run: a failure of the check, but the table gets written
        echo
        echo "=== $name: NOT RUN (the time budget of $BUDGET s is spent)"
        record "$name" NOT-RUN 0.0
        return
    fi
    echo
    echo "=== $name: $*"
    local start end rc status
    start=$(date +%s.%N)
    timeout --kill-after=10 "$STEP_TIMEOUT" "$@" 2>&1 | tee "$LOGDIR/$name.log"
    rc=$?
    end=$(date +%s.%N)
    case $rc in
        0) status=PASS ;;
        124 | 137) status=TIMEOUT ;;
        *) status="FAIL($rc)" ;;
    esac
    record "$name" "$status" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
    archive
}

archive() {  # the logs so far, as one file (see ARCHIVE)
    if [ -n "$ARCHIVE" ]; then
        tar czf "$ARCHIVE.part" -C "$(dirname "$LOGDIR")" "$(basename "$LOGDIR")" && mv "$ARCHIVE.part" "$ARCHIVE"
    fi
}

skip() {  # skip NAME REASON
    echo
    echo "=== $1: SKIP ($2)"
    echo "SKIP: $2" >"$LOGDIR/$1.log"
    record "$1" SKIP 0.0
    archive
}

# --- installation ---------------------------------------------------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
    step wheels "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
    skip wheels "no .whl/ folder: using the packages already installed"
fi
step install "$PY" -m pip install -q --no-deps --no-build-isolation -e .
if ! "$PY" -c "import gpunn.backends" >/dev/null 2>&1; then  # not installed: run from the tree itself
    ln -sfn ../backends gpunn/backends  # where the installed package has it; removed when the script ends
    trap 'rm -f gpunn/backends' EXIT
    echo "gpunn is not installed; running from this tree with the link gpunn/backends -> ../backends"
fi

# --- the GPU itself -------------------------------------------------------------------------------
if ! cuda_reason=$("$PY" -c "import gpunn; print(gpunn.cuda.why_unavailable() or '')" 2>"$LOGDIR/cuda-probe.err"); then
    cuda_reason="gpunn does not import: $(tail -n 1 "$LOGDIR/cuda-probe.err")"
fi
echo
echo "CUDA: ${cuda_reason:-usable}"

if command -v nvidia-smi >/dev/null 2>&1; then
    step nvidia-smi nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,utilization.gpu \
        --format=csv
    if [ -n "$cuda_reason" ]; then  # a GPU machine where gpunn cannot use the GPU is a failure, not a skip
        echo "=== cuda: FAIL (nvidia-smi sees a GPU but gpunn cannot use it: $cuda_reason)"
        record cuda "FAIL" 0.0
    fi
else
    skip nvidia-smi "nvidia-smi not found"
fi

cuda_sources() {  # NVRTC compiles of every CUDA kernel source (no GPU needed), or why not
    if [ ! -f scripts/check_cuda_sources.py ]; then
        skip cuda-sources "scripts/check_cuda_sources.py not found"
    elif ! "$PY" -c "import cupy" >/dev/null 2>&1; then
        skip cuda-sources "CuPy does not import"
    elif "$PY" -c "import cupy, sys; sys.exit('fake' not in cupy.__version__)" >/dev/null 2>&1; then
        skip cuda-sources "the fake CuPy of tests/cuda/fake_cuda has no NVRTC (a dry run)"
    else
        step cuda-sources "$PY" scripts/check_cuda_sources.py
    fi
}

gpunn_cli=("$PY" -m gpunn)
run_id=$(date +%Y%m%d-%H%M%S)  # a fresh --out per run: gpunn train refuses a folder that holds a run
big=(--devices cuda --baselines torch --sizes 4096-4096-4096-4096-1000 --batch-sizes 4096 --repeats 5)

if [ -z "$cuda_reason" ]; then
    step bench "${gpunn_cli[@]}" bench --devices cpu,cuda --sizes 784-256-256-10,784-1024-1024-1024-10 \
        --batch-sizes 128,512 --out "$LOGDIR/bench-$run_id"
    step bench-4096 "${gpunn_cli[@]}" bench "${big[@]}" --out "$LOGDIR/bench-4096-$run_id"
    step bench-4096-tf32 "${gpunn_cli[@]}" bench "${big[@]}" --tf32 --out "$LOGDIR/bench-4096-tf32-$run_id"
    step bench-4096-amp "${gpunn_cli[@]}" bench "${big[@]}" --amp --out "$LOGDIR/bench-4096-amp-$run_id"
    step pytest-gpu "$PY" -m pytest -q -p no:cacheprovider --durations=5 -o junit_family=xunit1 \
        --junitxml="$LOGDIR/pytest-gpu.xml" tests/cuda/test_gpu.py
    # the fake CuPy's rules held to this CuPy (GPUNN_CUPY=fake for a dry run on the fake)
    step cupy-contract env GPUNN_CUPY="${GPUNN_CUPY:-real}" "$PY" -m pytest -q -p no:cacheprovider -rs \
        tests/cuda/test_cupy_contract.py
    step parity "$PY" benchmarks/parity.py --devices cpu,cuda --steps 50
    step train "${gpunn_cli[@]}" train --device cuda --epochs 2 --no-progress --out "$LOGDIR/train-$run_id"
    step train-compile "${gpunn_cli[@]}" train --device cuda --epochs 2 --no-progress --compile --clip-norm 1.0 \
        --out "$LOGDIR/train-compile-$run_id"  # a "gpunn: note: compile_step runs eagerly" line means no graph
    step train-amp "${gpunn_cli[@]}" train --device cuda --epochs 2 --no-progress --amp --clip-norm 1.0 \
        --out "$LOGDIR/train-amp-$run_id"  # compiled by default on CUDA, with the GradScaler inside the graph
    step fused "$PY" benchmarks/fused_step.py --device cuda --repeats 7
    mpiexec=$(command -v mpiexec || { [ -x /tmp/site/bin/mpiexec ] && echo /tmp/site/bin/mpiexec; })
    if [ -n "$mpiexec" ] && "$PY" -c "import mpi4py" >/dev/null 2>&1; then
        step ddp-1 "$mpiexec" -n 1 "$PY" scripts/ddp_gpu_check.py
        step ddp-2 "$mpiexec" -n 2 "$PY" scripts/ddp_gpu_check.py
    else
        skip ddp-1 "no mpiexec or mpi4py: carry the mpi4py and mpich wheels in .whl/"
        skip ddp-2 "no mpiexec or mpi4py: carry the mpi4py and mpich wheels in .whl/"
    fi
    step profile-cuda "$PY" benchmarks/profile_step.py --device cuda --steps 300 --top 30
    cuda_sources
    # the cuda case of every device-parametrized test (hundreds: CuPy compiles a kernel for each
    # new op and dtype, so workers share the compiling where pytest-xdist is there)
    workers=()
    if "$PY" -c "import xdist" >/dev/null 2>&1; then workers=(-n 8); fi
    step cuda-cases "$PY" -m pytest -m gpu -q -p no:cacheprovider --durations=5 "${workers[@]}" \
        --ignore=tests/cuda/test_gpu.py tests
else
    for name in bench bench-4096 bench-4096-tf32 bench-4096-amp pytest-gpu cupy-contract parity train train-compile \
        train-amp fused ddp-1 ddp-2 profile-cuda cuda-sources cuda-cases; do
        skip "$name" "no usable CUDA device: $cuda_reason"
    done
fi

# --- summary --------------------------------------------------------------------------------------
{
    echo
    printf '%-16s %-12s %8s\n' step status seconds
    for i in "${!names[@]}"; do
        printf '%-16s %-12s %8s\n' "${names[$i]}" "${statuses[$i]}" "${durations[$i]}"
    done
    echo "logs: $LOGDIR"
} | tee "$LOGDIR/summary.txt"
archive
for s in "${statuses[@]}"; do
    case $s in PASS | SKIP) ;; *) exit 1 ;; esac
done
exit 0
