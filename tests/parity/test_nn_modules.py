"""gpunn.nn's module API, layers, init, nn.utils and DataLoader against PyTorch (CPU).

The same model is built in both frameworks; names, orders, flags and errors must agree, and
values agree once torch's parameters are copied into gpunn (float64, so only rounding differs).
Random initialisations are compared statistically: bounds exactly, spreads within a few percent.
Deliberate differences are listed in notes/fuzz_modules_s4.md and not tested as equal here.
"""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

import gpunn
import gpunn.nn as nn
from gpunn.data import DataLoader, TensorDataset
from gpunn.nn import utils as gutils

tnn = torch.nn


def _g(t, requires_grad=False):
    """A gpunn tensor holding a copy of torch tensor (or array) `t`."""
    host = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return gpunn.tensor(host.copy(), requires_grad=requires_grad)


def _copy_from_torch(gmodule, tmodule):
    gmodule.load_state_dict({k: _g(v) for k, v in tmodule.state_dict().items()})


def _assert_same(got, want, atol=1e-12):
    np.testing.assert_allclose(np.asarray(got.numpy() if hasattr(got, "numpy") else got),
                               want.detach().numpy(), rtol=1e-10, atol=atol)


# --- nn.Module: names, orders, state dicts --------------------------------------------------------


def _nested(m, lib):
    """One model in either framework: nested Sequential/ModuleList/ModuleDict, a custom module with
    a parameter, a persistent and a non-persistent buffer, a bias-free Linear."""

    class Block(m.Module):
        def __init__(self):
            super().__init__()
            self.fc = m.Linear(3, 4)
            self.register_buffer("running", lib.zeros(4))
            self.register_buffer("scratch", lib.ones(2), persistent=False)
            self.acts = m.ModuleList([m.ReLU(), m.Tanh()])
            self.heads = m.ModuleDict({"b": m.Linear(4, 2), "a": m.Linear(4, 1, bias=False)})
            self.scale = m.Parameter(lib.ones(1))

    return m.Sequential(OrderedDict([("inp", m.Linear(2, 3)), ("blk", Block()),
                                     ("out", m.Sequential(m.Identity(), m.Dropout(0.1)))]))


def _tied(m):
    """A module used twice and a parameter shared between two Linears."""
    a, b = m.Linear(2, 2), m.Linear(2, 2)
    b.weight = a.weight
    return m.Sequential(a, m.ReLU(), b, a)


def _names(pairs):
    return [name for name, _ in pairs]


@pytest.mark.parametrize("build", [lambda m, lib: _nested(m, lib), lambda m, lib: _tied(m)], ids=["nested", "tied"])
def test_traversal_names_and_orders_match_torch(build):
    t, g = build(tnn, torch), build(nn, gpunn)
    for method, kwargs in [("named_parameters", {}), ("named_parameters", {"remove_duplicate": False}),
                           ("named_parameters", {"prefix": "p"}), ("named_parameters", {"recurse": False}),
                           ("named_buffers", {}), ("named_buffers", {"remove_duplicate": False}),
                           ("named_modules", {}), ("named_modules", {"remove_duplicate": False}),
                           ("named_modules", {"prefix": "root"}), ("named_children", {})]:
        assert _names(getattr(g, method)(**kwargs)) == _names(getattr(t, method)(**kwargs)), (method, kwargs)
    assert len(list(g.parameters())) == len(list(t.parameters()))
    assert [type(c).__name__ for c in g.children()] == [type(c).__name__ for c in t.children()]
    assert list(g.state_dict()) == list(t.state_dict())
    assert list(g.state_dict(prefix="model.")) == list(t.state_dict(prefix="model."))


def test_state_dict_contents_after_loading_torchs():
    t, g = _nested(tnn, torch), _nested(nn, gpunn)
    with torch.no_grad():
        t.blk.running.normal_()
    _copy_from_torch(g, t)
    mine, theirs = g.state_dict(), t.state_dict()
    for name in theirs:
        np.testing.assert_array_equal(mine[name].numpy(), theirs[name].numpy())
        assert not mine[name].requires_grad and not theirs[name].requires_grad
    assert "blk.scratch" not in mine  # non-persistent
    kept = g.state_dict(keep_vars=True)
    assert isinstance(kept["inp.weight"], nn.Parameter) and kept["inp.weight"] is g.inp.weight
    assert isinstance(t.state_dict(keep_vars=True)["inp.weight"], tnn.Parameter)


def test_state_dict_sees_optimizer_steps_as_torchs_does():
    """Both return views of the live data, so a step changes an earlier state dict (copy it to keep
    a snapshot). gpunn's tensor methods such as zero_() rebind .data instead: see the notes."""
    for m, lib, optim in [(tnn, torch, torch.optim), (nn, gpunn, gpunn.optim)]:
        layer = m.Linear(2, 2)
        sd = layer.state_dict()
        before = sd["weight"].numpy().copy()
        layer(lib.ones(1, 2)).sum().backward()
        optim.SGD(layer.parameters(), lr=1.0).step()
        np.testing.assert_allclose(sd["weight"].numpy(), before - 1, rtol=1e-6)


def _torch_sd_as_gpunn(sd):
    return OrderedDict((k, _g(v)) for k, v in sd.items())


def test_load_state_dict_strict_false_reports_the_same_keys():
    t, g = _nested(tnn, torch), _nested(nn, gpunn)
    sd = OrderedDict((k, v) for k, v in t.state_dict().items() if k != "inp.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["blk.scratch"] = torch.zeros(2)  # non-persistent: not expected in a checkpoint
    want = t.load_state_dict(sd, strict=False)
    got = g.load_state_dict(_torch_sd_as_gpunn(sd), strict=False)
    assert got.missing_keys == want.missing_keys == ["inp.bias"]
    assert got.unexpected_keys == want.unexpected_keys
    assert got == (want.missing_keys, want.unexpected_keys)
    _assert_same(g.blk.heads["b"].weight, t.blk.heads["b"].weight)
    clean = g.load_state_dict(_torch_sd_as_gpunn(t.state_dict()))
    assert clean.missing_keys == [] and clean.unexpected_keys == []


def test_load_state_dict_strict_refuses_and_names_the_keys():
    t, g = _nested(tnn, torch), _nested(nn, gpunn)
    sd = OrderedDict((k, v) for k, v in t.state_dict().items() if k != "inp.bias")
    sd["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="inp.bias"):
        t.load_state_dict(sd)
    before = g.blk.fc.weight.numpy()
    with pytest.raises(nn.StateDictError, match=r"inp\.bias.*extra"):
        g.load_state_dict(_torch_sd_as_gpunn(sd))
    np.testing.assert_array_equal(g.blk.fc.weight.numpy(), before)  # nothing copied


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_shape_mismatch_raises_even_when_not_strict(strict):
    sd = {"weight": torch.zeros(2, 2), "bias": torch.zeros(3)}
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        tnn.Linear(2, 3).load_state_dict(sd, strict=strict)
    with pytest.raises(nn.StateDictShapeError, match=r"'weight': checkpoint \(2, 2\) vs model \(3, 2\)"):
        nn.Linear(2, 3).load_state_dict(_torch_sd_as_gpunn(sd), strict=strict)


def test_load_state_dict_copies_and_casts_to_the_parameters_dtype():
    for m, lib in [(tnn, torch), (nn, gpunn)]:
        layer = m.Linear(2, 2)
        source = {"weight": lib.zeros(2, 2, dtype=lib.float64), "bias": lib.zeros(2, dtype=lib.float64)}
        layer.load_state_dict(source)
        with (torch.no_grad() if lib is torch else gpunn.no_grad()):
            source["weight"] += 5.0  # torch changes the source in place, gpunn rebinds: neither reaches the layer
        assert layer.weight.dtype == lib.float32
        assert float(layer.weight.detach().numpy().sum()) == 0.0, m.__name__


@pytest.mark.parametrize("register", ["buffer", "parameter"])
def test_registering_a_name_already_taken_raises_keyerror_as_torch(register):
    """Before the fix, register_buffer("weight", ...) on a Linear kept the parameter and added a
    buffer of the same name: state_dict's "weight" then silently held the buffer's values."""
    for m, lib in [(tnn, torch), (nn, gpunn)]:
        layer = m.Linear(2, 2)
        layer.note = 3
        layer.register_buffer("stat", lib.zeros(2))
        value = lib.zeros(2) if register == "buffer" else m.Parameter(lib.zeros(2))
        register_fn = getattr(layer, f"register_{register}")
        taken = ["note", "stat"] if register == "parameter" else ["note", "weight"]
        for name in taken:
            with pytest.raises(KeyError, match=name):
                register_fn(name, value)
        assert _names(layer.named_parameters()) == ["weight", "bias"]
        assert _names(layer.named_buffers()) == ["stat"] and layer.note == 3
        register_fn("stat" if register == "buffer" else "bias", value)  # re-registering its own kind: fine
        del layer.note
        register_fn("note", value)
        assert "note" in layer.state_dict()


def test_repr_matches_torch_for_the_nested_model():
    assert repr(_nested(nn, gpunn)) == repr(_nested(tnn, torch))
    for make in [lambda m: m.LayerNorm((3, 4), elementwise_affine=False), lambda m: m.Embedding(5, 3),
                 lambda m: m.Flatten(0, 2), lambda m: m.LeakyReLU(0.2), lambda m: m.GELU("tanh"),
                 lambda m: m.Softmax(dim=1), lambda m: m.LogSoftmax(dim=0), lambda m: m.Identity(3, x=1)]:
        assert repr(make(nn)) == repr(make(tnn))


def test_train_eval_propagate_and_return_self():
    t, g = _nested(tnn, torch), _nested(nn, gpunn)
    assert t.eval() is t and g.eval() is g
    assert [m.training for m in g.modules()] == [m.training for m in t.modules()] == [False] * len(list(t.modules()))
    t.blk.train(), g.blk.train()
    assert [m.training for m in g.modules()] == [m.training for m in t.modules()]
    assert g.training is False and g.blk.acts[0].training is True and g.out[1].training is False
    for bad in ["yes", 1]:
        with pytest.raises(ValueError):
            t.train(bad)
        with pytest.raises(ValueError):
            g.train(bad)


def test_apply_visits_children_first_then_self_like_torch():
    for build in [lambda m, lib: _nested(m, lib), lambda m, lib: _tied(m)]:
        seen_t, seen_g = [], []
        assert build(tnn, torch).apply(lambda mod: seen_t.append(type(mod).__name__)) is not None
        build(nn, gpunn).apply(lambda mod: seen_g.append(type(mod).__name__))
        assert seen_g == seen_t


def test_apply_initialises_every_linear():
    g = _nested(nn, gpunn)
    g.apply(lambda mod: nn.init.constant_(mod.weight, 0.5) if isinstance(mod, nn.Linear) else None)
    assert all(np.all(p.numpy() == 0.5) for name, p in g.named_parameters() if name.endswith("weight"))


def test_requires_grad_and_zero_grad_match_torch():
    t, g = _tied(tnn), _tied(nn)
    _copy_from_torch(g, t)
    assert t.requires_grad_(False) is t and g.requires_grad_(False) is g
    assert [p.requires_grad for p in g.parameters()] == [p.requires_grad for p in t.parameters()] == [False] * 3
    t.requires_grad_(), g.requires_grad_()
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    t(torch.tensor(x)).sum().backward()
    g(gpunn.tensor(x)).sum().backward()
    for p, q in zip(g.parameters(), t.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    t.zero_grad(set_to_none=False), g.zero_grad(set_to_none=False)
    for p, q in zip(g.parameters(), t.parameters()):
        assert p.grad is not None and q.grad is not None
        assert not np.any(p.grad.numpy()) and not q.grad.any()
    t.zero_grad(), g.zero_grad()
    assert all(p.grad is None for p in g.parameters()) and all(q.grad is None for q in t.parameters())


def _with_int_buffer(m, lib):
    class Counted(m.Module):
        def __init__(self):
            super().__init__()
            self.fc = m.Linear(1, 1)
            self.register_buffer("count", lib.zeros(2, dtype=lib.int64))
            self.register_buffer("mean", lib.zeros(2))

    return Counted()


def _dtype_names(module):
    return {k: str(v.dtype).split(".")[-1] for k, v in module.state_dict().items()}


def test_to_double_float_cast_floating_state_and_gradients_only():
    t, g = _with_int_buffer(tnn, torch), _with_int_buffer(nn, gpunn)
    t.fc(torch.ones(1, 1)).sum().backward()
    g.fc(gpunn.ones(1, 1)).sum().backward()
    for cast_t, cast_g in [(lambda m: m.double(), lambda m: m.double()), (lambda m: m.float(), lambda m: m.float()),
                           (lambda m: m.to(torch.float16), lambda m: m.to("float16")),
                           (lambda m: m.to("cpu", torch.float64), lambda m: m.to("cpu", "float64"))]:
        assert cast_t(t) is t and cast_g(g) is g
        assert _dtype_names(g) == _dtype_names(t)
        assert str(g.fc.weight.grad.dtype).split(".")[-1] == str(t.fc.weight.grad.dtype).split(".")[-1]
    with pytest.raises(TypeError):
        t.to(torch.int32)
    with pytest.raises(TypeError, match="floating-point"):
        g.to("int32")


def test_parameter_and_buffer_assignment_rules_match_torch():
    for m, lib in [(tnn, torch), (nn, gpunn)]:
        layer = m.Linear(2, 2)
        with pytest.raises(TypeError):
            layer.weight = lib.zeros(2, 2)  # a plain tensor may not replace a parameter
        layer.register_buffer("stat", lib.zeros(2))
        layer.stat = lib.ones(2)  # a tensor may replace a buffer
        assert float(layer.state_dict()["stat"].sum()) == 2.0
        layer.register_buffer("unset", None)
        assert "unset" not in layer.state_dict() and _names(layer.named_buffers()) == ["stat"]
        layer.plain = lib.zeros(1)
        assert "plain" not in layer.state_dict()
        layer.stat = m.Parameter(lib.zeros(2))  # a Parameter turns it into a parameter
        assert _names(layer.named_parameters()) == ["weight", "bias", "stat"] and not list(layer.named_buffers())


def test_modulelist_slice_is_a_modulelist_numbered_from_zero():
    """Before the fix, ModuleList[1:] was a Sequential keeping the old names ("2.weight")."""
    t = tnn.ModuleList([tnn.Linear(1, 1), tnn.ReLU(), tnn.Linear(1, 2)])
    g = nn.ModuleList([nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)])
    for index in [slice(1, None), slice(None, None, 2), slice(0, 0)]:
        assert type(g[index]) is nn.ModuleList
        assert _names(g[index].named_children()) == _names(t[index].named_children())
        assert list(g[index].state_dict()) == list(t[index].state_dict())
    assert g[1:][1] is g[2]
    assert _names(nn.Sequential(nn.ReLU(), nn.Tanh(), nn.ReLU())[1:].named_children()) == ["1", "2"]  # as torch


def test_negative_control_a_reordered_model_is_caught():
    t, g = _nested(tnn, torch), _nested(nn, gpunn)
    g.blk.heads = nn.ModuleDict({"a": nn.Linear(4, 1, bias=False), "b": nn.Linear(4, 2)})  # order swapped
    assert sorted(g.state_dict()) == sorted(t.state_dict())
    with pytest.raises(AssertionError):
        test_traversal_names_and_orders_match_torch(lambda m, lib: g if m is nn else t)


# --- layers -----------------------------------------------------------------------------------------


def _forward_backward(tmodule, gmodule, x, seed=0):
    """Outputs and input/parameter gradients of a random upstream gradient, both frameworks."""
    x_t = torch.tensor(x, requires_grad=x.dtype.kind == "f")
    x_g = gpunn.tensor(x, requires_grad=x.dtype.kind == "f")
    y_t, y_g = tmodule(x_t), gmodule(x_g)
    up = np.random.default_rng(seed).normal(size=tuple(y_t.shape))
    (y_t * torch.tensor(up)).sum().backward()
    (y_g * gpunn.tensor(up)).sum().backward()
    _assert_same(y_g, y_t)
    if x_t.requires_grad:
        _assert_same(x_g.grad, x_t.grad)
    for (name, p), (_, q) in zip(gmodule.named_parameters(), tmodule.named_parameters()):
        _assert_same(p.grad, q.grad), name


@pytest.mark.parametrize("bias", [True, False])
def test_linear_values_and_gradients(bias):
    t = tnn.Linear(4, 3, bias=bias, dtype=torch.float64)
    g = nn.Linear(4, 3, bias=bias, dtype="float64")
    _copy_from_torch(g, t)
    _forward_backward(t, g, np.random.default_rng(1).normal(size=(5, 4)))
    _forward_backward(t, g, np.random.default_rng(2).normal(size=(2, 3, 4)))  # leading batch axes


@pytest.mark.parametrize("fan_in", [1, 7, 300])
def test_linear_default_init_is_torchs_uniform(fan_in):
    gpunn.manual_seed(fan_in)
    layer = nn.Linear(fan_in, 500)
    bound = 1 / math.sqrt(fan_in)
    for p, n in [(layer.weight, fan_in * 500), (layer.bias, 500)]:
        values = p.numpy().astype(np.float64).ravel()
        assert np.abs(values).max() <= bound * (1 + 1e-6)
        # U(-b, b): std b / sqrt 3, mean 0; 6 standard errors of the estimates
        assert abs(values.std() * math.sqrt(3) / bound - 1) < 6 * math.sqrt(0.8 / n)
        assert abs(values.mean()) < 6 * bound / math.sqrt(3 * n)
        assert np.abs(values).max() > bound * (1 - 20 / n)  # reaches its bound: not a narrower law


def test_linear_init_reference_catches_a_wrong_bound():
    """Negative control: torch's own kaiming_uniform_ without a=sqrt(5) is sqrt(6) times wider."""
    layer = tnn.Linear(300, 500)
    tnn.init.kaiming_uniform_(layer.weight)
    assert np.abs(layer.weight.detach().numpy()).max() > 1 / math.sqrt(300) * 1.5


@pytest.mark.parametrize("shape, normalized, affine, bias",
                         [((4, 5), 5, True, True), ((2, 3, 4), (3, 4), True, False), ((3, 6), 6, False, True)])
def test_layer_norm(shape, normalized, affine, bias):
    t = tnn.LayerNorm(normalized, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    g = nn.LayerNorm(normalized, elementwise_affine=affine, bias=bias, dtype="float64")
    assert list(g.state_dict()) == list(t.state_dict())
    for p, q in zip(g.parameters(), t.parameters()):
        _assert_same(p, q)  # ones and zeros
    with torch.no_grad():
        for q in t.parameters():
            q.normal_()
    _copy_from_torch(g, t)
    _forward_backward(t, g, np.random.default_rng(3).normal(size=shape) * 3 + 1)


def test_embedding_values_gradients_and_errors():
    t = tnn.Embedding(5, 3, dtype=torch.float64)
    g = nn.Embedding(5, 3, dtype="float64")
    _copy_from_torch(g, t)
    _forward_backward(t, g, np.array([[0, 4, 4], [1, 1, 2]]))  # repeated rows accumulate
    _forward_backward(t, g, np.array(2))
    assert g(gpunn.zeros(0, 2, dtype="int64")).shape == tuple(t(torch.zeros(0, 2, dtype=torch.long)).shape)
    for bad in [5, -1]:
        with pytest.raises(IndexError):
            t(torch.tensor([bad]))
        with pytest.raises(IndexError, match="out of range"):
            g(gpunn.tensor([bad]))
    gpunn.manual_seed(0)
    w = nn.Embedding(1000, 50).weight.numpy()
    assert abs(w.mean()) < 6 / math.sqrt(w.size) and abs(w.std() - 1) < 6 / math.sqrt(2 * w.size)


@pytest.mark.parametrize("name, args", [("ReLU", ()), ("Tanh", ()), ("Sigmoid", ()), ("LeakyReLU", (0.2,)),
                                        ("GELU", ("tanh",)), ("Softmax", (0,)), ("LogSoftmax", (1,)),
                                        ("Identity", ())])
def test_activation_modules(name, args):
    x = np.random.default_rng(4).normal(size=(3, 4)) * 3
    x[0, 0] = 0.0
    _forward_backward(getattr(tnn, name)(*args), getattr(nn, name)(*args), x)


def test_exact_gelu_is_within_its_documented_erfc_error():
    x = np.linspace(-6, 6, 241)
    got = nn.GELU()(gpunn.tensor(x)).numpy()
    want = tnn.GELU()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-12)


@pytest.mark.parametrize("start, end", [(1, -1), (0, -1), (0, 1), (1, 2), (-2, -1), (2, 2), (-3, 0)])
def test_flatten_shapes(start, end):
    x = np.zeros((2, 3, 4))
    assert nn.Flatten(start, end)(gpunn.tensor(x)).shape == tuple(tnn.Flatten(start, end)(torch.tensor(x)).shape)
    assert nn.Flatten(0)(gpunn.zeros(())).shape == tuple(tnn.Flatten(0)(torch.zeros(())).shape)


@pytest.mark.parametrize("shape, start, end", [((3,), 1, -1), ((2, 3, 4), 3, -1), ((2, 3, 4), 0, 5),
                                               ((2, 3, 4), -4, -1), ((2, 3, 4), 2, 1), ((), 1, -1)])
def test_flatten_refuses_dims_torch_refuses(shape, start, end):
    """Before the fix, dims wrapped around (flatten(3) of a 3-d tensor flattened everything) and
    start > end inserted an axis of length 1."""
    with pytest.raises((IndexError, RuntimeError)):
        tnn.Flatten(start, end)(torch.zeros(shape))
    with pytest.raises((IndexError, ValueError)):
        nn.Flatten(start, end)(gpunn.zeros(*shape))


def test_dropout_train_eval_and_scaling():
    gpunn.manual_seed(0)
    x = gpunn.ones(200, 500, requires_grad=True)
    for p in [0.0, 0.3, 0.5, 1.0]:
        layer = nn.Dropout(p)
        y = layer(x)
        values = y.numpy()
        kept = values != 0
        assert abs(1 - kept.mean() - p) < 6 * math.sqrt(p * (1 - p) / values.size) + 1e-12
        if p < 1:
            np.testing.assert_allclose(values[kept], 1 / (1 - p), rtol=1e-6)
        x.grad = None
        y.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), values)  # the gradient is the same mask
        layer.eval()
        assert np.all(layer(x).numpy() == 1)
    t = tnn.Dropout(1.0)
    assert not t(torch.ones(3)).any() and not nn.Dropout(1.0)(gpunn.ones(3)).numpy().any()
    for p in [-0.1, 1.5]:
        with pytest.raises(ValueError):
            tnn.Dropout(p)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            nn.Dropout(p)


# --- nn.init ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity, param", [("linear", None), ("conv_transpose3d", None), ("conv2d", None),
                                                 ("sigmoid", None), ("tanh", None), ("relu", None),
                                                 ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0),
                                                 ("selu", None)])
def test_calculate_gain(nonlinearity, param):
    assert nn.init.calculate_gain(nonlinearity, param) == pytest.approx(tnn.init.calculate_gain(nonlinearity, param),
                                                                        rel=1e-15)


def test_calculate_gain_refusals():
    for args in [("leaky_relu", True), ("softplus",)]:
        with pytest.raises(ValueError):
            tnn.init.calculate_gain(*args)
        with pytest.raises(ValueError):
            nn.init.calculate_gain(*args)


@pytest.mark.parametrize("shape", [(30, 20), (8, 4, 3, 3), (5, 6, 7)])
def test_fans(shape):
    assert nn.init._calculate_fan_in_and_fan_out(gpunn.empty(*shape)) == \
        tnn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def _init_cases():
    cases = [("uniform_", {"a": -2.0, "b": 3.0}), ("normal_", {"mean": 1.0, "std": 3.0}),
             ("xavier_uniform_", {}), ("xavier_uniform_", {"gain": 2.0}), ("xavier_normal_", {"gain": 0.5})]
    for kind in ["kaiming_uniform_", "kaiming_normal_"]:
        cases += [(kind, {}), (kind, {"mode": "fan_out"}), (kind, {"a": 0.5}),
                  (kind, {"nonlinearity": "relu", "mode": "fan_out"}), (kind, {"nonlinearity": "tanh"})]
    return cases


@pytest.mark.parametrize("name, kwargs", _init_cases(), ids=lambda c: str(c))
def test_init_distributions_match_torch(name, kwargs):
    """Same law: same mean and std (6 standard errors), and for uniform laws the same bounds."""
    shape = (300, 200)
    t, g = torch.empty(shape, dtype=torch.float64), gpunn.empty(*shape, dtype="float64")
    torch.manual_seed(0), gpunn.manual_seed(0)
    getattr(tnn.init, name)(t, **kwargs)
    assert getattr(nn.init, name)(g, **kwargs) is g
    a, b = t.numpy().ravel(), g.numpy().ravel()
    n, std = a.size, a.std()
    assert abs(b.mean() - a.mean()) < 6 * std * math.sqrt(2 / n)
    assert abs(b.std() / std - 1) < 6 * math.sqrt(2 / n)
    if "uniform" in name:  # n draws come within (hi - lo) * 20 / n of each bound (odds e^-20 against)
        near = (a.max() - a.min()) * 20 / n
        assert abs(b.min() - a.min()) < near and abs(b.max() - a.max()) < near


def test_init_reference_catches_a_wrong_mode():
    """Negative control: fan_in and fan_out of a non-square weight give distinguishable stds."""
    a = tnn.init.kaiming_normal_(torch.empty(300, 200, dtype=torch.float64), mode="fan_in").numpy()
    b = nn.init.kaiming_normal_(gpunn.empty(300, 200, dtype="float64"), mode="fan_out").numpy()
    assert abs(b.std() / a.std() - 1) > 6 * math.sqrt(2 / a.size)


def test_init_refusals_and_empty_tensors():
    for fn in ["kaiming_uniform_", "xavier_normal_"]:
        with pytest.raises(ValueError):
            getattr(tnn.init, fn)(torch.empty(3))
        with pytest.raises(ValueError, match="at least 2 dimensions"):
            getattr(nn.init, fn)(gpunn.empty(3))
    with pytest.raises(ValueError):
        tnn.init.kaiming_uniform_(torch.empty(3, 3), mode="fan")
    with pytest.raises(ValueError, match="fan_in"):
        nn.init.kaiming_uniform_(gpunn.empty(3, 3), mode="fan")
    with pytest.warns(UserWarning):
        tnn.init.kaiming_uniform_(torch.empty(0, 3))
    with pytest.warns(UserWarning, match="zero-element"):
        assert nn.init.kaiming_uniform_(gpunn.empty(0, 3)).shape == (0, 3)
    p = nn.Parameter(gpunn.zeros(3))
    assert nn.init.normal_(p) is p and isinstance(p, nn.Parameter) and p.requires_grad


# --- nn.utils --------------------------------------------------------------------------------------


def _params_with_grads(seed, shapes=((3, 4), (5,), ()), without_grad=(1,), scale=1.0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i, shape in enumerate(shapes):
        w = rng.normal(size=shape)
        t, g = torch.tensor(w, requires_grad=True), gpunn.tensor(w, requires_grad=True)
        if i not in without_grad:
            grad = rng.normal(size=shape) * scale
            t.grad, g.grad = torch.tensor(grad), gpunn.tensor(grad)
        pairs.append((t, g))
    return [t for t, _ in pairs], [g for _, g in pairs]


def _assert_same_grads(gparams, tparams):
    for g, t in zip(gparams, tparams):
        assert (g.grad is None) == (t.grad is None)
        if t.grad is not None:
            np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("norm_type", [2, 1, math.inf, "inf", 3, 0.5])
@pytest.mark.parametrize("max_norm", [0.1, 1e6])
def test_clip_grad_norm(norm_type, max_norm):
    tparams, gparams = _params_with_grads(5)
    want = tnn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    got = gutils.clip_grad_norm_(gparams, max_norm, norm_type=norm_type)
    assert got.shape == () and got.dtype == gpunn.float64
    assert got.item() == pytest.approx(want.item(), rel=1e-13)
    _assert_same_grads(gparams, tparams)


def test_clip_grad_norm_of_huge_float32_gradients_and_one_tensor():
    """torch's float32 norm of 1e22 gradients overflows to inf (and zeroes them); gpunn scales
    first, so it matches torch's float64 result (a deliberate difference, in the notes)."""
    grad = (np.random.default_rng(6).normal(size=4) * 1e22).astype(np.float32)
    t, g = torch.zeros(4, dtype=torch.float64, requires_grad=True), gpunn.zeros(4, requires_grad=True)
    t.grad, g.grad = torch.tensor(grad, dtype=torch.float64), gpunn.tensor(grad)
    want = tnn.utils.clip_grad_norm_(t, 1.0)  # a single tensor, not a list
    got = gutils.clip_grad_norm_(g, 1.0)
    assert got.dtype == gpunn.float32 and got.item() == pytest.approx(want.item(), rel=1e-6)
    np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_clip_grad_norm_nonfinite(bad):
    tparams, gparams = _params_with_grads(7, shapes=((3,),), without_grad=())
    tparams[0].grad[0] = bad
    gparams[0].grad = _g(tparams[0].grad)
    with pytest.raises(RuntimeError, match="non-finite"):
        tnn.utils.clip_grad_norm_(tparams, 1.0, error_if_nonfinite=True)
    with pytest.raises(FloatingPointError, match="inf or NaN"):
        gutils.clip_grad_norm_(gparams, 1.0, error_if_nonfinite=True)
    _assert_same_grads(gparams, tparams)  # left as they were
    want = tnn.utils.clip_grad_norm_(tparams, 1.0)
    with np.errstate(invalid="ignore"):  # inf * 0: NumPy warns, as it should
        got = gutils.clip_grad_norm_(gparams, 1.0)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(gparams[0].grad.numpy(), tparams[0].grad.numpy())  # nan where torch has nan


def test_clip_grad_norm_without_gradients():
    for params_t, params_g in [_params_with_grads(8, shapes=((3,),), without_grad=(0,)), ([], [])]:
        want, got = tnn.utils.clip_grad_norm_(params_t, 1.0), gutils.clip_grad_norm_(params_g, 1.0)
        assert got.item() == want.item() == 0.0 and got.dtype == gpunn.float32


@pytest.mark.parametrize("clip_value", [0.5, 0.0])
def test_clip_grad_value(clip_value):
    tparams, gparams = _params_with_grads(9)
    tparams[0].grad[0, 0] = float("nan")
    gparams[0].grad = _g(tparams[0].grad)
    assert tnn.utils.clip_grad_value_(tparams, clip_value) is None
    assert gutils.clip_grad_value_(gparams, clip_value) is None
    _assert_same_grads(gparams, tparams)


def test_clip_grad_reference_catches_an_unclipped_gradient():
    """Negative control: comparing after clipping only torch's gradients must fail."""
    tparams, gparams = _params_with_grads(10)
    tnn.utils.clip_grad_norm_(tparams, 0.1)
    with pytest.raises(AssertionError):
        _assert_same_grads(gparams, tparams)


def test_parameters_to_vector_and_back():
    tparams, gparams = _params_with_grads(11)
    want, got = tnn.utils.parameters_to_vector(tparams), gutils.parameters_to_vector(gparams)
    _assert_same(got, want)
    assert got.requires_grad and want.requires_grad
    got.sum().backward()
    assert all(np.all(p.grad.numpy() == 1) for p in gparams[1:2])  # the one without a gradient before
    v = np.random.default_rng(12).normal(size=want.shape[0])
    tnn.utils.vector_to_parameters(torch.tensor(v), tparams)
    gutils.vector_to_parameters(gpunn.tensor(v), gparams)
    for g, t in zip(gparams, tparams):
        _assert_same(g, t)
        assert g.shape == tuple(t.shape) and g.requires_grad
    with pytest.raises(RuntimeError):
        tnn.utils.vector_to_parameters(torch.zeros(5), tparams)
    with pytest.raises(ValueError, match="5 entries"):
        gutils.vector_to_parameters(gpunn.zeros(5), gparams)


# --- DataLoader ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 8, 9])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 8, 20])
@pytest.mark.parametrize("drop_last", [False, True])
def test_dataloader_batches_match_torch(n, batch_size, drop_last):
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n) * 10
    t = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y)),
                                    batch_size=batch_size, drop_last=drop_last)
    for g in [DataLoader(X, y, batch_size=batch_size, drop_last=drop_last),
              DataLoader(TensorDataset(gpunn.tensor(X), gpunn.tensor(y)), batch_size=batch_size, drop_last=drop_last)]:
        want, got = list(t), list(g)
        assert len(g) == len(t) == len(want) == len(got)
        for (xb, yb), (xt, yt) in zip(got, want):
            np.testing.assert_array_equal(xb.numpy(), xt.numpy())
            np.testing.assert_array_equal(yb.numpy(), yt.numpy())
            assert xb.dtype == gpunn.float32 and yb.dtype == gpunn.int64
        assert len(g.dataset) == len(t.dataset) == n


def test_tensor_dataset_indexing_and_length():
    X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    t, g = torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y)), TensorDataset(gpunn.tensor(X),
                                                                                         gpunn.tensor(y))
    assert len(g) == len(t) == 5
    for index in [0, 2, -1, slice(1, 3)]:
        for got, want in zip(g[index], t[index]):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(IndexError):
        t[5]
    with pytest.raises(IndexError):
        g[5]
    with pytest.raises(AssertionError):
        torch.utils.data.TensorDataset(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="first axis"):
        TensorDataset(gpunn.zeros(3), gpunn.zeros(4))
    for bad in [0, -1]:
        with pytest.raises(ValueError):
            torch.utils.data.DataLoader(t, batch_size=bad)
        with pytest.raises(ValueError, match="positive"):
            DataLoader(X, y, batch_size=bad)


def test_shuffled_epochs_are_permutations():
    gpunn.manual_seed(0)
    loader = DataLoader(np.arange(11.0), batch_size=4, shuffle=True)
    epochs = [np.concatenate([b.numpy() for b in loader]) for _ in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(11.0))
    assert not np.array_equal(epochs[0], epochs[1])
