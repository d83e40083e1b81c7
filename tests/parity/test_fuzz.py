"""Differential tests against PyTorch (CPU): gpunn promises torch's names and behaviour where the
concept is the same, so the same call on the same float64 data must give the same values, dtypes
and gradients (backward of one random upstream gradient), and the same optimizer trajectories.

Differences left on purpose (ties of x.max(dim) and of maximum/minimum share the gradient,
gpunn returns values where torch raises, ...) are listed in /work/notes/fuzz_s4.md and kept out
of the compared inputs. `test_negative_control_*` show the comparison can fail.
"""

import itertools
import math
import operator

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, mutually_broadcastable_shapes

import gpunn
import gpunn.functional as GF

# edge values on purpose (0 ** -1, log of negatives): NumPy's RuntimeWarnings say nothing here
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
TF = torch.nn.functional

FUZZ = settings(max_examples=15, deadline=None)
DEVICES = ["cpu", "strict"]


# --- the comparison -----------------------------------------------------------------------------


def _pair(array, device):
    """The same values as a gpunn tensor on `device` and a torch tensor; floats require grad."""
    array = np.asarray(array)
    floating = array.dtype.kind == "f"
    return (gpunn.tensor(array, device=device, requires_grad=floating),
            torch.tensor(array, requires_grad=floating))


def _numpy(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def assert_same(ours, theirs, rtol=1e-10, atol=1e-12):
    """Same shape, same dtype name, same values (NaN equal to NaN); float32 to its rounding (torch
    computes 2.5 / x as 2.5 * (1 / x), one rounding more)."""
    a, b = _numpy(ours), _numpy(theirs)
    assert a.shape == b.shape, f"shape {a.shape}, torch {b.shape}"
    assert str(a.dtype) == str(b.dtype), f"dtype {a.dtype}, torch {b.dtype}"
    if a.dtype.kind == "f" and a.dtype.itemsize < 8:
        rtol, atol = max(rtol, 1e-6), max(atol, 1e-7)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def check(fn, ref, *arrays, device="cpu", seed=0, rtol=1e-10, atol=1e-12):
    """fn on gpunn tensors against ref on torch tensors: the forward, then the gradient of every
    floating input after backward of one random upstream gradient."""
    pairs = [_pair(a, device) for a in arrays]
    out, expected = fn(*(p[0] for p in pairs)), ref(*(p[1] for p in pairs))
    assert out.device == gpunn.device(device)
    assert_same(out, expected, rtol, atol)
    if not expected.requires_grad:
        return
    upstream = np.random.default_rng(seed).standard_normal(tuple(expected.shape))
    out.backward(gpunn.tensor(upstream, dtype=out.dtype, device=device))
    expected.backward(torch.tensor(upstream, dtype=expected.dtype))
    for i, (x, y) in enumerate(pairs):
        if y.grad is None:
            assert x.grad is None, f"input {i}: gpunn has a gradient, torch none"
        else:
            assert x.grad is not None, f"input {i}: torch has a gradient, gpunn none"
            assert x.grad.device == x.device
            assert_same(x.grad, y.grad, rtol, atol)


def test_negative_control_wrong_forward_fails():
    x = np.linspace(-1, 1, 7)
    with pytest.raises(AssertionError):
        check(lambda t: t.exp() * (1 + 1e-8), torch.exp, x)


def test_negative_control_wrong_gradient_fails():
    """Same values, half the derivative: the reference detaches one factor of x * x."""
    x = np.linspace(-1, 1, 6)
    with pytest.raises(AssertionError):
        check(lambda t: t * t, lambda t: t * t.detach(), x)


def test_negative_control_wrong_dtype_fails():
    with pytest.raises(AssertionError):
        check(lambda t: t + 1, lambda t: (t + 1).float(), np.arange(3.0))


# --- data -------------------------------------------------------------------------------------

finite = st.floats(-3, 3, allow_nan=False, width=64)
tenths = st.integers(-30, 30).map(lambda i: i / 10)  # exact zeros, ties, and no underflow in norms
with_kinks = st.sampled_from([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])  # exact zeros and ties on purpose


def floats(shape, elements=finite):
    return arrays(np.float64, shape, elements=elements)


# --- elementwise ------------------------------------------------------------------------------

UNARY = {  # name: (gpunn, torch, elements)
    "exp": (lambda x: x.exp(), torch.exp, finite),
    "log": (lambda x: x.log(), torch.log, st.floats(0.01, 5, width=64)),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, st.floats(0.01, 5, width=64)),
    "abs": (lambda x: x.abs(), torch.abs, with_kinks),
    "neg": (lambda x: -x, torch.neg, finite),
    "tanh": (lambda x: x.tanh(), torch.tanh, finite),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, st.floats(-800, 800, width=64)),
    "relu": (lambda x: x.relu(), torch.relu, with_kinks),
    "leaky_relu": (lambda x: GF.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), with_kinks),
    "gelu_tanh": (lambda x: GF.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), finite),
    "square": (lambda x: x ** 2, lambda x: x ** 2, with_kinks),
    "pow0": (lambda x: x ** 0, lambda x: x ** 0, with_kinks),  # was nan at x == 0
    "pow_neg_int": (lambda x: x ** -2, lambda x: x ** -2, st.sampled_from([-2.0, -0.5, 0.5, 3.0])),
    "rpow": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, finite),
    "rpow_zero_base": (lambda x: 0.0 ** x, lambda x: 0.0 ** x, with_kinks),
    "rpow_negative_base": (lambda x: (-2.0) ** x, lambda x: (-2.0) ** x, with_kinks),  # raised in backward
    "clamp": (lambda x: x.clamp(-1.0, 1.0), lambda x: x.clamp(-1.0, 1.0), with_kinks),  # exactly at the bounds
    "clip_min": (lambda x: x.clip(min=0.5), lambda x: x.clip(min=0.5), with_kinks),
    "softmax": (lambda x: x.softmax(-1), lambda x: x.softmax(-1), finite),
    "log_softmax": (lambda x: x.log_softmax(0), lambda x: x.log_softmax(0), finite),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", UNARY)
@FUZZ
@given(data=st.data())
def test_unary(name, device, data):
    fn, ref, elements = UNARY[name]
    x = data.draw(floats(array_shapes(min_dims=0, max_dims=3, max_side=4), elements))
    if name == "log_softmax" and x.ndim == 0:
        x = x.reshape(1)
    check(fn, ref, x, device=device)


def test_gelu_exact_within_its_documented_error():
    """The exact GELU uses an erfc fit with relative error < 1.2e-7 (documented in gpunn.ops)."""
    x = np.linspace(-6, 6, 49)
    check(GF.gelu, TF.gelu, x, rtol=1e-6, atol=1e-7)


BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
          "pow": operator.pow}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", BINARY)
@FUZZ
@given(data=st.data())
def test_binary_broadcast(name, device, data):
    op = BINARY[name]
    shapes = data.draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    a_elements = st.floats(0.2, 3, width=64) if name == "pow" else with_kinks
    b_elements = st.floats(0.5, 3, width=64) if name == "truediv" else with_kinks
    a = data.draw(floats(shapes.input_shapes[0], a_elements))
    b = data.draw(floats(shapes.input_shapes[1], b_elements))
    check(op, op, a, b, device=device)
    scalar = data.draw(st.sampled_from([2, -1, 0.5, 3.0]))
    check(lambda x: op(x, scalar), lambda x: op(x, scalar), b if name != "pow" else a, device=device)
    if name != "pow":  # a base of 0 or below would leave torch's and gpunn's nan to chance
        check(lambda x: op(scalar, x), lambda x: op(scalar, x), b, device=device)


def test_pow_gradients_at_zero_and_negative_bases():
    base = np.array([0.0, 0.0, 0.0, -2.0, -2.0, 2.0, 0.0])
    exponent = np.array([0.0, 2.0, -1.0, 3.0, 0.0, 0.5, 0.5])
    check(operator.pow, operator.pow, base, exponent)


def test_maximum_minimum_without_ties():
    """Ties share the gradient in torch and go to the first input in gpunn (see the notes)."""
    a, b = np.array([1.0, -2.0, 3.5]), np.array([[0.5, -1.0, 4.0], [2.0, -3.0, 1.0]])
    check(gpunn.maximum, torch.maximum, a, b)
    check(gpunn.minimum, torch.minimum, a, b)


def test_where():
    rng = np.random.default_rng(1)
    c, x, y = rng.random((2, 3)) > 0.5, rng.standard_normal((2, 3)), rng.standard_normal(3)
    check(gpunn.where, torch.where, c, x, y)
    check(lambda c, x: gpunn.where(c, x, 0.0), lambda c, x: torch.where(c, x, 0.0), c, x)


def test_clamp_with_tensor_bounds():
    x = np.array([[-2.0, -0.5, 0.0, 0.3], [1.0, 2.0, 0.7, -0.1], [0.5, 0.5, 3.0, -3.0]])
    lo = np.array([-1.0, -0.5, 0.2, 0.3])  # ties with x in column 1 and 3
    hi = np.array([[1.0], [1.5], [0.5]])
    check(lambda x, lo, hi: x.clamp(lo, hi), lambda x, lo, hi: x.clamp(lo, hi), x, lo, hi)
    check(lambda x, lo: gpunn.clamp(x, min=lo), lambda x, lo: torch.clamp(x, min=lo), x, lo)
    check(lambda x, hi: x.clip(max=hi), lambda x, hi: x.clip(max=hi), x, hi, device="strict")


# --- dtype promotion ----------------------------------------------------------------------------

DTYPES = ["float32", "float64", "int32", "int64", "int8", "uint8", "bool"]
PROMOTING = {"add": operator.add, "mul": operator.mul, "truediv": operator.truediv, "sub": operator.sub,
             "lt": operator.lt, "eq": operator.eq}


def _bool_subtraction(op, *dtypes):
    return op is operator.sub and "bool" in dtypes  # torch refuses; gpunn counts (see the notes)


@pytest.mark.parametrize("shapes", [((3,), (3,)), ((3,), ()), ((), (3,)), ((), ())])
@pytest.mark.parametrize("dt1,dt2", itertools.product(DTYPES, DTYPES))
def test_promotion_of_two_tensors(dt1, dt2, shapes):
    a = np.array([1, 0, 3]).astype(dt1) if shapes[0] else np.array(1).astype(dt1)
    b = np.array([2, 1, 0]).astype(dt2) if shapes[1] else np.array(2).astype(dt2)
    for name, op in PROMOTING.items():
        if _bool_subtraction(op, dt1, dt2):
            continue
        assert_same(op(gpunn.tensor(a), gpunn.tensor(b)), op(torch.tensor(a), torch.tensor(b)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_promotion_with_python_scalars(dtype, scalar):
    a = np.array([1, 0, 3]).astype(dtype)
    for op in PROMOTING.values():
        if _bool_subtraction(op, dtype, type(scalar).__name__):
            continue
        assert_same(op(gpunn.tensor(a), scalar), op(torch.tensor(a), scalar))
        assert_same(op(scalar, gpunn.tensor(a)), op(scalar, torch.tensor(a)))


def test_float32_times_float64_scalar_tensor_stays_float32_with_gradients():
    x, s = np.array([1.0, -2.0], dtype=np.float32), np.array(3.0)
    check(operator.mul, operator.mul, x, s, rtol=1e-6)


def test_integer_negative_powers_raise_a_dtype_error_naming_the_fix():
    """torch rounds them to integers; gpunn (NumPy) refuses, and must say why (not 'broadcasting')."""
    with pytest.raises(gpunn.DTypeError, match=r"negative integer powers.*\.float\(\)"):
        gpunn.tensor([1, 2]) ** gpunn.tensor([1, -2])


# --- reductions -------------------------------------------------------------------------------


@st.composite
def array_and_dims(draw, elements=tenths):
    x = draw(floats(array_shapes(min_dims=1, max_dims=3, max_side=4), elements))
    dims = draw(st.lists(st.integers(-x.ndim, x.ndim - 1), min_size=1, max_size=x.ndim,
                         unique_by=lambda d: d % x.ndim))
    return x, (dims[0] if len(dims) == 1 else tuple(dims)), draw(st.booleans())


@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(case=array_and_dims())
def test_sum_mean_logsumexp_norm_over_dims(device, case):
    x, dim, keepdim = case
    for method in ("sum", "mean", "logsumexp"):
        check(lambda t: getattr(t, method)(dim=dim, keepdim=keepdim),
              lambda t: getattr(t, method)(dim=dim, keepdim=keepdim), x, device=device)
    for p in (1, 2, 3, math.inf, "fro"):
        if p == "fro" and not (isinstance(dim, tuple) and len(dim) == 2):  # torch: a matrix norm
            continue
        check(lambda t: t.norm(p, dim, keepdim), lambda t: t.norm(p, dim, keepdim), x, device=device)


@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(x=floats(array_shapes(min_dims=0, max_dims=3, max_side=4), with_kinks))
def test_full_reductions_and_ties(device, x):
    """max()/min() over everything: torch shares the gradient between ties, as gpunn does."""
    for method in ("sum", "mean", "max", "min", "norm"):
        check(lambda t: getattr(t, method)(), lambda t: getattr(t, method)(), x, device=device)


@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(case=array_and_dims(with_kinks))
def test_amax_amin_share_ties(device, case):
    """gpunn's max(axis=...) is torch.amax: both share the gradient between ties."""
    x, dim, keepdim = case
    check(lambda t: t.max(axis=dim, keepdims=keepdim), lambda t: t.amax(dim=dim, keepdim=keepdim), x, device=device)
    check(lambda t: t.min(axis=dim, keepdims=keepdim), lambda t: t.amin(dim=dim, keepdim=keepdim), x, device=device)


@pytest.mark.parametrize("device", DEVICES)
@FUZZ
@given(case=array_and_dims(finite))
def test_max_min_with_dim_values_indices(device, case):
    x, dim, keepdim = case
    dim = dim if isinstance(dim, int) else dim[0]
    for extreme in (x.max(axis=dim, keepdims=True), x.min(axis=dim, keepdims=True)):
        if np.any(np.sum(x == extreme, axis=dim) > 1):
            return  # a tie: torch picks one index for the gradient (see the notes)
    for method in ("max", "min"):
        check(lambda t: getattr(t, method)(dim, keepdim)[0], lambda t: getattr(t, method)(dim, keepdim)[0], x,
              device=device)
        check(lambda t: getattr(t, method)(dim=dim, keepdim=keepdim).indices,
              lambda t: getattr(t, method)(dim=dim, keepdim=keepdim).indices, x, device=device)
        arg = "argmax" if method == "max" else "argmin"
        check(lambda t: getattr(t, arg)(dim=dim, keepdim=keepdim), lambda t: getattr(t, arg)(dim=dim, keepdim=keepdim),
              x, device=device)


def test_reductions_of_infinities():
    x = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [-np.inf, 1.0]])
    check(lambda t: t.logsumexp(dim=1), lambda t: t.logsumexp(dim=1), x)
    check(lambda t: t.log_softmax(1)[2:], lambda t: t.log_softmax(1)[2:], x)
    check(lambda t: t.sum(dim=0), lambda t: t.sum(dim=0), np.array([[True, False], [True, True]]))


def test_norm_gradient_at_zero():
    zero = np.zeros((2, 3))
    for p in (2, 3, 0.5, "fro"):
        check(lambda t: t.norm(p), lambda t: t.norm(p), zero)


# --- indexing and shapes ----------------------------------------------------------------------

INDICES = [
    (1,), (-1,), (slice(1, 3),), (slice(None, None, 2),), (Ellipsis, 1), (None, 1), (1, None, 2),
    (slice(None), [0, 2, 2]), ([0, 1, 1],), ([0, 1], [2, 3]), ([[0, 1], [1, 0]],), (slice(None), [1, 0], slice(None)),
    ([0, 1], slice(None), [2, 3]), (np.array([True, False, True, True]),), (Ellipsis, [0, 0, 1]), (1, [0, 0, -1]),
    ([1, 3], 1), ([-1, 0],), (np.array([[True, False, True, False, True]] * 4),),
]


def _index(index, make):
    return tuple(make(np.asarray(i)) if isinstance(i, (list, np.ndarray)) else i for i in index)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", INDICES, ids=str)
def test_getitem_and_its_gradient(index, device):
    integer_arrays = any(isinstance(i, list) for i in index)
    if device == "strict" and integer_arrays and index != ([0, 1, 1],):
        pytest.skip("the array API standard indexes with one integer array (take) only")
    x = np.random.default_rng(2).standard_normal((4, 5, 6))
    check(lambda t: t[_index(index, lambda a: gpunn.tensor(a, device=device))],
          lambda t: t[_index(index, torch.tensor)], x, device=device)


def test_getitem_with_a_full_boolean_mask_and_lists():
    x = np.random.default_rng(3).standard_normal((3, 4))
    check(lambda t: t[gpunn.tensor(x > 0)], lambda t: t[torch.tensor(x > 0)], x)
    check(lambda t: t[[0, 2, 2]], lambda t: t[[0, 2, 2]], x)
    check(lambda t: t[gpunn.tensor(2)], lambda t: t[torch.tensor(2)], x)


SHAPE_OPS = {
    "reshape": lambda t: t.reshape(4, -1),
    "view": lambda t: t.view(-1),
    "permute": lambda t: t.permute(-1, 0, 1),
    "transpose": lambda t: t.transpose(0, 2),
    "transpose_neg": lambda t: t.transpose(-1, 0),
    "mT": lambda t: t.mT,
    "unsqueeze": lambda t: t.unsqueeze(-1),
    "unsqueeze_front": lambda t: t.unsqueeze(-4),
    "flatten": lambda t: t.flatten(),
    "flatten_1": lambda t: t.flatten(1),
    "flatten_0_1": lambda t: t.flatten(0, 1),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops(name, device):
    fn = SHAPE_OPS[name]
    check(fn, fn, np.random.default_rng(4).standard_normal((2, 3, 4)), device=device)


@pytest.mark.parametrize("dim", [None, 0, 2, -2, -1, (0, 2), (1, -1), ()])
def test_squeeze(dim):
    fn = (lambda t: t.squeeze()) if dim is None else (lambda t: t.squeeze(dim))
    check(fn, fn, np.random.default_rng(5).standard_normal((1, 3, 1, 2)))


def test_squeeze_of_a_0d_tensor():
    check(lambda t: t.squeeze(0), lambda t: t.squeeze(0), np.array(2.5))
    check(lambda t: t.squeeze(-1), lambda t: t.squeeze(-1), np.array(2.5))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [0, 1, -1, -3])
def test_cat_and_stack(dim, device):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    check(lambda x, y: gpunn.stack([x, y], dim=dim), lambda x, y: torch.stack([x, y], dim=dim), a, b, device=device)
    c = rng.standard_normal((2, 3, 4))
    check(lambda x, y, z: gpunn.cat([x, y, z], dim=dim), lambda x, y, z: torch.cat([x, y, z], dim=dim), a, b, c,
          device=device)


MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
                 ((2, 3), (5, 3, 4)), ((5, 2, 3), (5, 3, 4)), ((5, 2, 3), (3,)), ((3,), (5, 3, 4)),
                 ((1, 2, 3), (5, 3, 4)), ((7, 1, 2, 3), (5, 3, 4))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes, device):
    rng = np.random.default_rng(7)
    check(operator.matmul, operator.matmul, rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1]),
          device=device)


# --- losses and layers ------------------------------------------------------------------------

LOGITS = np.random.default_rng(8).standard_normal((6, 4)) * 3
TARGETS = np.array([0, 3, 1, 1, 2, 0])
WITH_IGNORED = np.array([0, -100, 1, 1, 2, -100])
CLASS_WEIGHT = np.array([0.5, 2.0, 1.0, 1.5])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("targets", [TARGETS, WITH_IGNORED], ids=["all_kept", "ignored"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy(reduction, targets, label_smoothing, weighted, device):
    def call(f, weight_of):
        return lambda x, t: f(x, t, weight_of(CLASS_WEIGHT) if weighted else None, reduction=reduction,
                              label_smoothing=label_smoothing)

    check(call(GF.cross_entropy, lambda w: gpunn.tensor(w, device=device)), call(TF.cross_entropy, torch.tensor),
          LOGITS, targets, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_nll_loss(reduction, ignore_index, device):
    log_probs = LOGITS - np.log(np.exp(LOGITS).sum(1, keepdims=True))
    ignored = np.where(WITH_IGNORED == -100, ignore_index, WITH_IGNORED)
    for targets, weight in [(TARGETS, None), (ignored, None), (ignored, CLASS_WEIGHT)]:
        check(lambda x, t: GF.nll_loss(x, t, None if weight is None else gpunn.tensor(weight, device=device),
                                       ignore_index=ignore_index, reduction=reduction),
              lambda x, t: TF.nll_loss(x, t, None if weight is None else torch.tensor(weight),
                                       ignore_index=ignore_index, reduction=reduction),
              log_probs, targets, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy_smoothed", "nll_loss"])
def test_every_target_ignored_gives_nan_loss_and_zero_gradient(loss, device):
    """torch: mean over no targets is nan, and the gradient 0 (gpunn's was nan: weights went nan)."""
    fns = {"cross_entropy": (GF.cross_entropy, TF.cross_entropy),
           "cross_entropy_smoothed": (lambda x, t: GF.cross_entropy(x, t, label_smoothing=0.1),
                                      lambda x, t: TF.cross_entropy(x, t, label_smoothing=0.1)),
           "nll_loss": (GF.nll_loss, TF.nll_loss)}
    check(*fns[loss], LOGITS, np.full(6, -100), device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_bce_with_logits(reduction, device):
    rng = np.random.default_rng(9)
    target = rng.random(LOGITS.shape)
    check(lambda x, y: GF.mse_loss(x, y, reduction=reduction), lambda x, y: TF.mse_loss(x, y, reduction=reduction),
          LOGITS, target, device=device)
    check(lambda x, y: GF.binary_cross_entropy_with_logits(x, y, reduction=reduction),
          lambda x, y: TF.binary_cross_entropy_with_logits(x, y, reduction=reduction),
          LOGITS * 40, target, device=device)


def _copy_parameters(ours, theirs):
    """torch's initial values into the gpunn module, so both compute the same function."""
    with gpunn.no_grad():
        for (name, p), (other, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            assert name == other
            p.copy_(gpunn.tensor(q.detach().numpy()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["Linear", "Linear_no_bias", "LayerNorm", "LayerNorm_plain", "Sequential",
                                  "Embedding", "Dropout_eval", "Softmax", "LogSoftmax", "GELU", "LeakyReLU",
                                  "Flatten"])
def test_layers_with_the_same_parameters(name, device):
    def build(nn):
        return {
            "Linear": lambda: nn.Linear(4, 3), "Linear_no_bias": lambda: nn.Linear(4, 3, bias=False),
            "LayerNorm": lambda: nn.LayerNorm(4), "LayerNorm_plain": lambda: nn.LayerNorm(4, elementwise_affine=False),
            "Sequential": lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(),
                                                nn.Linear(5, 2), nn.Sigmoid()),
            "Embedding": lambda: nn.Embedding(7, 3), "Dropout_eval": lambda: nn.Dropout(0.4).eval(),
            "Softmax": lambda: nn.Softmax(dim=0), "LogSoftmax": lambda: nn.LogSoftmax(dim=1),
            "GELU": lambda: nn.GELU(approximate="tanh"), "LeakyReLU": lambda: nn.LeakyReLU(0.3),
            "Flatten": lambda: nn.Flatten(0),
        }[name]()

    torch.manual_seed(0)
    theirs = build(torch.nn).double()
    ours = build(gpunn.nn)
    _copy_parameters(ours, theirs)
    ours.double().to(device)
    x = np.array([[0, 6, 2], [1, 1, 5]]) if name == "Embedding" else \
        np.random.default_rng(10).standard_normal((2, 3, 4))
    check(ours, theirs, x, device=device)
    for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_same(p.grad, q.grad)


# --- optimizers and schedulers ----------------------------------------------------------------

SHAPES = [(3, 4), (4,)]

OPTIMIZERS = {
    "SGD": ("SGD", dict(lr=0.1)),
    "SGD_momentum_dampening": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    "SGD_nesterov_decay": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    "SGD_maximize": ("SGD", dict(lr=0.1, momentum=0.5, maximize=True, weight_decay=0.01)),
    "Adam": ("Adam", dict(lr=0.01)),
    "Adam_amsgrad_decay": ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, betas=(0.8, 0.9))),
    "Adam_maximize": ("Adam", dict(lr=0.01, maximize=True, eps=1e-3)),
    "AdamW": ("AdamW", dict(lr=0.01)),
    "AdamW_amsgrad_maximize": ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.3, maximize=True)),
    "RMSprop": ("RMSprop", dict(lr=0.01)),
    "RMSprop_everything": ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, alpha=0.9,
                                           maximize=True)),
    "Adagrad": ("Adagrad", dict(lr=0.1)),
    "Adagrad_everything": ("Adagrad", dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5,
                                           maximize=True)),
}
FUSABLE = {"SGD", "Adam", "AdamW"}


class Run:
    """The same parameters and gradient sequence, stepped by a gpunn and a torch optimizer."""

    def __init__(self, name, groups=None, fused=None, seed=0, steps=6):
        rng = np.random.default_rng(seed)
        kind, self.hyper = OPTIMIZERS[name]
        self.kind, self.fused = kind, fused
        self.initial = [rng.standard_normal(s) for s in SHAPES]
        self.grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
        self.ours = [gpunn.tensor(a, requires_grad=True) for a in self.initial]
        self.theirs = [torch.tensor(a, requires_grad=True) for a in self.initial]
        self.groups = groups
        self.opt, self.ref = self.make(self.ours, gpunn.optim), self.make(self.theirs, torch.optim)

    def make(self, params, optim):
        extra = {"fused": self.fused} if optim is gpunn.optim and self.fused is not None else {}
        if self.groups is None:
            return getattr(optim, self.kind)(params, **self.hyper, **extra)
        return getattr(optim, self.kind)([{"params": params[:1]}, {"params": params[1:], **self.groups}],
                                         **self.hyper, **extra)

    def step(self, k, schedulers=()):
        for p, q, g in zip(self.ours, self.theirs, self.grads[k]):
            p.grad, q.grad = gpunn.tensor(g), torch.tensor(g)
        self.opt.step()
        self.ref.step()
        for ours, theirs in schedulers:
            ours.step()
            theirs.step()
            np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-13)
        for p, q in zip(self.ours, self.theirs):
            assert_same(p.detach(), q, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("fused", [None, False, True])
def test_optimizer_trajectory(name, fused):
    if fused and OPTIMIZERS[name][0] not in FUSABLE:
        pytest.skip("no fused implementation (torch has none for it either)")
    run = Run(name, fused=fused)
    for k in range(6):
        run.step(k)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_param_groups_with_their_own_hyperparameters(name):
    run = Run(name, groups={"lr": 0.3, "weight_decay": 0.05}, seed=1)
    for k in range(5):
        run.step(k)


@pytest.mark.parametrize("name", ["SGD_nesterov_decay", "Adam_amsgrad_decay", "AdamW", "RMSprop_everything",
                                  "Adagrad_everything"])
def test_optimizer_state_dict_round_trip_continues_torch_trajectory(name):
    """Three steps, a fresh optimizer loads the state_dict, three more: the same path as torch's
    optimizer, which ran without interruption."""
    run = Run(name, seed=2)
    for k in range(3):
        run.step(k)
    saved = run.opt.state_dict()
    assert sorted(saved["state"][0]) == sorted(run.ref.state_dict()["state"][0])
    run.opt = run.make(run.ours, gpunn.optim)
    run.opt.load_state_dict(saved)
    for k in range(3, 6):
        run.step(k)


SCHEDULERS = {
    "StepLR": lambda s, o: s.StepLR(o, 2, 0.5),
    "MultiStepLR": lambda s, o: s.MultiStepLR(o, [1, 3, 3], 0.5),
    "ExponentialLR": lambda s, o: s.ExponentialLR(o, 0.7),
    "CosineAnnealingLR": lambda s, o: s.CosineAnnealingLR(o, 3, 0.01),
    "LinearLR": lambda s, o: s.LinearLR(o, 0.2, 0.9, 3),
    "LambdaLR": lambda s, o: s.LambdaLR(o, lambda e: 0.9 ** e),
    "MultiplicativeLR": lambda s, o: s.MultiplicativeLR(o, lambda e: 0.9),
    "OneCycleLR": lambda s, o: s.OneCycleLR(o, 0.5, total_steps=8),
    "OneCycleLR_three_phase": lambda s, o: s.OneCycleLR(o, [0.5, 0.2], total_steps=8, three_phase=True,
                                                        anneal_strategy="linear"),
}


@pytest.mark.parametrize("optimizer", ["SGD_momentum_dampening", "Adam"])
@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_trajectory(name, optimizer):
    run = Run(optimizer, groups={"lr": 0.05}, steps=7)
    make = SCHEDULERS[name]
    pair = (make(gpunn.optim.lr_scheduler, run.opt), make(torch.optim.lr_scheduler, run.ref))
    np.testing.assert_allclose(pair[0].get_last_lr(), pair[1].get_last_lr(), rtol=1e-13)
    for k in range(7):
        run.step(k, [pair])


@pytest.mark.parametrize("kwargs", [dict(patience=1), dict(patience=0, cooldown=2, factor=0.5),
                                    dict(mode="max", patience=1, threshold=0.1, threshold_mode="abs"),
                                    dict(patience=1, min_lr=0.02)])
def test_reduce_lr_on_plateau(kwargs):
    run = Run("SGD", steps=12)
    ours = gpunn.optim.lr_scheduler.ReduceLROnPlateau(run.opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(run.ref, **kwargs)
    for k, metric in enumerate([1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7]):
        run.step(k)
        ours.step(metric)
        theirs.step(metric)
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-13)
