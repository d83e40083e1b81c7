"""Issue 17's losses, functions and modules: one_hot, binary_cross_entropy, l1/smooth_l1/huber,
normalize, cosine_similarity and their nn modules; BatchNorm1d; Embedding(padding_idx=);
Module.half(); forward hooks' PyTorch semantics; CosineAnnealingWarmRestarts, SequentialLR and
LambdaLR against torch's lr sequences.

Values are checked against NumPy formulas on every device, against PyTorch where it is
installed, and against hard-coded PyTorch values where that is simplest.
"""

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
import gpunn.nn.functional as F
from gpunn.errors import DTypeError, ShapeError
from gpunn.testing import gradcheck
from helpers import assert_close, away_from_zero, rng, to_device


def _torch():
    return pytest.importorskip("torch")


def _reduce(per, reduction):
    return per if reduction == "none" else per.mean() if reduction == "mean" else per.sum()


# --- losses --------------------------------------------------------------------------------------

def _bce(p, t):
    return -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))


def _smooth_l1(d, beta):
    a = np.abs(d)
    return np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


def _huber(d, delta):
    a = np.abs(d)
    return np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))


LOSSES = {  # name: (gpunn function of (input, target, reduction), NumPy per-element loss)
    "binary_cross_entropy": (lambda x, t, r: F.binary_cross_entropy(x, t, reduction=r), _bce),
    "l1_loss": (lambda x, t, r: F.l1_loss(x, t, reduction=r), lambda x, t: np.abs(x - t)),
    "smooth_l1_loss": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.7),
                       lambda x, t: _smooth_l1(x - t, 0.7)),
    "huber_loss": (lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=0.6), lambda x, t: _huber(x - t, 0.6)),
}


def _loss_inputs(name):
    if name == "binary_cross_entropy":  # probabilities and soft targets
        return rng(1).uniform(0.1, 0.9, size=(4, 3)), rng(2).uniform(0, 1, size=(4, 3))
    x = rng(1).normal(size=(4, 3))
    return x, x + rng(2).choice([-1.3, -0.2, 0.3, 1.1], size=(4, 3))  # both branches, away from the kinks


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_values_and_gradients(device, name, reduction):
    fn, per_element = LOSSES[name]
    x, t = _loss_inputs(name)
    leaves = [to_device(x, device, requires_grad=True), to_device(t, device, requires_grad=True)]
    out = fn(*leaves, reduction)
    assert_close(out, _reduce(per_element(x, t), reduction), device=device, dtype=gpunn.float64)
    gradcheck(lambda a, b: fn(a, b, reduction), leaves)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_and_modules_match_torch(name):
    torch = _torch()
    x, t = _loss_inputs(name)
    modules = {"binary_cross_entropy": ("BCELoss", {}), "l1_loss": ("L1Loss", {}),
               "smooth_l1_loss": ("SmoothL1Loss", {"beta": 0.7}), "huber_loss": ("HuberLoss", {"delta": 0.6})}
    cls, kw = modules[name]
    for reduction in ("mean", "sum", "none"):
        ours = getattr(nn, cls)(reduction=reduction, **kw)
        theirs = getattr(torch.nn, cls)(reduction=reduction, **kw)
        gx, tx = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        got, want = ours(gx, gpunn.tensor(t)), theirs(tx, torch.tensor(t))
        assert_close(got, want.detach().numpy())
        got.sum().backward()
        want.sum().backward()
        assert_close(gx.grad, tx.grad.numpy())


def test_bce_at_saturated_probabilities_matches_torch():
    """A sigmoid that saturated to exactly 0 or 1: PyTorch's clamped logs and finite gradient."""
    p, t = np.array([0.0, 1.0, 0.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    x = gpunn.tensor(p, requires_grad=True)
    loss = F.binary_cross_entropy(x, gpunn.tensor(t), gpunn.tensor([1.0, 2.0, 1.0, 1.0, 3.0]), reduction="sum")
    loss.backward()
    assert_close(loss, np.array(200 + 3 * math.log(2)))  # PyTorch's values
    assert_close(x.grad, np.array([0.0, 0.0, -1e12, 1e12, -6.0]), rtol=1e-9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.binary_cross_entropy(gpunn.tensor([1.5]), gpunn.tensor([1.0]))
    with pytest.raises(ShapeError, match="shape"):
        nn.BCELoss()(gpunn.tensor([0.5, 0.5]), gpunn.tensor([1.0]))


def test_regression_losses_warn_on_broadcast_shapes_and_smooth_l1_beta_zero():
    x, t = gpunn.tensor([[1.0], [2.0]]), gpunn.tensor([0.0, 4.0])
    with pytest.warns(UserWarning, match="l1_loss: target shape"):
        F.l1_loss(x, t)
    assert_close(F.smooth_l1_loss(gpunn.tensor([1.0, -3.0]), gpunn.tensor([0.0, 0.0]), beta=0.0), np.array(2.0))
    with pytest.raises(ValueError, match="delta"):
        F.huber_loss(x, x, delta=0.0)


def test_one_hot(device):
    labels = to_device(np.array([[0, 3], [2, 2]]), device)
    out = F.one_hot(labels, 4)
    assert_close(out, np.eye(4, dtype=np.int64)[[[0, 3], [2, 2]]], device=device, dtype=gpunn.int64)
    assert F.one_hot(labels).shape == (2, 2, 4)  # num_classes from the largest label
    with pytest.raises(DTypeError, match="integer"):
        F.one_hot(to_device(np.array([0.0, 1.0]), device))
    if device.type == "cpu":
        with pytest.raises(ValueError, match="smaller than num_classes"):
            F.one_hot(labels, 3)


def test_one_hot_normalize_cosine_similarity_match_torch():
    torch = _torch()
    labels = np.array([1, 0, 4])
    assert_close(F.one_hot(gpunn.tensor(labels)), torch.nn.functional.one_hot(torch.tensor(labels)).numpy())
    x1, x2 = rng(3).normal(size=(3, 4)), rng(4).normal(size=(1, 4))
    x1[1] = 0.0  # a zero row: eps takes over
    for fn, args in [(F.normalize, ((x1,), {})), (F.normalize, ((x1,), {"p": 1.0, "dim": 0})),
                     (F.cosine_similarity, ((x1, x2), {})), (F.cosine_similarity, ((x1, x2), {"dim": -1, "eps": 0.5}))]:
        ours = [gpunn.tensor(a, requires_grad=True) for a in args[0]]
        theirs = [torch.tensor(a, requires_grad=True) for a in args[0]]
        got, want = fn(*ours, **args[1]), getattr(torch.nn.functional, fn.__name__)(*theirs, **args[1])
        assert_close(got, want.detach().numpy())
        (got * got).sum().backward()
        (want * want).sum().backward()
        for a, b in zip(ours, theirs):
            assert_close(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert_close(nn.CosineSimilarity(dim=0)(gpunn.tensor(x1), gpunn.tensor(x1)), np.array([1.0, 1.0, 1.0, 1.0]))


def test_normalize_and_cosine_similarity_gradients(device):
    x1, x2 = away_from_zero((3, 4), seed=5), away_from_zero((3, 4), seed=6)
    gradcheck(lambda a: F.normalize(a, dim=1), [to_device(x1, device, requires_grad=True)])
    leaves = [to_device(x1, device, requires_grad=True), to_device(x2, device, requires_grad=True)]
    out = F.cosine_similarity(*leaves)
    expected = (x1 * x2).sum(1) / np.linalg.norm(x1, axis=1) / np.linalg.norm(x2, axis=1)
    assert_close(out, expected, device=device)
    gradcheck(F.cosine_similarity, leaves)


# --- BatchNorm1d -----------------------------------------------------------------------------------

def _batch_norm_reference(x, running, momentum, eps=1e-5):
    """NumPy: normalized x, and the running (mean, var, count) after one training batch."""
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = x.mean(axes), x.var(axes)
    n = x.size // x.shape[1]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    rm, rv, count = running
    factor = 1 / (count + 1) if momentum is None else momentum
    return y, (rm * (1 - factor) + mean * factor, rv * (1 - factor) + var * n / (n - 1) * factor, count + 1)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)], ids=str)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_1d_statistics(device, shape, momentum):
    layer = nn.BatchNorm1d(3, momentum=momentum, device=device, dtype="float64")
    scale, shift = np.array([1.0, 2.0, -0.5]), np.array([0.0, 0.3, 1.0])
    with gpunn.no_grad():
        layer.weight.copy_(gpunn.tensor(scale))
        layer.bias.copy_(gpunn.tensor(shift))
    per = (1, 3) + (1,) * (len(shape) - 2)
    running = (np.zeros(3), np.ones(3), 0)
    for step in range(3):
        x = rng(10 + step).normal(size=shape) * 2 + 1
        y, running = _batch_norm_reference(x, running, momentum)
        assert_close(layer(to_device(x, device)), y * scale.reshape(per) + shift.reshape(per), device=device)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert_close(state["running_mean"], running[0])
    assert_close(state["running_var"], running[1])
    assert state["num_batches_tracked"].dtype == gpunn.int64 and state["num_batches_tracked"].item() == 3
    layer.eval()
    x = rng(20).normal(size=shape)
    expected = (x - running[0].reshape(per)) / np.sqrt(running[1].reshape(per) + 1e-5)
    assert_close(layer(to_device(x, device)), expected * scale.reshape(per) + shift.reshape(per))
    assert layer.state_dict()["num_batches_tracked"].item() == 3  # eval leaves the statistics alone


def test_batch_norm_1d_gradients(device):
    x = to_device(rng(21).normal(size=(5, 2, 3)), device, requires_grad=True)
    w = to_device(np.array([0.7, -1.2]), device, requires_grad=True)
    b = to_device(np.array([0.1, 0.2]), device, requires_grad=True)
    gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, w, b])


def test_batch_norm_1d_matches_torch_exactly():
    torch = _torch()
    for shape in [(8, 4), (5, 4, 7)]:
        for kw in [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}, {"momentum": 0.3}]:
            ours, theirs = nn.BatchNorm1d(4, **kw).double(), torch.nn.BatchNorm1d(4, **kw).double()
            for step in range(4):
                if step == 3:
                    ours.eval()
                    theirs.eval()
                x = rng(30 + step).normal(size=shape) * 3 - 1
                gx, tx = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
                got, want = ours(gx), theirs(tx)
                assert_close(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)
                (got ** 3).sum().backward()
                (want ** 3).sum().backward()
                assert_close(gx.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-9)
            want_state = theirs.state_dict()
            got_state = ours.state_dict()
            assert list(got_state) == list(want_state), kw
            for k in want_state:
                assert_close(got_state[k], want_state[k].numpy(), rtol=1e-12)
            for p, q in zip(ours.parameters(), theirs.parameters()):
                assert_close(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-9)
    # float32, as a ported script runs it
    ours, theirs = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    x = rng(40).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(gpunn.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_batch_norm_1d_state_dict_round_trip_and_errors():
    a = nn.BatchNorm1d(2)
    for step in range(2):
        a(gpunn.tensor(rng(step).normal(size=(4, 2)), dtype="float32"))
    b = nn.BatchNorm1d(2)
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k].numpy(), v.numpy())
    assert b.num_batches_tracked.dtype == gpunn.int64
    with pytest.raises(ShapeError, match="2D or 3D"):
        a(gpunn.zeros(2, 2, 2, 2))
    with pytest.raises(ShapeError, match="num_features=2"):
        a(gpunn.zeros(4, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        a(gpunn.zeros(1, 2))
    with pytest.raises(ShapeError, match=r"running_mean has shape \(3,\)"):
        F.batch_norm(gpunn.zeros(4, 2), gpunn.zeros(3), gpunn.ones(2), training=True)
    a.eval()
    assert a(gpunn.zeros(1, 2)).shape == (1, 2)  # eval needs no batch statistics
    assert repr(nn.BatchNorm1d(3)) == "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"


def test_negative_control_biased_running_variance_is_caught():
    """The running variance is the unbiased one: a biased update must fail the reference."""
    x = rng(50).normal(size=(4, 2))
    _, (_, right, _) = _batch_norm_reference(x, (np.zeros(2), np.ones(2), 0), 0.1)
    wrong = np.ones(2) * 0.9 + x.var(0) * 0.1
    layer = nn.BatchNorm1d(2, dtype="float64")
    layer(gpunn.tensor(x))
    assert_close(layer.running_var, right)
    with pytest.raises(AssertionError):
        assert_close(layer.running_var, wrong)


# --- Embedding(padding_idx), half, hooks -------------------------------------------------------------

def test_embedding_padding_idx(device):
    gpunn.manual_seed(0)
    layer = nn.Embedding(5, 3, padding_idx=-2).to(device)
    assert layer.padding_idx == 3 and repr(layer) == "Embedding(5, 3, padding_idx=3)"
    np.testing.assert_array_equal(layer.weight.numpy()[3], np.zeros(3))  # initialised to zero, as PyTorch
    with gpunn.no_grad():
        layer.weight.copy_(gpunn.tensor(np.arange(15.0).reshape(5, 3), device=device))
    idx = to_device(np.array([[3, 1], [3, 3]]), device)
    out = layer(idx)
    assert_close(out, np.arange(15.0).reshape(5, 3)[[[3, 1], [3, 3]]])  # its values are still read
    (out * 2).sum().backward()
    expected = np.zeros((5, 3))
    expected[1] = 2.0  # row 3 (padding) gets no gradient
    assert_close(layer.weight.grad, expected)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 3, padding_idx=5)


def test_embedding_padding_idx_matches_torch():
    torch = _torch()
    ours, theirs = nn.Embedding(6, 2, padding_idx=0), torch.nn.Embedding(6, 2, padding_idx=0)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.numpy()))
    idx = np.array([0, 2, 0, 5, 2])
    ours(gpunn.tensor(idx)).pow(2).sum().backward()
    theirs(torch.tensor(idx)).pow(2).sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-6)


def test_module_half(device):
    layer = nn.Linear(2, 2, device=device)
    if device.type == "strict":  # the array API standard has no float16
        with pytest.raises(DTypeError, match=r"half\(\): float16 is not available on device strict"):
            layer.half()
        assert layer.weight.dtype == gpunn.float32  # nothing was cast
        return
    bn = nn.BatchNorm1d(2, device=device)
    assert layer.half() is layer and layer.weight.dtype == gpunn.float16
    bn.half()
    assert bn.running_mean.dtype == gpunn.float16 and bn.num_batches_tracked.dtype == gpunn.int64
    assert layer(gpunn.ones(3, 2, dtype="float16", device=device)).dtype == gpunn.float16


def test_forward_hooks_follow_torch_return_semantics():
    torch = _torch()
    record = {}
    for lib, nnmod in (("gpunn", nn), ("torch", torch.nn)):
        layer = nnmod.Identity()
        calls = []
        h1 = layer.register_forward_pre_hook(lambda m, args: (args[0] * 2,))  # a tuple replaces args
        layer.register_forward_pre_hook(lambda m, args: calls.append(len(args)))  # None keeps them
        layer.register_forward_hook(lambda m, args, out: out + 1)
        layer.register_forward_hook(lambda m, args, out: calls.append(float(out.sum())))  # sees the replaced output
        x = (gpunn if lib == "gpunn" else torch).tensor([1.0, 2.0])
        first = layer(x)
        h1.remove()
        second = layer(x)
        record[lib] = (first.tolist(), second.tolist(), calls)
    assert record["gpunn"] == record["torch"]


def test_batch_norm_classifier_trains_as_in_torch():
    """Linear -> BatchNorm1d -> ReLU -> Linear, ten SGD steps with momentum in float64 from the
    same weights: the same losses, running statistics and eval predictions as PyTorch."""
    torch = _torch()

    def build(lib):
        return lib.nn.Sequential(lib.nn.Linear(5, 8), lib.nn.BatchNorm1d(8, momentum=0.2), lib.nn.ReLU(),
                                 lib.nn.Linear(8, 3)).double()

    gpunn.manual_seed(3)
    ours, theirs = build(gpunn), build(torch)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    opt_ours = gpunn.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    data = rng(60)
    for step in range(10):
        x, y = data.normal(size=(16, 5)), data.integers(0, 3, size=16)
        losses = []
        for lib, model, opt in ((gpunn, ours, opt_ours), (torch, theirs, opt_theirs)):
            loss = lib.nn.functional.cross_entropy(model(lib.tensor(x)), lib.tensor(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    ours.eval()
    theirs.eval()
    x = data.normal(size=(4, 5))
    assert_close(ours(gpunn.tensor(x)), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-9, atol=1e-12)
    assert_close(ours[1].running_var, theirs[1].running_var.numpy(), rtol=1e-10)


def test_negative_controls_the_references_tell_near_misses_apart():
    """The loss references are sharp: Huber is not smooth L1 once delta != 1."""
    x, t = _loss_inputs("huber_loss")
    huber = F.huber_loss(gpunn.tensor(x), gpunn.tensor(t), reduction="none", delta=0.6).numpy()
    assert not np.allclose(huber, _smooth_l1(x - t, 0.6))
    assert np.allclose(huber, 0.6 * _smooth_l1(x - t, 0.6))  # the documented relation holds
