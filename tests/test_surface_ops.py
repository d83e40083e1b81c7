"""Issue 17's tensor ops (sort, argsort, topk, gather, scatter_add, bincount, cumsum, prod, std,
var, bmm, expand, repeat, chunk, split, masked_fill, contiguous, type, rand_like, randn_like,
is_tensor) on every device: forward against NumPy in float64, gradients by gradcheck, and
PyTorch's semantics (indices, dtypes, return types) against torch where it is installed.
"""

import numpy as np
import pytest

import gpunn
from gpunn import ops
from gpunn.errors import DTypeError, IndexOutOfRangeError, ShapeError
from gpunn.testing import gradcheck
from helpers import assert_close, away_from_zero, distinct, rng, to_device


def _torch():
    return pytest.importorskip("torch")


def check(device, fn, reference, *arrays, rtol=1e-10, grad=True):
    """fn on float64 leaves equals `reference` (NumPy) on the device, and passes gradcheck."""
    leaves = [to_device(a, device, requires_grad=grad) for a in arrays]
    out = fn(*leaves)
    assert_close(out, reference(*arrays), device=device, dtype=gpunn.float64, rtol=rtol)
    if grad:
        gradcheck(fn, leaves)
        for leaf in leaves:
            assert leaf.grad.device == device and leaf.grad.shape == leaf.shape


# --- gather and scatter_add ----------------------------------------------------------------------

GATHER_INDEX = np.array([[0, 2, 2, 1], [2, 2, 0, 0]])  # repeats: the gradient must add up


def test_gather_along_each_dim(device):
    x = away_from_zero((3, 4), seed=1)
    idx = to_device(GATHER_INDEX, device)
    check(device, lambda t: t.gather(0, idx), lambda a: np.take_along_axis(a, GATHER_INDEX, 0), x)
    idx1 = to_device(GATHER_INDEX[:, :3] % 4, device)  # fewer rows than x: PyTorch reads the leading corner
    check(device, lambda t: gpunn.gather(t, 1, idx1), lambda a: np.take_along_axis(a[:2], GATHER_INDEX[:, :3] % 4, 1),
          x)
    check(device, lambda t: t.gather(-1, idx1), lambda a: np.take_along_axis(a[:2], GATHER_INDEX[:, :3] % 4, 1), x)


def test_gather_refuses_bad_indices(device):
    x = to_device(np.zeros((2, 3)), device)
    with pytest.raises(DTypeError, match="integer"):
        x.gather(0, to_device(np.zeros((2, 3)), device))
    with pytest.raises(ShapeError, match="dimensions"):
        x.gather(0, to_device(np.zeros(3, dtype=np.int64), device))
    with pytest.raises(IndexOutOfRangeError, match="dim 2"):
        x.gather(2, to_device(np.zeros((2, 3), dtype=np.int64), device))
    with pytest.raises(ShapeError, match="larger"):
        x.gather(0, to_device(np.zeros((2, 4), dtype=np.int64), device))
    if device.type == "cpu":
        with pytest.raises(IndexOutOfRangeError, match="out of range"):
            x.gather(1, to_device(np.full((2, 3), 3), device))


def _scatter_add_reference(x, dim, index, src):
    out = x.copy()
    for pos in np.ndindex(*index.shape):
        target = list(pos)
        target[dim] = index[pos]
        out[tuple(target)] += src[pos]
    return out


def test_scatter_add_accumulates_and_differentiates_both(device):
    x, src = away_from_zero((3, 4), seed=2), away_from_zero((3, 4), seed=3)
    idx = GATHER_INDEX[:, :3]
    index = to_device(idx, device)
    check(device, lambda a, s: a.scatter_add(0, index, s),
          lambda a, s: _scatter_add_reference(a, 0, idx, s[:2, :3]), x, src)
    check(device, lambda a, s: gpunn.scatter_add(a, 1, index, s),
          lambda a, s: _scatter_add_reference(a, 1, idx, s[:2, :3]), x, src)


def test_scatter_add_and_gather_match_torch():
    torch = _torch()
    x, src = away_from_zero((3, 4), seed=4), away_from_zero((2, 3), seed=5)
    idx = GATHER_INDEX[:, :3]
    for dim in (0, 1):
        got = gpunn.tensor(x).scatter_add(dim, gpunn.tensor(idx), gpunn.tensor(src))
        want = torch.tensor(x).scatter_add(dim, torch.tensor(idx), torch.tensor(src))
        assert_close(got, want.numpy())
        assert_close(gpunn.tensor(x).gather(dim, gpunn.tensor(idx)), torch.tensor(x).gather(dim, torch.tensor(idx)))


def test_negative_control_a_scatter_that_overwrites_fails_gradcheck():
    """A gather rule that writes instead of adding (last repeat wins) must be caught."""

    def overwriting(xp, g, out, x, index, axis):
        grad = np.zeros(x.shape)
        np.put_along_axis(grad, np.asarray(index), np.asarray(g), axis)
        return grad

    wrong = ops.Primitive("overwriting_gather", ops.gather.forward, overwriting, None)  # no fast path replaces it
    x = to_device(away_from_zero((3, 4)), gpunn.device("cpu"), requires_grad=True)
    idx = gpunn.tensor(GATHER_INDEX)
    with pytest.raises(AssertionError, match="gradcheck"):
        gradcheck(lambda t: gpunn.apply(wrong, t, idx, axis=0), [x])


# --- sorting ---------------------------------------------------------------------------------------

def test_sort_argsort_topk(device):
    x = distinct((3, 5), seed=6)
    check(device, lambda t: t.sort(1).values, lambda a: np.sort(a, 1), x)
    check(device, lambda t: gpunn.sort(t, 0, descending=True)[0], lambda a: -np.sort(-a, 0), x)
    check(device, lambda t: t.topk(2).values, lambda a: -np.sort(-a, 1)[:, :2], x)
    check(device, lambda t: gpunn.topk(t, 2, dim=0, largest=False).values, lambda a: np.sort(a, 0)[:2], x)
    t = to_device(x, device)
    values, indices = t.sort(dim=-1)
    np.testing.assert_array_equal(indices.numpy(), np.argsort(x, 1))
    assert indices.dtype == gpunn.int64 and indices.device == device
    np.testing.assert_array_equal(t.argsort(dim=0, descending=True).numpy(), np.argsort(-x, 0))
    np.testing.assert_array_equal(gpunn.argsort(t).numpy(), np.argsort(x, 1))
    with pytest.raises(IndexOutOfRangeError, match="k=6"):
        t.topk(6)


def test_sort_and_topk_match_torch_with_ties():
    torch = _torch()
    x = np.array([[3.0, 1.0, 3.0, 2.0, 1.0], [0.0, 0.0, 5.0, -1.0, 5.0]])
    for descending in (False, True):
        got = gpunn.tensor(x).sort(1, descending=descending, stable=True)
        want = torch.tensor(x).sort(dim=1, descending=descending, stable=True)
        assert_close(got.values, want.values.numpy())
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    got, want = gpunn.tensor(x[0]).topk(3), torch.tensor(x[0]).topk(3)
    assert_close(got.values, want.values.numpy())
    assert_close(gpunn.tensor(3.0).sort().values, torch.tensor(3.0).sort().values.numpy())


# --- scans, products, statistics --------------------------------------------------------------------

def test_cumsum(device):
    x = away_from_zero((3, 4), seed=7)
    check(device, lambda t: t.cumsum(1), lambda a: np.cumsum(a, 1), x)
    check(device, lambda t: gpunn.cumsum(t, dim=0), lambda a: np.cumsum(a, 0), x)
    ints = to_device(np.array([1, 2, 3], dtype=np.int32), device).cumsum(0)
    assert ints.dtype == gpunn.int64  # PyTorch sums integers as int64
    assert_close(ints, np.array([1, 3, 6]))


def test_prod_including_zeros(device):
    x = away_from_zero((3, 4), seed=8)
    check(device, lambda t: t.prod(1), lambda a: np.prod(a, 1), x)
    check(device, lambda t: gpunn.prod(t, 0, keepdim=True), lambda a: np.prod(a, 0, keepdims=True), x)
    check(device, lambda t: t.prod(), lambda a: np.prod(a), x[:2])
    zeros = x.copy()
    zeros[0, 1] = 0.0  # one zero in row 0: only its own entry gets a gradient there
    zeros[1, 0] = zeros[1, 2] = 0.0  # two zeros in row 1: no gradient anywhere in it
    check(device, lambda t: t.prod(1), lambda a: np.prod(a, 1), zeros)


def test_negative_control_prod_by_division_fails_at_zero():
    wrong = ops.Primitive("prod_by_division", ops.prod.forward,
                          lambda xp, g, out, x, axis=None, keepdims=False: g * out / x)
    x = away_from_zero((4,))
    x[1] = 0.0
    leaf = gpunn.tensor(x, requires_grad=True)
    with np.errstate(all="ignore"), pytest.raises(AssertionError, match="gradcheck"):
        gradcheck(lambda t: gpunn.apply(wrong, t), [leaf])


@pytest.mark.parametrize("kw, ddof, axis", [({}, 1, None), ({"dim": 1}, 1, 1), ({"dim": (0, 1), "correction": 0}, 0, None),
                                            ({"dim": 0, "unbiased": False, "keepdim": True}, 0, 0),
                                            ({"dim": 1, "correction": 2}, 2, 1)], ids=str)
def test_var_and_std(device, kw, ddof, axis):
    x = away_from_zero((3, 4), seed=9)
    keep = kw.get("keepdim", False)
    check(device, lambda t: t.var(**kw), lambda a: np.var(a, axis=axis, ddof=ddof, keepdims=keep), x)
    check(device, lambda t: gpunn.std(t, **kw), lambda a: np.std(a, axis=axis, ddof=ddof, keepdims=keep), x)


def test_var_matches_torch_and_warns_without_degrees_of_freedom():
    torch = _torch()
    x = away_from_zero((3, 4), seed=10)
    assert_close(gpunn.tensor(x).var(1, True), torch.tensor(x).var(1, True).numpy())
    assert_close(gpunn.tensor(x).std(0, correction=0), torch.tensor(x).std(0, correction=0).numpy())
    assert_close(gpunn.tensor(x).var(False), torch.tensor(x).var(False).numpy())  # the old positional unbiased
    with pytest.warns(UserWarning, match="degrees of freedom"):
        one = gpunn.tensor([2.0]).var()
    with pytest.warns(UserWarning, match="degrees of freedom"):
        theirs = torch.tensor([2.0]).var()
    assert np.isnan(one.item()) and np.isnan(theirs.item())
    with pytest.raises(DTypeError, match="floating"):
        gpunn.tensor([1, 2]).var()


# --- shapes ----------------------------------------------------------------------------------------

def test_bmm(device):
    a, b = away_from_zero((2, 3, 4), seed=11), away_from_zero((2, 4, 2), seed=12)
    check(device, gpunn.bmm, lambda x, y: x @ y, a, b)
    with pytest.raises(ShapeError, match="3-d"):
        to_device(a[0], device).bmm(to_device(b[0], device))


def test_expand_and_repeat(device):
    x = away_from_zero((3, 1), seed=13)
    check(device, lambda t: t.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), x)
    check(device, lambda t: t.expand((-1, 5)), lambda a: np.broadcast_to(a, (3, 5)), x)
    check(device, lambda t: t.expand_as(gpunn.zeros(3, 2)), lambda a: np.broadcast_to(a, (3, 2)), x)
    y = away_from_zero((2, 3), seed=14)
    check(device, lambda t: t.repeat(2, 3), lambda a: np.tile(a, (2, 3)), y)
    check(device, lambda t: t.repeat((2, 1, 2)), lambda a: np.tile(a, (2, 1, 2)), y)
    with pytest.raises(ShapeError, match="size 2 cannot become 4"):
        to_device(y, device).expand(4, 3)
    with pytest.raises(ShapeError, match="at least one"):
        to_device(y, device).repeat(2)


def test_split_and_chunk(device):
    x = away_from_zero((5, 3), seed=15)
    w = [2.0, -1.0, 0.5]
    check(device, lambda t: gpunn.concat([p * k for p, k in zip(t.split(2), w)]),
          lambda a: np.concatenate([p * k for p, k in zip(np.split(a, [2, 4]), w)]), x)
    check(device, lambda t: gpunn.concat([p * k for p, k in zip(gpunn.split(t, [1, 2], dim=1), w)], dim=1),
          lambda a: np.concatenate([a[:, :1] * 2.0, a[:, 1:] * -1.0], axis=1), x)
    t = to_device(x, device)
    assert [p.shape for p in t.chunk(3)] == [(2, 3), (2, 3), (1, 3)]
    assert [p.shape for p in gpunn.chunk(t, 4, dim=1)] == [(5, 1), (5, 1), (5, 1)]  # fewer pieces, as PyTorch
    with pytest.raises(ShapeError, match="sum to"):
        t.split([2, 2])


def test_split_and_chunk_match_torch():
    torch = _torch()
    x = np.arange(14.0).reshape(7, 2)
    for pieces, want in [(gpunn.tensor(x).chunk(3), torch.tensor(x).chunk(3)),
                         (gpunn.tensor(x).chunk(4), torch.tensor(x).chunk(4)),
                         (gpunn.tensor(x).split(3), torch.tensor(x).split(3)),
                         (gpunn.tensor(x).split([4, 3]), torch.tensor(x).split([4, 3]))]:
        assert isinstance(pieces, tuple) and len(pieces) == len(want)
        for p, q in zip(pieces, want):
            assert_close(p, q.numpy())


def test_masked_fill(device):
    x = away_from_zero((2, 3), seed=16)
    mask = np.array([[True, False, True], [False, False, True]])
    m = to_device(mask, device)
    check(device, lambda t: t.masked_fill(m, -7.0), lambda a: np.where(mask, -7.0, a), x)
    row = to_device(mask[0], device)  # broadcast along rows
    check(device, lambda t: gpunn.masked_fill(t, row, 0.0), lambda a: np.where(mask[0], 0.0, a), x)
    # a 0-d tensor value gets its gradient too
    check(device, lambda t, v: t.masked_fill(m, v), lambda a, v: np.where(mask, v, a), x, np.array(3.0))
    ints = to_device(np.array([1, 2]), device).masked_fill(to_device(np.array([True, False]), device), 1.7)
    assert ints.dtype == gpunn.int64 and ints.tolist() == [1, 2]  # PyTorch: the value is cast to the tensor's dtype
    with pytest.raises(DTypeError, match="bool"):
        to_device(x, device).masked_fill(to_device(np.ones((2, 3)), device), 0.0)
    with pytest.raises(ShapeError, match="broadcast"):
        to_device(x, device).masked_fill(to_device(np.ones((3, 3), dtype=bool), device), 0.0)


# --- counting, creation and small faces ---------------------------------------------------------------

def test_bincount(device):
    x = to_device(np.array([0, 1, 1, 3, 1]), device)
    assert_close(x.bincount(), np.array([1, 3, 0, 1]), dtype=gpunn.int64, device=device)
    assert_close(gpunn.bincount(x, minlength=6), np.bincount([0, 1, 1, 3, 1], minlength=6))
    w = to_device(np.array([0.5, 1.0, 2.0, 3.0, 4.0]), device)
    assert_close(x.bincount(w), np.array([0.5, 7.0, 0.0, 3.0]), dtype=gpunn.float64)
    assert gpunn.bincount(to_device(np.zeros(0, dtype=np.int64), device)).shape == (0,)
    with pytest.raises(ValueError, match="non-negative"):
        to_device(np.array([1, -1]), device).bincount()


def test_bincount_matches_torch():
    torch = _torch()
    x = rng(17).integers(0, 6, size=20)
    w = rng(18).normal(size=20).astype(np.float32)
    assert_close(gpunn.tensor(x).bincount(), torch.tensor(x).bincount().numpy())
    got, want = gpunn.tensor(x).bincount(gpunn.tensor(w)), torch.tensor(x).bincount(torch.tensor(w))
    assert got.dtype.name == str(want.dtype).split(".")[-1]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_contiguous_type_is_tensor(device):
    x = to_device(np.ones((2, 2), dtype=np.float32), device)
    assert x.contiguous() is x
    assert x.type() == ("torch.cuda.FloatTensor" if device.type == "cuda" else "torch.FloatTensor")
    assert x.long().type().endswith("LongTensor") and x.double().type().endswith("DoubleTensor")
    assert x.type("torch.DoubleTensor").dtype == gpunn.float64
    assert x.type(gpunn.int64).dtype == gpunn.int64
    assert gpunn.is_tensor(x) and not gpunn.is_tensor(np.ones(2))


def test_type_strings_match_torch():
    torch = _torch()
    for dtype in ("float32", "float64", "int64", "int32", "bool", "uint8", "float16"):
        assert gpunn.zeros(1, dtype=dtype).type() == torch.zeros(1, dtype=getattr(torch, dtype)).type()


def test_rand_like_and_randn_like(device):
    x = to_device(np.zeros((3, 2)), device)
    gpunn.manual_seed(5)
    a, b = gpunn.rand_like(x), gpunn.randn_like(x, dtype="float32")
    assert a.shape == b.shape == (3, 2) and a.device == b.device == device
    assert a.dtype == gpunn.float64 and b.dtype == gpunn.float32
    host = a.numpy()
    assert ((host >= 0) & (host < 1)).all() and len(np.unique(host)) == 6
    gpunn.manual_seed(5)
    assert_close(gpunn.rand_like(x), host)  # one seed, the same numbers
    assert gpunn.randn_like(x, requires_grad=True).requires_grad


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("spec", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fast_paths_match_the_generic_scatter(spec, dtype):
    """The backends' scatter-adds (NumPy: bincount over flat positions; CuPy: an atomic
    scatter-add) in gather's gradient and in scatter_add, against the standard-only one-hot sums."""
    dev = gpunn.device(spec)
    xp = dev.xp
    x = (away_from_zero((4, 5), seed=19) * 10).astype(dtype)
    src = (away_from_zero((3, 5), seed=20) * 10).astype(dtype)
    for axis in (0, 1):
        index = rng(21 + axis).integers(0, x.shape[axis], size=(3, 4))
        arrays = [dev.put(a) for a in (x, index, src[:, :4])]
        with dev.scope:
            for name in ("scatter_add", "gather"):
                fast, generic = dev.fast_paths[name], getattr(ops, name)
                if name == "scatter_add":
                    got, want = fast.forward(xp, *arrays, axis=axis), generic.forward(xp, *arrays, axis=axis)
                else:
                    x_, index_, g = arrays
                    got, want = fast.grads[0](xp, g, None, x_, index_, axis), generic.grads[0](xp, g, None, x_, index_,
                                                                                                 axis)
                assert got.dtype == want.dtype == arrays[0].dtype
                np.testing.assert_allclose(dev.backend.to_host(got), dev.backend.to_host(want), rtol=1e-6)


def test_std_of_constant_entries_has_a_zero_gradient(device):
    """PyTorch's choice where the variance is 0: gradient 0, not the NaN of d sqrt(v) at v = 0."""
    x = to_device(np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]), device, requires_grad=True)
    x.std(dim=1).sum().backward()
    centered = np.array([1.0, 2.0, 4.0]) - 7 / 3
    expected = np.zeros((2, 3))
    expected[1] = centered / (np.sqrt((centered ** 2).sum() / 2) * 2)
    assert_close(x.grad, expected)


def test_pieces_and_expansions_are_views(device):
    """split/chunk pieces share their tensor's storage (an in-place edit shows through), and a view
    of a view can be taken (repeat reshapes, then broadcasts: two views in a row)."""
    a = to_device(np.arange(6.0).reshape(3, 2), device)
    first = a.chunk(3)[0]
    with gpunn.no_grad():
        first.mul_(10)
    assert_close(a, np.array([[0.0, 10.0], [2.0, 3.0], [4.0, 5.0]]))
    x = to_device(np.arange(3.0).reshape(3, 1), device)
    assert_close(x.reshape(1, 3).reshape(3, 1).expand(3, 2), np.repeat(np.arange(3.0)[:, None], 2, 1))
