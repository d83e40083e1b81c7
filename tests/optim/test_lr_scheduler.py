"""gpunn.optim.lr_scheduler: each scheduler against the closed form written from PyTorch's
documentation, against torch's lr sequence when installed (hard-coded PyTorch values otherwise),
state_dict round trips and resumes, and argument checks.
"""

import math
import warnings

import numpy as np
import pytest

import gpunn
import gpunn.optim as optim
from gpunn.optim import lr_scheduler


def _optimizer(lr=0.1, groups=1):
    return optim.SGD([{"params": [gpunn.ones(1, requires_grad=True)], "lr": lr * (i + 1)} for i in range(groups)],
                     lr=lr)


def _lrs(scheduler, epochs):
    """The learning rate of each group at epochs 0..epochs-1 (construction performs epoch 0)."""
    seen = [scheduler.get_last_lr()]
    for _ in range(epochs - 1):
        scheduler.optimizer.step()
        scheduler.step()
        seen.append(scheduler.get_last_lr())
    return np.array(seen)


def closed_forms():
    """(gpunn scheduler factory, torch factory name and kwargs, lr(base, epoch)) written from the docs."""
    return [
        (lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5), ("StepLR", dict(step_size=3, gamma=0.5)),
         lambda b, t: b * 0.5 ** (t // 3)),
        (lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.1),
         ("MultiStepLR", dict(milestones=[2, 5], gamma=0.1)), lambda b, t: b * 0.1 ** ((t >= 2) + (t >= 5))),
        (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9), ("ExponentialLR", dict(gamma=0.9)),
         lambda b, t: b * 0.9 ** t),
        (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
         ("CosineAnnealingLR", dict(T_max=10, eta_min=0.001)),
         lambda b, t: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2),
        (lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4),
         ("LinearLR", dict(start_factor=0.25, total_iters=4)), lambda b, t: b * (0.25 + 0.75 * min(t, 4) / 4)),
    ]


@pytest.mark.parametrize("index", range(5), ids=["StepLR", "MultiStepLR", "ExponentialLR", "Cosine", "LinearLR"])
def test_scheduler_follows_closed_form(index):
    make, _, formula = closed_forms()[index]
    opt = _optimizer(groups=2)
    scheduler = make(opt)
    assert scheduler.last_epoch == 0 and [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.2]
    seen = _lrs(scheduler, 25)
    expected = np.array([[formula(b, t) for b in (0.1, 0.2)] for t in range(25)])
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert opt.param_groups[1]["lr"] == seen[-1, 1]
    with pytest.raises(AssertionError):  # negative control: one epoch late is caught
        np.testing.assert_allclose(seen[1:], expected[:-1], rtol=1e-12)


@pytest.mark.parametrize("index", range(5), ids=["StepLR", "MultiStepLR", "ExponentialLR", "Cosine", "LinearLR"])
def test_scheduler_agrees_with_torch(index):
    torch = pytest.importorskip("torch")
    make, (name, kwargs), _ = closed_forms()[index]
    theirs_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **kwargs)
    expected = [theirs.get_last_lr()[0]]
    for _ in range(29):
        theirs_opt.step()
        theirs.step()
        expected.append(theirs.get_last_lr()[0])
    np.testing.assert_allclose(_lrs(make(_optimizer()), 30)[:, 0], expected, rtol=1e-9, atol=1e-15)


def test_scheduler_state_dict_round_trip():
    first = lr_scheduler.CosineAnnealingLR(_optimizer(), T_max=8)
    _lrs(first, 4)
    saved = first.state_dict()
    assert "optimizer" not in saved and saved["last_epoch"] == 3
    opt = _optimizer()
    opt.load_state_dict(first.optimizer.state_dict())
    resumed = lr_scheduler.CosineAnnealingLR(opt, T_max=8, last_epoch=2)  # resuming needs initial_lr
    resumed.load_state_dict(saved)
    np.testing.assert_allclose(_lrs(resumed, 6), _lrs(first, 6), rtol=0)
    with pytest.raises(ValueError, match="initial_lr"):
        lr_scheduler.StepLR(_optimizer(), step_size=2, last_epoch=5)


def test_reduce_on_plateau_patience_cooldown_and_min_lr():
    opt = _optimizer(lr=1.0)
    plateau = lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    lrs = []
    for metric in [5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]:
        plateau.step(metric)
        lrs.append(plateau.get_last_lr()[0])
    # epochs 3, 4, 5 are bad (3 > patience 2): halve at the 3rd; epoch 6 is cooldown; 7, 8 bad, 9 improves;
    # 10-12 bad: halve; 13 cooldown; 14-16 bad: halve, but not below min_lr
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2]
    assert opt.param_groups[0]["lr"] == 0.2


def test_reduce_on_plateau_modes_and_thresholds():
    opt = _optimizer(lr=1.0)
    plateau = lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, threshold=0.1, threshold_mode="abs")
    plateau.step(1.0)
    plateau.step(1.05)  # not better than best + 0.1: reduced at once (patience 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    plateau.step(1.2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and plateau.best == 1.2
    rel = lr_scheduler.ReduceLROnPlateau(_optimizer(lr=1.0), patience=0, threshold=0.1)
    rel.step(gpunn.tensor(10.0))  # a 0-d tensor is read once
    rel.step(9.5)  # only 5% better, rel threshold asks for 10%
    assert rel.get_last_lr() == [pytest.approx(0.1)]
    with pytest.raises(ValueError, match="factor"):
        lr_scheduler.ReduceLROnPlateau(_optimizer(), factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        lr_scheduler.ReduceLROnPlateau(_optimizer(), mode="lowest")


def test_reduce_on_plateau_agrees_with_torch_and_round_trips():
    torch = pytest.importorskip("torch")
    metrics = [3.0, 2.0, 2.1, 2.0, 1.9999, 2.5, 2.2, 1.0, 1.0, 1.0, 1.0, 0.9, 0.95, 0.97, 0.99, 1.2, 1.3, 0.5]
    kwargs = dict(factor=0.3, patience=1, cooldown=2, min_lr=1e-3, threshold=1e-3)
    theirs_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kwargs)
    ours = lr_scheduler.ReduceLROnPlateau(_optimizer(lr=0.5), **kwargs)
    for k, m in enumerate(metrics):
        theirs.step(m)
        ours.step(m)
        assert ours.get_last_lr()[0] == pytest.approx(theirs_opt.param_groups[0]["lr"], rel=1e-12), k
        if k == 8:  # swap in a resumed copy mid-way
            opt = _optimizer(lr=0.5)
            opt.load_state_dict(ours.optimizer.state_dict())
            resumed = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
            resumed.load_state_dict(ours.state_dict())
            ours = resumed


# --- LambdaLR, MultiplicativeLR, OneCycleLR ---------------------------------------------------------


class Halving:
    """A callable object (not a function): its attributes are what a LambdaLR state_dict saves."""

    def __init__(self, every):
        self.every = every

    def __call__(self, epoch):
        return 0.5 ** (epoch // self.every)


def test_lambda_lr_and_multiplicative_lr_follow_their_definitions():
    opt = _optimizer(groups=2)
    lambdas = [lambda t: 1 / (1 + t), lambda t: 0.9 ** t]
    seen = _lrs(lr_scheduler.LambdaLR(opt, lambdas), 12)
    expected = np.array([[0.1 / (1 + t), 0.2 * 0.9 ** t] for t in range(12)])
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    with pytest.raises(AssertionError):  # negative control: one epoch late is caught
        np.testing.assert_allclose(seen[1:], expected[:-1], rtol=1e-12)
    factor = lambda t: 1.1 if t % 3 else 0.5  # noqa: E731
    seen = _lrs(lr_scheduler.MultiplicativeLR(_optimizer(), factor), 12)[:, 0]
    expected = [0.1]
    for t in range(1, 12):
        expected.append(expected[-1] * factor(t))  # construction keeps the lr; step t multiplies by factor(t)
    np.testing.assert_allclose(seen, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["LambdaLR", "MultiplicativeLR"])
def test_lambda_schedulers_agree_with_torch(name):
    torch = pytest.importorskip("torch")
    lambdas = [lambda t: 0.95 ** t + 0.01 * (t % 4), Halving(3)]
    theirs_opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (0.1, 0.2)])
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, lambdas)
    expected = [theirs.get_last_lr()]
    for _ in range(19):
        theirs_opt.step()
        theirs.step()
        expected.append(theirs.get_last_lr())
    ours = getattr(lr_scheduler, name)(_optimizer(groups=2), lambdas)
    np.testing.assert_allclose(_lrs(ours, 20), expected, rtol=1e-12)


def test_lambda_lr_state_dict_keeps_callable_objects_but_not_functions():
    schedule = Halving(2)
    first = lr_scheduler.LambdaLR(_optimizer(groups=2), [lambda t: 1.0, schedule])
    _lrs(first, 5)
    saved = first.state_dict()
    assert saved["lr_lambdas"] == [None, {"every": 2}] and "optimizer" not in saved and saved["last_epoch"] == 4
    schedule.every = 100  # load_state_dict restores the object's attributes
    opt = _optimizer(groups=2)
    opt.load_state_dict(first.optimizer.state_dict())
    resumed = lr_scheduler.LambdaLR(opt, [lambda t: 1.0, schedule])
    resumed.load_state_dict(saved)
    assert schedule.every == 2 and saved["lr_lambdas"] == [None, {"every": 2}]  # the dict is not consumed
    np.testing.assert_allclose(_lrs(resumed, 6), _lrs(first, 6), rtol=0)
    multiplicative = lr_scheduler.MultiplicativeLR(_optimizer(), lambda t: 0.9)
    _lrs(multiplicative, 4)
    opt = _optimizer()
    opt.load_state_dict(multiplicative.optimizer.state_dict())  # the recursive lr lives in the optimizer
    again = lr_scheduler.MultiplicativeLR(opt, lambda t: 0.9)
    again.load_state_dict(multiplicative.state_dict())
    np.testing.assert_allclose(_lrs(again, 5), _lrs(multiplicative, 5), rtol=0)


def test_lambda_schedulers_check_their_functions():
    with pytest.raises(ValueError, match="3 lr_lambda values for 2 param groups"):
        lr_scheduler.LambdaLR(_optimizer(groups=2), [abs, abs, abs])
    with pytest.raises(TypeError, match="function of the epoch"):
        lr_scheduler.MultiplicativeLR(_optimizer(), 0.9)
    with pytest.raises(TypeError, match="gpunn Optimizer"):
        lr_scheduler.LambdaLR(object(), lambda t: 1.0)


def _one_cycle_trace(scheduler, steps):
    """(lr, momentum) of group 0 that each of `steps` optimizer steps uses (schedule steps 0..steps-1)."""
    group = scheduler.optimizer.param_groups[0]
    trace = []
    for k in range(steps):
        momentum = group["betas"][0] if "betas" in group else group.get("momentum")
        trace.append((group["lr"], momentum))
        scheduler.optimizer.step()
        if k < steps - 1:
            scheduler.step()
    return np.array(trace, dtype=float)


ONE_CYCLE = {  # name: (optimizer name, its kwargs, OneCycleLR kwargs)
    "sgd-momentum": ("SGD", {"lr": 0.1, "momentum": 0.9}, {"max_lr": 0.5, "total_steps": 40}),
    "adam-betas": ("Adam", {"lr": 0.1}, {"max_lr": 0.01, "total_steps": 33, "pct_start": 0.25}),
    "linear": ("SGD", {"lr": 0.1, "momentum": 0.9}, {"max_lr": 1.0, "total_steps": 30, "anneal_strategy": "linear"}),
    "three-phase": ("Adam", {"lr": 0.1}, {"max_lr": 0.3, "epochs": 5, "steps_per_epoch": 7, "three_phase": True,
                                         "div_factor": 10.0, "final_div_factor": 100.0}),
    "no-momentum": ("Adagrad", {"lr": 0.1}, {"max_lr": 0.2, "total_steps": 20, "cycle_momentum": False}),
    "rmsprop": ("RMSprop", {"lr": 0.1}, {"max_lr": 0.2, "total_steps": 24, "base_momentum": 0.5,
                                         "max_momentum": 0.8}),
}


def _torch_one_cycle_trace(torch, name):
    optimizer, opt_kwargs, kwargs = ONE_CYCLE[name]
    opt = getattr(torch.optim, optimizer)([torch.zeros(1, requires_grad=True)], **opt_kwargs)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, **kwargs)
    return _one_cycle_trace(scheduler, scheduler.total_steps + 1), kwargs


def _one_cycle(name, cls=None):
    optimizer, opt_kwargs, kwargs = ONE_CYCLE[name]
    opt = getattr(optim, optimizer)([gpunn.ones(1, requires_grad=True)], **opt_kwargs)
    return (cls or lr_scheduler.OneCycleLR)(opt, **kwargs)


class _OneCycleOneStepLate(lr_scheduler.OneCycleLR):
    """A deliberately wrong schedule for the negative control: each step uses the previous step's values."""

    def get_lr(self):
        self.last_epoch -= 1
        try:
            return super().get_lr() if self.last_epoch >= 0 else [g["initial_lr"] for g in self.optimizer.param_groups]
        finally:
            self.last_epoch += 1


@pytest.mark.parametrize("name", list(ONE_CYCLE))
def test_one_cycle_agrees_with_torch_step_by_step(name):
    torch = pytest.importorskip("torch")
    expected, _ = _torch_one_cycle_trace(torch, name)
    scheduler = _one_cycle(name)
    np.testing.assert_allclose(_one_cycle_trace(scheduler, len(expected)), expected, rtol=1e-13, atol=0)
    with pytest.raises(AssertionError):  # negative control: a schedule one step late is caught
        np.testing.assert_allclose(_one_cycle_trace(_one_cycle(name, _OneCycleOneStepLate), len(expected)),
                                   expected, rtol=1e-13, atol=0)


def test_one_cycle_shape_without_torch():
    """The documented shape: start at max_lr / div_factor with max_momentum, peak at step
    pct_start * total_steps - 1 with base_momentum, end at start / final_div_factor."""
    opt = optim.SGD([gpunn.ones(1, requires_grad=True)], lr=1.0, momentum=0.9)
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=2.0, total_steps=50, pct_start=0.2)
    trace = _one_cycle_trace(scheduler, 50)
    lrs, momenta = trace[:, 0], trace[:, 1]
    assert scheduler.last_epoch == 49
    assert lrs[0] == pytest.approx(2.0 / 25) and momenta[0] == pytest.approx(0.95)
    assert np.argmax(lrs) == 9 and lrs[9] == pytest.approx(2.0) and momenta[9] == pytest.approx(0.85)
    assert lrs[-1] == pytest.approx(2.0 / 25 / 1e4) and momenta[-1] == pytest.approx(0.95)
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[9:]) < 0)
    assert np.all(np.diff(momenta[:10]) < 0) and np.all(np.diff(momenta[9:]) > 0)
    assert [opt.param_groups[0][k] for k in ("initial_lr", "max_lr", "min_lr")] == pytest.approx([0.08, 2.0, 8e-6])
    scheduler.step()  # step total_steps is the last one allowed, as in PyTorch
    with pytest.raises(ValueError, match="beyond total_steps=50"):
        scheduler.step()


def test_one_cycle_per_group_values():
    opt = optim.Adam([{"params": [gpunn.ones(1, requires_grad=True)]}, {"params": [gpunn.ones(1, requires_grad=True)]}])
    lr_scheduler.OneCycleLR(opt, max_lr=[1.0, 0.1], total_steps=10, max_momentum=[0.9, 0.99], base_momentum=0.8)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0 / 25, 0.1 / 25])
    assert [g["betas"][0] for g in opt.param_groups] == pytest.approx([0.9, 0.99])
    assert all(g["betas"][1] == 0.999 for g in opt.param_groups)
    with pytest.raises(ValueError, match="3 max_lr values for 2 param groups"):
        lr_scheduler.OneCycleLR(opt, max_lr=[1.0, 1.0, 1.0], total_steps=10)


def test_one_cycle_resume_is_exact():
    """Build model, optimizer and scheduler, then load both states (PyTorch's recipe): the rest of
    the run uses the same rates and momenta and ends at bit-identical parameters."""
    target = gpunn.tensor(np.random.default_rng(3).normal(size=(5,)))

    def run(steps, state=None):
        w = gpunn.zeros(5, dtype="float64", requires_grad=True)
        opt = optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
        scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=30)
        if state is not None:
            with gpunn.no_grad():
                w.copy_(state["w"])
            opt.load_state_dict(state["opt"])
            scheduler.load_state_dict(state["scheduler"])
        used = []
        for _ in range(steps):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            used.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
            opt.step()
            scheduler.step()
        return w, used, {"w": w.detach().numpy(), "opt": opt.state_dict(), "scheduler": scheduler.state_dict()}

    w_straight, used_straight, _ = run(30)
    _, used_first, state = run(12)
    w_resumed, used_rest, _ = run(18, state)
    assert used_first + used_rest == used_straight
    np.testing.assert_array_equal(w_resumed.numpy(), w_straight.numpy())


def test_one_cycle_checks_its_arguments():
    def sgd():
        return optim.SGD([gpunn.ones(1, requires_grad=True)], lr=0.1, momentum=0.9)

    with pytest.raises(ValueError, match="total_steps, or both epochs and steps_per_epoch"):
        lr_scheduler.OneCycleLR(sgd(), max_lr=1.0, epochs=3)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        lr_scheduler.OneCycleLR(sgd(), max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match="pct_start"):
        lr_scheduler.OneCycleLR(sgd(), max_lr=1.0, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="zero steps long"):
        lr_scheduler.OneCycleLR(sgd(), max_lr=1.0, total_steps=10, pct_start=0.1)
    with pytest.raises(ValueError, match="anneal_strategy"):
        lr_scheduler.OneCycleLR(sgd(), max_lr=1.0, total_steps=10, anneal_strategy="exp")
    adagrad = optim.Adagrad([gpunn.ones(1, requires_grad=True)])
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        lr_scheduler.OneCycleLR(adagrad, max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="no initial_lr, max_lr, min_lr, max_momentum, base_momentum"):
        lr_scheduler.OneCycleLR(sgd(), max_lr=1.0, total_steps=10, last_epoch=4)
    opt = sgd()
    opt.param_groups[0]["initial_lr"] = 0.1
    with pytest.raises(ValueError, match="no max_lr, min_lr$|no max_lr, min_lr;"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=False, last_epoch=4)


# --- CosineAnnealingWarmRestarts, SequentialLR, LambdaLR against torch's lr sequences -------------


def _pair():
    torch = pytest.importorskip("torch")
    ours = gpunn.optim.SGD([gpunn.zeros(1, requires_grad=True)], lr=0.1)
    theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return torch, ours, theirs


def _lr_trace(scheduler, steps, step=lambda s, i: s.step()):
    out = [scheduler.optimizer.param_groups[0]["lr"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "scheduler.step() before optimizer.step()"
        for i in range(steps):
            step(scheduler, i)
            out.append(scheduler.optimizer.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("T_mult", [1, 2, 3])
def test_cosine_annealing_warm_restarts_matches_torch(T_mult):
    torch, ours, theirs = _pair()
    args = (3, T_mult, 0.01)
    np.testing.assert_allclose(_lr_trace(lr_scheduler.CosineAnnealingWarmRestarts(ours, *args), 30),
                               _lr_trace(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(theirs, *args), 30),
                               rtol=1e-12)
    torch, ours, theirs = _pair()
    fractional = lambda s, i: s.step(i * 0.37)  # noqa: E731 (per batch, as PyTorch's docs show)
    np.testing.assert_allclose(_lr_trace(lr_scheduler.CosineAnnealingWarmRestarts(ours, *args), 40, fractional),
                               _lr_trace(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(theirs, *args), 40,
                                         fractional),
                               rtol=1e-12)


def test_cosine_annealing_warm_restarts_reference_values_and_resume():
    opt = gpunn.optim.SGD([gpunn.zeros(1, requires_grad=True)], lr=1.0)
    seen = _lr_trace(lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2), 6)
    np.testing.assert_allclose(seen, [1.0, 0.5, 1.0, 0.853553390593, 0.5, 0.146446609407, 1.0], rtol=1e-10)  # PyTorch's
    opt = gpunn.optim.SGD([gpunn.zeros(1, requires_grad=True)], lr=1.0)
    first = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
    _lr_trace(first, 3)
    resumed = lr_scheduler.CosineAnnealingWarmRestarts(gpunn.optim.SGD([gpunn.zeros(1, requires_grad=True)], lr=1.0),
                                                       T_0=2, T_mult=2)
    resumed.load_state_dict(first.state_dict())
    assert _lr_trace(resumed, 4)[1:] == _lr_trace(first, 4)[1:]
    with pytest.raises(ValueError, match="T_mult"):
        lr_scheduler.CosineAnnealingWarmRestarts(opt, 2, T_mult=0)


def _sequential(lib, opt):
    s = lib.optim.lr_scheduler
    return s.SequentialLR(opt, [s.LinearLR(opt, 0.1, total_iters=3), s.ExponentialLR(opt, 0.9),
                                s.CosineAnnealingLR(opt, 4)], milestones=[4, 9])


def test_sequential_lr_matches_torch_and_round_trips():
    torch, ours, theirs = _pair()
    mine = _sequential(gpunn, ours)
    np.testing.assert_allclose(_lr_trace(mine, 16), _lr_trace(_sequential(torch, theirs), 16), rtol=1e-12)
    assert mine.get_last_lr() == [ours.param_groups[0]["lr"]]
    # resume halfway: a fresh optimizer and schedulers, loaded from the two state dicts
    _, ours, _ = _pair()
    first = _sequential(gpunn, ours)
    _lr_trace(first, 6)
    state, opt_state = first.state_dict(), ours.state_dict()
    _, fresh, _ = _pair()
    resumed = _sequential(gpunn, fresh)  # PyTorch's idiom: build everything, then load both states
    fresh.load_state_dict(opt_state)
    resumed.load_state_dict(state)
    assert _lr_trace(resumed, 8) == _lr_trace(first, 8)


def test_sequential_lr_reference_values_and_errors():
    opt = gpunn.optim.SGD([gpunn.zeros(1, requires_grad=True)], lr=1.0)
    s = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt, 0.5, 0.5, total_iters=2),
                                        lr_scheduler.ExponentialLR(opt, 0.5)], milestones=[2])
    np.testing.assert_allclose(_lr_trace(s, 4), [0.5, 0.5, 1.0, 0.5, 0.25])  # PyTorch's
    with pytest.raises(ValueError, match="milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 1)], milestones=[3])
    other = gpunn.optim.SGD([gpunn.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="another optimizer"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(other, 1), lr_scheduler.StepLR(opt, 1)], milestones=[1])


def test_lambda_lr_matches_torch():
    torch, ours, theirs = _pair()
    fn = lambda epoch: 0.95 ** epoch if epoch > 2 else (epoch + 1) / 3  # noqa: E731 (a warm-up, then decay)
    np.testing.assert_allclose(_lr_trace(lr_scheduler.LambdaLR(ours, fn), 10),
                               _lr_trace(torch.optim.lr_scheduler.LambdaLR(theirs, fn), 10), rtol=1e-12)


def test_negative_controls_the_references_tell_near_misses_apart():
    """The schedule references are sharp: a warm-restart schedule with another T_mult gives another
    lr sequence."""
    torch, ours, theirs = _pair()
    assert not np.allclose(_lr_trace(lr_scheduler.CosineAnnealingWarmRestarts(ours, 3, 2), 20),
                           _lr_trace(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(theirs, 3, 3), 20))
