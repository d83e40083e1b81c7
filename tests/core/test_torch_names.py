"""PyTorch's everyday names: Tensor methods and top-level functions (Module's are in tests/nn/).

Values are checked against NumPy (and against PyTorch where it is installed), gradients against
finite differences, and the error paths against the existing in-place (`+=`) rules.
"""

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from gpunn.testing import gradcheck
from helpers import assert_close, away_from_zero, distinct, rng, to_device


def _torch():
    return pytest.importorskip("torch")


# --- moving between devices -----------------------------------------------------------------------


def test_cpu_moves_here_and_keeps_the_gradient_path(device):
    host = rng(0).normal(size=(2, 3))
    x = to_device(host, device, requires_grad=True)
    y = x.cpu()
    assert y.device == gpunn.device("cpu") and not y.is_cuda and x.is_cuda == (device.type == "cuda")
    assert_close(y, host)
    (y * 2).sum().backward()
    assert x.grad.device == device
    assert_close(x.grad, np.full(host.shape, 2.0))
    if device.type == "cpu":
        assert y is x  # already there: no copy, like .to()


def test_cuda_without_a_gpu_says_why():
    reason = gpunn.cuda.why_unavailable()
    if reason is None:
        pytest.skip("a CUDA device is usable here")
    with pytest.raises(gpunn.DeviceError, match="cannot be used"):
        gpunn.ones(2).cuda()
    with pytest.raises(gpunn.DeviceError, match="cannot be used"):
        nn.Linear(2, 2).cuda(0)


def test_cuda_refuses_a_device_that_is_not_cuda():
    with pytest.raises(gpunn.DeviceError, match="not a CUDA device"):
        gpunn.ones(2).cuda("cpu")


@pytest.mark.gpu
def test_cuda_moves_tensors_and_modules():
    x = gpunn.ones(2, 3).cuda()
    assert x.is_cuda and x.device == gpunn.device("cuda:0")
    assert gpunn.ones(2).cuda(0).device == x.device
    model = nn.Linear(3, 2).cuda()
    weight = model.weight
    assert model.weight.is_cuda and model.weight is weight
    assert model(x).is_cuda
    assert not model.cpu().weight.is_cuda and model.weight is weight


def test_module_cpu_moves_parameters_in_place():
    model = nn.Linear(3, 2, device="strict")
    weight, values = model.weight, model.weight.numpy()
    assert model.cpu() is model
    assert model.weight is weight and weight.device == gpunn.device("cpu")
    np.testing.assert_array_equal(weight.numpy(), values)


# --- casts ----------------------------------------------------------------------------------------------


def test_integer_and_float_casts(device):
    host = np.array([1.7, -1.7, 3.0, -0.2])
    x = to_device(host, device)
    assert x.int().dtype == gpunn.int32 and x.long().dtype == gpunn.int64 and x.double().dtype == gpunn.float64
    np.testing.assert_array_equal(x.int().numpy(), host.astype(np.int32))  # truncation toward zero
    np.testing.assert_array_equal(x.long().numpy(), host.astype(np.int64))


def test_half_on_the_cpu_and_refused_by_the_standard():
    x = gpunn.tensor([1.5, -2.25, 1000.25])
    half = x.half()
    assert half.dtype == gpunn.float16
    np.testing.assert_array_equal(half.numpy(), np.array([1.5, -2.25, 1000.25], dtype=np.float16))
    with pytest.raises(gpunn.DTypeError, match="float16"):
        gpunn.tensor([1.0], device="strict").half()


def test_casts_agree_with_torch():
    torch = _torch()
    host = np.array([2.9, -2.9, 0.5, -0.5, 7.0], dtype=np.float32)
    ours, theirs = gpunn.tensor(host), torch.tensor(host)
    np.testing.assert_array_equal(ours.int().numpy(), theirs.int().numpy())
    assert str(theirs.int().dtype) == "torch." + ours.int().dtype.name
    np.testing.assert_array_equal(ours.half().numpy(), theirs.half().numpy())


# --- linear algebra names ----------------------------------------------------------------------------


def test_t_transposes_matrices_only(device):
    host = rng(1).normal(size=(2, 3))
    x = to_device(host, device, requires_grad=True)
    assert_close(x.t(), host.T)
    assert_close(to_device(host[0], device).t(), host[0])
    assert to_device(np.float64(2.0), device).t().shape == ()
    assert gradcheck(lambda a: a.t(), [x])
    with pytest.raises(gpunn.ShapeError, match="at most 2 dimensions"):
        gpunn.ones(2, 2, 2, device=device).t()


def test_pow_matmul_mm_values_and_gradients(device):
    a_host, b_host = away_from_zero((3, 4), seed=2), away_from_zero((4, 2), seed=3)
    a = to_device(np.abs(a_host), device, requires_grad=True)
    b = to_device(b_host, device, requires_grad=True)
    assert_close(a.pow(2.5), np.abs(a_host) ** 2.5)
    assert_close(a.pow(b[0:1, 0:1]), np.abs(a_host) ** b_host[0, 0])
    assert_close(a.matmul(b), np.abs(a_host) @ b_host)
    assert_close(a.mm(b), np.abs(a_host) @ b_host)
    assert_close(a.matmul(b[:, 0]), np.abs(a_host) @ b_host[:, 0])  # matmul takes vectors, mm does not
    assert gradcheck(lambda x, y: x.mm(y), [a, b])
    assert gradcheck(lambda x: x.pow(1.5), [a])
    with pytest.raises(gpunn.ShapeError, match="mm multiplies two matrices"):
        a.mm(b[:, 0])


# --- norm ------------------------------------------------------------------------------------------------

NORM_ORDERS = ["fro", 2, 1, 3, 0.5, -1, math.inf, -math.inf, 0]


def _numpy_norm(host, p, dim, keepdim):
    """np.linalg.norm's vector norms, over the given axes moved to the end and flattened."""
    order = 2 if p == "fro" else p
    axes = tuple(range(host.ndim)) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
    axes = tuple(a % host.ndim for a in axes)
    kept = [a for a in range(host.ndim) if a not in axes]
    moved = np.transpose(host, kept + list(axes)).reshape([host.shape[a] for a in kept] + [-1])
    with np.errstate(divide="ignore"):  # 0 ** -1 in the p = -1 case
        result = np.linalg.norm(moved, ord=order, axis=-1)
    if keepdim:
        result = result.reshape([1 if a in axes else n for a, n in enumerate(host.shape)])
    return result


@pytest.mark.parametrize("p", NORM_ORDERS, ids=str)
@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, False), (-1, True), ((0, 2), False), ([0, 1], True)])
def test_norm_values_match_numpy(device, p, dim, keepdim):
    host = away_from_zero((2, 3, 4), seed=4)
    host[0, 1, :] = 0.0  # a row of zeros: the norm 0 case
    got = to_device(host, device).norm(p, dim=dim, keepdim=keepdim)
    assert_close(got, _numpy_norm(host, p, dim, keepdim), device=device, rtol=1e-12)
    assert_close(gpunn.norm(to_device(host, device), p, dim, keepdim), _numpy_norm(host, p, dim, keepdim))


def test_norm_reference_catches_a_wrong_order():
    """Negative control: the reference tells the 1-norm from the 2-norm."""
    host = away_from_zero((3, 4), seed=5)
    with pytest.raises(AssertionError):
        assert_close(gpunn.tensor(host).norm(1), _numpy_norm(host, 2, None, False))


@pytest.mark.parametrize("p", [2, 1, 3, math.inf, -math.inf], ids=str)
def test_norm_gradients(device, p):
    host = distinct((3, 4), seed=6) if math.isinf(p) else away_from_zero((3, 4), seed=6)
    x = to_device(host, device, requires_grad=True)
    assert gradcheck(lambda t: t.norm(p, dim=1), [x])
    assert gradcheck(lambda t: t.norm(p), [x])


def test_norm_gradient_is_zero_at_zero_not_nan(device):
    for p in (2, 3, "fro"):
        x = gpunn.zeros(2, 3, dtype="float64", device=device, requires_grad=True)
        x.norm(p).backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))
    x = to_device(np.array([[3.0, 4.0], [0.0, 0.0]]), device, requires_grad=True)
    x.norm(dim=1).sum().backward()
    assert_close(x.grad, [[0.6, 0.8], [0.0, 0.0]])


def test_norm_matches_torch_values_and_gradients():
    torch = _torch()
    host = away_from_zero((3, 5), seed=7)
    host[1] = 0.0
    for p in NORM_ORDERS:
        for dim in (None, 1):
            x = gpunn.tensor(host, requires_grad=True)
            xt = torch.tensor(host, requires_grad=True)
            ours, theirs = x.norm(p, dim=dim), xt.norm(p, dim=dim)
            np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12)
            if p != 0:
                ours.sum().backward()
                theirs.sum().backward()
                np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_norm_rejects_integers_and_unknown_orders():
    with pytest.raises(gpunn.DTypeError, match="floating-point"):
        gpunn.tensor([3, 4]).norm()
    with pytest.raises(ValueError, match="nuc"):
        gpunn.ones(2, 2).norm("nuc")
    assert gpunn.tensor([3, 4]).norm(dtype="float64").item() == 5.0


# --- floor division ------------------------------------------------------------------------------------


FLOOR_CASES = [
    (np.array([7, -7, 6, 0]), 2),
    (np.array([7, -7, 6, 0]), -4),
    (np.array([7.5, -7.5, 6.0, -0.5]), 2),
    (np.array([7.0, -7.0, 6.5, 3.0], dtype=np.float32), np.array([2.0, 2.0, -1.5, 4.0], dtype=np.float32)),
]


@pytest.mark.parametrize("case", range(len(FLOOR_CASES)))
def test_floordiv_matches_numpy(device, case):
    a_host, b = FLOOR_CASES[case]
    a = to_device(a_host, device)
    other = to_device(b, device) if isinstance(b, np.ndarray) else b
    assert_close(a // other, np.floor_divide(a_host, b))
    assert_close(17 // (a + 100), np.floor_divide(17, a_host + 100))


def test_floordiv_promotes_like_pytorch(device):
    ints = to_device(np.array([7, -7]), device)
    assert (ints // 2).dtype == gpunn.int64
    assert (ints // 2.5).dtype == gpunn.float32
    assert_close(ints // 2.5, [2.0, -3.0])
    assert (7.5 // ints).dtype == gpunn.float32
    assert_close(7.5 // ints, [1.0, -2.0])


def test_floordiv_has_no_gradient(device):
    x = to_device(np.array([1.5, -2.5]), device, requires_grad=True)
    assert not (x // 2).requires_grad and not (3 // x).requires_grad
    with pytest.raises(gpunn.DeviceError, match="floor_divide"):
        gpunn.ones(2) // gpunn.ones(2, device="strict")


def test_floordiv_agrees_with_torch():
    torch = _torch()
    for a_host, b in FLOOR_CASES:
        ours = gpunn.tensor(a_host) // (gpunn.tensor(b) if isinstance(b, np.ndarray) else b)
        theirs = torch.tensor(a_host) // (torch.tensor(b) if isinstance(b, np.ndarray) else b)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        assert ours.dtype.name == str(theirs.dtype).replace("torch.", "")


# --- in-place methods: the same rules as += ------------------------------------------------------------


INPLACE = [  # (method call, the operator form it must equal, NumPy reference)
    (lambda t, o: t.add_(o), lambda t, o: t.__iadd__(o), lambda a, b: a + b),
    (lambda t, o: t.sub_(o), lambda t, o: t.__isub__(o), lambda a, b: a - b),
    (lambda t, o: t.mul_(o), lambda t, o: t.__imul__(o), lambda a, b: a * b),
    (lambda t, o: t.div_(o), lambda t, o: t.__itruediv__(o), lambda a, b: a / b),
]


@pytest.mark.parametrize("case", range(len(INPLACE)), ids=["add_", "sub_", "mul_", "div_"])
def test_inplace_methods_equal_the_operators(device, case):
    method, operator_form, reference = INPLACE[case]
    a_host, b_host = away_from_zero((2, 3), seed=8), away_from_zero((3,), seed=9)
    for other in (to_device(b_host, device), 1.5):
        a, twin = to_device(a_host, device), to_device(a_host, device)
        data_before, version = a._array, a._version
        assert method(a, other) is a
        operator_form(twin, other)
        assert_close(a, reference(a_host, b_host if isinstance(other, gpunn.Tensor) else 1.5), device=device)
        np.testing.assert_array_equal(a.numpy(), twin.numpy())
        assert a._array is data_before and a._version == version + 1  # written into the storage, counted


def test_add_and_sub_take_alpha(device):
    a_host, b_host = away_from_zero((4,), seed=10), away_from_zero((4,), seed=11)
    a, b = to_device(a_host, device), to_device(b_host, device)
    assert_close(a.add_(b, alpha=-0.5), a_host - 0.5 * b_host)
    assert_close(a.sub_(b, alpha=3), a_host - 0.5 * b_host - 3 * b_host)
    assert_close(a.sub_(2.0, alpha=0.25), a_host - 3.5 * b_host - 0.5)


def test_exp_in_place(device):
    host = away_from_zero((3,), seed=12)
    x = to_device(host, device)
    assert x.exp_() is x
    assert_close(x, np.exp(host))


def test_inplace_methods_on_a_leaf_are_refused_like_plus_equals(device):
    leaf = gpunn.ones(3, device=device, requires_grad=True)
    for edit in (lambda: leaf.add_(1), lambda: leaf.sub_(1, alpha=2), lambda: leaf.mul_(2), lambda: leaf.div_(2),
                 lambda: leaf.exp_()):
        with pytest.raises(gpunn.GraphError, match="leaf tensor that requires grad"):
            edit()
    np.testing.assert_array_equal(leaf.detach().numpy(), np.ones(3))
    plain = gpunn.ones(3, device=device)
    plain.add_(leaf, alpha=0.5)  # the operand is on a graph: recorded, as in PyTorch
    assert plain.grad_fn is not None and not plain.is_leaf
    plain.sum().backward()
    assert_close(leaf.grad, np.full(3, 0.5))
    leaf.grad = None
    with gpunn.no_grad():
        leaf.add_(gpunn.full((3,), 2.0, device=device), alpha=-0.5)  # a manual SGD step
    assert_close(leaf, np.zeros(3))
    assert leaf.requires_grad and leaf.is_leaf


def test_inplace_dtype_rules_follow_plus_equals():
    ints = gpunn.tensor([4, 6])
    with pytest.raises(gpunn.DTypeError, match="change the dtype"):
        ints.div_(2)
    with pytest.raises(gpunn.DTypeError, match="change the dtype"):
        ints /= 2
    assert ints.mul_(3).tolist() == [12, 18]


def test_manual_sgd_with_add_matches_torch():
    torch = _torch()
    host, target = rng(13).normal(size=(3, 2)), rng(14).normal(size=(3, 2))
    w, wt = gpunn.tensor(host, requires_grad=True), torch.tensor(host, requires_grad=True)
    for _ in range(3):
        ((w - gpunn.tensor(target)) ** 2).sum().backward()
        ((wt - torch.tensor(target)) ** 2).sum().backward()
        with gpunn.no_grad():
            w.add_(w.grad, alpha=-0.1)
        with torch.no_grad():
            wt.add_(wt.grad, alpha=-0.1)
        w.grad, wt.grad = None, None
    np.testing.assert_allclose(w.numpy(), wt.detach().numpy(), rtol=1e-12)


# --- top-level functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, keepdim", [(None, False), (None, True), (0, False), (1, True), (-1, False)])
def test_argmax_argmin(device, dim, keepdim):
    host = distinct((3, 4), seed=15)
    x = to_device(host, device)
    assert_close(gpunn.argmax(x, dim, keepdim), np.argmax(host, axis=dim, keepdims=keepdim), device=device)
    assert_close(gpunn.argmin(x, dim=dim, keepdim=keepdim), np.argmin(host, axis=dim, keepdims=keepdim))


def test_isnan_isinf_isfinite(device):
    host = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -2.5])
    x = to_device(host, device)
    for ours, reference in ((gpunn.isnan, np.isnan), (gpunn.isinf, np.isinf), (gpunn.isfinite, np.isfinite)):
        assert_close(ours(x), reference(host), device=device, dtype=gpunn.bool_)
    assert_close(x.isnan(), np.isnan(host))
    assert_close(gpunn.isfinite(to_device(np.array([1, 2]), device)), [True, True])


ISCLOSE_CASES = [
    (np.array([1.0, 1.0 + 1e-6, 1.0 + 1e-4, np.inf, -np.inf, np.inf, np.nan, 0.0, 1e-9]),
     np.array([1.0, 1.0, 1.0, np.inf, np.inf, 1.0, np.nan, 1e-9, 0.0])),
    (np.array([100.0, 100.0]), np.array([100.0009, 100.002])),
]


@pytest.mark.parametrize("equal_nan", [False, True])
@pytest.mark.parametrize("tolerances", [{}, {"rtol": 1e-3}, {"atol": 0.5, "rtol": 0.0}])
def test_isclose_allclose_match_numpy(device, equal_nan, tolerances):
    for a_host, b_host in ISCLOSE_CASES:
        a, b = to_device(a_host, device), to_device(b_host, device)
        expected = np.isclose(a_host, b_host, equal_nan=equal_nan, **{"rtol": 1e-5, "atol": 1e-8, **tolerances})
        assert_close(gpunn.isclose(a, b, equal_nan=equal_nan, **tolerances), expected, device=device)
        assert gpunn.allclose(a, b, equal_nan=equal_nan, **tolerances) == bool(expected.all())
        assert a.allclose(a_host, equal_nan=True)  # arrays and numbers take the tensor's dtype
    assert gpunn.allclose(to_device(np.array([2.0, 2.0]), device), 2.0)
    assert_close(gpunn.isclose(to_device(np.array([3, 4]), device), to_device(np.array([3, 5]), device)),
                 [True, False])


def test_isclose_refuses_mixed_dtypes_as_pytorch():
    with pytest.raises(gpunn.DTypeError, match="float32 and float64"):
        gpunn.isclose(gpunn.ones(2), gpunn.ones(2, dtype="float64"))


def test_isclose_of_integers_with_a_number_compares_exactly(device):
    ints = gpunn.tensor([0, 1, 2], device=device)
    assert ints.isclose(0.5).numpy().tolist() == [False, False, False]  # 0.5 is not truncated to 0
    assert ints.isclose(1).numpy().tolist() == [False, True, False]
    assert not ints.allclose(0.5) and gpunn.tensor([2, 2], device=device).allclose(2)


def test_isclose_agrees_with_torch():
    torch = _torch()
    for a_host, b_host in ISCLOSE_CASES:
        for equal_nan in (False, True):
            ours = gpunn.isclose(gpunn.tensor(a_host), gpunn.tensor(b_host), equal_nan=equal_nan)
            theirs = torch.isclose(torch.tensor(a_host), torch.tensor(b_host), equal_nan=equal_nan)
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_equal(device):
    host = rng(16).normal(size=(2, 3))
    x = to_device(host, device)
    assert gpunn.equal(x, to_device(host.copy(), device)) is True
    changed = host.copy()
    changed[1, 2] += 1e-12
    assert gpunn.equal(x, to_device(changed, device)) is False
    assert gpunn.equal(x, to_device(host[:1], device)) is False  # no broadcasting: shapes must match
    assert gpunn.equal(to_device(np.array([1, 2]), device), to_device(np.array([1.0, 2.0]), device)) is True
    assert gpunn.equal(to_device(np.array([np.nan]), device), to_device(np.array([np.nan]), device)) is False


@pytest.mark.parametrize("start, end, steps", [(0, 1, 5), (-2.5, 3.0, 7), (1.0, 1.0, 3), (3, -1, 1), (0, 1, 0)])
def test_linspace(device, start, end, steps):
    got = gpunn.linspace(start, end, steps, device=device)
    assert_close(got, np.linspace(start, end, steps).astype(np.float32), device=device, dtype=gpunn.float32,
                 rtol=0, atol=0)
    assert gpunn.linspace(start, end, steps, dtype="float64").dtype == gpunn.float64


def test_linspace_agrees_with_torch():
    """Floats to rounding (PyTorch's kernel sums differently); integers where no value is an exact
    integer computed inexactly (PyTorch's -3 + 14 * (14 / 49) can truncate to 0, ours is 1)."""
    torch = _torch()
    cases = [(0, 1, 7, "float32"), (-3.0, 11.0, 50, "float32"), (-3.0, 11.0, 50, "float64"), (0.1, 0.7, 33, "float64"),
             (0, 10, 4, "int64"), (-2.5, 3.0, 7, "int64")]
    for start, end, steps, dtype in cases:
        ours = gpunn.linspace(start, end, steps, dtype=dtype)
        theirs = torch.linspace(start, end, steps, dtype=getattr(torch, dtype))
        assert str(theirs.dtype) == "torch." + ours.dtype.name
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-15)


def test_linspace_checks_steps():
    with pytest.raises(ValueError, match="steps"):
        gpunn.linspace(0, 1, -1)
    with pytest.raises(ValueError, match="steps"):
        gpunn.linspace(0, 1, 2.5)
    assert gpunn.linspace(0, 1, 3, requires_grad=True).requires_grad


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def test_inference_mode_records_nothing_in_every_spelling():
    x = gpunn.ones(2, requires_grad=True)
    with gpunn.inference_mode():
        assert not (x * 2).requires_grad and not gpunn.is_grad_enabled()
    assert gpunn.is_grad_enabled()

    @gpunn.inference_mode
    def bare():
        return (x * 2).requires_grad

    @gpunn.inference_mode()
    def called():
        return (x * 2).requires_grad

    @gpunn.inference_mode(False)
    def off():
        return (x * 2).requires_grad

    assert (bare(), called(), off()) == (False, False, True)
    assert bare() is False  # reusable
    with gpunn.no_grad(), gpunn.inference_mode(False):
        assert gpunn.is_grad_enabled() and (x * 2).requires_grad  # as torch: mode=False records again
    torch = _torch_or_none()
    if torch is not None:  # the reference, where installed
        t = torch.ones(2, requires_grad=True)
        with torch.no_grad(), torch.inference_mode(False):
            assert (t * 2).requires_grad
    with pytest.raises(KeyError), gpunn.inference_mode():
        raise KeyError("x")
    assert gpunn.is_grad_enabled()  # restored after an exception


# (the agreement of gpunn.x, Tensor.x and F.x for every op: tests/core/test_op_faces.py)
