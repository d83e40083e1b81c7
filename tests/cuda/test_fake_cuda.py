"""gpunn's CUDA path, run on the CPU under the fake CuPy of tests/cuda/fake_cuda (no GPU, no CuPy).

The `gpu` tests otherwise skip on every machine without a GPU, CI included; here a subprocess
runs them against fake CUDA devices: CuPy's rules (no implicit host transfers, one device per
op, no syncs while capturing a CUDA graph) kept, gpunn's kernels compiled from their CUDA sources
by g++, arithmetic by NumPy. It proves the Python side of the CUDA path, not speed or the GPU's
own rounding. The fake is held to real CuPy by tests/cuda/test_cupy_contract.py, which runs here on
the fake and in scripts/gpu_check.sh on a GPU. Needs g++; a minute or two (kernel builds are
cached in $TMPDIR).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import FAKE_CUDA

ROOT = FAKE_CUDA.parents[2]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("g++") is None, reason="the fake CuPy compiles kernels with g++"),
              pytest.mark.skipif(str(FAKE_CUDA) in os.environ.get("PYTHONPATH", ""),
                                 reason="already running on the fake CuPy")]


def _pytest(env, *args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    return done.stdout.strip().splitlines()[-1], tail


def _count(summary, word):
    return int(summary.split(f" {word}")[0].split()[-1]) if f" {word}" in summary else 0


def test_the_fake_keeps_cupys_rules(fake_cuda_env):
    """tests/cuda/test_cupy_contract.py on the fake (two devices): each rule by a case that must fail,
    none skipped."""
    summary, tail = _pytest(fake_cuda_env, "-rs", "tests/cuda/test_cupy_contract.py")
    assert _count(summary, "passed") >= 20 and _count(summary, "skipped") == 0, tail


def test_gpu_tests_pass_on_fake_cuda_devices(fake_cuda_env, tmp_path):
    """Every `gpu` test (the cuda case of each device-parametrized test, and test_gpu.py) but the
    50-step trajectories of test_gpu.py, which take minutes here; and every CUDA kernel gpunn
    made in that run was launched by one of them."""
    log = tmp_path / "kernels.json"
    summary, tail = _pytest({**fake_cuda_env, "FAKE_CUDA_KERNEL_LOG": str(log)}, "-m", "gpu",
                            "-k", "not issue_tolerance and not generic_path_does", "tests")
    assert _count(summary, "passed") > 500, tail
    kernels = json.loads(log.read_text())
    assert len(kernels["present"]) >= 10
    assert sorted(set(kernels["present"]) - set(kernels["ran"])) == []


def test_kernels_agree_with_their_threads_in_reverse_order(fake_cuda_env):
    """The raw kernels (cross-entropy's block and warp reductions) with each block's threads run in
    reverse between barriers: a race between __syncthreads would change the numbers, and the
    fast-path tests compare them with the generic path."""
    summary, tail = _pytest({**fake_cuda_env, "FAKE_CUDA_REVERSE": "1"}, "-k", "match_generic or cross_entropy",
                            "tests/cuda/test_gpu.py")
    assert _count(summary, "passed") >= 4, tail
