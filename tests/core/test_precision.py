"""The float32 matrix-product precision switch (torch.set_float32_matmul_precision's names); what
it changes on CUDA (TF32) is checked in tests/cuda/test_gpu.py."""

import pytest

import gpunn


def test_matmul_precision_switch_validates():
    assert gpunn.get_float32_matmul_precision() == "highest"
    gpunn.set_float32_matmul_precision("high")
    try:
        assert gpunn.get_float32_matmul_precision() == "high"
    finally:
        gpunn.set_float32_matmul_precision("highest")
    with pytest.raises(ValueError, match="highest"):
        gpunn.set_float32_matmul_precision("medium-ish")
