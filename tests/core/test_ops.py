"""Every op on every device: forward against NumPy in float64, gradients against finite
differences (gpunn.testing.gradcheck), and the result's device and dtype.

Inputs are tiny (gradcheck costs two forward passes per input element) and chosen at smooth
points: abs, relu, max and clip see values away from their kinks. Sorting, gathering and
scattering, bincount, cumsum, prod, var and std, bmm and the shape ops of PyTorch are at the end.
"""

import warnings

import numpy as np
import pytest

import gpunn
import gpunn.functional as F
from gpunn import ops
from gpunn.errors import DTypeError, IndexOutOfRangeError, ShapeError
from gpunn.testing import gradcheck
from helpers import assert_close, away_from_zero, distinct, positive, rng, to_device


def check_op(device, fn, reference, *arrays, rtol=1e-10, float32=True):
    """fn on float64 leaves: forward equals `reference` (NumPy, float64), stays on the device,
    passes gradcheck; fn on float32 leaves gives float32 values and float32 gradients."""
    leaves = [to_device(a, device, requires_grad=True) for a in arrays]
    out = fn(*leaves)
    assert_close(out, reference(*arrays), device=device, dtype=gpunn.float64, rtol=rtol)
    gradcheck(fn, leaves)
    for leaf in leaves:
        assert leaf.grad.device == device and leaf.grad.dtype == gpunn.float64
        assert leaf.grad.shape == leaf.shape
    if not float32:
        return
    leaves32 = [to_device(np.float32(a), device, requires_grad=True) for a in arrays]
    out32 = fn(*leaves32)
    assert_close(out32, reference(*arrays), device=device, dtype=gpunn.float32, rtol=1e-4, atol=1e-5)
    out32.sum().backward()
    for leaf in leaves32:
        assert leaf.grad.dtype == gpunn.float32 and leaf.grad.device == device


def sigmoid_ref(x):
    return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))  # never overflows


def softmax_ref(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1):
    return np.log(softmax_ref(x, axis))


def logsumexp_ref(x, axis=None, keepdims=False):
    m = x.max(axis=axis, keepdims=True)
    out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


# --- elementwise binary ops, with broadcasting ---------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (gpunn.maximum, np.maximum),
    "minimum": (gpunn.minimum, np.minimum),
    "method_maximum": (lambda a, b: a.maximum(b), np.maximum),
}

BINARY_SHAPES = [((), ()), ((3,), (3,)), ((2, 3), (2, 3)), ((3, 1), (1, 4)), ((2, 3), (3,)), ((), (2, 3)),
                 ((2, 1, 3), (4, 1))]


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary(device, name, shapes):
    fn, ref = BINARY[name]
    a = away_from_zero(shapes[0], seed=1)
    b = away_from_zero(shapes[1], seed=2)
    check_op(device, fn, ref, a, b)


@pytest.mark.parametrize("name", BINARY)
def test_binary_transposed_input(device, name):
    """A non-contiguous operand (a .T view) and the gradient through the transpose."""
    fn, ref = BINARY[name]
    check_op(device, lambda a, b: fn(a.T, b), lambda a, b: ref(a.T, b),
             away_from_zero((3, 2), seed=3), away_from_zero((2, 3), seed=4))


def test_pow_tensor_exponent(device):
    check_op(device, lambda a, b: a ** b, np.power, positive((2, 3), seed=5), away_from_zero((2, 3), seed=6))


def test_pow_broadcast_exponent(device):
    check_op(device, lambda a, b: a ** b, np.power, positive((3, 1), seed=5), away_from_zero((1, 4), seed=6))


def test_pow_exponent_gradient_at_zero_base(device, no_float_warnings):
    """d(x**y)/dy = x**y log x is 0 at x = 0 (for y > 0), not 0 * -inf = nan."""
    x = to_device([0.0, 2.0], device, requires_grad=True)
    y = to_device([2.0, 3.0], device, requires_grad=True)
    (x ** y).sum().backward()
    assert_close(x.grad, [0.0, 12.0])
    assert_close(y.grad, [0.0, 8 * np.log(2)])
    (0 ** y).sum().backward()
    assert_close(y.grad, [0.0, 8 * np.log(2)])


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1.5])
def test_pow_scalar_exponent(device, exponent):
    check_op(device, lambda a: a ** exponent, lambda a: a ** exponent, positive((2, 3), seed=7))


@pytest.mark.parametrize("name, fn, ref", [
    ("2**x", lambda x: 2 ** x, lambda x: 2.0 ** x),
    ("2*x", lambda x: 2 * x, lambda x: 2 * x),
    ("10/x", lambda x: 10.0 / x, lambda x: 10.0 / x),
    ("1-x", lambda x: 1 - x, lambda x: 1 - x),
    ("3+x", lambda x: 3 + x, lambda x: 3 + x),
    ("x-0.5", lambda x: x - 0.5, lambda x: x - 0.5),
    ("x/4", lambda x: x / 4, lambda x: x / 4),
    ("-x", lambda x: -x, lambda x: -x),
    ("+x*1", lambda x: (+x) * 1, lambda x: x * 1),
])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=str)
def test_scalar_and_reflected_operands(device, name, fn, ref, shape):
    check_op(device, fn, ref, away_from_zero(shape, seed=8))


def test_numpy_array_operand_becomes_a_constant(device):
    """A NumPy array on either side is a constant on the tensor's device (no gradient, no error).
    It keeps its dtype, so float64 data promotes a float32 tensor, as in PyTorch."""
    c = np.array([1.0, -2.0, 0.5])
    check_op(device, lambda x: x * c + 1.0, lambda x: x * c + 1.0, away_from_zero((2, 3), seed=9), float32=False)
    check_op(device, lambda x: c - x, lambda x: c - x, away_from_zero((3,), seed=9), float32=False)
    x32 = gpunn.ones(3, device=device)
    assert (x32 * np.float32(c)).dtype == gpunn.float32
    assert (np.float32(c) / x32).dtype == gpunn.float32
    assert_close(np.float32(c) / x32, c, device=device, rtol=1e-6)


# --- elementwise unary functions -----------------------------------------------------------------

UNARY = {
    "exp": (gpunn.exp, np.exp, away_from_zero),
    "log": (gpunn.log, np.log, positive),
    "sqrt": (gpunn.sqrt, np.sqrt, positive),
    "abs": (gpunn.abs, np.abs, away_from_zero),
    "abs()": (abs, np.abs, away_from_zero),
    "tanh": (gpunn.tanh, np.tanh, away_from_zero),
    "sigmoid": (gpunn.sigmoid, sigmoid_ref, away_from_zero),
    "relu": (gpunn.relu, lambda x: np.maximum(x, 0), away_from_zero),
    "exp_method": (lambda x: x.exp(), np.exp, away_from_zero),
    "log_method": (lambda x: x.log(), np.log, positive),
    "sqrt_method": (lambda x: x.sqrt(), np.sqrt, positive),
    "abs_method": (lambda x: x.abs(), np.abs, away_from_zero),
    "tanh_method": (lambda x: x.tanh(), np.tanh, away_from_zero),
    "sigmoid_method": (lambda x: x.sigmoid(), sigmoid_ref, away_from_zero),
    "relu_method": (lambda x: x.relu(), lambda x: np.maximum(x, 0), away_from_zero),
    "F.relu": (F.relu, lambda x: np.maximum(x, 0), away_from_zero),
    "F.tanh": (F.tanh, np.tanh, away_from_zero),
    "F.sigmoid": (F.sigmoid, sigmoid_ref, away_from_zero),
    "clip": (lambda x: x.clip(-0.9, 1.1), lambda x: np.clip(x, -0.9, 1.1), away_from_zero),
    "clip_min": (lambda x: gpunn.clip(x, min=-0.9), lambda x: np.maximum(x, -0.9), away_from_zero),
    "clamp_max": (lambda x: gpunn.clamp(x, max=0.8), lambda x: np.minimum(x, 0.8), away_from_zero),
}


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)], ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary(device, name, shape):
    fn, ref, values = UNARY[name]
    check_op(device, fn, ref, values(shape, seed=10))


@pytest.mark.parametrize("name", ["exp", "tanh", "sigmoid", "abs", "relu", "clip"])
def test_unary_transposed_input(device, name):
    fn, ref, values = UNARY[name]
    check_op(device, lambda x: fn(x.T), lambda x: ref(x.T), values((3, 2), seed=11))


def test_where(device):
    a, b = away_from_zero((2, 3), seed=12), away_from_zero((2, 3), seed=13)
    cond = a > 0
    check_op(device, lambda x, y: gpunn.where(x > 0, x, y), lambda x, y: np.where(cond, x, y), a, b)


def test_where_broadcasts_and_takes_scalars(device):
    a, b = away_from_zero((2, 3), seed=14), away_from_zero((3,), seed=15)
    cond = np.array([True, False, True])
    check_op(device, lambda x, y: gpunn.where(to_device(cond, device), x, y), lambda x, y: np.where(cond, x, y), a, b)
    check_op(device, lambda x: gpunn.where(x > 0, x, 0.0), lambda x: np.where(x > 0, x, 0.0), a)


# --- matrix products -----------------------------------------------------------------------------

MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 2)), ((2, 3), (3, 4)), ((2, 2, 3), (2, 3, 2)),
                 ((2, 1, 2, 3), (3, 3, 2)), ((2, 2, 3), (3,)), ((3,), (2, 3, 2)), ((2, 3), (2, 3, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(device, shapes):
    a, b = away_from_zero(shapes[0], seed=16), away_from_zero(shapes[1], seed=17)
    check_op(device, lambda x, y: x @ y, np.matmul, a, b)


def test_matmul_function_and_transposed_operands(device):
    a, b = away_from_zero((3, 2), seed=18), away_from_zero((4, 3), seed=19)
    check_op(device, lambda x, y: gpunn.matmul(x.T, y.T), lambda x, y: x.T @ y.T, a, b)


def test_matmul_with_numpy_operand(device):
    m = away_from_zero((3, 2), seed=20)
    check_op(device, lambda x: x @ m, lambda x: x @ m, away_from_zero((2, 3), seed=21), float32=False)
    check_op(device, lambda x: m @ x, lambda x: m @ x, away_from_zero((2, 4), seed=21), float32=False)


# --- reductions ----------------------------------------------------------------------------------

REDUCTIONS = {
    "sum": (np.sum, "sum"),
    "mean": (np.mean, "mean"),
    "max": (np.max, "max"),
    "min": (np.min, "min"),
    "logsumexp": (logsumexp_ref, "logsumexp"),
}
AXES = [((2, 3), None), ((2, 3), 0), ((2, 3), 1), ((2, 3), -1), ((2, 3), (0, 1)), ((2, 3, 2), (0, 2)),
        ((2, 3, 2), (-1, 1)), ((4,), 0), ((), None)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction(device, name, shape, axis, keepdims):
    ref, method = REDUCTIONS[name]
    values = distinct(shape, seed=22)  # no ties: max and min stay differentiable
    check_op(device, lambda x: getattr(x, method)(axis=axis, keepdims=keepdims),
             lambda x: ref(x, axis=axis, keepdims=keepdims), values)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_torch_spelling_and_function_form(device, name):
    """dim=/keepdim= (PyTorch) mean axis=/keepdims=; gpunn.sum(x, ...) equals x.sum(...)."""
    ref, method = REDUCTIONS[name]
    values = distinct((2, 3, 2), seed=23)
    function = getattr(gpunn, method)
    if name in ("max", "min"):  # PyTorch's dim gives (values, indices): tested below
        check_op(device, lambda x: function(x, axis=(0, 2)), lambda x: ref(x, axis=(0, 2)), values)
        return
    check_op(device, lambda x: getattr(x, method)(dim=1, keepdim=True), lambda x: ref(x, axis=1, keepdims=True), values)
    check_op(device, lambda x: function(x, dim=(0, 2)), lambda x: ref(x, axis=(0, 2)), values)
    check_op(device, lambda x: function(x, 1), lambda x: ref(x, axis=1), values)
    check_op(device, lambda x: getattr(x.T, method)(0), lambda x: ref(x.T, axis=0), values)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_return_values_and_indices_like_pytorch(device, name):
    host = distinct((3, 4), seed=24)
    x = gpunn.tensor(host, device=device, requires_grad=True)
    ref, arg = (np.max, np.argmax) if name == "max" else (np.min, np.argmin)
    for call in (lambda t: getattr(t, name)(1), lambda t: getattr(t, name)(dim=1),
                 lambda t: getattr(gpunn, name)(t, dim=1)):
        values, indices = call(x)
        np.testing.assert_allclose(values.numpy(), ref(host, axis=1))
        np.testing.assert_array_equal(indices.numpy(), arg(host, axis=1))
        assert indices.device == x.device and not indices.requires_grad
    values, indices = getattr(x, name)(0, keepdim=True)
    assert values.shape == indices.shape == (1, 4)
    values.sum().backward()
    expected = (host == ref(host, axis=0, keepdims=True)).astype(float)
    np.testing.assert_allclose(x.grad.numpy(), expected)
    assert getattr(x, name)(axis=1).shape == (3,)  # the array API spelling: values only
    with pytest.raises(TypeError, match="not both"):
        getattr(x, name)(dim=1, axis=1)


def test_max_ties_share_the_gradient(device):
    """At a tie the subgradient is split equally (a symmetric choice; either half is valid)."""
    x = to_device([1.0, 3.0, 3.0], device, requires_grad=True)
    x.max().backward()
    assert_close(x.grad, [0.0, 0.5, 0.5])


# --- softmax family and losses -------------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax(device, axis):
    values = away_from_zero((2, 3), seed=24)
    check_op(device, lambda x: F.softmax(x, axis=axis), lambda x: softmax_ref(x, axis), values)
    check_op(device, lambda x: F.log_softmax(x, dim=axis), lambda x: log_softmax_ref(x, axis), values)
    check_op(device, lambda x: x.softmax(dim=axis), lambda x: softmax_ref(x, axis), values)
    check_op(device, lambda x: x.log_softmax(axis), lambda x: log_softmax_ref(x, axis), values)


def test_softmax_of_transposed_input(device):
    check_op(device, lambda x: F.softmax(x.T), lambda x: softmax_ref(x.T), away_from_zero((3, 2), seed=25))


def cross_entropy_ref(logits, target, reduction="mean"):
    per_row = -log_softmax_ref(logits, axis=1)[np.arange(len(target)), target]
    return {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(device, reduction):
    target = np.array([2, 0, 2, 1])
    logits = away_from_zero((4, 3), seed=26)
    labels = to_device(target, device)
    check_op(device, lambda x: F.cross_entropy(x, labels, reduction=reduction),
             lambda x: cross_entropy_ref(x, target, reduction), logits)


def test_cross_entropy_accepts_list_targets_and_transposed_logits(device):
    target = [1, 0]
    check_op(device, lambda x: F.cross_entropy(x.T, target), lambda x: cross_entropy_ref(x.T, np.array(target)),
             away_from_zero((3, 2), seed=27))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(device, reduction):
    target = np.array([1, 1, 0])
    labels = to_device(target, device)
    check_op(device, lambda x: F.nll_loss(F.log_softmax(x, dim=1), labels, reduction=reduction),
             lambda x: cross_entropy_ref(x, target, reduction), away_from_zero((3, 3), seed=28))
    # on raw inputs nll_loss is minus the picked entry
    raw = {"mean": lambda x: -x[[0, 1, 2], target].mean(), "sum": lambda x: -x[[0, 1, 2], target].sum(),
           "none": lambda x: -x[[0, 1, 2], target]}[reduction]
    check_op(device, lambda x: F.nll_loss(x, labels, reduction=reduction), raw, away_from_zero((3, 3), seed=29))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(device, reduction):
    target = away_from_zero((2, 3), seed=31)
    ref = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    check_op(device, lambda x, t: F.mse_loss(x, t, reduction=reduction), lambda x, t: ref((x - t) ** 2),
             away_from_zero((2, 3), seed=30), target)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_with_logits(device, reduction):
    def ref(x, t):
        p = sigmoid_ref(x)
        per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](per)

    check_op(device, lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction), ref,
             away_from_zero((2, 3), seed=32), positive((2, 3), seed=33, low=0.1, high=0.9))


@pytest.mark.parametrize("x_shape", [(3,), (4, 3), (2, 2, 3)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(device, x_shape, bias):
    x, w, b = away_from_zero(x_shape, seed=34), away_from_zero((2, 3), seed=35), away_from_zero((2,), seed=36)
    if bias:
        check_op(device, F.linear, lambda x, w, b: x @ w.T + b, x, w, b)
    else:
        check_op(device, F.linear, lambda x, w: x @ w.T, x, w)


# --- shapes, indexing, joining -------------------------------------------------------------------

SHAPE_OPS = {
    "reshape": (lambda x: x.reshape(3, 4), lambda x: x.reshape(3, 4)),
    "reshape_tuple": (lambda x: gpunn.reshape(x, (4, -1)), lambda x: x.reshape(4, -1)),
    "view": (lambda x: x.view(-1), lambda x: x.reshape(-1)),
    "flatten": (lambda x: x.flatten(1), lambda x: x.reshape(2, 6)),
    "permute": (lambda x: x.permute(2, 0, 1), lambda x: x.transpose(2, 0, 1)),
    "permute_fn": (lambda x: gpunn.permute(x, (1, 2, 0)), lambda x: x.transpose(1, 2, 0)),
    "transpose": (lambda x: x.transpose(0, 2), lambda x: np.swapaxes(x, 0, 2)),
    "transpose_fn": (lambda x: gpunn.transpose(x), lambda x: np.swapaxes(x, -1, -2)),
    "T": (lambda x: x.T, lambda x: x.T),
    "mT": (lambda x: x.mT, lambda x: np.swapaxes(x, -1, -2)),
    "unsqueeze": (lambda x: x.unsqueeze(1), lambda x: x[:, None]),
    "squeeze": (lambda x: x.unsqueeze(0).squeeze(0), lambda x: x),
    "T_then_reshape": (lambda x: x.T.reshape(-1), lambda x: x.T.reshape(-1)),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops(device, name):
    fn, ref = SHAPE_OPS[name]
    check_op(device, fn, ref, away_from_zero((2, 3, 2), seed=37))


INDICES = {
    "int": 1,
    "negative_int": -1,
    "slice": slice(1, None),
    "step_slice": (slice(None), slice(None, None, 2)),
    "int_and_slice": (-2, slice(0, 2)),
    "two_ints": (1, -1),
    "ellipsis": (Ellipsis, 0),
    "list": [2, 0, 2],
    "numpy_array": np.array([1, 1, 0, 2]),
    "negative_list": [-1, 0],
    "pair_of_lists": ([0, 2, 2], [1, 0, 0]),
    "numpy_int": np.int64(2),
    "numpy_ints_and_slice": (np.int32(-1), slice(None, 1)),
}


@pytest.mark.parametrize("name", INDICES)
def test_indexing(device, name):
    index = INDICES[name]
    check_op(device, lambda x: x[index], lambda x: x[index], away_from_zero((3, 2), seed=38))


def test_indexing_1d_and_with_a_tensor_index(device):
    values = away_from_zero((5,), seed=39)
    check_op(device, lambda x: x[[4, 0, 4]], lambda x: x[[4, 0, 4]], values)
    index = to_device(np.array([3, 3, 1]), device)
    check_op(device, lambda x: x[index], lambda x: x[[3, 3, 1]], values)
    check_op(device, lambda x: x[-2], lambda x: x[-2], values)


def test_indexing_a_transposed_input(device):
    check_op(device, lambda x: x.T[1], lambda x: x.T[1], away_from_zero((3, 2), seed=40))
    check_op(device, lambda x: x.T[[1, 0, 1]], lambda x: x.T[[1, 0, 1]], away_from_zero((3, 2), seed=40))


def test_repeated_indices_accumulate(device):
    x = to_device([1.0, 2.0, 3.0], device, requires_grad=True)
    x[[0, 0, 1]].sum().backward()
    assert_close(x.grad, [2.0, 1.0, 0.0], device=device)
    m = to_device(np.ones((3, 2)), device, requires_grad=True)
    (m[np.array([2, 2, 2, 0])] * to_device([1.0, 10.0], device, dtype="float64")).sum().backward()
    assert_close(m.grad, [[1.0, 10.0], [0.0, 0.0], [3.0, 30.0]], device=device)


def test_mixed_slice_and_array_index_on_cpu():
    """x[:, [..]] is NumPy/PyTorch indexing outside the array API standard: cpu (and cuda) only."""
    check_op(gpunn.device("cpu"), lambda x: x[:, [1, 1, 0]], lambda x: x[:, [1, 1, 0]], away_from_zero((2, 2), seed=41))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(device, axis):
    shapes = {0: [(1, 3), (2, 3)], 1: [(2, 1), (2, 3)], -1: [(2, 2), (2, 1)]}[axis]
    a, b = away_from_zero(shapes[0], seed=42), away_from_zero(shapes[1], seed=43)
    check_op(device, lambda x, y: gpunn.concat([x, y], axis=axis), lambda x, y: np.concatenate([x, y], axis), a, b)
    check_op(device, lambda x, y: gpunn.cat((y, x, y), dim=axis), lambda x, y: np.concatenate([y, x, y], axis), a, b)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack(device, axis):
    a, b = away_from_zero((2, 3), seed=44), away_from_zero((2, 3), seed=45)
    check_op(device, lambda x, y: gpunn.stack([x, y, x], axis=axis), lambda x, y: np.stack([x, y, x], axis), a, b)
    check_op(device, lambda x, y: gpunn.stack((x.T, y.T), dim=axis), lambda x, y: np.stack([x.T, y.T], axis), a, b)


# --- the checker itself: it must be able to fail ------------------------------------------------


def test_gradcheck_rejects_a_wrong_gradient_rule(device):
    """Negative control: tanh with the rule of sin (wrong) must fail gradcheck."""
    bad_tanh = gpunn.ops.Primitive("bad_tanh", lambda xp, x: xp.tanh(x), lambda xp, g, out, x: g * xp.cos(x))
    x = to_device(away_from_zero((2, 3), seed=46), device, requires_grad=True)
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(lambda t: gpunn.apply(bad_tanh, t), [x])
    good_tanh = gpunn.ops.Primitive("good_tanh", lambda xp, x: xp.tanh(x), lambda xp, g, out, x: g * (1 - out * out))
    assert gradcheck(lambda t: gpunn.apply(good_tanh, t), [x])


def test_gradcheck_catches_a_small_error_and_a_missing_broadcast_sum(device):
    """A rule off by 1% fails; so does a rule for a broadcast operand that ignores one input."""
    off = gpunn.ops.Primitive("off_mul", lambda xp, x, y: x * y,
                              lambda xp, g, out, x, y: 1.01 * g * y, lambda xp, g, out, x, y: g * x)
    x = to_device(away_from_zero((3, 1), seed=47), device, requires_grad=True)
    y = to_device(away_from_zero((1, 4), seed=48), device, requires_grad=True)
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(lambda a, b: gpunn.apply(off, a, b), [x, y])
    wrong_y = gpunn.ops.Primitive("wrong_y", lambda xp, x, y: x * y,
                                  lambda xp, g, out, x, y: g * y, lambda xp, g, out, x, y: g)
    with pytest.raises(AssertionError, match="input 1"):
        gradcheck(lambda a, b: gpunn.apply(wrong_y, a, b), [x, y])


def test_check_op_rejects_a_wrong_forward(device):
    """Negative control for the forward comparison used throughout this file."""
    with pytest.raises(AssertionError):
        check_op(device, lambda x: x * 1.001, lambda x: x, away_from_zero((3,), seed=49))


def test_gradcheck_requires_float64(device):
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2, [to_device(np.float32([1.0]), device, requires_grad=True)])


# --- numerical stability -------------------------------------------------------------------------


@pytest.fixture
def no_float_warnings():
    """Overflow, invalid values and division by zero raise; underflow to 0 is the right answer."""
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_at_extremes(device, dtype, no_float_warnings):
    x = to_device([-1000.0, -30.0, 0.0, 30.0, 1000.0], device, requires_grad=True, dtype=dtype)
    y = x.sigmoid()
    y.sum().backward()
    expected = sigmoid_ref(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    assert_close(y, expected, device=device, dtype=dtype, rtol=1e-6, atol=0)
    assert np.all(np.isfinite(x.grad.numpy()))
    # out * (1 - out) rounds to 0 in float32 near 1, as in PyTorch: hence the absolute tolerance
    np.testing.assert_allclose(x.grad.numpy(), expected * (1 - expected), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_family_with_huge_logits(device, dtype, no_float_warnings):
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]])
    x = to_device(logits, device, dtype=dtype)
    assert_close(F.softmax(x, dim=1), [[1, 0, 0], [0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=1e-7)
    ln2, ln3 = np.log(2), np.log(3)
    assert_close(F.log_softmax(x, dim=1), [[0, -2e4, -1e4], [-1e4 - ln2, -ln2, -ln2], [-ln3, -ln3, -ln3]],
                 rtol=1e-6, atol=1e-5)
    assert_close(x.logsumexp(dim=1), [1e4, 1e4 + ln2, -1e4 + ln3], rtol=1e-7, atol=1e-6 if dtype == "float64" else 2e-3)
    assert_close(gpunn.logsumexp(x), 1e4 + np.log(3), rtol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_huge_logits(device, dtype, reduction, no_float_warnings):
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]])
    target = np.array([1, 0])
    x = to_device(logits, device, requires_grad=True, dtype=dtype)
    loss = F.cross_entropy(x, to_device(target, device), reduction=reduction)
    per_row = np.array([2e4, 1e4 + np.log(2)])
    expected = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    assert_close(loss, expected, device=device, dtype=dtype, rtol=1e-6)
    loss.sum().backward()
    grad = softmax_ref(logits, axis=1) - np.eye(3)[target]
    assert np.all(np.isfinite(x.grad.numpy()))
    assert_close(x.grad, grad / 2 if reduction == "mean" else grad, dtype=dtype, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_a_minus_infinity_logit(device, reduction, no_float_warnings):
    """A masked-out class (logit -inf) has probability 0 and a finite loss, as in PyTorch: the
    target's logit must not be picked as logits * onehot (-inf * 0 is NaN)."""
    logits = np.array([[0.0, 1.0, -np.inf], [2.0, 0.0, 1.0]])
    target = np.array([0, 1])
    x = to_device(logits, device, requires_grad=True)
    loss = F.cross_entropy(x, to_device(target, device), reduction=reduction)
    finite = np.where(np.isinf(logits), -1e30, logits)
    per_row = np.log(np.exp(finite).sum(axis=1)) - finite[[0, 1], target]
    expected = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    assert_close(loss, expected, device=device, rtol=1e-6)
    loss.sum().backward()
    grad = softmax_ref(finite, axis=1) - np.eye(3)[target]
    assert_close(x.grad, grad / 2 if reduction == "mean" else grad, rtol=1e-6, atol=1e-7)


def test_bce_with_logits_at_extremes(device, no_float_warnings):
    x = to_device([-1000.0, 1000.0, -1000.0, 1000.0], device, requires_grad=True)
    t = to_device([1.0, 0.0, 0.0, 1.0], device)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert_close(loss, [1000.0, 1000.0, 0.0, 0.0], atol=1e-12)
    loss.sum().backward()
    assert_close(x.grad, [-1.0, 1.0, 0.0, 0.0], atol=1e-12)


def test_cross_entropy_rejects_labels_out_of_range_on_cpu():
    x = gpunn.zeros(2, 3)
    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            F.cross_entropy(x, gpunn.tensor(bad))
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            F.nll_loss(x, gpunn.tensor(bad))


def test_loss_argument_errors(device):
    x = gpunn.zeros(2, 3, device=device)
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, gpunn.tensor([0, 1], device=device), reduction="avg")
    with pytest.raises(gpunn.ShapeError, match="targets"):
        F.cross_entropy(x, gpunn.tensor([0, 1, 2], device=device))
    with pytest.raises(gpunn.DTypeError, match="integer class"):
        F.cross_entropy(x, gpunn.tensor([0.0, 1.0], device=device))
    with pytest.raises(gpunn.ShapeError, match="mse_loss"):
        F.mse_loss(x, gpunn.zeros(3, 2, device=device))


# --- error catalogue ------------------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [((2, 3), (2, 3)), ((3,), (2,)), ((2, 2, 3), (4, 2))], ids=str)
def test_matmul_shape_mismatch(device, shapes):
    a, b = gpunn.ones(*shapes[0], device=device), gpunn.ones(*shapes[1], device=device)
    with pytest.raises(gpunn.ShapeError) as info:
        a @ b
    assert str(shapes[0]) in str(info.value) and str(shapes[1]) in str(info.value)
    assert "matmul" in str(info.value)


@pytest.mark.parametrize("op, name", [(lambda a, b: a + b, "add"), (lambda a, b: a * b, "mul"),
                                      (lambda a, b: a / b, "div"), (lambda a, b: b - a, "sub"),
                                      (gpunn.maximum, "maximum"), (lambda a, b: a ** b, "pow")])
def test_broadcast_mismatch_names_the_op(device, op, name):
    a, b = gpunn.ones(2, 3, device=device), gpunn.ones(2, device=device)
    with pytest.raises(gpunn.ShapeError, match=name) as info:
        op(a, b)
    assert "(2, 3)" in str(info.value) and "(2,)" in str(info.value)


def test_linear_shape_mismatch(device):
    with pytest.raises(gpunn.ShapeError, match="in_features"):
        F.linear(gpunn.ones(4, 3, device=device), gpunn.ones(2, 5, device=device))


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
@pytest.mark.parametrize("call", ["exp", "log", "matmul", "linear_x", "linear_w", "cross_entropy", "softmax"])
def test_integer_inputs_need_floats(device, dtype, call):
    ints = gpunn.ones(2, 2, dtype=dtype, device=device)
    floats = gpunn.ones(2, 2, device=device)
    run = {"exp": lambda: gpunn.exp(ints), "log": lambda: ints.log(), "matmul": lambda: ints @ floats,
           "linear_x": lambda: F.linear(ints, floats), "linear_w": lambda: F.linear(floats, ints),
           "cross_entropy": lambda: F.cross_entropy(ints, gpunn.tensor([0, 1], device=device)),
           "softmax": lambda: F.softmax(ints)}[call]
    with pytest.raises(gpunn.DTypeError, match=r"\.float\(\)"):
        run()


def test_requires_grad_on_integer_tensor(device):
    with pytest.raises(gpunn.DTypeError, match="floating"):
        gpunn.tensor([1, 2], device=device, requires_grad=True)
    with pytest.raises(gpunn.DTypeError, match="floating"):
        gpunn.zeros(2, dtype="int64", device=device, requires_grad=True)
    with pytest.raises(gpunn.DTypeError, match="floating"):
        gpunn.arange(3, device=device).requires_grad_()


# --- sort, gather, scatter_add, bincount, cumsum, prod, var and std, bmm, expand, split, masked_fill ---
# Forward against NumPy in float64, gradients by gradcheck, and PyTorch's semantics (indices,
# dtypes, return types) against torch where it is installed.


def _torch():
    return pytest.importorskip("torch")


def check(device, fn, reference, *arrays, rtol=1e-10, grad=True):
    """fn on float64 leaves equals `reference` (NumPy) on the device, and passes gradcheck."""
    leaves = [to_device(a, device, requires_grad=grad) for a in arrays]
    out = fn(*leaves)
    assert_close(out, reference(*arrays), device=device, dtype=gpunn.float64, rtol=rtol)
    if grad:
        gradcheck(fn, leaves)
        for leaf in leaves:
            assert leaf.grad.device == device and leaf.grad.shape == leaf.shape


GATHER_INDEX = np.array([[0, 2, 2, 1], [2, 2, 0, 0]])  # repeats: the gradient must add up


def test_gather_along_each_dim(device):
    x = away_from_zero((3, 4), seed=1)
    idx = to_device(GATHER_INDEX, device)
    check(device, lambda t: t.gather(0, idx), lambda a: np.take_along_axis(a, GATHER_INDEX, 0), x)
    idx1 = to_device(GATHER_INDEX[:, :3] % 4, device)  # fewer rows than x: PyTorch reads the leading corner
    check(device, lambda t: gpunn.gather(t, 1, idx1), lambda a: np.take_along_axis(a[:2], GATHER_INDEX[:, :3] % 4, 1),
          x)
    check(device, lambda t: t.gather(-1, idx1), lambda a: np.take_along_axis(a[:2], GATHER_INDEX[:, :3] % 4, 1), x)


def test_gather_refuses_bad_indices(device):
    x = to_device(np.zeros((2, 3)), device)
    with pytest.raises(DTypeError, match="integer"):
        x.gather(0, to_device(np.zeros((2, 3)), device))
    with pytest.raises(ShapeError, match="dimensions"):
        x.gather(0, to_device(np.zeros(3, dtype=np.int64), device))
    with pytest.raises(IndexOutOfRangeError, match="dim 2"):
        x.gather(2, to_device(np.zeros((2, 3), dtype=np.int64), device))
    with pytest.raises(ShapeError, match="larger"):
        x.gather(0, to_device(np.zeros((2, 4), dtype=np.int64), device))
    if device.type == "cpu":
        with pytest.raises(IndexOutOfRangeError, match="out of range"):
            x.gather(1, to_device(np.full((2, 3), 3), device))


def _scatter_add_reference(x, dim, index, src):
    out = x.copy()
    for pos in np.ndindex(*index.shape):
        target = list(pos)
        target[dim] = index[pos]
        out[tuple(target)] += src[pos]
    return out


def test_scatter_add_accumulates_and_differentiates_both(device):
    x, src = away_from_zero((3, 4), seed=2), away_from_zero((3, 4), seed=3)
    idx = GATHER_INDEX[:, :3]
    index = to_device(idx, device)
    check(device, lambda a, s: a.scatter_add(0, index, s),
          lambda a, s: _scatter_add_reference(a, 0, idx, s[:2, :3]), x, src)
    check(device, lambda a, s: gpunn.scatter_add(a, 1, index, s),
          lambda a, s: _scatter_add_reference(a, 1, idx, s[:2, :3]), x, src)


def test_scatter_add_and_gather_match_torch():
    torch = _torch()
    x, src = away_from_zero((3, 4), seed=4), away_from_zero((2, 3), seed=5)
    idx = GATHER_INDEX[:, :3]
    for dim in (0, 1):
        got = gpunn.tensor(x).scatter_add(dim, gpunn.tensor(idx), gpunn.tensor(src))
        want = torch.tensor(x).scatter_add(dim, torch.tensor(idx), torch.tensor(src))
        assert_close(got, want.numpy())
        assert_close(gpunn.tensor(x).gather(dim, gpunn.tensor(idx)), torch.tensor(x).gather(dim, torch.tensor(idx)))


def test_negative_control_a_scatter_that_overwrites_fails_gradcheck():
    """A gather rule that writes instead of adding (last repeat wins) must be caught."""

    def overwriting(xp, g, out, x, index, axis):
        grad = np.zeros(x.shape)
        np.put_along_axis(grad, np.asarray(index), np.asarray(g), axis)
        return grad

    wrong = ops.Primitive("overwriting_gather", ops.gather.forward, overwriting, None)  # no fast path replaces it
    x = to_device(away_from_zero((3, 4)), gpunn.device("cpu"), requires_grad=True)
    idx = gpunn.tensor(GATHER_INDEX)
    with pytest.raises(AssertionError, match="gradcheck"):
        gradcheck(lambda t: gpunn.apply(wrong, t, idx, axis=0), [x])


def test_sort_argsort_topk(device):
    x = distinct((3, 5), seed=6)
    check(device, lambda t: t.sort(1).values, lambda a: np.sort(a, 1), x)
    check(device, lambda t: gpunn.sort(t, 0, descending=True)[0], lambda a: -np.sort(-a, 0), x)
    check(device, lambda t: t.topk(2).values, lambda a: -np.sort(-a, 1)[:, :2], x)
    check(device, lambda t: gpunn.topk(t, 2, dim=0, largest=False).values, lambda a: np.sort(a, 0)[:2], x)
    t = to_device(x, device)
    values, indices = t.sort(dim=-1)
    np.testing.assert_array_equal(indices.numpy(), np.argsort(x, 1))
    assert indices.dtype == gpunn.int64 and indices.device == device
    np.testing.assert_array_equal(t.argsort(dim=0, descending=True).numpy(), np.argsort(-x, 0))
    np.testing.assert_array_equal(gpunn.argsort(t).numpy(), np.argsort(x, 1))
    with pytest.raises(IndexOutOfRangeError, match="k=6"):
        t.topk(6)


def test_sort_and_topk_match_torch_with_ties():
    torch = _torch()
    x = np.array([[3.0, 1.0, 3.0, 2.0, 1.0], [0.0, 0.0, 5.0, -1.0, 5.0]])
    for descending in (False, True):
        got = gpunn.tensor(x).sort(1, descending=descending, stable=True)
        want = torch.tensor(x).sort(dim=1, descending=descending, stable=True)
        assert_close(got.values, want.values.numpy())
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    got, want = gpunn.tensor(x[0]).topk(3), torch.tensor(x[0]).topk(3)
    assert_close(got.values, want.values.numpy())
    assert_close(gpunn.tensor(3.0).sort().values, torch.tensor(3.0).sort().values.numpy())


def test_cumsum(device):
    x = away_from_zero((3, 4), seed=7)
    check(device, lambda t: t.cumsum(1), lambda a: np.cumsum(a, 1), x)
    check(device, lambda t: gpunn.cumsum(t, dim=0), lambda a: np.cumsum(a, 0), x)
    ints = to_device(np.array([1, 2, 3], dtype=np.int32), device).cumsum(0)
    assert ints.dtype == gpunn.int64  # PyTorch sums integers as int64
    assert_close(ints, np.array([1, 3, 6]))


def test_prod_including_zeros(device):
    x = away_from_zero((3, 4), seed=8)
    check(device, lambda t: t.prod(1), lambda a: np.prod(a, 1), x)
    check(device, lambda t: gpunn.prod(t, 0, keepdim=True), lambda a: np.prod(a, 0, keepdims=True), x)
    check(device, lambda t: t.prod(), lambda a: np.prod(a), x[:2])
    zeros = x.copy()
    zeros[0, 1] = 0.0  # one zero in row 0: only its own entry gets a gradient there
    zeros[1, 0] = zeros[1, 2] = 0.0  # two zeros in row 1: no gradient anywhere in it
    check(device, lambda t: t.prod(1), lambda a: np.prod(a, 1), zeros)


def test_negative_control_prod_by_division_fails_at_zero():
    wrong = ops.Primitive("prod_by_division", ops.prod.forward,
                          lambda xp, g, out, x, axis=None, keepdims=False: g * out / x)
    x = away_from_zero((4,))
    x[1] = 0.0
    leaf = gpunn.tensor(x, requires_grad=True)
    with np.errstate(all="ignore"), pytest.raises(AssertionError, match="gradcheck"):
        gradcheck(lambda t: gpunn.apply(wrong, t), [leaf])


@pytest.mark.parametrize("kw, ddof, axis", [({}, 1, None), ({"dim": 1}, 1, 1), ({"dim": (0, 1), "correction": 0}, 0, None),
                                            ({"dim": 0, "unbiased": False, "keepdim": True}, 0, 0),
                                            ({"dim": 1, "correction": 2}, 2, 1)], ids=str)
def test_var_and_std(device, kw, ddof, axis):
    x = away_from_zero((3, 4), seed=9)
    keep = kw.get("keepdim", False)
    check(device, lambda t: t.var(**kw), lambda a: np.var(a, axis=axis, ddof=ddof, keepdims=keep), x)
    check(device, lambda t: gpunn.std(t, **kw), lambda a: np.std(a, axis=axis, ddof=ddof, keepdims=keep), x)


def test_var_matches_torch_and_warns_without_degrees_of_freedom():
    torch = _torch()
    x = away_from_zero((3, 4), seed=10)
    assert_close(gpunn.tensor(x).var(1, True), torch.tensor(x).var(1, True).numpy())
    assert_close(gpunn.tensor(x).std(0, correction=0), torch.tensor(x).std(0, correction=0).numpy())
    assert_close(gpunn.tensor(x).var(False), torch.tensor(x).var(False).numpy())  # the old positional unbiased
    with pytest.warns(UserWarning, match="degrees of freedom"):
        one = gpunn.tensor([2.0]).var()
    with pytest.warns(UserWarning, match="degrees of freedom"):
        theirs = torch.tensor([2.0]).var()
    assert np.isnan(one.item()) and np.isnan(theirs.item())
    with pytest.raises(DTypeError, match="floating"):
        gpunn.tensor([1, 2]).var()


def test_bmm(device):
    a, b = away_from_zero((2, 3, 4), seed=11), away_from_zero((2, 4, 2), seed=12)
    check(device, gpunn.bmm, lambda x, y: x @ y, a, b)
    with pytest.raises(ShapeError, match="3-d"):
        to_device(a[0], device).bmm(to_device(b[0], device))


def test_expand_and_repeat(device):
    x = away_from_zero((3, 1), seed=13)
    check(device, lambda t: t.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), x)
    check(device, lambda t: t.expand((-1, 5)), lambda a: np.broadcast_to(a, (3, 5)), x)
    check(device, lambda t: t.expand_as(gpunn.zeros(3, 2)), lambda a: np.broadcast_to(a, (3, 2)), x)
    y = away_from_zero((2, 3), seed=14)
    check(device, lambda t: t.repeat(2, 3), lambda a: np.tile(a, (2, 3)), y)
    check(device, lambda t: t.repeat((2, 1, 2)), lambda a: np.tile(a, (2, 1, 2)), y)
    with pytest.raises(ShapeError, match="size 2 cannot become 4"):
        to_device(y, device).expand(4, 3)
    with pytest.raises(ShapeError, match="at least one"):
        to_device(y, device).repeat(2)


def test_split_and_chunk(device):
    x = away_from_zero((5, 3), seed=15)
    w = [2.0, -1.0, 0.5]
    check(device, lambda t: gpunn.concat([p * k for p, k in zip(t.split(2), w)]),
          lambda a: np.concatenate([p * k for p, k in zip(np.split(a, [2, 4]), w)]), x)
    check(device, lambda t: gpunn.concat([p * k for p, k in zip(gpunn.split(t, [1, 2], dim=1), w)], dim=1),
          lambda a: np.concatenate([a[:, :1] * 2.0, a[:, 1:] * -1.0], axis=1), x)
    t = to_device(x, device)
    assert [p.shape for p in t.chunk(3)] == [(2, 3), (2, 3), (1, 3)]
    assert [p.shape for p in gpunn.chunk(t, 4, dim=1)] == [(5, 1), (5, 1), (5, 1)]  # fewer pieces, as PyTorch
    with pytest.raises(ShapeError, match="sum to"):
        t.split([2, 2])


def test_split_and_chunk_match_torch():
    torch = _torch()
    x = np.arange(14.0).reshape(7, 2)
    for pieces, want in [(gpunn.tensor(x).chunk(3), torch.tensor(x).chunk(3)),
                         (gpunn.tensor(x).chunk(4), torch.tensor(x).chunk(4)),
                         (gpunn.tensor(x).split(3), torch.tensor(x).split(3)),
                         (gpunn.tensor(x).split([4, 3]), torch.tensor(x).split([4, 3]))]:
        assert isinstance(pieces, tuple) and len(pieces) == len(want)
        for p, q in zip(pieces, want):
            assert_close(p, q.numpy())


def test_masked_fill(device):
    x = away_from_zero((2, 3), seed=16)
    mask = np.array([[True, False, True], [False, False, True]])
    m = to_device(mask, device)
    check(device, lambda t: t.masked_fill(m, -7.0), lambda a: np.where(mask, -7.0, a), x)
    row = to_device(mask[0], device)  # broadcast along rows
    check(device, lambda t: gpunn.masked_fill(t, row, 0.0), lambda a: np.where(mask[0], 0.0, a), x)
    # a 0-d tensor value gets its gradient too
    check(device, lambda t, v: t.masked_fill(m, v), lambda a, v: np.where(mask, v, a), x, np.array(3.0))
    ints = to_device(np.array([1, 2]), device).masked_fill(to_device(np.array([True, False]), device), 1.7)
    assert ints.dtype == gpunn.int64 and ints.tolist() == [1, 2]  # PyTorch: the value is cast to the tensor's dtype
    with pytest.raises(DTypeError, match="bool"):
        to_device(x, device).masked_fill(to_device(np.ones((2, 3)), device), 0.0)
    with pytest.raises(ShapeError, match="broadcast"):
        to_device(x, device).masked_fill(to_device(np.ones((3, 3), dtype=bool), device), 0.0)


def test_bincount(device):
    x = to_device(np.array([0, 1, 1, 3, 1]), device)
    assert_close(x.bincount(), np.array([1, 3, 0, 1]), dtype=gpunn.int64, device=device)
    assert_close(gpunn.bincount(x, minlength=6), np.bincount([0, 1, 1, 3, 1], minlength=6))
    w = to_device(np.array([0.5, 1.0, 2.0, 3.0, 4.0]), device)
    assert_close(x.bincount(w), np.array([0.5, 7.0, 0.0, 3.0]), dtype=gpunn.float64)
    assert gpunn.bincount(to_device(np.zeros(0, dtype=np.int64), device)).shape == (0,)
    with pytest.raises(ValueError, match="non-negative"):
        to_device(np.array([1, -1]), device).bincount()


def test_bincount_matches_torch():
    torch = _torch()
    x = rng(17).integers(0, 6, size=20)
    w = rng(18).normal(size=20).astype(np.float32)
    assert_close(gpunn.tensor(x).bincount(), torch.tensor(x).bincount().numpy())
    got, want = gpunn.tensor(x).bincount(gpunn.tensor(w)), torch.tensor(x).bincount(torch.tensor(w))
    assert got.dtype.name == str(want.dtype).split(".")[-1]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_contiguous_type_is_tensor(device):
    x = to_device(np.ones((2, 2), dtype=np.float32), device)
    assert x.contiguous() is x
    assert x.type() == ("torch.cuda.FloatTensor" if device.type == "cuda" else "torch.FloatTensor")
    assert x.long().type().endswith("LongTensor") and x.double().type().endswith("DoubleTensor")
    assert x.type("torch.DoubleTensor").dtype == gpunn.float64
    assert x.type(gpunn.int64).dtype == gpunn.int64
    assert gpunn.is_tensor(x) and not gpunn.is_tensor(np.ones(2))


def test_type_strings_match_torch():
    torch = _torch()
    for dtype in ("float32", "float64", "int64", "int32", "bool", "uint8", "float16"):
        assert gpunn.zeros(1, dtype=dtype).type() == torch.zeros(1, dtype=getattr(torch, dtype)).type()


def test_std_of_constant_entries_has_a_zero_gradient(device):
    """PyTorch's choice where the variance is 0: gradient 0, not the NaN of d sqrt(v) at v = 0."""
    x = to_device(np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]), device, requires_grad=True)
    x.std(dim=1).sum().backward()
    centered = np.array([1.0, 2.0, 4.0]) - 7 / 3
    expected = np.zeros((2, 3))
    expected[1] = centered / (np.sqrt((centered ** 2).sum() / 2) * 2)
    assert_close(x.grad, expected)
