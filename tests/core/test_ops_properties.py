"""Property tests (hypothesis): random shapes, broadcasting and axes, on cpu and strict.

Forward results must equal NumPy's; gradients of broadcast operands must equal the NumPy
expectation (the local derivative times the upstream gradient, summed over the broadcast axes)
and central finite differences in float64.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays, mutually_broadcastable_shapes

import gpunn
from gpunn.testing import gradcheck
from helpers import to_device, unbroadcast

DEVICES = ["cpu", "strict"]
BOUNDED = settings(max_examples=30, deadline=None)

# values in [-2, -0.5] or [0.5, 2]: safe divisors, no kinks of abs-like ops at 0
magnitudes = st.floats(0.5, 2.0)
signed = st.builds(lambda m, negative: -m if negative else m, magnitudes, st.booleans())

# op: (gpunn function, NumPy forward, NumPy local derivatives (d/da, d/db))
BINARY = {
    "add": (lambda a, b: a + b, np.add, lambda a, b: (np.ones_like(a * b), np.ones_like(a * b))),
    "sub": (lambda a, b: a - b, np.subtract, lambda a, b: (np.ones_like(a * b), -np.ones_like(a * b))),
    "mul": (lambda a, b: a * b, np.multiply, lambda a, b: (b + 0 * a, a + 0 * b)),
    "div": (lambda a, b: a / b, np.divide, lambda a, b: (1 / b + 0 * a, -a / b ** 2)),
    # ties send the whole gradient to the first argument (one valid subgradient)
    "maximum": (gpunn.maximum, np.maximum, lambda a, b: (1.0 * (a >= b), 1.0 * (a < b))),
    "minimum": (gpunn.minimum, np.minimum, lambda a, b: (1.0 * (a <= b), 1.0 * (a > b))),
}


@st.composite
def broadcast_pair(draw):
    shapes = draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    a = draw(arrays(np.float64, shapes.input_shapes[0], elements=signed))
    b = draw(arrays(np.float64, shapes.input_shapes[1], elements=signed))
    upstream = draw(arrays(np.float64, shapes.result_shape, elements=signed))
    return a, b, upstream


def check_binary(device, fn, forward, derivatives, a, b, upstream, finite_differences=True):
    """Forward against NumPy; backprop with `upstream` against the NumPy expectation; gradcheck."""
    x, y = to_device(a, device, requires_grad=True), to_device(b, device, requires_grad=True)
    out = fn(x, y)
    assert out.device == device and out.dtype == gpunn.float64
    np.testing.assert_allclose(out.numpy(), forward(a, b), rtol=1e-12, atol=1e-12)
    out.backward(grad=to_device(upstream, device))
    da, db = derivatives(a, b)
    np.testing.assert_allclose(x.grad.numpy(), unbroadcast(upstream * da, a.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), unbroadcast(upstream * db, b.shape), rtol=1e-10, atol=1e-12)
    if finite_differences:
        gradcheck(fn, [x, y])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", BINARY)
@BOUNDED
@given(data=broadcast_pair())
def test_binary_ops_broadcast(device, op, data):
    fn, forward, derivatives = BINARY[op]
    smooth = op not in ("maximum", "minimum")  # finite differences straddle a tie
    check_binary(device, fn, forward, derivatives, *data, finite_differences=smooth)


def test_binary_property_rejects_a_wrong_rule():
    """Negative control: sub whose rule for b forgets the minus sign must fail the check."""
    bad_sub = gpunn.ops.Primitive("bad_sub", lambda xp, x, y: x - y,
                                  lambda xp, g, out, x, y: g, lambda xp, g, out, x, y: g)
    _, forward, derivatives = BINARY["sub"]
    a, b, upstream = np.ones((2, 1)), np.full((3,), 0.5), np.ones((2, 3))
    with pytest.raises(AssertionError):
        check_binary("cpu", lambda x, y: gpunn.apply(bad_sub, x, y), forward, derivatives, a, b, upstream)


@st.composite
def matmul_pair(draw):
    batch = draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=2))
    n, k, m = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    a = draw(arrays(np.float64, batch.input_shapes[0] + (n, k), elements=signed))
    b = draw(arrays(np.float64, batch.input_shapes[1] + (k, m), elements=signed))
    upstream = draw(arrays(np.float64, batch.result_shape + (n, m), elements=signed))
    return a, b, upstream


@pytest.mark.parametrize("device", DEVICES)
@BOUNDED
@given(data=matmul_pair())
def test_batched_matmul_broadcasts(device, data):
    a, b, upstream = data
    x, y = to_device(a, device, requires_grad=True), to_device(b, device, requires_grad=True)
    out = x @ y
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-12)
    out.backward(grad=to_device(upstream, device))
    np.testing.assert_allclose(x.grad.numpy(), unbroadcast(upstream @ np.swapaxes(b, -1, -2), a.shape), rtol=1e-10)
    np.testing.assert_allclose(y.grad.numpy(), unbroadcast(np.swapaxes(a, -1, -2) @ upstream, b.shape), rtol=1e-10)


@st.composite
def reduction_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        axis = tuple(a - ndim if draw(st.booleans()) else a for a in chosen)  # some negative
    keepdims = draw(st.booleans())
    # distinct values: max and min have a unique winner, so they are differentiable there
    size = int(np.prod(shape))
    values = draw(st.permutations(list(range(size))))
    return np.asarray(values, dtype=np.float64).reshape(shape) * 0.37 - 0.5, axis, keepdims


def logsumexp_ref(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "logsumexp": logsumexp_ref}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", REDUCTIONS)
@BOUNDED
@given(case=reduction_case())
def test_reductions_over_random_axes(device, name, case):
    values, axis, keepdims = case
    x = to_device(values, device, requires_grad=True)
    out = getattr(x, name)(axis=axis, keepdims=keepdims)
    expected = REDUCTIONS[name](values, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected) and out.device == device
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    if name in ("max", "min"):  # PyTorch's dim= gives (values, indices), for one int dim
        torch_spelling = getattr(x, name)(dim=axis, keepdim=keepdims).values if isinstance(axis, int) else out
    else:
        torch_spelling = getattr(x, name)(dim=axis, keepdim=keepdims)
    np.testing.assert_allclose(torch_spelling.numpy(), expected, rtol=1e-12, atol=1e-12)
    gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("device", DEVICES)
@BOUNDED
@given(case=reduction_case())
def test_sum_gradient_is_the_upstream_broadcast_back(device, case):
    values, axis, keepdims = case
    x = to_device(values, device, requires_grad=True)
    out = x.sum(axis=axis, keepdims=keepdims)
    upstream = np.arange(1.0, 1.0 + np.prod(out.shape)).reshape(out.shape)
    out.backward(grad=to_device(upstream, device))
    kept = np.sum(values, axis=axis, keepdims=True).shape
    np.testing.assert_array_equal(x.grad.numpy(), np.broadcast_to(upstream.reshape(kept), values.shape))
