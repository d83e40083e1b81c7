"""Tensor basics: creation and dtype rules (PyTorch's defaults), facts, casts, in-place edits."""

import numpy as np
import pytest

import gpunn
from helpers import assert_close, to_device


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
