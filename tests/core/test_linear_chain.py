"""linear_chain: a run of Linear(+activation) layers as one node, and nn.Sequential chaining them.

The chained node must give what the layers give one by one (values and every gradient; bit for bit
on the cpu, where both run the same products in the same order), pass gradcheck, ask only for the
gradients it needs, refuse what the version check refuses, and leave errors as clear as the
per-layer path's.
"""

import numpy as np
import pytest
from helpers import names_along_the_output, rng, to_device

import gpunn
import gpunn.functional as F
import gpunn.nn as nn
from gpunn import ops
from gpunn.testing import gradcheck

LAYERS = [(4, 6, "tanh"), (6, 5, "relu"), (5, 3, None)]  # (in, out, activation)


def layers(device, bias=(True, True, True), dtype="float64"):
    g = rng(5)
    made = []
    for (n_in, n_out, act), has_bias in zip(LAYERS, bias):
        w = to_device(g.standard_normal((n_out, n_in)), device, requires_grad=True, dtype=dtype)
        b = to_device(g.standard_normal(n_out), device, requires_grad=True, dtype=dtype) if has_bias else None
        made.append((w, b, act))
    return made


def one_by_one(x, made):
    for w, b, act in made:
        x = F.linear(x, w, b) if act is None else F.linear_act(x, w, b, act)
    return x


def test_gradcheck(device):
    made = layers(device, bias=(True, False, True))
    x = to_device(rng(6).standard_normal((3, 4)), device, requires_grad=True)
    params = [t for w, b, _ in made for t in (w, b) if t is not None]

    def chained(x, *params):
        it = iter(params)
        return F.linear_chain(x, [(next(it), next(it) if b is not None else None, act) for _, b, act in made])

    assert gradcheck(chained, [x, *params])


@pytest.mark.parametrize("x_grad", [True, False], ids=["x-grad", "x-no-grad"])
def test_equals_the_layers_one_by_one(device, x_grad):
    results = []
    for chained in (True, False):
        made = layers(device, bias=(True, False, True))
        x = to_device(rng(6).standard_normal((7, 4)), device, requires_grad=x_grad)
        out = F.linear_chain(x, made) if chained else one_by_one(x, made)
        weights = to_device(rng(7).standard_normal(out.shape), device)
        (out * weights).sum().backward()
        grads = [t.grad.numpy() for w, b, _ in made for t in (w, b) if t is not None]
        results.append([out.numpy(), None if x.grad is None else x.grad.numpy(), *grads])
    for got, expected in zip(*results):
        if expected is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)  # (CUDA's fused kernels round apart)


def test_asks_only_for_the_gradients_it_needs(monkeypatch):
    """A frozen layer and an input without requires_grad get no gradient, and the chain's backward
    is told so (needs), so it skips their products."""
    seen = []
    cpu = gpunn.device("cpu")
    chain = cpu.fast_paths["linear_chain"]

    def spy(xp, g, saved, *arrays, needs, activations):
        seen.append(list(needs))
        return chain.backward(xp, g, saved, *arrays, needs=needs, activations=activations)

    made = layers("cpu")
    made[0][0].requires_grad_(False)
    x = gpunn.tensor(rng(6).standard_normal((2, 4)))
    monkeypatch.setitem(cpu.fast_paths, "linear_chain", chain.replace(backward=spy))  # apply() looks it up
    out = F.linear_chain(x, made)
    out.sum().backward()
    assert seen == [[False, False, True, True, True, True, True]]
    assert made[0][0].grad is None and made[0][1].grad is not None


def test_negative_control_a_wrong_joint_rule_fails_gradcheck():
    """The same chain whose backward forgets the last activation's derivative is caught."""
    wrong_table = dict(ops.ACTIVATIONS, relu=ops.relu.replace(grads=(lambda xp, g, out, x: g,)))
    wrong = ops.linear_chain_primitive(ops.linear, wrong_table).replace(name="wrong_chain")  # not overridden
    made = layers("cpu")
    x = gpunn.tensor(rng(6).standard_normal((3, 4)), dtype="float64", requires_grad=True)
    params = [t for w, b, _ in made for t in (w, b)]
    acts = tuple(act for *_, act in made)
    with pytest.raises(AssertionError):
        gradcheck(lambda x, *p: gpunn.apply(wrong, x, *p, activations=acts), [x, *params])


def test_a_weight_changed_in_place_after_the_forward_is_refused():
    made = layers("cpu")
    x = gpunn.tensor(rng(6).standard_normal((2, 4)))
    out = F.linear_chain(x, made)
    with gpunn.no_grad():
        made[1][0].mul_(2)
    with pytest.raises(gpunn.GraphError, match="modified by an in-place operation"):
        out.sum().backward()


def test_sequential_chains_runs_and_says_which_layer_does_not_fit():
    """On the cpu nn.MLP is one node; a width mismatch inside the run is reported as the per-layer
    path reports it (the Linear's in_features), not as a failure of the fused node."""
    model = nn.MLP([4, 8, 8, 3])
    out = model(gpunn.randn(5, 4))
    assert names_along_the_output(out) == ["linear_chain"]
    broken = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(7, 3))
    with pytest.raises(gpunn.ShapeError, match="in_features = 7"):
        broken(gpunn.randn(5, 4))


def test_sequential_does_not_chain_a_layer_with_hooks():
    model = nn.MLP([4, 8, 8, 3])
    seen = []
    model[2].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    out = model(gpunn.randn(5, 4))
    assert seen == [(5, 8)]
    assert names_along_the_output(out) == ["linear", "relu", "linear", "linear_act"]


def test_chained_training_matches_per_layer_training(monkeypatch):
    """Ten SGD steps of nn.MLP, chained and per layer: the same parameters, bit for bit."""
    finals = []
    for chain in (True, False):
        monkeypatch.setattr(type(gpunn.device("cpu").backend), "chain_layers", chain)
        gpunn.manual_seed(0)
        model = nn.MLP([6, 16, 16, 4])
        opt = gpunn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = gpunn.randn(32, 6), gpunn.randint(0, 4, (32,))
        for _ in range(10):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        finals.append([p.numpy().copy() for p in model.parameters()])
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)


def test_anomaly_mode_names_the_chain_and_the_users_line():
    """The joint rule's gradients are checked like any rule's: an inf made from a finite incoming
    gradient (3e38 * 10 overflows float32) names linear_chain and the line that ran the model."""
    model = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1))
    with gpunn.no_grad():
        model[0].weight.fill_(1e-30), model[0].bias.zero_(), model[1].weight.fill_(3e38), model[1].bias.zero_()
    with gpunn.detect_anomaly():
        out = model(gpunn.ones(1, 1))
        assert np.isfinite(out.numpy()).all()
        with pytest.raises(gpunn.AnomalyError, match="'linear_chain'") as info, np.errstate(all="ignore"):
            (out * 10).sum().backward()
    assert "test_linear_chain.py" in str(info.value) and "model(gpunn.ones(1, 1))" in str(info.value)
