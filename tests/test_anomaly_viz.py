"""Anomaly mode (loud NaN/inf in backward, naming the op and the user's line), to_dot, compile_step."""

import warnings

import numpy as np
import pytest

import gpunn
from gpunn import ops
from gpunn.tensor import apply


def test_anomaly_names_op_and_user_line():
    x = gpunn.tensor([0.0, 1.0], requires_grad=True)
    with gpunn.detect_anomaly():
        y = (x.sqrt() * 0).sum()  # the line the error must point at
        with pytest.raises(gpunn.AnomalyError) as info, np.errstate(all="ignore"):
            y.backward()
    message = str(info.value)
    assert "'sqrt'" in message
    assert "test_anomaly_viz.py" in message and "x.sqrt() * 0" in message


def test_without_anomaly_mode_nan_flows_silently():
    x = gpunn.tensor([0.0, 1.0], requires_grad=True)
    with np.errstate(all="ignore"):
        (x.sqrt() * 0).sum().backward()
    assert np.isnan(x.grad.numpy()[0])


def test_anomaly_does_not_blame_an_op_that_only_passes_nan_on():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    with gpunn.detect_anomaly(), np.errstate(all="ignore"):
        y = x * 2
        y.backward(gpunn.tensor([np.nan, 1.0]))  # the seed itself is NaN: no op produced it
    assert np.isnan(x.grad.numpy()[0]) and x.grad.numpy()[1] == 2.0


def test_anomaly_records_nothing_when_off():
    x = gpunn.tensor([1.0], requires_grad=True)
    y = x.exp()
    assert y._node.where is None
    with gpunn.detect_anomaly():
        z = x.exp()
    assert "test_anomaly_viz.py" in z._node.where


def test_to_dot_labels_ops_and_shapes():
    w = gpunn.tensor(np.ones((2, 3)), requires_grad=True)
    x = gpunn.tensor(np.ones((4, 3)))
    loss = (x @ w.T).tanh().sum()
    dot = gpunn.viz.to_dot(loss, {w: "w"})
    for piece in ("digraph", "matmul", "tanh", "sum", "permute", "(4, 2)", "w\\nleaf"):
        assert piece in dot
    assert dot.count("->") == 5  # w->permute, permute->matmul, x->matmul, matmul->tanh, tanh->sum


def test_compile_step_eager_on_cpu_matches_manual_step():
    gpunn.manual_seed(0)
    w = gpunn.randn(3, 2, requires_grad=True)

    class Model:
        def parameters(self):
            return [w]

        def __call__(self, x):
            return x @ w

    class SGD:
        def zero_grad(self):
            w.grad = None

        def step(self):
            with gpunn.no_grad():
                w._array = w._array - 0.1 * w.grad._array

    x = gpunn.randn(5, 3)
    y = gpunn.randn(5, 2)
    before = w.numpy()
    step = gpunn.compile_step(Model(), gpunn.functional.mse_loss, SGD())
    assert step.mode == "eager" and "cpu" in step.reason
    with pytest.warns(gpunn.compile.CompileWarning):
        loss = step(x, y)
    expected_grad = 2 * x.numpy().T @ (x.numpy() @ before - y.numpy()) / 10
    np.testing.assert_allclose(w.numpy(), before - 0.1 * expected_grad, rtol=1e-5)
    assert not loss.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(x, y)  # says why only once


def test_matmul_precision_switch_validates():
    assert gpunn.get_float32_matmul_precision() == "highest"
    gpunn.set_float32_matmul_precision("high")
    try:
        assert gpunn.get_float32_matmul_precision() == "high"
    finally:
        gpunn.set_float32_matmul_precision("highest")
    with pytest.raises(ValueError, match="highest"):
        gpunn.set_float32_matmul_precision("medium-ish")


def test_retain_grad_keeps_intermediate_gradients():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 3).retain_grad()
    r = h - 1
    r.retain_grad()
    loss = (r * r).sum()
    loss.backward()
    np.testing.assert_allclose(r.grad.numpy(), 2 * (3 * x.numpy() - 1))
    np.testing.assert_allclose(h.grad.numpy(), r.grad.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 3 * h.grad.numpy())
    assert (x * 2).grad is None  # not retained: PyTorch's behaviour
