"""Helpers for the tests (a plain module: import it with `from helpers import ...` from any folder
of tests/, which pytest puts on sys.path as the folder of the root conftest.py)."""

import math
from pathlib import Path

import numpy as np

import gpunn

# the fake CuPy (a package `cupy` over NumPy): on PYTHONPATH, it stands in for CuPy on fake CUDA devices
FAKE_CUDA = Path(__file__).resolve().parent / "cuda" / "fake_cuda"


def rng(seed=0):
    """A NumPy generator for test data: fixed seed, so a failure reproduces."""
    return np.random.default_rng(seed)


def to_device(array, device, requires_grad=False, dtype=None):
    """A tensor with `array`'s values (and dtype, unless `dtype` is given) on `device`."""
    array = np.asarray(array)
    return gpunn.tensor(array, dtype=dtype, device=device, requires_grad=requires_grad)


def away_from_zero(shape, seed=0, low=0.5, high=1.5):
    """float64 values with |x| in [low, high] and random signs: smooth points for abs, relu, max."""
    g = rng(seed)
    return g.uniform(low, high, size=shape) * g.choice([-1.0, 1.0], size=shape)


def positive(shape, seed=0, low=0.5, high=1.5):
    """float64 values in [low, high]: inside the domain of log, sqrt and fractional powers."""
    return rng(seed).uniform(low, high, size=shape)


def distinct(shape, seed=0):
    """float64 values that differ pairwise by at least 0.1: no ties for max, min and sorting."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2) * 0.37 + 0.11
    return rng(seed).permutation(values).reshape(shape)


def assert_close(tensor, expected, device=None, dtype=None, rtol=1e-10, atol=1e-12):
    """Values, and optionally the device and dtype, of a gpunn tensor against NumPy."""
    assert isinstance(tensor, gpunn.Tensor), f"expected a gpunn.Tensor, got {type(tensor).__name__}"
    if device is not None:
        assert tensor.device == device, f"result on {tensor.device}, expected {device}"
    if dtype is not None:
        assert tensor.dtype == dtype, f"result is {tensor.dtype}, expected {dtype}"
    expected = np.asarray(expected)
    assert tensor.shape == expected.shape, f"shape {tensor.shape}, expected {expected.shape}"
    np.testing.assert_allclose(tensor.numpy(), expected, rtol=rtol, atol=atol)


def unbroadcast(g, shape):
    """NumPy reference for a broadcast operand's gradient: sum g down to `shape`."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def names_along_the_output(out):
    """Primitive names from the output back through first inputs (the chain Sequential built)."""
    names = []
    node = out._node
    while node is not None:
        names.append(node.primitive.name)
        parent = node.parents[0]
        node = parent if isinstance(parent, gpunn.autograd.Node) else None
    return names


def check_uniform(values, bound):
    """Samples of U(-bound, bound): inside the bounds, reaching near them, std = bound / sqrt(3)."""
    values = np.asarray(values, dtype=np.float64)
    assert np.abs(values).max() <= bound * (1 + 1e-6), f"max {np.abs(values).max()} exceeds bound {bound}"
    assert np.abs(values).max() > 0.99 * bound, f"max {np.abs(values).max()} far below bound {bound}"
    assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert abs(values.mean()) < 0.02 * bound


def check_normal(values, std):
    """Samples of N(0, std^2): mean 0 and the standard deviation within 2%."""
    values = np.asarray(values, dtype=np.float64)
    assert abs(values.std() / std - 1) < 0.02, f"std {values.std()} vs expected {std}"
    assert abs(values.mean()) < 0.02 * std
