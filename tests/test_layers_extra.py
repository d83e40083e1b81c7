"""LeakyReLU, GELU, Dropout, LayerNorm, Embedding and the cross-entropy options.

References are NumPy float64 formulas written here from PyTorch's documentation (math.erf for the
exact GELU); torch itself is compared where it is installed. Gradients go through gradcheck.
"""

import math

import numpy as np
import pytest
from helpers import assert_close, away_from_zero, rng, to_device

import gpunn
import gpunn.functional as F
import gpunn.nn as nn
from gpunn.testing import gradcheck


def normal_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2)))


def gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# --- activations ---------------------------------------------------------------------------------


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


# --- cross-entropy and nll options ---------------------------------------------------------------


def weighted_ce_ref(logits, target, weight, ignore_index, reduction, smoothing):
    """PyTorch's documented formula, row by row in float64."""
    n, c = logits.shape
    w = np.ones(c) if weight is None else weight
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    losses, denominator = np.zeros(n), 0.0
    for i, y in enumerate(target):
        if y == ignore_index:
            continue
        losses[i] = -(1 - smoothing) * w[y] * logp[i, y] - smoothing / c * (w * logp[i]).sum()
        denominator += w[y]
    return losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.sum() / denominator


CE_OPTIONS = [dict(weight=True), dict(ignore_index=1), dict(label_smoothing=0.2),
              dict(weight=True, ignore_index=-100, label_smoothing=0.1)]


@pytest.mark.parametrize("options", CE_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_options_forward_and_gradient(device, options, reduction):
    g = rng(12)
    host = g.normal(size=(5, 4))
    ignored = -100 if options.get("ignore_index", -100) == -100 else 2
    target_host = np.array([1, 3, ignored, 1, 0])
    weight_host = g.uniform(0.5, 2, size=4) if options.get("weight") else None
    ignore = options.get("ignore_index", -100)
    smoothing = options.get("label_smoothing", 0.0)
    x = to_device(host, device, requires_grad=True)
    target = gpunn.tensor(target_host, device=device)
    weight = None if weight_host is None else to_device(weight_host, device)
    fn = lambda t: F.cross_entropy(t, target, weight, ignore_index=ignore, reduction=reduction,  # noqa: E731
                                   label_smoothing=smoothing)
    expected = weighted_ce_ref(host, target_host, weight_host, ignore, reduction, smoothing)
    assert_close(fn(x), expected, device=device, dtype="float64", rtol=1e-10)
    wrong = weighted_ce_ref(host, target_host, weight_host, ignore, reduction, smoothing + 0.05)
    assert not np.allclose(fn(x).numpy(), wrong)  # negative control
    gradcheck(fn, [x])
    if smoothing == 0:
        logp = x.log_softmax(axis=1)
        assert_close(F.nll_loss(logp, target, weight, ignore_index=ignore, reduction=reduction), expected, rtol=1e-10)
        gradcheck(lambda t: F.nll_loss(t.log_softmax(axis=1), target, weight, ignore_index=ignore,
                                       reduction=reduction), [x])


def test_ignored_targets_get_no_gradient_and_pass_the_label_check():
    x = gpunn.tensor(rng(13).normal(size=(3, 4)), requires_grad=True)
    assert np.isfinite(F.cross_entropy(x, gpunn.tensor([2, 7, 7]), ignore_index=7).item())
    for ignore_index in (7, -100):  # only the ignored value may lie outside [0, classes)
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            F.cross_entropy(x, gpunn.tensor([2, -100, 7]), ignore_index=ignore_index)
    loss = F.cross_entropy(x, gpunn.tensor([2, -100, 1]))  # the default ignore_index is honoured on the cpu
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy()[1], 0)
    assert np.abs(x.grad.numpy()[[0, 2]]).min() > 0
    with pytest.raises(TypeError, match="reduction='sum'"):
        F.cross_entropy(x, gpunn.tensor([0, 1, 2]), "sum")
    with pytest.raises(gpunn.ShapeError, match="weight"):
        F.cross_entropy(x, gpunn.tensor([0, 1, 2]), gpunn.ones(3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_options_agree_with_torch(reduction):
    torch = pytest.importorskip("torch")
    g = rng(14)
    host, target = g.normal(size=(6, 5)), np.array([4, 0, -100, 2, 2, 3])
    weight = g.uniform(0.5, 2, size=5)
    for kwargs in (dict(), dict(label_smoothing=0.15), dict(ignore_index=2)):
        ours = nn.CrossEntropyLoss(gpunn.tensor(weight), reduction=reduction, **kwargs)
        theirs = torch.nn.CrossEntropyLoss(torch.tensor(weight), reduction=reduction, **kwargs)
        t = target if "ignore_index" not in kwargs else np.where(target == -100, 1, target)
        x, xt = gpunn.tensor(host, requires_grad=True), torch.tensor(host, requires_grad=True)
        y, yt = ours(x, gpunn.tensor(t)), theirs(xt, torch.tensor(t))
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        y.sum().backward()
        yt.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        lp = host - np.log(np.exp(host).sum(1, keepdims=True))
        nll = nn.NLLLoss(gpunn.tensor(weight), reduction=reduction, ignore_index=kwargs.get("ignore_index", -100))
        nll_t = torch.nn.NLLLoss(torch.tensor(weight), reduction=reduction,
                                 ignore_index=kwargs.get("ignore_index", -100))
        np.testing.assert_allclose(nll(gpunn.tensor(lp), gpunn.tensor(t)).numpy(),
                                   nll_t(torch.tensor(lp), torch.tensor(t)).numpy(), rtol=1e-10, atol=1e-12)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
