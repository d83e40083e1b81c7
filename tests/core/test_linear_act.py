"""linear_act: activation(x @ w.T + b) as one node, and nn.Sequential fusing Linear + activation.

The fused node must give exactly what the two nodes give (values and every gradient), pass
gradcheck, and Sequential must fuse only the exact pairs it knows (a Linear followed by ReLU, Tanh
or Sigmoid), leaving everything else to the modules themselves.
"""

import numpy as np
import pytest
from helpers import names_along_the_output, rng, to_device

import gpunn
import gpunn.functional as F
import gpunn.nn as nn
from gpunn import ops
from gpunn.testing import gradcheck

ACTIVATIONS = ["relu", "tanh", "sigmoid"]
COMPOSED = {"relu": F.relu, "tanh": F.tanh, "sigmoid": F.sigmoid}


def inputs(device, bias=True, dtype="float64", batch=(5,)):
    g = rng(3)
    x = to_device(g.standard_normal(batch + (4,)), device, requires_grad=True, dtype=dtype)
    w = to_device(g.standard_normal((3, 4)), device, requires_grad=True, dtype=dtype)
    b = to_device(g.standard_normal(3), device, requires_grad=True, dtype=dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(device, activation):
    x, w, b = inputs(device)
    assert gradcheck(lambda x, w, b: F.linear_act(x, w, b, activation), [x, w, b])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(5,), (2, 5)], ids=["2d", "3d"])
def test_equals_linear_then_activation(device, activation, bias, batch):
    results = []
    for fused in (True, False):
        x, w, b = inputs(device, bias, batch=batch)
        out = F.linear_act(x, w, b, activation) if fused else COMPOSED[activation](F.linear(x, w, b))
        weights = to_device(rng(4).standard_normal(out.shape), device)
        (out * weights).sum().backward()
        results.append([out.numpy()] + [t.grad.numpy() for t in (x, w, b) if t is not None])
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_a_wrong_activation_rule_fails_gradcheck(monkeypatch):
    """Negative control: the same primitive built with tanh's rule for relu is caught."""
    wrong = ops.linear_act_primitive(ops.linear, {"relu": ops.relu.override(grads=ops.tanh.grads)})
    monkeypatch.setattr(gpunn.device("cpu"), "fast_paths", {})  # else apply() takes the cpu's own linear_act
    x, w, b = inputs("cpu")
    with pytest.raises(AssertionError):
        gradcheck(lambda x, w, b: gpunn.apply(wrong, x, w, b, activation="relu"), [x, w, b])


def test_backward_twice_with_retain_graph_uses_each_incoming_gradient():
    """The pre-activation gradient is remembered per incoming gradient, not once for all."""
    x, w, b = inputs("cpu")
    out = F.linear_act(x, w, b, "tanh")
    out.sum().backward(retain_graph=True)
    first = w.grad.numpy().copy()
    (out * 3).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 4 * first, rtol=1e-12)


def test_unknown_activation_is_refused():
    x, w, b = inputs("cpu")
    with pytest.raises(ValueError, match="relu, tanh, sigmoid"):
        F.linear_act(x, w, b, "gelu")


class MyReLU(nn.ReLU):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("chain", [False, True], ids=["per-layer", "chained"])
def test_sequential_fuses_exactly_linear_followed_by_a_known_activation(chain, monkeypatch):
    """Per layer: a Linear and the known activation after it are one linear_act node. Chained (the
    cpu's default): each run of such layers is one linear_chain node. Either way the numbers and
    gradients are those of the modules run one by one."""
    gpunn.manual_seed(0)
    monkeypatch.setattr(type(gpunn.device("cpu").backend), "chain_layers", chain)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), MyReLU(),
                          nn.Linear(8, 8), nn.Sigmoid(), nn.Identity(), nn.Linear(8, 2))
    x = gpunn.randn(5, 4, requires_grad=True)
    out = model(x)
    if chain:  # Linear+ReLU, Linear+Tanh, Linear: one run; MyReLU; Linear+Sigmoid alone; Identity; Linear
        assert names_along_the_output(out) == ["linear", "linear_act", "mul", "relu", "linear_chain"]
    else:
        assert names_along_the_output(out) == ["linear", "linear_act", "mul", "relu", "linear", "linear_act",
                                               "linear_act"]
    by_hand = x
    for module in model:
        by_hand = module(by_hand)  # each module on its own: no fusion
    np.testing.assert_allclose(out.numpy(), by_hand.numpy(), rtol=1e-6)
    out.sum().backward()
    fused_grads = [p.grad.numpy() for p in model.parameters()]
    model.zero_grad()
    by_hand.sum().backward()
    for a, b in zip(fused_grads, [p.grad.numpy() for p in model.parameters()]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sequential_ending_in_linear_or_with_a_lone_activation():
    gpunn.manual_seed(0)
    for model in (nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.ReLU(), nn.Linear(4, 3), nn.ReLU()),
                  nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3), nn.Sigmoid())):
        x = gpunn.randn(2, 4)
        by_hand = x
        for module in model:
            by_hand = module(by_hand)
        np.testing.assert_allclose(model(x).numpy(), by_hand.numpy(), rtol=1e-6)


def test_a_seed_changed_in_place_between_two_backwards_is_used():
    """The remembered pre-activation gradient belongs to one backward pass: the same seed array,
    changed in place for a second backward(retain_graph=True), gives the new gradient."""
    x, w, b = inputs("cpu")
    out = F.linear_act(x, w, b, "sigmoid")
    seed = gpunn.ones(*out.shape, dtype="float64")
    out.backward(seed, retain_graph=True)
    first = w.grad.numpy().copy()
    seed._array[...] = 3.0  # the same array object, new values
    out.backward(seed)
    np.testing.assert_allclose(w.grad.numpy(), 4 * first, rtol=1e-12)
