"""Small questions PyTorch code asks of a tensor, answered as PyTorch does or with gpunn's own
documented errors, never a raw NumPy error: `t == None`, NumPy functions given a tensor, argmax
of an empty tensor, random tensors of an impossible shape."""

import numpy as np
import pytest

import gpunn


def test_comparing_with_none_gives_one_bool_like_pytorch(device):
    t = gpunn.ones(3, device=device)
    assert (t == None) is False and (t != None) is True  # noqa: E711 (the point of the test)
    assert (t == t).tolist() == [True, True, True]  # control: a tensor compares elementwise
    torch = pytest.importorskip("torch")
    assert (torch.ones(3) == None) is False and (torch.ones(3) != None) is True  # noqa: E711


@pytest.mark.parametrize("fn", [np.mean, np.sum, np.std, np.max, np.argmax, np.cumsum])
def test_numpy_functions_work_on_the_values(device, fn):
    values = np.array([[1.0, -2.0, 3.5], [0.5, 4.0, -1.0]], dtype=np.float32)
    t = gpunn.tensor(values, device=device)
    np.testing.assert_array_equal(fn(t), fn(values))
    np.testing.assert_array_equal(np.where(t > 0, t, 0), np.where(values > 0, values, 0))
    assert np.allclose(t, values) and not np.allclose(t, values + 1)  # (the second: a negative control)


def test_numpy_cannot_write_into_a_tensor():
    with pytest.raises(TypeError, match="out=tensor"):
        np.sum(np.ones(3), out=gpunn.zeros(()))


@pytest.mark.parametrize("shape,dim", [((0,), None), ((0, 3), None), ((0, 3), 0), ((2, 0), 1), ((2, 0), -1)])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_of_nothing_is_an_index_error_like_pytorch(device, name, shape, dim):
    t = gpunn.zeros(*shape, device=device)
    with pytest.raises(IndexError, match=f"{name}: .*(empty|size 0)") as info:
        getattr(t, name)(dim=dim)
    assert isinstance(info.value, gpunn.GpunnError)
    with pytest.raises(IndexError):
        getattr(gpunn, name)(t, dim=dim)
    torch = pytest.importorskip("torch")
    with pytest.raises(IndexError):
        getattr(torch.zeros(*shape), name)(dim=dim)


def test_argmax_over_a_non_empty_dim_of_an_empty_tensor_is_fine():
    """Control, as in PyTorch: reducing a (0, 3) tensor over its size-3 dim gives an empty result."""
    assert gpunn.zeros(0, 3).argmax(dim=1).shape == (0,)
    torch = pytest.importorskip("torch")
    assert torch.zeros(0, 3).argmax(dim=1).shape == (0,)


@pytest.mark.parametrize("fn", [gpunn.randn, gpunn.rand])
def test_random_tensors_of_an_impossible_shape(fn):
    with pytest.raises(gpunn.OutOfMemoryError, match=r"ran out of memory drawing shape \(1000000, 1000000\)"):
        fn(10**6, 10**6)
    with pytest.raises(gpunn.OutOfMemoryError, match="larger than any array"):
        fn(10**10, 10**10)
    with pytest.raises(gpunn.ShapeError, match="non-negative"):
        fn(2, -1)
    assert fn((2, 3)).shape == (2, 3) and fn(0).shape == (0,)  # control: possible shapes still work
