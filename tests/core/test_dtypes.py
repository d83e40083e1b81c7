"""Dtypes: PyTorch's defaults and spellings, the dtype objects, and what integer tensors become
when they meet floats (true division gives float32, as in PyTorch)."""

import numpy as np
import pytest

import gpunn


def test_default_dtypes_follow_pytorch(device):
    assert gpunn.tensor([1.0, 2.0], device=device).dtype == gpunn.float32
    assert gpunn.tensor(2.5, device=device).dtype == gpunn.float32
    assert gpunn.tensor([1, 2], device=device).dtype == gpunn.int64
    assert gpunn.tensor(3, device=device).dtype == gpunn.int64
    assert gpunn.tensor([True, False], device=device).dtype == gpunn.bool_
    assert gpunn.tensor([[1, 2.5]], device=device).dtype == gpunn.float32


def test_numpy_arrays_keep_their_dtype(device):
    assert gpunn.tensor(np.ones(3), device=device).dtype == gpunn.float64
    assert gpunn.tensor(np.float64(2.0), device=device).dtype == gpunn.float64
    assert gpunn.tensor(np.ones(3, dtype=np.float32), device=device).dtype == gpunn.float32
    assert gpunn.tensor(np.arange(3, dtype=np.int32), device=device).dtype == gpunn.int32
    assert gpunn.tensor(np.zeros(2, dtype=np.uint8), device=device).dtype == gpunn.uint8


@pytest.mark.parametrize("spelling", ["float64", "double", gpunn.float64, np.float64, np.dtype("float64"),
                                      "torch.float64"])
def test_dtype_spellings(device, spelling):
    t = gpunn.tensor([1, 2], dtype=spelling, device=device)
    assert t.dtype == gpunn.float64 and t.dtype == "float64" and t.dtype == np.float64
    assert gpunn.zeros(2, dtype=spelling, device=device).dtype == gpunn.float64


def test_dtype_objects():
    assert gpunn.float32 == "float32" == gpunn.dtype("float32", True, 4)
    assert gpunn.float32 != gpunn.float64 and gpunn.float32 != "float64"
    assert gpunn.float32.is_floating_point and not gpunn.int64.is_floating_point
    assert repr(gpunn.float32) == "gpunn.float32"
    assert gpunn.float32.itemsize == 4 and gpunn.float64.itemsize == 8
    with pytest.raises(ValueError, match="float33"):
        gpunn.zeros(2, dtype="float33")


def test_integer_true_division_gives_float32_like_pytorch(device):
    i = gpunn.tensor([1, 2, 3], device=device)
    for result in (i / 2, 6 / i, i / i):
        assert result.dtype == "float32" and result.device == device
    np.testing.assert_allclose((i / 2).numpy(), [0.5, 1.0, 1.5])
    assert (gpunn.tensor([1.0, 2.0], dtype="float64", device=device) / 2).dtype == "float64"  # floats keep theirs


def test_integer_tensors_meeting_floats_take_the_float_dtype(device):
    i = gpunn.tensor([0, 1, 2], device=device)
    f64 = gpunn.tensor([1.0, 1.0, 1.0], dtype="float64", device=device)
    assert (i * 1.5).dtype == "float32" and (1.5 - i).dtype == "float32"
    assert (i + gpunn.ones(3, device=device)).dtype == "float32"
    assert (i + f64).dtype == "float64"
    assert (i * 2).dtype == "int64"  # control: integers with integers stay integers
    np.testing.assert_allclose((i * 1.5).numpy(), [0.0, 1.5, 3.0])
