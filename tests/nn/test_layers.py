"""gpunn.nn's layers: Linear, Sequential and MLP, the activations (in place too), Dropout,
LayerNorm, BatchNorm1d, Embedding and Unflatten, and the errors that name the layer at fault.

References are NumPy float64 formulas written here from PyTorch's documentation (math.erf for the
exact GELU); torch itself is compared where it is installed. Gradients go through gradcheck.
"""

import math
from collections import OrderedDict

import numpy as np
import pytest

import gpunn
import gpunn.functional as F
import gpunn.nn as nn
import gpunn.optim as optim
from gpunn.datasets import xor
from gpunn.errors import DTypeError, IndexOutOfRangeError, ShapeError
from gpunn.testing import gradcheck
from helpers import assert_close, away_from_zero, check_uniform, rng, to_device


def _torch():
    return pytest.importorskip("torch")


STRICT_DEVICES = ["cpu", "strict", "strict:1"]


# --- layers ------------------------------------------------------------------------------------


def test_linear_forward_matches_numpy(device):
    lin = nn.Linear(5, 3, device=device)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    y = lin(gpunn.tensor(x, device=device))
    assert y.device == device and y.grad_fn == "linear"  # one fused node
    expected = x @ lin.weight.numpy().T + lin.bias.numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)
    no_bias = nn.Linear(5, 3, bias=False, device=device)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    np.testing.assert_allclose(no_bias(gpunn.tensor(x, device=device)).numpy(), x @ no_bias.weight.numpy().T,
                               rtol=1e-5, atol=1e-6)


def test_linear_default_init_is_pytorchs_uniform():
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    check_uniform(lin.weight.numpy(), bound)
    b = lin.bias.numpy()
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound


def test_sequential_container():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and isinstance(seq[1], nn.ReLU)
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is seq[0]
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    seq.append(nn.Sigmoid())
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"] and len(seq) == 4
    with pytest.raises(IndexError):
        seq[4]
    with pytest.raises(TypeError, match="instances"):
        nn.Sequential(nn.ReLU)
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]


def test_activation_and_loss_modules(device):
    x = gpunn.tensor([[-1.0, 0.5, 2.0]], device=device)
    np.testing.assert_allclose(nn.ReLU()(x).numpy(), [[0.0, 0.5, 2.0]])
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh([[-1.0, 0.5, 2.0]]), rtol=1e-6)
    np.testing.assert_allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp([[1.0, -0.5, -2.0]])), rtol=1e-6)
    assert nn.Identity(7, k=1)(x) is x
    assert nn.Flatten()(gpunn.zeros(2, 3, 4, device=device)).shape == (2, 12)
    target = gpunn.tensor([2], device=device)
    logits = np.array([-1.0, 0.5, 2.0])
    expected = -(logits[2] - np.log(np.exp(logits).sum()))
    np.testing.assert_allclose(nn.CrossEntropyLoss()(x, target).item(), expected, rtol=1e-6)
    np.testing.assert_allclose(nn.MSELoss()(x, gpunn.zeros(1, 3, device=device)).item(), (logits ** 2).mean(),
                               rtol=1e-6)


def test_mlp_structure_and_validation():
    mlp = nn.MLP([3, 4, 5, 2], activation="sigmoid")
    assert [type(m).__name__ for m in mlp] == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]
    assert all(not layer.bias.numpy().any() for layer in mlp if isinstance(layer, nn.Linear))
    with pytest.raises(ValueError, match="relu, tanh, sigmoid"):
        nn.MLP([2, 2], activation="gelu")
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP([3])
    with pytest.raises(ValueError, match="positive"):
        nn.MLP([3, 0, 2])


@pytest.mark.parametrize("activation,gain_name", [("relu", "kaiming"), ("tanh", "xavier"), ("sigmoid", "xavier")])
def test_mlp_init_suits_the_activation(activation, gain_name):
    mlp = nn.MLP([300, 500, 10], activation=activation)
    w = mlp[0].weight.numpy()
    if gain_name == "kaiming":
        bound = math.sqrt(2.0) * math.sqrt(3.0 / 300)
    else:
        gain = 5.0 / 3 if activation == "tanh" else 1.0
        bound = gain * math.sqrt(6.0 / (300 + 500))
    check_uniform(w, bound)


def test_same_seed_gives_bit_identical_init_on_every_device():
    weights = {}
    for spec in STRICT_DEVICES:
        gpunn.manual_seed(123)
        weights[spec] = [p.numpy() for p in nn.MLP([6, 16, 3], device=spec).parameters()]
        gpunn.manual_seed(123)
        lin = nn.Linear(6, 4, device=spec)
        weights[spec] += [lin.weight.numpy(), lin.bias.numpy()]
    for spec in STRICT_DEVICES[1:]:
        for a, b in zip(weights["cpu"], weights[spec]):
            assert a.dtype == b.dtype == np.float32
            assert np.array_equal(a, b)
    gpunn.manual_seed(124)
    other = [p.numpy() for p in nn.MLP([6, 16, 3]).parameters()]
    assert not np.array_equal(other[0], weights["cpu"][0])


def test_weights_are_float64_draws_rounded_to_float32():
    gpunn.manual_seed(5)
    w = nn.Linear(10, 7).weight.numpy()
    rng = np.random.Generator(np.random.PCG64(5))
    bound = 1 / math.sqrt(10)
    np.testing.assert_array_equal(w, rng.uniform(-bound, bound, size=(7, 10)).astype(np.float32))


# --- activations ---------------------------------------------------------------------------------


def normal_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2)))


def gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu_forward_and_gradient(device, slope):
    host = away_from_zero((3, 4))
    x = to_device(host, device, requires_grad=True)
    y = F.leaky_relu(x, slope)
    assert_close(y, np.where(host > 0, host, slope * host), device=device, dtype="float64")
    assert not np.allclose(y.numpy(), np.where(host > 0, host, 2 * slope * host))  # negative control
    gradcheck(lambda t: F.leaky_relu(t, slope), [x])
    assert_close(nn.LeakyReLU()(x), np.where(host > 0, host, 0.01 * host))
    y32 = nn.LeakyReLU(slope)(to_device(host, device, dtype="float32"))
    assert y32.dtype == "float32" and y32.device == device


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_forward_and_gradient(device, approximate):
    host = np.linspace(-6, 6, 25)
    x = to_device(host, device, requires_grad=True)
    y = F.gelu(x, approximate=approximate)
    expected = host * normal_cdf(host) if approximate == "none" else gelu_tanh_ref(host)
    # the exact form's erfc is accurate to 1.2e-7 relative: the tanh form is exact arithmetic
    assert_close(y, expected, device=device, dtype="float64", rtol=3e-7 if approximate == "none" else 1e-12)
    other = gelu_tanh_ref(host) if approximate == "none" else host * normal_cdf(host)
    assert not np.allclose(y.numpy(), other, rtol=1e-5, atol=0)  # negative control: the forms differ
    gradcheck(lambda t: F.gelu(t, approximate=approximate), [to_device(away_from_zero((2, 5)) * 3, device,
                                                                       requires_grad=True)])
    y.sum().backward()
    pdf = np.exp(-host ** 2 / 2) / math.sqrt(2 * math.pi)
    if approximate == "none":  # the rule is the exact derivative Phi(x) + x phi(x)
        np.testing.assert_allclose(x.grad.numpy(), normal_cdf(host) + host * pdf, rtol=3e-7, atol=1e-12)
    assert nn.GELU(approximate)(to_device(host, device, dtype="float32")).dtype == "float32"


def test_activation_modules_and_arguments():
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("erf")
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(gpunn.zeros(2), approximate="fast")
    with pytest.raises(gpunn.DTypeError, match="gelu"):
        F.gelu(gpunn.tensor([1, 2]))


def test_activations_agree_with_torch():
    torch = pytest.importorskip("torch")
    host = rng(3).normal(size=(4, 5)) * 3
    for ours, theirs in [(nn.LeakyReLU(), torch.nn.LeakyReLU()), (nn.LeakyReLU(0.3), torch.nn.LeakyReLU(0.3)),
                         (nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU("tanh"))]:
        x = gpunn.tensor(host, requires_grad=True)
        xt = torch.tensor(host, requires_grad=True)
        ours(x).sum().backward()
        theirs(xt).sum().backward()
        np.testing.assert_allclose(ours(x).numpy(), theirs(xt).detach().numpy(), rtol=3e-7, atol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-12)
        assert repr(ours) == repr(theirs)


# --- Module: inplace= and constructor errors --------------------------------------------------------


def test_inplace_activations_compute_the_same_values_and_still_fuse():
    gpunn.manual_seed(0)
    x = gpunn.tensor(rng(19).normal(size=(4, 3)), dtype="float32")
    plain = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
    inplace = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True))
    inplace.load_state_dict(plain.state_dict())
    before = x.numpy()
    out = inplace(x)
    assert out.grad_fn == "linear_act"  # ReLU(inplace=True) is still a ReLU to the fusion
    np.testing.assert_array_equal(out.numpy(), plain(x).numpy())
    np.testing.assert_array_equal(x.numpy(), before)  # fused: the Linear's output is what ReLU overwrites
    y = gpunn.tensor(np.array([-1.0, 2.0]))
    assert nn.LeakyReLU(0.1, inplace=True)(y) is y and y.tolist() == [-0.1, 2.0]  # written into y, as torch
    assert_close(nn.Dropout(0.5, inplace=True).eval()(y), [-0.1, 2.0])
    assert nn.functional.relu(y, inplace=True) is y and y.tolist() == [0.0, 2.0]


def test_inplace_reprs_and_refusals_match_torch():
    torch = _torch()
    for ours, theirs in [(nn.ReLU(), torch.nn.ReLU()), (nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
                         (nn.LeakyReLU(0.2, inplace=True), torch.nn.LeakyReLU(0.2, inplace=True)),
                         (nn.LeakyReLU(), torch.nn.LeakyReLU()),
                         (nn.Dropout(0.3), torch.nn.Dropout(0.3)), (nn.Dropout(inplace=True), torch.nn.Dropout(inplace=True))]:
        assert repr(ours) == repr(theirs)
    for name in ("Tanh", "Sigmoid"):  # PyTorch's Tanh and Sigmoid take no inplace=
        with pytest.raises(TypeError):
            getattr(torch.nn, name)(inplace=True)
        with pytest.raises(TypeError, match=f"{name}\\(\\) got an unexpected keyword argument 'inplace'"):
            getattr(nn, name)(inplace=True)


# --- dropout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(device, p):
    gpunn.manual_seed(0)
    x = gpunn.ones(200, 100, dtype="float64", device=device, requires_grad=True)
    y = F.dropout(x, p)
    assert y.device == device and y.dtype == "float64"
    values = y.numpy()
    zeros = values == 0
    assert abs(zeros.mean() - p) < 0.02  # 20000 draws: the standard error is about 0.0035
    np.testing.assert_array_equal(values[~zeros], 1 / (1 - p))
    y.sum().backward()  # the gradient is the same scaled mask
    np.testing.assert_array_equal(x.grad.numpy(), values)
    assert F.dropout(gpunn.ones(4, dtype="float32", device=device), p).dtype == "float32"


def test_dropout_edge_probabilities_and_eval(device):
    x = to_device(rng().normal(size=(3, 4)), device, requires_grad=True)
    for p in (0, 0.0):
        assert_close(F.dropout(x, p), x.numpy())
    assert_close(F.dropout(x, 0.5, training=False), x.numpy())
    zeroed = F.dropout(x, 1.0)
    assert_close(zeroed, np.zeros((3, 4)), device=device)
    zeroed.sum().backward()
    assert_close(x.grad, np.zeros((3, 4)))
    layer = nn.Dropout(0.5)
    assert layer.training
    assert (layer(x).numpy() == 0).any()
    layer.eval()
    assert_close(layer(x), x.numpy())  # identity in eval mode
    layer.train()
    assert (layer(x).numpy() == 0).any()


def test_dropout_same_seed_same_mask_on_every_device():
    masks = {}
    for spec in ("cpu", "strict:1"):
        gpunn.manual_seed(42)
        masks[spec] = F.dropout(gpunn.ones(8, 16, device=spec), 0.5).numpy()
    np.testing.assert_array_equal(masks["cpu"], masks["strict:1"])
    gpunn.manual_seed(43)
    assert not np.array_equal(F.dropout(gpunn.ones(8, 16), 0.5).numpy(), masks["cpu"])  # negative control


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True])
def test_dropout_rejects_bad_probabilities(bad):
    with pytest.raises(ValueError, match="p "):
        F.dropout(gpunn.ones(3), bad)
    with pytest.raises(ValueError, match="p "):
        nn.Dropout(bad)
    with pytest.raises(gpunn.DTypeError, match="floating"):
        F.dropout(gpunn.tensor([1, 2]), 0.5)


# --- layer norm ----------------------------------------------------------------------------------


def layer_norm_ref(x, k, weight=None, bias=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)  # biased, as PyTorch
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


@pytest.mark.parametrize("normalized_shape", [4, (3, 4)])
def test_layer_norm_forward_and_gradient(device, normalized_shape):
    g = rng(1)
    host = g.normal(size=(2, 3, 4)) * 2 + 1
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    shape = host.shape[3 - k:]
    w_host, b_host = g.normal(size=shape), g.normal(size=shape)
    x, w, b = (to_device(a, device, requires_grad=True) for a in (host, w_host, b_host))
    y = F.layer_norm(x, normalized_shape, w, b)
    assert_close(y, layer_norm_ref(host, k, w_host, b_host), device=device, dtype="float64", rtol=1e-9)
    assert not np.allclose(y.numpy(), layer_norm_ref(host, 3 - k, w_host, b_host))  # negative control: axes
    gradcheck(lambda *t: F.layer_norm(t[0], normalized_shape, t[1], t[2], eps=1e-3), [x, w, b])
    gradcheck(lambda t: F.layer_norm(t, normalized_shape), [x])


def test_layer_norm_module(device):
    layer = nn.LayerNorm(4, device=device)
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert_close(layer.weight, np.ones(4), device=device, dtype="float32")
    assert_close(layer.bias, np.zeros(4), device=device, dtype="float32")
    host = rng(2).normal(size=(5, 4)).astype(np.float32)
    y = layer(to_device(host, device))
    assert y.dtype == "float32" and y.device == device
    assert_close(y, layer_norm_ref(host.astype(np.float64), 1), rtol=1e-5, atol=1e-6)
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == ["weight"]
    bare = nn.LayerNorm((2, 2), elementwise_affine=False)
    assert list(bare.state_dict()) == [] and bare.weight is None and bare.bias is None
    with pytest.raises(gpunn.ShapeError, match="normalized_shape"):
        layer(gpunn.zeros(5, 3, device=device))


def test_layer_norm_agrees_with_torch():
    torch = pytest.importorskip("torch")
    host = rng(4).normal(size=(3, 2, 5))
    ours, theirs = nn.LayerNorm((2, 5), eps=1e-3, dtype="float64"), torch.nn.LayerNorm((2, 5), eps=1e-3).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng(5).normal(size=(2, 5))))
        theirs.bias.copy_(torch.tensor(rng(6).normal(size=(2, 5))))
    ours.load_state_dict({k: gpunn.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    x, xt = gpunn.tensor(host, requires_grad=True), torch.tensor(host, requires_grad=True)
    y, yt = ours(x), theirs(xt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = rng(7).normal(size=host.shape)
    (y * gpunn.tensor(upstream)).sum().backward()
    (yt * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert repr(ours) == repr(theirs)
    assert repr(nn.LayerNorm(3, elementwise_affine=False)) == repr(torch.nn.LayerNorm(3, elementwise_affine=False))


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


# --- embedding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index_shape", [(5,), (2, 3), ()])
def test_embedding_gathers_rows_and_accumulates_gradients(device, index_shape):
    table = rng(8).normal(size=(6, 3))
    idx_host = np.array([1, 4, 1, 0, 1, 5])[:int(np.prod(index_shape))].reshape(index_shape)
    w = to_device(table, device, requires_grad=True)
    idx = gpunn.tensor(idx_host, device=device)
    y = F.embedding(idx, w)
    assert_close(y, table[idx_host], device=device, dtype="float64")
    upstream = rng(9).normal(size=index_shape + (3,))
    (y * to_device(upstream, device)).sum().backward()
    expected = np.zeros_like(table)
    np.add.at(expected, idx_host.reshape(-1), upstream.reshape(-1, 3))  # repeated rows add up
    assert_close(w.grad, expected)
    if idx_host.size > 1:  # negative control: overwriting instead of accumulating differs
        overwritten = np.zeros_like(table)
        overwritten[idx_host.reshape(-1)] = upstream.reshape(-1, 3)
        assert not np.allclose(w.grad.numpy(), overwritten)
    gradcheck(lambda t: F.embedding(idx, t), [w])


def test_embedding_module_init_and_errors(device):
    gpunn.manual_seed(7)
    layer = nn.Embedding(1000, 20, device=device)
    assert list(layer.state_dict()) == ["weight"] and layer.weight.device == device
    assert layer.weight.dtype == "float32" and repr(layer) == "Embedding(1000, 20)"
    values = layer.weight.numpy()
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1) < 0.02  # N(0, 1), as in PyTorch
    gpunn.manual_seed(7)
    np.testing.assert_array_equal(nn.Embedding(1000, 20).weight.numpy(), values)  # same seed on every device
    out = layer(gpunn.tensor([[3, 999]], device=device))
    assert out.shape == (1, 2, 20) and out.dtype == "float32" and out.device == device
    with pytest.raises(gpunn.DTypeError, match="integer"):
        layer(gpunn.tensor([1.0], device=device))
    if device.type == "cpu":
        for bad in (1000, -1):
            with pytest.raises(IndexError, match=r"\[0, 1000\)"):
                layer(gpunn.tensor([0, bad]))
    other = "strict:1" if device.type == "cpu" else "cpu"
    with pytest.raises(gpunn.DeviceError, match="indices"):
        layer(gpunn.tensor([0], device=other))


def test_embedding_agrees_with_torch():
    torch = pytest.importorskip("torch")
    table = rng(10).normal(size=(7, 4))
    idx = np.array([[0, 6, 6], [2, 0, 6]])
    w, wt = gpunn.tensor(table, requires_grad=True), torch.tensor(table, requires_grad=True)
    y, yt = F.embedding(gpunn.tensor(idx), w), torch.nn.functional.embedding(torch.tensor(idx), wt)
    np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
    upstream = rng(11).normal(size=(2, 3, 4))
    (y * gpunn.tensor(upstream)).sum().backward()
    (yt * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy(), rtol=1e-12)
    assert repr(nn.Embedding(7, 4)) == repr(torch.nn.Embedding(7, 4))


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


# --- error messages name the layers the user wrote ------------------------------------------------


def test_float64_batch_into_a_fused_model_names_the_layers(device):
    model = nn.Sequential(nn.Linear(2, 3, device=device), nn.ReLU())
    batch = gpunn.tensor(np.ones((4, 2)), device=device)  # float64, as NumPy makes it
    with pytest.raises(DTypeError) as info:
        model(batch)
    message = str(info.value)
    assert message.startswith("Linear (fused with ReLU): inputs have different dtypes (float64 and float32)")
    assert "x.float()" in message and "DataLoader(..., dtype='float32')" in message
    assert "linear_act" not in message
    with pytest.raises(ShapeError, match=r"^Linear \(fused with Tanh\): shapes"):  # through the fast path too
        nn.Sequential(nn.Linear(2, 3, device=device), nn.Tanh())(gpunn.ones(4, 5, device=device))
    with pytest.raises(DTypeError, match=r"^linear: inputs have different dtypes"):  # unfused: its own name
        nn.Sequential(nn.Linear(2, 3, device=device), nn.GELU())(batch)


def test_cast_hint_follows_the_target_dtype():
    with pytest.raises(DTypeError, match=r"x\.double\(\)") as info:
        nn.Linear(2, 2, dtype="float64")(gpunn.ones(1, 2))
    assert "DataLoader" not in str(info.value)


def test_linear_refuses_mixed_float_dtypes_as_pytorch_does():
    layer = nn.Linear(3, 1)
    with pytest.raises(gpunn.DTypeError, match="float64 and float32"):
        layer(gpunn.tensor(np.ones((2, 3))))  # float64 data, float32 weights
    assert layer(gpunn.tensor(np.ones((2, 3)), dtype="float32")).shape == (2, 1)


# --- end to end ----------------------------------------------------------------------------------


def test_mlp_learns_xor_with_sgd_momentum(device):
    X, y = xor(200, noise=0.1, seed=0)
    gpunn.manual_seed(0)
    model = nn.MLP([2, 16, 2], device=device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inputs = gpunn.tensor(X, dtype="float32", device=device)
    targets = gpunn.tensor(y, dtype="int64", device=device)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(inputs).argmax(axis=1) == targets).numpy().mean()
    assert accuracy > 0.95, f"train accuracy {accuracy:.3f} after 200 steps on {device}"
    assert model[0].weight.device == device
