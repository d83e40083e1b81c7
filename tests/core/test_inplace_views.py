"""Storage, views, version counters and in-place ops: PyTorch's model (issue 15).

In-place ops write into the tensor's storage, so views and aliases see the change; on tensors in
the graph they are recorded; a node that saved a value refuses it in backward once it was
overwritten. Expected values come from PyTorch where it is installed, else from its documented
behaviour (small hand-checked numbers).
"""

import numpy as np
import pytest

import gpunn
from gpunn import autograd, functional as F, nn, optim
from gpunn.tensor import Tensor
from helpers import assert_close, to_device

torch = None
try:
    import torch
except ImportError:  # the reference comparisons skip; the hand-checked values still run
    pass

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (reference values)")


def leaf(values, device, dtype="float64"):
    return to_device(values, device, dtype=dtype).requires_grad_()


# --- views and aliases share storage: writes show through -------------------------------------------


def test_view_write_shows_in_base(device):
    x = to_device([1.0, 2.0, 3.0, 4.0], device)
    v = x.view(2, 2)
    v[0, 0] = 10.0
    assert_close(x, [10.0, 2.0, 3.0, 4.0])


def test_basic_slice_inplace_add_shows_in_base(device):
    x = to_device([[1.0, 2.0], [3.0, 4.0]], device)
    r = x[0]
    r += 1
    assert_close(x, [[2.0, 3.0], [3.0, 4.0]])


def test_an_element_is_a_view_too(device):
    """x[i, j] is a 0-d view, as in PyTorch (NumPy alone would hand out a scalar copy)."""
    x = to_device([[1.0, 2.0], [3.0, 4.0]], device)
    v = x[1, 0]
    v += 10
    x[0, 1].mul_(3)
    assert_close(x, [[1.0, 6.0], [13.0, 4.0]])


def test_transpose_and_reshape_write_through(device):
    x = to_device([[1.0, 2.0], [3.0, 4.0]], device)
    x.T[0, 1] = 7.0  # x[1, 0]
    x.transpose(0, 1)[1, 0] = 8.0  # x[0, 1]
    x.reshape(4)[3] = 9.0
    assert_close(x, [[1.0, 8.0], [7.0, 9.0]])


def test_detach_zero_zeroes_the_original(device):
    w = leaf([1.0, 2.0], device)
    w.detach().zero_()
    assert_close(w, [0.0, 0.0])
    assert w.requires_grad and w.is_leaf


def test_from_numpy_and_numpy_share_memory():
    n = np.array([1.0, 2.0])
    t = gpunn.from_numpy(n)
    t.add_(1)
    np.testing.assert_array_equal(n, [2.0, 3.0])
    back = t.numpy()
    back[0] = -5.0
    assert t[0].item() == -5.0


def test_a_copy_does_not_alias(device):
    x = to_device([1.0, 2.0], device)
    c = x.clone()
    c += 1
    assert_close(x, [1.0, 2.0])
    y = x[to_device([1, 0], device, dtype="int64")]  # advanced indexing copies, as in PyTorch
    y += 1
    assert_close(x, [1.0, 2.0])


@pytest.mark.parametrize("method, args, expected", [
    ("zero_", (), [0.0, 0.0, 0.0]),
    ("fill_", (2.5,), [2.5, 2.5, 2.5]),
    ("add_", (1.0,), [0.0, 3.0, 4.0]),
    ("sub_", (1.0,), [-2.0, 1.0, 2.0]),
    ("mul_", (2.0,), [-2.0, 4.0, 6.0]),
    ("div_", (2.0,), [-0.5, 1.0, 1.5]),
    ("clamp_", (0.0, 2.5), [0.0, 2.0, 2.5]),
    ("relu_", (), [0.0, 2.0, 3.0]),
])
def test_inplace_methods_write_through_a_view(device, method, args, expected):
    x = to_device([[-1.0, 2.0, 3.0]], device)
    view = x[0]
    out = getattr(view, method)(*args)
    assert out is view
    assert_close(x, [expected])


def test_masked_fill_copy_setitem_write_through(device):
    x = to_device([1.0, 2.0, 3.0], device)
    alias = x.detach()
    x.masked_fill_(x > 1.5, 0.0)
    assert_close(alias, [1.0, 0.0, 0.0])
    x.copy_(to_device([4.0, 5.0, 6.0], device))
    assert_close(alias, [4.0, 5.0, 6.0])
    x[1:] = 7.0
    assert_close(alias, [4.0, 7.0, 7.0])


def test_random_fills_write_through(device):
    w = to_device(np.zeros((3, 4)), device, dtype="float32")
    alias = w.detach()
    gpunn.manual_seed(0)
    w.normal_(0.0, 0.02)
    assert float(alias.abs().sum()) > 0 and abs(float(alias.mean())) < 0.05
    w.uniform_(2.0, 3.0)
    assert float(alias.min()) >= 2.0


# --- .data is PyTorch's ---------------------------------------------------------------------------


def test_data_is_a_detached_alias(device):
    layer = nn.Linear(3, 2).to(device)
    gpunn.manual_seed(0)
    layer.weight.data.normal_(0, 0.02)
    layer.bias.data.zero_()
    assert isinstance(layer.weight.data, Tensor) and not layer.weight.data.requires_grad
    assert_close(layer.bias, [0.0, 0.0])
    layer(to_device(np.ones((1, 3)), device, dtype="float32")).sum().backward()
    layer.weight.grad.data.zero_()
    assert_close(layer.weight.grad, np.zeros((2, 3)))


def test_data_assignment_checks_and_bumps(device):
    layer = nn.Linear(3, 2).to(device)
    before = layer.weight._version
    layer.weight.data = gpunn.ones(2, 3, device=device)
    assert layer.weight._version == before + 1
    assert_close(layer.weight, np.ones((2, 3)))
    with pytest.raises(gpunn.ShapeError, match="3, 2.*2, 3|must match"):
        layer.weight.data = gpunn.ones(3, 2, device=device)
    with pytest.raises(gpunn.ShapeError, match="float64"):
        layer.weight.data = gpunn.ones(2, 3, dtype="float64", device=device)
    with pytest.raises(TypeError, match="gpunn.Tensor"):
        layer.weight.data = np.ones((2, 3), dtype=np.float32)


# --- versions: a saved value overwritten in place is refused ----------------------------------------


def test_gan_pattern_refused_before_any_gradient_is_written(device):
    x = leaf([1.0, 2.0], device)
    w = leaf([3.0, 4.0], device)
    out = x * w
    out.sum().backward(retain_graph=True)
    grads = x.grad.numpy().copy()
    with gpunn.no_grad():
        w -= 1.0
    with pytest.raises(gpunn.GraphError, match=r"input 1 of 'mul' \(shape \(2,\)\).*version 1.*version 0.*clone"):
        (out ** 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), grads)  # nothing was written by the refused backward


def _gan_step(fused):
    """The multi-loss pattern: two losses from one forward with a step in between."""
    gpunn.manual_seed(0)
    model = nn.Linear(3, 2).double()
    opt = optim.SGD(model.parameters(), lr=0.1, fused=fused)
    x = gpunn.ones(4, 3, dtype="float64", requires_grad=True)
    out = model(x)
    out.sum().backward(retain_graph=True)
    opt.step()
    (out ** 2).sum().backward()


@pytest.mark.parametrize("fused", [False, True])
def test_gan_pattern_raises_for_fused_and_unfused_optimizers(fused):
    with pytest.raises(gpunn.GraphError, match="modified by an in-place operation"):
        _gan_step(fused)


def test_retain_graph_without_a_step_still_works(device):
    x = leaf([1.0, 2.0], device)
    w = leaf([3.0, 4.0], device)
    out = x * w
    out.sum().backward(retain_graph=True)
    (out ** 2).sum().backward()
    assert_close(x.grad, [3.0 + 2 * 3 * 3 * 1, 4.0 + 2 * 8 * 4])


def test_load_state_dict_and_init_bump_versions(device):
    layer = nn.Linear(2, 2).double().to(device)
    x = to_device([[1.0, 2.0]], device, dtype="float64")
    out = layer(x)
    layer.load_state_dict(nn.Linear(2, 2).double().state_dict())
    with pytest.raises(gpunn.GraphError, match="in-place"):
        out.sum().backward()
    out = layer(x.requires_grad_())
    nn.init.zeros_(layer.weight)
    with pytest.raises(gpunn.GraphError, match="in-place"):
        out.sum().backward()


def test_a_parameter_shares_its_tensors_version(device):
    """Parameter(t) shares t's storage: a write through t must reach the nodes that saved the parameter."""
    t = to_device([1.0, 2.0], device, dtype="float64")
    p = nn.Parameter(t)
    x = leaf([3.0, 4.0], device)
    out = (p * x).sum()
    t.add_(1)
    assert_close(p, [2.0, 3.0])
    with pytest.raises(gpunn.GraphError, match="modified by an in-place operation"):
        out.backward()


def test_versions_count_writes(device):
    x = to_device([1.0, 2.0], device)
    assert x._version == 0
    v = x[0:1]
    x.add_(1)
    v.mul_(2)
    x[0] = 3.0
    assert x._version == v._version == 3


def test_negative_control_without_the_version_check_the_answer_is_silently_wrong(monkeypatch):
    """With backward's check switched off, the GAN pattern runs and gives a wrong gradient: the
    check is what stands between the user and that number."""
    monkeypatch.setattr(autograd, "check_saved", lambda order: [n for n in order if n.arrays is None and 1 / 0])
    x = gpunn.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    w = gpunn.tensor([3.0, 4.0], dtype="float64", requires_grad=True)
    out = x * w
    with gpunn.no_grad():
        w -= 1.0
    out.sum().backward()
    assert not np.allclose(x.grad.numpy(), [3.0, 4.0])  # the rule read the new w: [2, 3]


def test_negative_control_replacing_the_array_breaks_aliasing(monkeypatch):
    """An in-place op that rebinds the array instead of writing into it leaves views stale."""
    def rebind(self, values):
        self._array = values if hasattr(values, "shape") else self.device.xp.full_like(self._array, values)
        return self
    monkeypatch.setattr(Tensor, "_write", rebind)
    x = gpunn.tensor([1.0, 2.0])
    alias = x.detach()
    x.add_(1)
    assert not np.allclose(alias.numpy(), [2.0, 3.0])


# --- in-place on graph tensors is recorded ----------------------------------------------------------


def _grads(fn, *values, lib=gpunn):
    xs = [lib.tensor(v, dtype=lib.float64, requires_grad=True) for v in values]
    fn(*xs).backward()
    return [x.grad.numpy() for x in xs]


def _residual(x, w):
    out = x * w
    identity = x
    out += identity
    return (out * out).sum()


def _micrograd(x, w):
    c = x * w
    c += c + 1
    return (c * c).sum()


def _relu_(x, w):
    h = x * w - 1.0
    h.relu_()
    return (h * x).sum()


def _mul_(x, w):
    h = x + 0.0
    h.mul_(w)  # w's gradient needs h's value before the write: PyTorch keeps it
    return (h * h).sum()


def _functional_inplace(x, w):
    h = x * w - 1.0
    y = F.relu(h, inplace=True)
    assert y is h
    z = nn.LeakyReLU(0.1, inplace=True)(x - 2.0)
    return (y * 3 + z).sum()


CASES = {"residual": _residual, "micrograd": _micrograd, "relu_": _relu_, "mul_": _mul_,
         "functional_inplace": _functional_inplace}
EXPECTED = {  # PyTorch 2.13's gradients for x = [1, 2, -3], w = [0.5, 2, 1] (functional_inplace: by hand)
    "residual": ([4.5, 36.0, -24.0], [3.0, 24.0, 36.0]),
    "micrograd": ([4.0, 72.0, -20.0], [8.0, 72.0, 60.0]),
    "relu_": ([0.0, 7.0, 0.0], [0.0, 4.0, 0.0]),
    "mul_": ([0.5, 16.0, -6.0], [1.0, 16.0, 18.0]),
    "functional_inplace": ([0.1, 6.1, 0.1], [0.0, 6.0, 0.0]),
}
X, W = [1.0, 2.0, -3.0], [0.5, 2.0, 1.0]


@pytest.mark.parametrize("name", CASES)
def test_recorded_inplace_gives_pytorchs_gradients(name):
    got = _grads(CASES[name], X, W)
    for g, e in zip(got, EXPECTED[name]):
        np.testing.assert_allclose(g, e, rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("name", [n for n in CASES if n != "functional_inplace"])
def test_recorded_inplace_reference_values_are_torchs(name):
    for g, e in zip(_grads(CASES[name], X, W, lib=torch), EXPECTED[name]):
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_recorded_inplace_on_every_device(device):
    x = to_device([1.0, 2.0, -3.0], device, dtype="float64").requires_grad_()
    w = to_device([0.5, 2.0, 1.0], device, dtype="float64").requires_grad_()
    _micrograd(x, w).backward()
    assert_close(x.grad, EXPECTED["micrograd"][0])
    assert_close(w.grad, EXPECTED["micrograd"][1])


def test_setitem_on_a_graph_tensor_is_recorded(device):
    x = leaf([1.0, 2.0, 3.0], device)
    v = leaf([10.0], device)
    h = x * 2
    h[1:2] = v * 3
    h.sum().backward()
    assert_close(x.grad, [2.0, 0.0, 2.0])
    assert_close(v.grad, [3.0])


def test_inplace_on_a_leaf_that_requires_grad_is_refused(device):
    w = leaf([1.0, 2.0], device)
    with pytest.raises(gpunn.GraphError, match="leaf tensor that requires grad.*no_grad"):
        w += 1
    with pytest.raises(gpunn.GraphError, match="view of a leaf tensor"):
        w[0:1].mul_(2)
    with pytest.raises(gpunn.GraphError, match="leaf tensor"):
        w[0] = 5.0
    with gpunn.no_grad():
        w += 1  # the optimizer's way: allowed, and the leaf stays a leaf
    assert w.is_leaf and w._version == 1
    assert_close(w, [2.0, 3.0])


def test_inplace_output_read_later_is_refused():
    """exp saves its output; changing it in place afterwards must not give exp a stale value."""
    x = gpunn.tensor([0.0, 1.0], dtype="float64", requires_grad=True)
    y = x.exp()
    y.add_(1)
    with pytest.raises(gpunn.GraphError, match="output of 'exp'"):
        y.sum().backward()


# --- max and min with dim: the gradient goes to the returned index --------------------------------


def test_max_dim_sends_the_gradient_to_the_returned_index(device):
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]], device)
    values, indices = x.max(dim=1)
    values.sum().backward()
    assert_close(x.grad, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert indices.tolist() == [1, 0]
    x.grad = None
    values, indices = x.min(1, keepdim=True)
    assert values.shape == (2, 1) and indices.shape == (2, 1)
    values.sum().backward()
    assert_close(x.grad, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_amax_splits_ties_evenly(device):
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]], device)
    x.amax(1).sum().backward()
    assert_close(x.grad, [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    x.grad = None
    gpunn.amin(x, 1).sum().backward()
    assert_close(x.grad, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@needs_torch
def test_max_min_rules_match_torch():
    values = [[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]
    for fn in (lambda t: t.max(dim=1)[0], lambda t: t.min(dim=0)[0], lambda t: t.amax(1), lambda t: t.amin(0)):
        got = _grads(lambda t: fn(t).sum(), values)[0]
        want = _grads(lambda t: fn(t).sum(), values, lib=torch)[0]
        np.testing.assert_array_equal(got, want)


# --- writes of a tensor that requires grad, and views made by split, chunk and expand -------------


def test_writes_of_a_tensor_that_requires_grad_are_recorded():
    """buffer[0:2] = w and copy_(w) carry w's gradient, as in PyTorch; under no_grad they are plain writes."""
    w = gpunn.tensor([1.0, 2.0], requires_grad=True)
    buffer = gpunn.zeros(3)
    buffer[0:2] = w
    copied = gpunn.zeros(2).copy_(w)
    (buffer * 3).sum().backward()
    (copied * 5).sum().backward()
    assert w.grad.numpy().tolist() == [8.0, 8.0]
    with gpunn.no_grad():
        plain = gpunn.zeros(3)
        plain[0:2] = w
    assert plain.numpy().tolist() == [1.0, 2.0, 0.0] and not plain.requires_grad


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
