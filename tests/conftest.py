"""Shared fixtures: `device` runs a test on every device gpunn has here.

"strict" and "strict:1" are array-api-strict: code that passes there uses only the array API
standard and keeps data on its device. "cuda" is marked `gpu` and skipped, with the reason gpunn
gives, where no CUDA device is usable. `fake_cuda_env` is the environment of a subprocess that
imports the fake CuPy of tests/cuda/fake_cuda as `cupy`.
"""

import os

import pytest

import gpunn
from helpers import FAKE_CUDA

DEVICE_SPECS = ["cpu", "strict", "strict:1", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_configure(config):
    # pyproject declares these too; registering here keeps `--strict-markers` happy without it
    config.addinivalue_line("markers", "gpu: needs a usable CUDA device (skipped with the reason otherwise)")
    config.addinivalue_line("markers", "slow: longer end-to-end checks")


def pytest_collection_modifyitems(config, items):
    """Skip everything marked `gpu` (with gpunn's reason) when no CUDA device can be used."""
    reason = gpunn.cuda.why_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICE_SPECS)
def device(request):
    """A gpunn.Device: cpu, strict, strict:1, and cuda where one is usable."""
    return gpunn.device(request.param)


@pytest.fixture
def fake_cuda_env():
    """os.environ for a subprocess on the fake CuPy (tests/cuda/fake_cuda first on PYTHONPATH, two
    fake devices, GPUNN_CUPY=fake for tests/cuda/test_cupy_contract.py); this process keeps its own imports."""
    path = os.pathsep.join(filter(None, (str(FAKE_CUDA), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "PYTHONPATH": path, "GPUNN_CUPY": "fake", "FAKE_CUDA_DEVICES": "2"}
