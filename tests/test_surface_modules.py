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


def test_negative_controls_the_references_tell_near_misses_apart():
    """The loss references are sharp: Huber is not smooth L1 once delta != 1."""
    x, t = _loss_inputs("huber_loss")
    huber = F.huber_loss(gpunn.tensor(x), gpunn.tensor(t), reduction="none", delta=0.6).numpy()
    assert not np.allclose(huber, _smooth_l1(x - t, 0.6))
    assert np.allclose(huber, 0.6 * _smooth_l1(x - t, 0.6))  # the documented relation holds
