"""gpunn.nn.init: each initialiser's law (bounds exactly, spreads within 2%), fans and gains,
trunc_normal_ against the textbook moments, orthogonal_, eye_ and dirac_, and the laws against
torch's where it is installed (a two-sample Kolmogorov-Smirnov check).
"""

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from gpunn.errors import DTypeError
from gpunn.nn import init
from helpers import check_normal, check_uniform

# --- init ----------------------------------------------------------------------------------------


def test_statistical_checks_reject_wrong_scales():
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError):  # negative control: a 10% larger bound must be caught
        check_uniform(rng.uniform(-1.1, 1.1, size=100_000), 1.0)
    with pytest.raises(AssertionError):
        check_uniform(rng.uniform(-0.9, 0.9, size=100_000), 1.0)
    with pytest.raises(AssertionError):
        check_normal(rng.normal(0, 1.05, size=100_000), 1.0)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming(device, mode):
    t = gpunn.empty(300, 200, device=device)
    fan = 200 if mode == "fan_in" else 300
    assert init.kaiming_uniform_(t, mode=mode, nonlinearity="relu") is t
    assert t.device == device
    check_uniform(t.numpy(), math.sqrt(2.0) * math.sqrt(3.0 / fan))
    init.kaiming_normal_(t, a=0.2, mode=mode)
    check_normal(t.numpy(), math.sqrt(2.0 / (1 + 0.2 ** 2)) / math.sqrt(fan))


def test_xavier(device):
    t = gpunn.empty(300, 200, device=device)
    init.xavier_uniform_(t, gain=2.0)
    check_uniform(t.numpy(), 2.0 * math.sqrt(6.0 / 500))
    init.xavier_normal_(t)
    check_normal(t.numpy(), math.sqrt(2.0 / 500))


def test_fans_of_conv_shaped_tensors():
    t = gpunn.empty(32, 16, 3, 3)  # fan_in = 16*9 = 144, fan_out = 32*9 = 288
    init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
    check_normal(t.numpy(), math.sqrt(2.0 / 288))
    init.xavier_uniform_(t)
    check_uniform(t.numpy(), math.sqrt(6.0 / (144 + 288)))
    with pytest.raises(ValueError, match="2 dimensions"):
        init.xavier_uniform_(gpunn.empty(5))
    with pytest.raises(ValueError, match="fan_in"):
        init.kaiming_uniform_(gpunn.empty(3, 3), mode="fan")


def test_simple_fills(device):
    t = gpunn.empty(400, 250, device=device)
    init.uniform_(t, -0.5, 1.5)
    values = t.numpy()
    assert values.min() >= -0.5 and values.max() <= 1.5 and abs(values.mean() - 0.5) < 0.01
    init.normal_(t, mean=3.0, std=0.5)
    assert abs(t.numpy().mean() - 3.0) < 0.01 and abs(t.numpy().std() - 0.5) < 0.01
    assert not init.zeros_(t).numpy().any()
    assert (init.ones_(t).numpy() == 1).all()
    assert (init.constant_(t, 0.25).numpy() == 0.25).all() and t.dtype == "float32" and t.device == device
    with pytest.raises(DTypeError):
        init.normal_(gpunn.zeros(3, dtype="int64"))


def test_calculate_gain_formulas():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unsupported"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError):
        init.calculate_gain("leaky_relu", "0.2")


def test_calculate_gain_agrees_with_torch():
    torch = pytest.importorskip("torch")
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.3), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


# --- nn.init: trunc_normal_, orthogonal_, eye_, dirac_ ----------------------------------------


def _ks_statistic(x, y):
    """Two-sample Kolmogorov-Smirnov distance between the empirical laws of x and y."""
    x, y = np.sort(np.ravel(x)), np.sort(np.ravel(y))
    points = np.concatenate([x, y])
    return np.abs(np.searchsorted(x, points, "right") / x.size - np.searchsorted(y, points, "right") / y.size).max()


def _ks_bound(n, m):
    """The KS distance two samples of one law stay below with probability 1 - 1e-6."""
    return math.sqrt(-0.5 * math.log(0.5e-6) * (n + m) / (n * m))


def _truncated_normal_moments(mean, std, a, b):
    """Mean and standard deviation of N(mean, std^2) conditioned on [a, b] (textbook formulas)."""
    lo, hi = (a - mean) / std, (b - mean) / std
    def pdf(z):
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi) if math.isfinite(z) else 0.0

    # the mass from erfc of the nearer tail keeps its digits when [lo, hi] lies far out
    mass = (0.5 * (math.erfc(lo / math.sqrt(2)) - math.erfc(hi / math.sqrt(2))) if lo > 0 else
            0.5 * (math.erfc(-hi / math.sqrt(2)) - math.erfc(-lo / math.sqrt(2))))
    mu = (pdf(lo) - pdf(hi)) / mass
    second = 1 + ((lo * pdf(lo) if math.isfinite(lo) else 0) - (hi * pdf(hi) if math.isfinite(hi) else 0)) / mass
    return mean + std * mu, std * math.sqrt(second - mu * mu)


TRUNC_CASES = [(0.0, 1.0, -2.0, 2.0), (0.0, 1.0, -1.0, 1.0), (0.0, 0.02, -0.04, 0.04), (1.0, 2.0, -1.0, 4.0),
               (0.0, 1.0, -0.1, 0.3), (0.0, 1.0, 1.0, 2.0), (0.0, 1.0, 0.0, math.inf)]


@pytest.mark.parametrize("mean, std, a, b", TRUNC_CASES)
def test_trunc_normal_has_torchs_law(mean, std, a, b):
    torch = pytest.importorskip("torch")
    n = 20000
    gpunn.manual_seed(3)
    ours = nn.init.trunc_normal_(gpunn.empty(n, dtype="float64"), mean, std, a, b).numpy()
    torch.manual_seed(3)
    theirs = torch.nn.init.trunc_normal_(torch.empty(n, dtype=torch.float64), mean, std, a, b).numpy()
    assert a <= ours.min() and ours.max() <= b
    assert _ks_statistic(ours, theirs) < _ks_bound(n, n)


def test_trunc_normal_comparison_rejects_a_clipped_normal():
    """Negative control: N(0, 1) clipped to [-1, 1] piles 16% on each bound; the KS check sees it."""
    torch = pytest.importorskip("torch")
    n = 20000
    gpunn.manual_seed(3)
    clipped = np.clip(gpunn.randn(n, dtype="float64").numpy(), -1.0, 1.0)
    torch.manual_seed(3)
    theirs = torch.nn.init.trunc_normal_(torch.empty(n, dtype=torch.float64), 0.0, 1.0, -1.0, 1.0).numpy()
    assert _ks_statistic(clipped, theirs) > _ks_bound(n, n)


@pytest.mark.parametrize("mean, std, a, b", TRUNC_CASES + [
    (0.0, 1.0, 3.0, 100.0), (0.0, 1.0, 5.0, 5.01), (0.0, 1.0, -100.0, -3.0), (0.0, 1.0, 0.7, 2.1),
    (10.0, 1.0, -math.inf, 4.0)])  # far in a tail, where torch's inverse-CDF method warns it may be wrong
def test_trunc_normal_matches_the_textbook_moments(mean, std, a, b):
    n = 40000
    gpunn.manual_seed(7)
    values = nn.init.trunc_normal_(gpunn.empty(n, dtype="float64"), mean, std, a, b).numpy()
    mu, sigma = _truncated_normal_moments(mean, std, a, b)
    assert a <= values.min() and values.max() <= b
    assert abs(values.mean() - mu) < 6 * sigma / math.sqrt(n)
    assert abs(values.std() / sigma - 1) < 6 * math.sqrt(2 / n) * 1.5  # kurtosis below a normal's x 2.25


def test_trunc_normal_is_the_same_on_every_device_and_refuses_bad_bounds(device):
    gpunn.manual_seed(11)
    here = nn.init.trunc_normal_(gpunn.empty(3, 7, device=device), 0.5, 0.1, 0.3, 0.9)
    gpunn.manual_seed(11)
    on_cpu = nn.init.trunc_normal_(gpunn.empty(3, 7), 0.5, 0.1, 0.3, 0.9)
    assert here.device is device and here.dtype == "float32"
    np.testing.assert_array_equal(here.numpy(), on_cpu.numpy())
    with pytest.raises(ValueError, match="exceeds"):
        nn.init.trunc_normal_(gpunn.empty(3, device=device), a=2.0, b=-2.0)
    with pytest.raises(ValueError, match="std"):
        nn.init.trunc_normal_(gpunn.empty(3, device=device), std=0.0)
    np.testing.assert_array_equal(nn.init.trunc_normal_(gpunn.empty(3, device=device), a=1.0, b=1.0).numpy(), 1.0)
    assert nn.init.trunc_normal_(gpunn.empty(0, device=device)).shape == (0,)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 2, 3), (4, 4)])
def test_orthogonal_gives_orthonormal_rows_or_columns(device, shape):
    t = nn.init.orthogonal_(gpunn.empty(*shape, dtype="float64", device=device), gain=2.0)
    assert t.device is device and t.shape == shape
    m = t.numpy().reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, 4.0 * np.eye(len(gram)), atol=1e-12)


def test_orthogonal_is_uniform_like_torchs():
    """The first entry of a random 4x4 orthogonal matrix: the same law as torch's (mean 0, std 1/2)."""
    torch = pytest.importorskip("torch")
    n = 3000
    gpunn.manual_seed(5)
    torch.manual_seed(5)
    ours = np.array([nn.init.orthogonal_(gpunn.empty(4, 4, dtype="float64")).numpy()[0, 0] for _ in range(n)])
    theirs = np.array([torch.nn.init.orthogonal_(torch.empty(4, 4, dtype=torch.float64)).numpy()[0, 0]
                       for _ in range(n)])
    assert _ks_statistic(ours, theirs) < _ks_bound(n, n)
    assert abs(ours.mean()) < 6 * 0.5 / math.sqrt(n)
    # negative control: QR without the sign fix is biased (LAPACK's R has a negative first diagonal entry)
    rng = np.random.default_rng(5)
    unfixed = np.array([np.linalg.qr(rng.standard_normal((4, 4)))[0][0, 0] for _ in range(n)])
    assert _ks_statistic(unfixed, theirs) > _ks_bound(n, n)


def test_orthogonal_refuses_vectors_like_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError):
        torch.nn.init.orthogonal_(torch.empty(3))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        nn.init.orthogonal_(gpunn.empty(3))
    assert nn.init.orthogonal_(gpunn.empty(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("shape", [(2, 3), (3, 2), (3, 3)])
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_eye_matches_torch(device, shape, dtype):
    torch = pytest.importorskip("torch")
    ours = nn.init.eye_(gpunn.ones(*shape, dtype=dtype, device=device))
    theirs = torch.nn.init.eye_(torch.ones(*shape, dtype=getattr(torch, dtype)))
    assert ours.device is device and ours.dtype == dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("shape, groups", [((4, 2, 3), 2), ((3, 3, 3), 1), ((6, 2, 3, 4), 3), ((2, 4, 3, 3, 3), 1),
                                           ((4, 4, 2, 5), 2)])
def test_dirac_matches_torch(device, shape, groups):
    torch = pytest.importorskip("torch")
    ours = nn.init.dirac_(gpunn.ones(*shape, device=device), groups=groups)
    theirs = torch.nn.init.dirac_(torch.ones(*shape), groups=groups)
    assert ours.device is device
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_dirac_comparison_sees_a_wrong_group_count():
    """Negative control: one group instead of two puts the ones elsewhere."""
    torch = pytest.importorskip("torch")
    assert not np.array_equal(nn.init.dirac_(gpunn.zeros(4, 2, 3), groups=1).numpy(),
                              torch.nn.init.dirac_(torch.zeros(4, 2, 3), groups=2).numpy())


@pytest.mark.parametrize("fn, shape, kwargs", [("eye_", (3, 3, 3), {}), ("eye_", (3,), {}), ("dirac_", (3, 3), {}),
                                               ("dirac_", (3, 3, 3), {"groups": 2})])
def test_eye_and_dirac_refuse_what_torch_refuses(fn, shape, kwargs):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError):
        getattr(torch.nn.init, fn)(torch.empty(*shape), **kwargs)
    with pytest.raises(ValueError):
        getattr(nn.init, fn)(gpunn.empty(*shape), **kwargs)
