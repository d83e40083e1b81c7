"""gpunn.nn.utils: clip_grad_norm_ and clip_grad_value_ (the true norm returned, non-finite norms
refused, no overflow), parameters_to_vector and vector_to_parameters.
"""

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from gpunn.errors import AnomalyError
from helpers import assert_close


def _torch():
    return pytest.importorskip("torch")


# --- gradient clipping ----------------------------------------------------------------------------


def _params_with_grads(device, grads, dtype="float32"):
    params = []
    for g in grads:
        p = gpunn.zeros(*np.shape(g), dtype=dtype, device=device, requires_grad=True)
        p.grad = gpunn.tensor(np.asarray(g), dtype=dtype, device=device)
        params.append(p)
    return params


def _grad_arrays(params):
    return [p.grad.numpy().astype(np.float64) for p in params]


def _norm(arrays, p=2.0):
    flat = np.concatenate([a.ravel() for a in arrays])
    return np.abs(flat).max() if p == math.inf else (np.abs(flat) ** p).sum() ** (1 / p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_returns_true_norm_and_clips(device, norm_type):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((5, 4)), rng.standard_normal(4), rng.standard_normal((2, 3))]
    params = _params_with_grads(device, grads)
    params.append(gpunn.zeros(3, device=device, requires_grad=True))  # no grad: skipped
    before = _grad_arrays(params[:3])
    true_norm = _norm(before, norm_type)
    total = nn.utils.clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    assert isinstance(total, gpunn.Tensor) and total.shape == () and total.device == device
    np.testing.assert_allclose(total.item(), true_norm, rtol=1e-5)
    after = _grad_arrays(params[:3])
    assert _norm(after, norm_type) <= 0.5 * (1 + 1e-6)
    for a, b in zip(before, after):  # the direction is kept: one common factor
        np.testing.assert_allclose(b, a * (0.5 / (true_norm + 1e-6)), rtol=1e-5)
    assert params[3].grad is None


def test_clip_grad_norm_below_threshold_changes_nothing(device):
    params = _params_with_grads(device, [[0.1, -0.2], [[0.05]]])
    before = [p.grad.numpy() for p in params]
    total = nn.utils.clip_grad_norm_(params, 10.0)
    np.testing.assert_allclose(total.item(), math.sqrt(0.01 + 0.04 + 0.0025), rtol=1e-6)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.grad.numpy(), b)


def test_clip_grad_norm_single_tensor_and_no_grads():
    p = gpunn.zeros(2, requires_grad=True)
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == 0.0
    p.grad = gpunn.tensor([3.0, 4.0])
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0 when clipping anyway
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_clip_grad_norm_nonfinite_raises_and_changes_nothing(device, bad):
    params = _params_with_grads(device, [[1.0, bad, 2.0], [5.0, 6.0]])
    grads_before = [p.grad.numpy() for p in params]
    data_before = [p.numpy() for p in params]
    with pytest.raises(AnomalyError, match="inf or NaN") as info:
        nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert isinstance(info.value, FloatingPointError)
    for p, g, d in zip(params, grads_before, data_before):
        np.testing.assert_array_equal(p.grad.numpy(), g)
        np.testing.assert_array_equal(p.numpy(), d)
    total = nn.utils.clip_grad_norm_(params, 1.0)  # without the check: PyTorch's answer, inf or NaN
    assert (math.isnan(total.item()) if math.isnan(bad) else total.item() == math.inf)


def test_clip_grad_norm_huge_finite_grads_do_not_overflow(device):
    grads = [np.full((3, 4), 2e22), np.full(5, -2e22)]
    params = _params_with_grads(device, grads)
    with np.errstate(over="ignore"):
        naive = np.sqrt(np.sum(np.float32(2e22) ** 2 * np.ones(17, dtype=np.float32)))
    assert np.isinf(naive)  # negative control: squaring in float32 overflows, so a naive norm fails
    total = nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_allclose(total.item(), 2e22 * math.sqrt(17), rtol=1e-5)
    assert _norm(_grad_arrays(params)) <= 1.0 * (1 + 1e-6)
    np.testing.assert_allclose(_norm(_grad_arrays(params)), 1.0, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the norm does overflow here
def test_clip_grad_norm_raises_when_the_norm_itself_overflows_float32(device):
    params = _params_with_grads(device, [np.full(4, 3e38)])  # finite entries, norm 6e38 > float32 max
    with pytest.raises(AnomalyError):
        nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[0].grad.numpy(), np.full(4, 3e38, dtype=np.float32))


def test_clip_grad_norm_zero_grads_and_float64(device):
    params = _params_with_grads(device, [np.zeros(3)], dtype="float64")
    assert nn.utils.clip_grad_norm_(params, 1.0).item() == 0.0
    assert not params[0].grad.numpy().any()
    big = _params_with_grads(device, [np.full(4, 1e200)], dtype="float64")
    np.testing.assert_allclose(nn.utils.clip_grad_norm_(big, 1.0).item(), 2e200, rtol=1e-12)


def test_clip_grad_norm_agrees_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((4, 3)) * 10, rng.standard_normal(3)]
    for norm_type in (2.0, 1.0, math.inf):
        params = _params_with_grads("cpu", grads, dtype="float64")
        theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for t, g in zip(theirs, grads):
            t.grad = torch.tensor(g)
        ours_total = nn.utils.clip_grad_norm_(params, 2.0, norm_type=norm_type).item()
        their_total = torch.nn.utils.clip_grad_norm_(theirs, 2.0, norm_type=norm_type).item()
        assert ours_total == pytest.approx(their_total, rel=1e-12)
        for p, t in zip(params, theirs):
            np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value(device):
    params = _params_with_grads(device, [[-3.0, 0.5, 2.0], [[-0.1, 9.0]]])
    nn.utils.clip_grad_value_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad.numpy(), np.float32([-1.0, 0.5, 1.0]))
    np.testing.assert_array_equal(params[1].grad.numpy(), np.float32([[-0.1, 1.0]]))
    with pytest.raises(ValueError, match="clip_value"):
        nn.utils.clip_grad_value_(params, -1.0)


# --- nn.utils: parameters as one vector --------------------------------------------------------------


def test_parameters_to_vector_and_back(device):
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, device=device), nn.Linear(2, 1, device=device))
    params = list(model.parameters())
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert_close(vec, np.concatenate([p.numpy().ravel() for p in params]), device=device)
    vec.sum().backward()  # differentiable: each parameter gets ones
    for p in params:
        assert_close(p.grad, np.ones(p.shape))
    new = np.arange(vec.numel(), dtype=np.float32)
    nn.utils.vector_to_parameters(gpunn.tensor(new, device=device), model.parameters())
    assert_close(nn.utils.parameters_to_vector(model.parameters()), new)
    assert [p is q for p, q in zip(model.parameters(), params)] == [True] * 4
    with pytest.raises(gpunn.ShapeError, match="10 entries, the parameters 11"):
        nn.utils.vector_to_parameters(gpunn.zeros(10, device=device), model.parameters())


def test_parameters_to_vector_matches_torch():
    torch = _torch()
    gpunn.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    np.testing.assert_array_equal(nn.utils.parameters_to_vector(ours.parameters()).numpy(),
                                  torch.nn.utils.parameters_to_vector(theirs.parameters()).detach().numpy())
