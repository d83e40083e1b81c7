"""gpunn.nn.Module: registration and naming, state dicts, devices and casts (half()), forward hooks.

Expected key lists and formulas are written here from PyTorch's documented behaviour (a spec),
never computed by the code under test; torch itself is compared when it is installed.
"""

from collections import OrderedDict

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from gpunn.errors import DTypeError, ShapeError
from helpers import assert_close, names_along_the_output, rng


def _torch():
    return pytest.importorskip("torch")


class Net(nn.Module):
    """A module with a direct parameter, a nested Sequential and a plain attribute."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)
        self.scale = nn.Parameter(gpunn.ones(3))
        self.note = "not registered"

    def forward(self, x):
        return self.head(self.encoder(x).relu()) * self.scale


# --- registration and names ----------------------------------------------------------------------


def test_mlp_keys_match_torch_sequential_spec():
    model = nn.MLP([4, 8, 8, 3])
    expected = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert list(model.state_dict()) == expected
    assert [name for name, _ in model.named_parameters()] == expected
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    shapes = [p.shape for p in model.parameters()]
    assert shapes == [(8, 4), (8,), (8, 8), (8,), (3, 8), (3,)]


def test_nested_module_names_follow_registration_order():
    net = Net()
    expected = ["scale", "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
                "head.weight", "head.bias"]
    assert list(net.state_dict()) == expected
    assert [n for n, _ in net.named_parameters()] == expected
    assert [n for n, _ in net.named_children()] == ["encoder", "head"]
    assert [n for n, _ in net.named_modules()] == ["", "encoder", "encoder.0", "encoder.1", "encoder.2", "head"]
    assert len(list(net.modules())) == 6
    assert "note" not in net.state_dict() and net.note == "not registered"


def test_names_agree_with_torch():
    torch = pytest.importorskip("torch")

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
            self.head = torch.nn.Linear(8, 3)
            self.scale = torch.nn.Parameter(torch.ones(3))

    assert list(Net().state_dict()) == list(TorchNet().state_dict())
    ours = nn.MLP([5, 7, 2], activation="tanh")
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(nn.Linear(3, 2)) == repr(torch.nn.Linear(3, 2))
    assert repr(ours).replace("MLP", "Sequential") == repr(theirs)


def test_shared_parameter_is_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

    tied = Tied()
    assert [n for n, _ in tied.named_parameters()] == ["a.weight", "a.bias", "b.bias"]
    assert list(tied.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_parameter_is_a_leaf_sharing_data():
    t = gpunn.tensor([1.0, 2.0])
    p = nn.Parameter(t)
    assert isinstance(p, gpunn.Tensor) and p.requires_grad and p.is_leaf
    assert p._array is t._array
    from_list = nn.Parameter([[1.0, 2.0]])
    assert from_list.shape == (1, 2) and from_list.dtype == "float32"
    assert not nn.Parameter(t, requires_grad=False).requires_grad
    with pytest.raises(DTypeError):
        nn.Parameter(gpunn.tensor([1, 2]))
    assert repr(p).startswith("Parameter containing:")


def test_setattr_rules():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Parameter"):
        lin.weight = gpunn.zeros(2, 2)  # a plain tensor would silently leave the optimizer's list
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    lin.extra = nn.Parameter(gpunn.zeros(1))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "extra"]
    del lin.extra
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    with pytest.raises(AttributeError, match="no attribute"):
        lin.missing

    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Forgot()


def test_buffers_are_saved_and_moved_but_not_parameters():
    m = nn.Linear(2, 2)
    m.register_buffer("running", gpunn.zeros(2))
    m.register_buffer("scratch", gpunn.zeros(2), persistent=False)
    assert list(m.state_dict()) == ["weight", "bias", "running"]
    assert len(list(m.parameters())) == 2 and len(list(m.buffers())) == 2
    m.to("strict:1")
    assert m.running.device == "strict:1" and m.scratch.device == "strict:1"


def test_train_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_sets_none_or_zeros():
    net = Net()
    net(gpunn.randn(2, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_repr_like_pytorch():
    text = repr(nn.MLP([2, 3, 1]))
    assert text == ("MLP(\n"
                    "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                    "  (1): ReLU()\n"
                    "  (2): Linear(in_features=3, out_features=1, bias=True)\n"
                    ")")
    assert repr(nn.Linear(2, 1, bias=False)) == "Linear(in_features=2, out_features=1, bias=False)"
    nested = repr(Net())
    assert "(encoder): Sequential(\n    (0): Linear(in_features=4, out_features=8, bias=True)" in nested


# --- state_dict / load_state_dict ---------------------------------------------------------------


def test_state_dict_is_detached_and_shares_data():
    lin = nn.Linear(3, 2)
    sd = lin.state_dict()
    assert isinstance(sd, OrderedDict)
    assert not sd["weight"].requires_grad and sd["weight"].is_leaf
    assert sd["weight"]._array is lin.weight._array


@pytest.mark.parametrize("source,target", [("cpu", "strict:1"), ("strict:1", "strict"), ("strict", "cpu")])
def test_load_state_dict_across_devices_copies_onto_targets_device(source, target):
    gpunn.manual_seed(1)
    a = nn.MLP([3, 5, 2], device=source)
    gpunn.manual_seed(2)
    b = nn.MLP([3, 5, 2], device=target).double()
    params_before = list(b.parameters())
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(x is y for x, y in zip(b.parameters(), params_before))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pb.device == target and pb.dtype == "float64", name
        np.testing.assert_array_equal(pb.numpy(), pa.numpy().astype(np.float64))
    with gpunn.no_grad():
        a[0].weight += 1.0  # the loaded values are copies
    assert not np.array_equal(a[0].weight.numpy(), b[0].weight.numpy().astype(np.float32))


def test_load_state_dict_accepts_numpy_and_does_not_alias_it():
    lin = nn.Linear(2, 2)
    arrays = {"weight": np.arange(4, dtype=np.float32).reshape(2, 2), "bias": np.array([1.0, 2.0])}
    lin.load_state_dict(arrays)
    assert lin.bias.dtype == "float32"
    np.testing.assert_array_equal(lin.weight.numpy(), arrays["weight"])
    arrays["weight"][0, 0] = 99.0
    assert lin.weight.numpy()[0, 0] == 0.0


def test_load_state_dict_names_every_problem_in_one_error():
    model = nn.MLP([4, 8, 3])
    sd = dict(model.state_dict())
    before = {k: v.numpy() for k, v in sd.items()}
    del sd["0.bias"]
    sd["4.weight"] = gpunn.zeros(3, 8)
    sd["2.weight"] = gpunn.zeros(8, 3)  # transposed
    with pytest.raises(ShapeError) as info:
        model.load_state_dict(sd)
    message = str(info.value)
    for fragment in ("'0.bias'", "'4.weight'", "'2.weight'", "(8, 3)", "(3, 8)", "different architecture"):
        assert fragment in message
    assert isinstance(info.value, ValueError) and not isinstance(info.value, KeyError)
    for k, v in model.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_load_state_dict_missing_and_unexpected_without_shapes():
    model = nn.MLP([4, 8, 3])
    sd = dict(model.state_dict())
    sd["extra"] = sd.pop("2.bias")
    with pytest.raises(ValueError, match="different architecture") as info:
        model.load_state_dict(sd)
    assert not isinstance(info.value, ShapeError)
    assert "'2.bias'" in str(info.value) and "'extra'" in str(info.value)
    sd["0.bias"] = gpunn.full((8,), 7.0)
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["2.bias"] and result.unexpected_keys == ["extra"]
    assert (model[0].bias.numpy() == 7.0).all()
    sd["0.weight"] = gpunn.zeros(1)
    with pytest.raises(ShapeError):  # shapes are checked even when not strict
        model.load_state_dict(sd, strict=False)


@pytest.mark.parametrize("target", ["strict", "strict:1"])
def test_to_keeps_parameter_identity_and_moves_grads(target):
    net = Net()
    net(gpunn.randn(2, 4)).sum().backward()
    params = list(net.parameters())
    values = [p.numpy() for p in params]
    assert net.to(target) is net
    moved = list(net.parameters())
    assert all(a is b for a, b in zip(params, moved))
    for p, v in zip(moved, values):
        assert p.device == target and p.grad.device == target
        np.testing.assert_array_equal(p.numpy(), v)
    out = net(gpunn.randn(2, 4, device=target))
    assert out.device == target
    net.double()
    assert all(p.dtype == "float64" and p.grad.dtype == "float64" for p in net.parameters())


# --- Module: forward hooks ---------------------------------------------------------------------------


def test_forward_hook_sees_and_may_replace_the_output():
    gpunn.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = gpunn.tensor(rng(17).normal(size=(4, 3)), dtype="float32")
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append((m, args, out)))
    y = layer(x)
    assert len(seen) == 1 and seen[0][0] is layer and seen[0][1] == (x,) and seen[0][2] is y
    handle.remove()
    layer(x)
    assert len(seen) == 1 and layer._hooks is None  # removed: back to the one-check path
    handle.remove()  # twice is harmless
    with layer.register_forward_hook(lambda m, args, out: out * 0):
        assert_close(layer(x), np.zeros((4, 2)))
    np.testing.assert_array_equal(layer(x).numpy(), y.numpy())


def test_forward_pre_hook_may_replace_the_input_and_hooks_run_in_order():
    layer = nn.Identity()
    calls = []
    layer.register_forward_pre_hook(lambda m, args: calls.append("pre") or args[0] + 1)  # one value: wrapped
    layer.register_forward_hook(lambda m, args, out: calls.append("post") or out * 10)
    layer.register_forward_hook(lambda m, args, out: calls.append("first"), prepend=True)
    assert_close(layer(gpunn.tensor([1.0, 2.0])), [20.0, 30.0])
    assert calls == ["pre", "first", "post"]


def test_hooks_with_kwargs():
    class Scale(nn.Module):
        def forward(self, x, *, factor=1.0):
            return x * factor

    module = Scale()
    module.register_forward_pre_hook(lambda m, args, kwargs: (args, {**kwargs, "factor": 3.0}), with_kwargs=True)
    got = []
    module.register_forward_hook(lambda m, args, kwargs, out: got.append(kwargs["factor"]), with_kwargs=True)
    assert_close(module(gpunn.tensor([2.0]), factor=5.0), [6.0])
    assert got == [3.0]
    bad = Scale()
    bad.register_forward_pre_hook(lambda m, args, kwargs: args, with_kwargs=True)
    with pytest.raises(TypeError, match=r"\(args, kwargs\)"):
        bad(gpunn.tensor([1.0]))
    with pytest.raises(TypeError, match="callable"):
        bad.register_forward_hook("not a function")


def test_hooks_agree_with_torch():
    torch = _torch()
    ours, theirs = [], []
    for lib, log in ((gpunn, ours), (torch, theirs)):
        layer = lib.nn.Identity()
        layer.register_forward_pre_hook(lambda m, args, log=log: log.append(("pre", len(args))) or args[0] * 2)
        h = layer.register_forward_hook(lambda m, args, out, log=log: log.append(("post", float(out.sum()))))
        layer.register_forward_hook(lambda m, args, out, log=log: out + 1, prepend=True)
        log.append(float(layer(lib.tensor([1.0, 2.0])).sum()))
        h.remove()
        log.append(float(layer(lib.tensor([1.0, 2.0])).sum()))
    assert ours == theirs


def test_sequential_does_not_fuse_a_hooked_layer():
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh())
    x = gpunn.tensor(rng(18).normal(size=(5, 3)), dtype="float32")
    fused = model(x)
    chained = x.device.backend.chain_layers  # the cpu runs the whole run as one node
    assert names_along_the_output(fused) == (["linear_chain"] if chained else ["linear_act", "linear_act"])
    seen = {}
    handle = model[0].register_forward_hook(lambda m, args, out: seen.__setitem__("linear", out))
    model[3].register_forward_hook(lambda m, args, out: seen.__setitem__("tanh", out))
    hooked = model(x)
    assert names_along_the_output(hooked) == ["tanh", "linear", "relu", "linear"]
    np.testing.assert_array_equal(hooked.numpy(), fused.numpy())
    expected = x.numpy() @ model[0].weight.numpy().T + model[0].bias.numpy()
    np.testing.assert_allclose(seen["linear"].numpy(), expected, rtol=1e-6)  # before the ReLU
    handle.remove()
    assert names_along_the_output(model(x)) == ["tanh"] + (["linear_chain"] if chained else ["linear", "linear_act"])


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
