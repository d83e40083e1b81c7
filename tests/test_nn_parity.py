"""PyTorch parity of small nn pieces: Unflatten / Tensor.unflatten, Sequential and ModuleList
editing (setitem, delitem, insert, pop, extend, +, +=, *), and nn.init's trunc_normal_,
orthogonal_, eye_ and dirac_.

Tests that name torch skip where it is not installed; each edit script runs on both libraries
and compares the children's names, the modules in each slot and the state_dict keys.
"""

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from gpunn.errors import IndexOutOfRangeError, ShapeError

# --- Unflatten ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, sizes", [(1, (2, 3)), (-2, (2, -1)), (1, [6]), (0, (1, 2, -1)), (-1, (3, 1))])
def test_unflatten_shapes_and_values_match_torch(dim, sizes):
    torch = pytest.importorskip("torch")
    x = np.arange(36.0).reshape(2, 6, 3)
    ours = gpunn.tensor(x).unflatten(dim, sizes)
    theirs = torch.tensor(x).unflatten(dim, sizes)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    module_out = nn.Unflatten(dim, sizes)(gpunn.tensor(x))
    np.testing.assert_array_equal(module_out.numpy(), torch.nn.Unflatten(dim, sizes)(torch.tensor(x)).numpy())


def test_unflatten_of_an_empty_axis_matches_torch():
    torch = pytest.importorskip("torch")
    assert gpunn.zeros(2, 0).unflatten(1, (3, 0)).shape == tuple(torch.zeros(2, 0).unflatten(1, (3, 0)).shape)


@pytest.mark.parametrize("dim, sizes, error", [
    (1, (4, 2), ShapeError),             # 8 != 6
    (1, (-1, -1), ShapeError),           # two sizes to infer
    (1, (), ShapeError),                 # nothing to split into
    (3, (1,), IndexOutOfRangeError),     # a 3-d tensor has dims -3..2
    (-4, (1,), IndexOutOfRangeError),
    (1, 6, TypeError),                   # sizes must be a tuple
    (1, (2.0, 3), TypeError),
])
def test_unflatten_refuses_what_torch_refuses(dim, sizes, error):
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception):
        torch.zeros(2, 6, 3).unflatten(dim, sizes)
    with pytest.raises(error):
        gpunn.zeros(2, 6, 3).unflatten(dim, sizes)


def test_unflatten_of_zero_elements_with_an_inferred_size_is_refused():
    with pytest.raises(ShapeError, match="ambiguous"):
        gpunn.zeros(2, 0).unflatten(1, (0, -1))


def test_unflatten_module_repr_and_argument_checks_match_torch():
    torch = pytest.importorskip("torch")
    for size in [(2, 3), [2, 3]]:
        assert repr(nn.Unflatten(1, size)) == repr(torch.nn.Unflatten(1, size))
    for bad in [6, (2.0, 3)]:
        with pytest.raises(TypeError):
            torch.nn.Unflatten(1, bad)
        with pytest.raises(TypeError):
            nn.Unflatten(1, bad)


def test_unflatten_undoes_flatten_and_passes_gradients_back(device):
    x = gpunn.randn(4, 2, 3, 5, device=device, requires_grad=True)
    model = nn.Sequential(nn.Flatten(), nn.Unflatten(1, (2, 3, 5)))
    y = model(x)
    assert y.shape == x.shape and y.device is device
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    weights = gpunn.tensor(np.arange(120.0).reshape(4, 2, 3, 5), dtype="float32", device=device)
    (y * weights).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), weights.numpy())


def test_unflatten_gradient_is_checked_numerically():
    x = gpunn.tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True)
    assert gpunn.testing.gradcheck(lambda t: (t.unflatten(1, (2, 2)) ** 2).sum(), [x])


# --- Sequential and ModuleList editing ------------------------------------------------------


def _build(lib, kind):
    layers = [lib.nn.Linear(1, i + 1) for i in range(5)]  # out_features tells the entries apart
    return lib.nn.Sequential(*layers) if kind == "Sequential" else lib.nn.ModuleList(layers)


def _outcome(lib, kind, edit):
    """Run `edit` on a fresh 5-entry container: (result type or error type, slots, state_dict keys)."""
    container = _build(lib, kind)
    try:
        result = type(edit(container, lib.nn)).__name__
    except (IndexError, TypeError, ValueError) as exc:
        result = "IndexError" if isinstance(exc, IndexError) else type(exc).__name__
    except AssertionError:  # torch's Sequential.insert asserts on a non-Module
        result = "TypeError"
    slots = [(name, getattr(m, "out_features", type(m).__name__)) for name, m in container._modules.items()]
    return result, slots, list(container.state_dict())


EDITS = {
    "set 1": lambda s, nn: s.__setitem__(1, nn.ReLU()),
    "set -1": lambda s, nn: s.__setitem__(-1, nn.Linear(1, 9)),
    "set 5": lambda s, nn: s.__setitem__(5, nn.ReLU()),
    "set -6": lambda s, nn: s.__setitem__(-6, nn.ReLU()),
    "set non-module": lambda s, nn: s.__setitem__(0, 3),
    "set slice": lambda s, nn: s.__setitem__(slice(0, 2), [nn.ReLU()]),
    "del 1": lambda s, nn: s.__delitem__(1),
    "del -1": lambda s, nn: s.__delitem__(-1),
    "del 5": lambda s, nn: s.__delitem__(5),
    "del -6": lambda s, nn: s.__delitem__(-6),
    "del 1:3": lambda s, nn: s.__delitem__(slice(1, 3)),
    "del ::2": lambda s, nn: s.__delitem__(slice(None, None, 2)),
    "del ::-1": lambda s, nn: s.__delitem__(slice(None, None, -1)),
    "del 9:": lambda s, nn: s.__delitem__(slice(9, None)),
    "pop 0": lambda s, nn: s.pop(0),
    "pop -1": lambda s, nn: s.pop(-1),
    "pop 5": lambda s, nn: s.pop(5),
    "pop -6": lambda s, nn: s.pop(-6),
    "pop 1:3": lambda s, nn: s.pop(slice(1, 3)),
    "append": lambda s, nn: s.append(nn.ReLU()),
    "append non-module": lambda s, nn: s.append(3),
    "extend": lambda s, nn: s.extend([nn.ReLU(), nn.Linear(2, 9)]),
    "extend a module": lambda s, nn: s.extend(nn.ReLU()),
    "get 5": lambda s, nn: s[5],
    "get -6": lambda s, nn: s[-6],
    "get -5": lambda s, nn: s[-5],
    "+ list": lambda s, nn: s + [nn.ReLU()],
    "+= list": lambda s, nn: s.__iadd__([nn.ReLU()]),
    "* 2": lambda s, nn: s * 2,
    "* 0": lambda s, nn: s * 0,
    **{f"insert {i}": (lambda i: lambda s, nn: s.insert(i, nn.ReLU()))(i) for i in (0, 2, 5, -1, -5, -6, 7)},
}
# torch's ModuleList.insert (not Sequential's) mishandles these: a gap "7" in the names past the
# end, a KeyError half-way through for negatives; gpunn's checks them as Sequential.insert does
TORCH_MODULELIST_INSERT_BUGS = {"insert -1", "insert -5", "insert -6", "insert 7"}


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_container_edits_match_torch(kind, edit):
    torch = pytest.importorskip("torch")
    if kind == "ModuleList" and edit in TORCH_MODULELIST_INSERT_BUGS:
        pytest.skip("torch's ModuleList.insert is broken for this index (see TORCH_MODULELIST_INSERT_BUGS)")
    assert _outcome(gpunn, kind, EDITS[edit]) == _outcome(torch, kind, EDITS[edit])


def test_container_comparison_catches_a_wrong_renumbering():
    """Negative control: a delete that kept the old names would not match torch's keys."""
    torch = pytest.importorskip("torch")

    def delete_keeping_names(s, nn):
        del s._modules["1"]

    assert _outcome(gpunn, "Sequential", delete_keeping_names) != _outcome(torch, "Sequential", EDITS["del 1"])


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
def test_modulelist_insert_checks_its_index_like_a_list(kind):
    for index, expected in [(-1, [1, 2, 3, 4, "ReLU", 5]), (-5, ["ReLU", 1, 2, 3, 4, 5]), (5, [1, 2, 3, 4, 5, "ReLU"])]:
        _, slots, _ = _outcome(gpunn, kind, EDITS[f"insert {index}"])
        assert [m for _, m in slots] == expected
        assert [name for name, _ in slots] == [str(i) for i in range(6)]
    for index in (-6, 7):
        with pytest.raises(IndexError, match="out of range"):
            _build(gpunn, kind).insert(index, nn.ReLU())


def test_modulelist_insert_returns_none_and_sequential_insert_returns_itself():
    seq, lst = _build(gpunn, "Sequential"), _build(gpunn, "ModuleList")
    assert seq.insert(0, nn.ReLU()) is seq
    assert lst.insert(0, nn.ReLU()) is None


def test_named_sequential_edits_match_torch():
    """Replacing an entry keeps its name; deleting, popping and concatenating renumber from "0"."""
    torch = pytest.importorskip("torch")
    from collections import OrderedDict

    def named(lib):
        return lib.nn.Sequential(OrderedDict(a=lib.nn.Linear(1, 1), b=lib.nn.ReLU(), c=lib.nn.Linear(1, 2)))

    for edit in [lambda s, nn: s.__setitem__(1, nn.Tanh()), lambda s, nn: s.__delitem__(1),
                 lambda s, nn: s.pop(0), lambda s, nn: s.append(nn.Tanh())]:
        ours, theirs = named(gpunn), named(torch)
        edit(ours, nn), edit(theirs, torch.nn)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert list(ours._modules) == list(theirs._modules)
    assert list((named(gpunn) + named(gpunn))._modules) == list((named(torch) + named(torch))._modules)


def test_sequential_concatenation_shares_the_modules():
    torch = pytest.importorskip("torch")
    a, b = _build(gpunn, "Sequential"), nn.Sequential(nn.ReLU())
    both = a + b
    assert type(both) is nn.Sequential and len(both) == 6 and both[0] is a[0] and both[5] is b[0]
    assert len(a) == 5  # + makes a new container
    twice = a * 2
    assert twice[5] is a[0] and len(list(twice.parameters())) == 10  # shared: listed once
    a *= 3
    assert len(a) == 15 and list(a._modules) == [str(i) for i in range(15)]
    for lib in (gpunn, torch):  # a ModuleList is no Sequential in torch, so + refuses it in both
        with pytest.raises(ValueError):
            _build(lib, "Sequential") + _build(lib, "ModuleList")
        with pytest.raises(ValueError):
            seq = _build(lib, "Sequential")
            seq += [lib.nn.ReLU()]
        with pytest.raises(TypeError):
            _build(lib, "ModuleList") * 2


def test_modulelist_concatenation_takes_any_iterable_of_modules():
    lst = _build(gpunn, "ModuleList")
    combined = lst + (m for m in [nn.ReLU(), nn.Tanh()])
    assert type(combined) is nn.ModuleList and list(combined._modules) == [str(i) for i in range(7)]
    lst += nn.Sequential(nn.ReLU())
    assert len(lst) == 6 and type(lst[5]) is nn.ReLU


def test_extend_with_a_non_module_adds_nothing():
    lst = _build(gpunn, "ModuleList")
    with pytest.raises(TypeError, match="entry 1 is a int"):
        lst.extend([nn.ReLU(), 3])
    assert len(lst) == 5


def test_edited_sequential_runs_and_trains_the_remaining_layers(device):
    model = nn.Sequential(nn.Linear(3, 4, device=device), nn.Tanh(), nn.Linear(4, 4, device=device), nn.ReLU())
    model[1] = nn.ReLU()
    del model[2:]
    model.append(nn.Linear(4, 2, device=device))
    model.insert(2, nn.Identity())
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Identity", "Linear"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    x = gpunn.randn(5, 3, device=device)
    expected = model[3](model[0](x).relu())
    out = model(x)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device is device for p in model.parameters())


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
