"""Tensor basics: creation, facts, casts, in-place edits, iteration and host conversion, and the
small questions PyTorch code asks of a tensor (dtype rules: test_dtypes.py)."""

import numpy as np
import pytest

import gpunn
from helpers import assert_close, to_device


def test_tensor_copies_its_input(device):
    source = np.array([1.0, 2.0])
    t = gpunn.tensor(source, device=device)
    source[0] = 99.0
    assert t.numpy()[0] == 1.0
    u = gpunn.tensor(t)
    assert u.device == device and u._array is not t._array
    assert_close(u, [1.0, 2.0])
    assert gpunn.Tensor([1.0], device=device).device == device


def test_facts(device):
    t = gpunn.zeros(2, 3, 4, device=device)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.ndim == 3 == t.dim() and t.numel() == 24 and len(t) == 2
    assert t.size() == (2, 3, 4) and t.size(1) == 3
    with pytest.raises(TypeError, match="0-d"):
        len(gpunn.tensor(1.0, device=device))


@pytest.mark.parametrize("maker, shape, dtype, value", [
    (lambda d: gpunn.zeros(2, 3, device=d), (2, 3), "float32", 0.0),
    (lambda d: gpunn.zeros((2, 3), device=d), (2, 3), "float32", 0.0),
    (lambda d: gpunn.ones(4, dtype="float64", device=d), (4,), "float64", 1.0),
    (lambda d: gpunn.full((2, 2), 7, device=d), (2, 2), "int64", 7),
    (lambda d: gpunn.full(3, 1.5, device=d), (3,), "float32", 1.5),
    (lambda d: gpunn.full((2,), True, device=d), (2,), "bool", True),
    (lambda d: gpunn.zeros_like(gpunn.ones(2, dtype="float64", device=d)), (2,), "float64", 0.0),
    (lambda d: gpunn.ones_like(gpunn.zeros(3, device=d), dtype="int64"), (3,), "int64", 1),
    (lambda d: gpunn.full_like(gpunn.zeros(2, device=d), 4.0), (2,), "float32", 4.0),
])
def test_filled_creation(device, maker, shape, dtype, value):
    t = maker(device)
    assert t.shape == shape and t.dtype == dtype and t.device == device
    assert np.all(t.numpy() == value)


def test_arange_eye_and_random_creation(device):
    assert gpunn.arange(4, device=device).numpy().tolist() == [0, 1, 2, 3]
    assert gpunn.arange(4, device=device).dtype == gpunn.int64
    assert_close(gpunn.arange(0.0, 1.0, 0.25, device=device), [0.0, 0.25, 0.5, 0.75], dtype=gpunn.float32)
    assert_close(gpunn.eye(2, 3, device=device), np.eye(2, 3), dtype=gpunn.float32)
    assert gpunn.randn(2, 3, device=device).dtype == gpunn.float32
    assert gpunn.rand(2, dtype="float64", device=device).dtype == gpunn.float64
    r = gpunn.rand(100, device=device).numpy()
    assert r.min() >= 0 and r.max() < 1
    assert sorted(gpunn.randperm(5, device=device).numpy().tolist()) == [0, 1, 2, 3, 4]
    x = gpunn.randn(3, device=device, requires_grad=True)
    assert x.requires_grad and x.is_leaf


def test_casts(device):
    x = gpunn.tensor([1.7, -2.2], device=device)
    assert x.double().dtype == gpunn.float64
    assert x.to("float64").float().dtype == gpunn.float32
    assert x.long().dtype == gpunn.int64 and x.long().numpy().tolist() == [1, -2]
    if device.type == "strict":  # the array API standard has no float16
        with pytest.raises(gpunn.DTypeError, match="float16"):
            x.to(gpunn.float16)
    else:
        assert x.to(gpunn.float16).dtype == gpunn.float16
    assert x.to("float32") is x
    assert x.astype("float64").dtype == gpunn.float64


def test_conversions_to_python(device):
    one = gpunn.tensor([3.5], device=device)
    assert float(one) == 3.5 and int(one) == 3 and bool(one)
    assert not bool(gpunn.tensor(0.0, device=device))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(gpunn.tensor([1.0, 2.0], device=device))
    assert gpunn.tensor([[1, 2]], device=device).tolist() == [[1, 2]]
    assert [10, 20, 30][gpunn.tensor(1, device=device)] == 20
    with pytest.raises(TypeError):
        [10, 20][gpunn.tensor(1.0, device=device)]


def test_comparisons_give_bool_tensors_without_grad(device):
    x = to_device([1.0, 2.0, 3.0], device, requires_grad=True)
    for result, expected in [(x > 2, [False, False, True]), (x >= 2, [False, True, True]),
                             (x < 2.5, [True, True, False]), (x <= 1, [True, False, False]),
                             (x == 2, [False, True, False]),
                             (x != to_device([1.0, 0.0, 3.0], device), [False, True, False])]:
        assert result.dtype == gpunn.bool_ and result.device == device and not result.requires_grad
        assert result.numpy().tolist() == expected
    assert bool((x > 0).all()) and not bool((x > 2).all()) and bool((x > 2).any())


def test_counting_booleans(device):
    """(pred == y).sum() counts matches on every device, as in PyTorch (int64)."""
    pred, y = gpunn.tensor([1, 2, 3, 2], device=device), gpunn.tensor([1, 0, 3, 2], device=device)
    hits = (pred == y).sum()
    assert hits.item() == 3 and hits.dtype == gpunn.int64
    assert (pred > 1).sum(dim=0).item() == 3
    assert (pred > 1).float().mean().item() == 0.75


def test_argmax_argmin(device):
    x = to_device([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], device)
    assert x.argmax().item() == 3
    assert x.argmax(dim=1).numpy().tolist() == [1, 0]
    assert x.argmin(axis=0).numpy().tolist() == [0, 1, 0]


def test_repr_mentions_device_dtype_and_grad(device):
    x = gpunn.tensor([1.0, 2.0], dtype="float64", device=device, requires_grad=True)
    text = repr(x * 2)
    assert "2., 4." in text and "float64" in text and "grad_fn=<mul>" in text
    if device.type != "cpu":
        assert f"device='{device}'" in text
    assert "requires_grad=True" in repr(x)


def test_setitem_without_grad(device):
    x = gpunn.zeros(3, 2, device=device)
    x[0] = 1.0
    x[-1] = gpunn.tensor([2.0, 3.0], device=device)
    x[1, 1] = 5.0
    x[:, 0] = x[:, 0] + 10
    assert x.numpy().tolist() == [[11.0, 1.0], [10.0, 5.0], [12.0, 3.0]]


def test_item_assignment_after_a_graph_saved_the_tensor_is_refused(device):
    w = gpunn.tensor([2.0, 3.0], dtype="float64", device=device)
    x = gpunn.tensor([1.0, 1.0], dtype="float64", device=device, requires_grad=True)
    loss = (x * w).sum()
    w[0] = 100.0
    with pytest.raises(gpunn.GraphError, match="modified by an in-place operation"):
        loss.backward()


def test_inplace_helpers(device):
    x = gpunn.tensor([1.0, 2.0], device=device)
    assert x.zero_() is x and x.numpy().tolist() == [0.0, 0.0]
    assert x.fill_(4.0).numpy().tolist() == [4.0, 4.0]
    x.copy_(gpunn.tensor([5.0, 6.0], dtype="float64", device="strict:1"))
    assert x.dtype == gpunn.float32 and x.device == device and x.numpy().tolist() == [5.0, 6.0]
    x.copy_(7.0)
    assert x.numpy().tolist() == [7.0, 7.0]
    with pytest.raises(gpunn.ShapeError):
        x.copy_(gpunn.ones(3, device=device))


def test_inplace_arithmetic_keeps_shape_and_dtype(device):
    x = gpunn.ones(2, device=device)
    x += 1
    x *= to_device(np.float32([2.0, 3.0]), device)
    x -= 1
    x /= 2
    assert x.dtype == gpunn.float32 and x.numpy().tolist() == [1.5, 2.5]
    with pytest.raises(gpunn.ShapeError, match="shape"):
        x += gpunn.ones(3, 2, device=device)


def test_reshape_errors_name_the_shapes(device):
    x = gpunn.zeros(2, 3, device=device)
    with pytest.raises(gpunn.ShapeError, match=r"\(2, 3\).*\(4, 2\)"):
        x.reshape(4, 2)
    assert x.reshape(2, 3) is x


def test_shape_methods(device):
    x = gpunn.zeros(2, 1, 3, device=device)
    assert x.squeeze().shape == (2, 3) and x.squeeze(1).shape == (2, 3) and x.squeeze(0).shape == (2, 1, 3)
    assert x.unsqueeze(-1).shape == (2, 1, 3, 1) and x.flatten().shape == (6,)
    assert x.permute(2, 0, 1).shape == (3, 2, 1) and x.transpose(0, 2).shape == (3, 1, 2)
    assert x.T.shape == (3, 1, 2) and x.mT.shape == (2, 3, 1)
    assert gpunn.zeros(3, device=device).T.shape == (3,)
    assert gpunn.tensor(1.0, device=device).flatten().shape == (1,)


def test_concat_and_stack_need_tensors(device):
    with pytest.raises(gpunn.ShapeError, match="at least one"):
        gpunn.concat([])
    with pytest.raises(gpunn.ShapeError, match="stack"):
        gpunn.stack([])
    with pytest.raises(gpunn.ShapeError):
        gpunn.concat([gpunn.ones(2, device=device), gpunn.ones(2, 2, device=device)])


def test_numpy_arrays_on_the_left_defer_to_tensors(device):
    x = gpunn.tensor([1.0, 2.0], device=device)
    result = np.float32([3.0, 4.0]) * x
    assert isinstance(result, gpunn.Tensor) and result.device == device
    assert result.numpy().tolist() == [3.0, 8.0]
    assert isinstance(np.float32(2.0) * x, gpunn.Tensor)


def test_numpy_scalars_act_as_python_numbers(device):
    """x * np.float64(2) must not promote float32 (a mean computed with NumPy is np.float64)."""
    x = gpunn.ones(2, device=device)
    for result in (x * np.float64(2.0), np.float64(2.0) + x, x - np.int64(1), x / np.float32(4.0)):
        assert result.dtype == gpunn.float32 and result.device == device
    assert (x * np.float64(2.0)).numpy().tolist() == [2.0, 2.0]


# --- iteration, host conversion, 0-d results and other PyTorch conveniences -----------------------


def test_iteration_and_unpacking_give_rows_with_gradient(device):
    x = gpunn.tensor(np.arange(6.0).reshape(3, 2), device=device, requires_grad=True)
    rows = list(x)
    assert len(rows) == 3 and all(r.shape == (2,) for r in rows)
    a, b, c = x
    (a.sum() + 2 * c.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1, 1], [0, 0], [2, 2]])
    with pytest.raises(TypeError):
        iter(gpunn.tensor(1.0))


def test_numpy_asarray_copies_from_any_device(device):
    x = gpunn.tensor([[1.5, 2.5]], device=device)
    host = np.asarray(x)
    assert isinstance(host, np.ndarray) and host.tolist() == [[1.5, 2.5]]
    assert np.asarray(x, dtype=np.float64).dtype == np.float64


def test_full_reductions_are_zero_d_arrays_on_numpy():
    loss = (gpunn.tensor([1.0, 2.0], requires_grad=True) ** 2).sum()
    assert type(loss._array) is np.ndarray and loss.shape == ()
    assert np.from_dlpack(loss.detach()) == 5.0


def test_pytorch_conveniences():
    loss = gpunn.tensor(0.123456)
    assert f"{loss:.3f}" == "0.123"
    a, b = gpunn.tensor([1.0, 5.0]), gpunn.tensor([3.0, 2.0])
    assert gpunn.max(a, b).numpy().tolist() == [3.0, 5.0] and a.min(b).numpy().tolist() == [1.0, 2.0]
    with pytest.raises(IndexError, match="out of bounds"):
        a[5]
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    copy = x.clone()
    assert copy._array is not x._array
    (copy * 3).sum().backward(gradient=gpunn.tensor(2.0))
    assert x.grad.numpy().tolist() == [6.0, 6.0]
    shared = np.zeros(2)
    gpunn.from_numpy(shared)._array[0] = 7.0
    assert shared[0] == 7.0
    assert gpunn.long == gpunn.int64 and gpunn.double == gpunn.float64 and gpunn.bool == gpunn.bool_
    with gpunn.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    with pytest.raises(gpunn.ShapeError, match="different lengths"):
        gpunn.tensor([[1, 2], [3]])


# --- small questions PyTorch code asks of a tensor ------------------------------------------------
# Answered as PyTorch does or with gpunn's own documented errors, never a raw NumPy error.


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
