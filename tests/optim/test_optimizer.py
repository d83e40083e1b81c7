"""gpunn.optim's optimizers: each against a plain-NumPy transcription of PyTorch's documented
algorithm (and torch.optim itself when installed), param groups, state_dict round trips across
devices, validation (the learning-rate schedulers are in test_lr_scheduler.py).
"""


import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
import gpunn.optim as optim
from gpunn.errors import DTypeError
from gpunn.optim import lr_scheduler

SHAPES = [(3, 4), (4,)]
STEPS = 6


def initial_values():
    rng = np.random.default_rng(10)
    return [rng.standard_normal(shape) for shape in SHAPES]


def gradient(step, index, p):
    """A gradient that depends on the current parameter values (a quadratic with a moving
    target), so any wrong update changes every later gradient too."""
    rng = np.random.default_rng(100 + 10 * step + index)
    return rng.uniform(0.5, 1.5, p.shape) * p + rng.standard_normal(p.shape)


def run_gpunn(make_optimizer, device, steps=STEPS, dtype="float64"):
    params = [gpunn.tensor(v, dtype=dtype, device=device, requires_grad=True) for v in initial_values()]
    opt = make_optimizer(params)
    for k in range(steps):
        for i, p in enumerate(params):
            p.grad = gpunn.tensor(gradient(k, i, p.numpy().astype(np.float64)), dtype=dtype, device=device)
        opt.step()
    return [p.numpy() for p in params]


def run_reference(update, steps=STEPS):
    params = initial_values()
    states = [{} for _ in params]
    for k in range(steps):
        for i in range(len(params)):
            params[i] = update(params[i], gradient(k, i, params[i]), states[i])
    return params


def run_torch(torch_class, kwargs, steps=STEPS):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(v, requires_grad=True) for v in initial_values()]
    opt = torch_class(params, **kwargs)
    for k in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.tensor(gradient(k, i, p.detach().numpy()))
        opt.step()
    return [p.detach().numpy() for p in params]


def assert_same_trajectory(ours, expected, rtol=1e-10):
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)


# --- NumPy references, transcribed from the algorithm boxes of PyTorch's documentation ---------------


def sgd_reference(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
    def update(p, g, state):
        g = -g if maximize else g
        g = g + weight_decay * p
        if momentum != 0:
            state["b"] = g.copy() if "b" not in state else momentum * state["b"] + (1 - dampening) * g
            g = g + momentum * state["b"] if nesterov else state["b"]
        return p - lr * g
    return update


def adam_reference(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                   decoupled=False):
    beta1, beta2 = betas

    def update(p, g, state):
        t = state["t"] = state.get("t", 0) + 1
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
        state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g ** 2
        m_hat = state["m"] / (1 - beta1 ** t)
        if amsgrad:
            state["v_max"] = np.maximum(state.get("v_max", 0.0), state["v"])
            v_hat = state["v_max"] / (1 - beta2 ** t)
        else:
            v_hat = state["v"] / (1 - beta2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return update


def rmsprop_reference(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                      maximize=False):
    def update(p, g, state):
        g = -g if maximize else g
        g = g + weight_decay * p
        state["v"] = alpha * state.get("v", 0.0) + (1 - alpha) * g ** 2
        v_tilde = state["v"]
        if centered:
            state["g_ave"] = alpha * state.get("g_ave", 0.0) + (1 - alpha) * g
            v_tilde = v_tilde - state["g_ave"] ** 2
        if momentum > 0:
            state["b"] = momentum * state.get("b", 0.0) + g / (np.sqrt(v_tilde) + eps)
            return p - lr * state["b"]
        return p - lr * g / (np.sqrt(v_tilde) + eps)
    return update


def adagrad_reference(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                      maximize=False):
    def update(p, g, state):
        t = state["t"] = state.get("t", 0) + 1
        g = -g if maximize else g
        clr = lr / (1 + (t - 1) * lr_decay)
        g = g + weight_decay * p
        state["sum"] = state.get("sum", initial_accumulator_value) + g ** 2
        return p - clr * g / (np.sqrt(state["sum"]) + eps)
    return update


CASES = [
    ("SGD", dict(lr=0.1), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), sgd_reference),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1), sgd_reference),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True), sgd_reference),
    ("Adam", dict(lr=0.1), adam_reference),
    ("Adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-6), adam_reference),
    ("Adam", dict(lr=0.1, amsgrad=True), adam_reference),
    ("Adam", dict(lr=0.1, weight_decay=0.1), adam_reference),
    ("Adam", dict(lr=0.1, maximize=True, amsgrad=True), adam_reference),
    ("AdamW", dict(lr=0.1), lambda **kw: adam_reference(decoupled=True, weight_decay=1e-2, **kw)),
    ("AdamW", dict(lr=0.1, weight_decay=0.5, amsgrad=True), lambda **kw: adam_reference(decoupled=True, **kw)),
    ("RMSprop", dict(lr=0.01), rmsprop_reference),
    ("RMSprop", dict(lr=0.01, centered=True), rmsprop_reference),
    ("RMSprop", dict(lr=0.01, momentum=0.9), rmsprop_reference),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1), rmsprop_reference),
    ("Adagrad", dict(lr=0.1), adagrad_reference),
    ("Adagrad", dict(lr=0.1, lr_decay=0.5), adagrad_reference),
    ("Adagrad", dict(lr=0.1, weight_decay=0.2, initial_accumulator_value=0.3), adagrad_reference),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True), adagrad_reference),
]
CASE_IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw, _ in CASES]


@pytest.mark.parametrize("name,kwargs,reference", CASES, ids=CASE_IDS)
def test_optimizer_matches_documented_algorithm(device, name, kwargs, reference):
    ours = run_gpunn(lambda ps: getattr(optim, name)(ps, **kwargs), device)
    assert_same_trajectory(ours, run_reference(reference(**kwargs)))


@pytest.mark.parametrize("name,kwargs,reference", CASES, ids=CASE_IDS)
def test_optimizer_matches_torch(name, kwargs, reference):
    torch = pytest.importorskip("torch")
    ours = run_gpunn(lambda ps: getattr(optim, name)(ps, **kwargs), "cpu")
    assert_same_trajectory(ours, run_torch(getattr(torch.optim, name), kwargs), rtol=1e-9)


def test_float32_updates_stay_float32_and_close(device):
    ours = run_gpunn(lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True), device, dtype="float32")
    assert all(v.dtype == np.float32 for v in ours)
    assert_same_trajectory(ours, run_reference(adam_reference(lr=0.1, amsgrad=True)), rtol=1e-4)


class AdamWithoutBiasCorrection(optim.Adam):
    """A deliberately wrong Adam (the bias corrections left out): the negative control."""

    def step(self, closure=None):
        for group in self.param_groups:
            (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                xp, g = p.device.xp, p.grad._array
                entries = self.state.setdefault(p, {"m": xp.zeros_like(p._array), "v": xp.zeros_like(p._array)})
                entries["m"] = beta1 * entries["m"] + (1 - beta1) * g
                entries["v"] = beta2 * entries["v"] + (1 - beta2) * g * g
                p._array = p._array - lr * entries["m"] / (xp.sqrt(entries["v"]) + eps)


class SGDDampingTheFirstStep(optim.SGD):
    """A subtly wrong SGD: momentum buffer initialised to (1 - dampening) * g instead of g."""

    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:
                g = p.grad._array
                buf = self.state.get(p)
                buf = (1 - tau) * g if buf is None else mu * buf + (1 - tau) * g
                self.state[p] = buf
                p._array = p._array - lr * buf


def test_negative_controls_fail_the_reference_comparison(device):
    wrong = run_gpunn(lambda ps: AdamWithoutBiasCorrection(ps, lr=0.1), device)
    with pytest.raises(AssertionError):
        assert_same_trajectory(wrong, run_reference(adam_reference(lr=0.1)))
    wrong = run_gpunn(lambda ps: SGDDampingTheFirstStep(ps, lr=0.1, momentum=0.9, dampening=0.5), device)
    with pytest.raises(AssertionError):
        assert_same_trajectory(wrong, run_reference(sgd_reference(lr=0.1, momentum=0.9, dampening=0.5)))
    swapped = run_gpunn(lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.3), device)  # coupled decay != AdamW
    with pytest.raises(AssertionError):
        assert_same_trajectory(swapped, run_reference(adam_reference(lr=0.1, weight_decay=0.3, decoupled=True)))


# --- param groups, state, in-place updates ----------------------------------------------------------


def test_param_groups_use_their_own_hyperparameters(device):
    def make(ps):
        return optim.SGD([{"params": [ps[0]]}, {"params": ps[1], "lr": 0.01, "momentum": 0.5}], lr=0.1)

    ours = run_gpunn(make, device)
    first = run_reference(sgd_reference(lr=0.1))[0]
    second = run_reference(sgd_reference(lr=0.01, momentum=0.5))[1]
    assert_same_trajectory(ours, [first, second])
    opt = make([gpunn.zeros(2, requires_grad=True), gpunn.zeros(2, requires_grad=True)])
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["nesterov"] is False


def test_add_param_group_and_params_without_grad():
    a, b = gpunn.ones(2, requires_grad=True), gpunn.ones(3, requires_grad=True)
    opt = optim.Adam([a], lr=0.5)
    opt.add_param_group({"params": [b], "lr": 0.0})
    a.grad = gpunn.ones(2)
    opt.step()
    assert b not in opt.state and a in opt.state and opt.state[a]["step"] == 1
    assert (b.numpy() == 1).all() and (a.numpy() < 1).all()
    with pytest.raises(ValueError, match="same tensor"):
        opt.add_param_group({"params": [a]})


def test_state_lives_on_the_parameters_device_and_updates_in_place(device):
    p = gpunn.tensor(np.ones((4, 3)), dtype="float32", device=device, requires_grad=True)
    opt = optim.Adam([p], amsgrad=True)
    for k in range(3):
        p.grad = gpunn.full((4, 3), 0.5, device=device)
        array_before = p._array
        opt.step()
        # updated in place: memory stays put across steps, except that a fused optimizer (the
        # default on CUDA) moves its parameters into one flat buffer at its first step
        if k == 0 and getattr(device.backend, "fuse_by_default", False):
            flat = opt._flat[0]
            assert flat.holds(p) and p._array is flat._views["param"][0]
        else:
            assert p._array is array_before
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        entry = opt.state[p][name]
        assert isinstance(entry, gpunn.Tensor) and entry.device == device and entry.dtype == "float32"
    assert opt.state[p]["step"] == 3 and isinstance(opt.state[p]["step"], int)
    sgd = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = gpunn.full((4, 3), 0.5, device=device)
    sgd.step()
    buffer = sgd.state[p]["momentum_buffer"]._array
    sgd.step()
    assert sgd.state[p]["momentum_buffer"]._array is buffer and buffer is not p.grad._array


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_state_is_a_defaultdict_like_pytorchs(name):
    p = gpunn.ones(2, requires_grad=True)
    opt = getattr(optim, name)([p], lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    assert opt.state[p] == {}  # looking does not break the first step
    assert opt.state_dict()["state"] == {}
    p.grad = gpunn.ones(2)
    opt.step()
    assert opt.state[p] and (p.numpy() < 1).all()


def test_zero_grad_and_closure():
    p = gpunn.ones(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with gpunn.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == 2.0
    np.testing.assert_allclose(p.numpy(), [0.0, 0.0])
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.numpy().any()
    opt.zero_grad()
    assert p.grad is None


def test_state_dict_layout_is_pytorchs():
    model = nn.MLP([3, 4, 2])
    opt = optim.Adam([{"params": [model[0].weight, model[0].bias]}, {"params": model[2].parameters(), "lr": 0.1}])
    model(gpunn.randn(5, 3)).sum().backward()
    model[2].bias.grad = None  # no step for it: no state
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sorted(sd["state"]) == [0, 1, 2]
    assert sd["param_groups"][0]["params"] == [0, 1] and sd["param_groups"][1]["params"] == [2, 3]
    assert list(sd["param_groups"][1])[-1] == "params"
    assert sd["param_groups"][1]["lr"] == 0.1 and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    entry = sd["state"][2]
    assert set(entry) == {"step", "exp_avg", "exp_avg_sq"} and entry["step"] == 1
    assert isinstance(entry["exp_avg"], gpunn.Tensor) and entry["exp_avg"].shape == (2, 4)


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("Adam", dict(lr=0.05, amsgrad=True)), ("AdamW", dict(lr=0.05)),
                                         ("RMSprop", dict(momentum=0.5, centered=True)),
                                         ("Adagrad", dict(lr_decay=0.1))])
@pytest.mark.parametrize("source,target", [("cpu", "cpu"), ("cpu", "strict:1"), ("strict:1", "strict")])
def test_state_dict_round_trip_continues_identically(name, kwargs, source, target):
    def fresh(device):
        params = [gpunn.tensor(v, device=device, requires_grad=True) for v in initial_values()]
        return params, getattr(optim, name)(params, **kwargs)

    def train(params, opt, steps):
        for k in steps:
            for i, p in enumerate(params):
                p.grad = gpunn.tensor(gradient(k, i, p.numpy()), device=p.device)
            opt.step()

    params, opt = fresh(source)
    train(params, opt, range(3))
    saved = opt.state_dict()
    resumed_params, resumed = fresh(target)
    with gpunn.no_grad():  # as in PyTorch: an in-place copy into a leaf that requires grad
        for p, q in zip(params, resumed_params):
            q.copy_(p)
    resumed.load_state_dict(saved)
    for entries in resumed.state.values():
        for value in entries.values():
            if isinstance(value, gpunn.Tensor):
                assert value.device == target
    train(params, opt, range(3, 6))
    train(resumed_params, resumed, range(3, 6))
    for p, q in zip(params, resumed_params):
        np.testing.assert_array_equal(p.numpy(), q.numpy())  # same NumPy kernels underneath: bitwise
    uninterrupted = run_gpunn(lambda ps: getattr(optim, name)(ps, **kwargs), "cpu")
    for p, expected in zip(params, uninterrupted):
        np.testing.assert_array_equal(p.numpy(), expected)


def test_load_state_dict_copies_casts_and_checks_groups():
    p = gpunn.ones(3, dtype="float64", requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    saved = {"state": {"0": {"momentum_buffer": np.full(3, 2.0, dtype=np.float32)}},
             "param_groups": [{"lr": 0.5, "momentum": 0.9, "dampening": 0, "nesterov": False, "weight_decay": 0,
                               "maximize": False, "params": [0]}]}
    opt.load_state_dict(saved)
    buf = opt.state[p]["momentum_buffer"]
    assert buf.dtype == "float64" and opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["params"][0] is p
    saved["state"]["0"]["momentum_buffer"][:] = 7.0
    assert (buf.numpy() == 2.0).all()
    two = optim.SGD([p, gpunn.ones(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"sizes \[1\].*\[2\]"):
        two.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict({"weights": []})


# --- validation --------------------------------------------------------------------------------------


def test_rejects_parameters_that_cannot_be_optimized():
    leaf = gpunn.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="parameter 1 of group 0 is not a leaf"):
        optim.SGD([leaf, leaf * 2], lr=0.1)
    with pytest.raises(DTypeError, match="floating-point"):
        optim.SGD([gpunn.tensor([1, 2])], lr=0.1)
    with pytest.raises(TypeError, match="not a gpunn.Tensor"):
        optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="empty params"):
        optim.SGD([{"params": []}], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(leaf, lr=0.1)
    with pytest.raises(TypeError, match="set"):
        optim.SGD({leaf}, lr=0.1) if False else optim.SGD([{"params": {leaf}}], lr=0.1)
    with pytest.raises(ValueError, match="same tensor"):
        optim.SGD([{"params": [leaf]}, {"params": [leaf], "lr": 1.0}], lr=0.1)
    model = nn.MLP([2, 2])
    params = model.parameters()
    optim.SGD(params, lr=0.1)
    with pytest.raises(ValueError, match="consumed"):
        optim.SGD(params, lr=0.1)  # a generator used twice is empty the second time


@pytest.mark.parametrize("make,argument", [
    (lambda ps: optim.SGD(ps, lr=-0.1), "lr"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda ps: optim.Adam(ps, lr=-1e-3), "lr"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.1), "weight_decay"),
    (lambda ps: optim.RMSprop(ps, alpha=1.5), "alpha"),
    (lambda ps: optim.RMSprop(ps, momentum=-1), "momentum"),
    (lambda ps: optim.Adagrad(ps, lr_decay=-0.1), "lr_decay"),
    (lambda ps: optim.Adagrad(ps, initial_accumulator_value=-1), "initial_accumulator_value"),
    (lambda ps: optim.SGD([{"params": ps, "lr": -1.0}], lr=0.1), "lr"),
])
def test_rejects_bad_hyperparameters(make, argument):
    with pytest.raises(ValueError, match=argument):
        make([gpunn.ones(2, requires_grad=True)])


def test_repr_lists_groups():
    text = repr(optim.SGD([gpunn.ones(1, requires_grad=True)], lr=0.1))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    lr: 0.1" in text and "momentum: 0" in text


def test_adam_trains_moons_with_a_schedule(device):
    from gpunn.datasets import moons

    X, y = moons(200, noise=0.1, seed=1)
    gpunn.manual_seed(0)
    model = nn.MLP([2, 32, 32, 2], activation="tanh", device=device)
    opt = optim.Adam(model.parameters(), lr=0.02)
    scheduler = lr_scheduler.StepLR(opt, step_size=100, gamma=0.5)
    inputs, targets = gpunn.tensor(X, dtype="float32", device=device), gpunn.tensor(y, device=device)
    for _ in range(300):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * 0.125)
    accuracy = (model(inputs).argmax(axis=1) == targets).numpy().mean()
    assert accuracy > 0.95, f"moons train accuracy {accuracy:.3f} on {device}"
