"""gpunn's CUDA path, run on the CPU under the fake CuPy of scripts/fake_cuda (no GPU, no CuPy).

The `gpu` tests otherwise skip on every machine without a GPU, CI included; here a subprocess
runs them against fake CUDA devices: CuPy's rules (no implicit host transfers, one device per
op, no syncs while capturing a CUDA graph) kept, gpunn's kernels compiled from their CUDA sources
by g++, arithmetic by NumPy. It proves the Python side of the CUDA path, not speed or the GPU's
own rounding. Needs g++; a minute or two (kernel builds are cached in $TMPDIR).
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(ROOT, "scripts", "fake_cuda")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("g++") is None, reason="the fake CuPy compiles kernels with g++"),
              pytest.mark.skipif(FAKE in os.environ.get("PYTHONPATH", ""), reason="already running on the fake CuPy")]


def _run(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (FAKE, os.environ.get("PYTHONPATH"))))}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_fake_keeps_cudas_rules():
    """Each rule by a case that must fail, and a compiled step whose broken upload must be caught."""
    done = _run(os.path.join(FAKE, "selftest.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 of 20 rules hold" in done.stdout


def test_gpu_tests_pass_on_fake_cuda_devices():
    """Every `gpu` test (the cuda case of each device-parametrized test, and test_gpu.py) but the
    50-step trajectories of test_gpu.py, which take minutes here."""
    done = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                "-k", "not issue_tolerance and not generic_path_does", "tests")
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and int(summary.split(" passed")[0].split()[-1]) > 500, tail
