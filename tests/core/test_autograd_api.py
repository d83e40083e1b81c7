"""gpunn.autograd.grad, backward(inputs=...) and Tensor.register_hook, against PyTorch (issue 17).

Each case runs the same function under gpunn and under torch; without torch the values recorded
from PyTorch 2.13 are checked.
"""

import numpy as np
import pytest

import gpunn

from helpers import assert_close, to_device

try:
    import torch
except ImportError:
    torch = None

X, W = [1.0, 2.0, -3.0], [0.5, 2.0, 1.0]


def _lib_tensors(lib, *values):
    return [lib.tensor(v, dtype=lib.float64, requires_grad=True) for v in values]


def _grad_case(lib):
    x, w = _lib_tensors(lib, X, W)
    h = x * w
    y = (h * h).sum() + (x ** 3).sum()
    gx, gh = lib.autograd.grad(y, [x, h], retain_graph=True)
    gw, = lib.autograd.grad([y, h.sum()], [w], grad_outputs=[lib.tensor(2.0, dtype=lib.float64), None])
    return [g.detach().numpy() for g in (gx, gh, gw)] + [x.grad, w.grad]


def test_autograd_grad_returns_gradients_and_leaves_grad_alone():
    gx, gh, gw, xgrad, wgrad = _grad_case(gpunn)
    assert xgrad is None and wgrad is None
    np.testing.assert_allclose(gx, [3.5, 28.0, 21.0])
    np.testing.assert_allclose(gh, [1.0, 8.0, -6.0])
    np.testing.assert_allclose(gw, [3.0, 34.0, 33.0])
    if torch is not None:
        for a, b in zip(_grad_case(gpunn)[:3], _grad_case(torch)[:3]):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_autograd_grad_on_devices(device):
    x = to_device(X, device, dtype="float64").requires_grad_()
    (g,) = gpunn.autograd.grad((x * x).sum(), x)
    assert_close(g, [2.0, 4.0, -6.0])
    assert x.grad is None


def test_autograd_grad_unused_inputs_and_refusals():
    x, w = _lib_tensors(gpunn, X, W)
    y = (x * x).sum()
    with pytest.raises(gpunn.GraphError, match="input 1.*allow_unused"):
        gpunn.autograd.grad(y, [x, w], retain_graph=True)
    gx, gw = gpunn.autograd.grad(y, [x, w], allow_unused=True, retain_graph=True)
    assert gw is None and gx is not None
    _, zeros = gpunn.autograd.grad(y, [x, w], materialize_grads=True, retain_graph=True)
    assert np.array_equal(zeros.numpy(), np.zeros(3))
    with pytest.raises(gpunn.GraphError, match="create_graph=True .*not supported"):
        gpunn.autograd.grad(y, x, create_graph=True)
    with pytest.raises(gpunn.GraphError, match="require grad"):
        gpunn.autograd.grad(y, gpunn.ones(3))


def _backward_inputs_case(lib):
    x, w = _lib_tensors(lib, X, W)
    h = x * w
    ((h * h).sum() + x.sum()).backward(inputs=[h, w])
    return x.grad, h.grad.detach().numpy(), w.grad.detach().numpy()


def test_backward_inputs_accumulates_only_into_them():
    xgrad, hgrad, wgrad = _backward_inputs_case(gpunn)
    assert xgrad is None
    np.testing.assert_allclose(hgrad, [1.0, 8.0, -6.0])
    np.testing.assert_allclose(wgrad, [1.0, 16.0, 18.0])
    if torch is not None:
        t = _backward_inputs_case(torch)
        assert t[0] is None
        np.testing.assert_allclose(hgrad, t[1])
        np.testing.assert_allclose(wgrad, t[2])


def _hook_case(lib):
    x, w = _lib_tensors(lib, X, W)
    calls = []
    h = x * w
    h.register_hook(lambda g: g * 10)
    handle = x.register_hook(lambda g: calls.append(g.detach().numpy().copy()))
    x.register_hook(lambda g: g + 1)
    ((h * h).sum() + x.sum()).backward()
    handle.remove()
    (x * 2).sum().backward()
    return x.grad.detach().numpy(), w.grad.detach().numpy(), calls


def test_register_hook_changes_and_sees_gradients_as_torch():
    xgrad, wgrad, calls = _hook_case(gpunn)
    np.testing.assert_allclose(xgrad, [10.0, 165.0, -55.0])
    np.testing.assert_allclose(wgrad, [10.0, 160.0, 180.0])
    assert len(calls) == 1  # once per backward, with the summed gradient; removed before the second
    np.testing.assert_allclose(calls[0], [6.0, 161.0, -59.0])
    if torch is not None:
        t = _hook_case(torch)
        np.testing.assert_allclose(xgrad, t[0])
        np.testing.assert_allclose(wgrad, t[1])
        assert len(t[2]) == 1
        np.testing.assert_allclose(calls[0], t[2][0])


def test_negative_control_a_hook_that_does_nothing_changes_nothing():
    """The hook assertions above depend on the hooks running: with an identity hook the gradient
    is the plain one, which differs from the hooked values."""
    x, w = _lib_tensors(gpunn, X, W)
    h = x * w
    h.register_hook(lambda g: None)
    ((h * h).sum() + x.sum()).backward()
    assert not np.allclose(x.grad.numpy(), [7.0, 162.0, -58.0])  # the hooked first backward
