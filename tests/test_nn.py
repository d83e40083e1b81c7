"""gpunn.nn: module registration and naming, state dicts, devices, layers, init and clipping.

Expected key lists and formulas are written here from PyTorch's documented behaviour (a spec),
never computed by the code under test; torch itself is compared when it is installed.
"""

import math
from collections import OrderedDict

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
import gpunn.optim as optim
from gpunn.datasets import xor
from gpunn.errors import AnomalyError, DTypeError, ShapeError
from gpunn.nn import init

STRICT_DEVICES = ["cpu", "strict", "strict:1"]


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
    _check_uniform(lin.weight.numpy(), bound)
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
    _check_uniform(w, bound)


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


# --- init ----------------------------------------------------------------------------------------


def _check_uniform(values, bound):
    """Samples of U(-bound, bound): inside the bounds, reaching near them, std = bound / sqrt(3)."""
    values = np.asarray(values, dtype=np.float64)
    assert np.abs(values).max() <= bound * (1 + 1e-6), f"max {np.abs(values).max()} exceeds bound {bound}"
    assert np.abs(values).max() > 0.99 * bound, f"max {np.abs(values).max()} far below bound {bound}"
    assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert abs(values.mean()) < 0.02 * bound


def _check_normal(values, std):
    values = np.asarray(values, dtype=np.float64)
    assert abs(values.std() / std - 1) < 0.02, f"std {values.std()} vs expected {std}"
    assert abs(values.mean()) < 0.02 * std


def test_statistical_checks_reject_wrong_scales():
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError):  # negative control: a 10% larger bound must be caught
        _check_uniform(rng.uniform(-1.1, 1.1, size=100_000), 1.0)
    with pytest.raises(AssertionError):
        _check_uniform(rng.uniform(-0.9, 0.9, size=100_000), 1.0)
    with pytest.raises(AssertionError):
        _check_normal(rng.normal(0, 1.05, size=100_000), 1.0)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming(device, mode):
    t = gpunn.empty(300, 200, device=device)
    fan = 200 if mode == "fan_in" else 300
    assert init.kaiming_uniform_(t, mode=mode, nonlinearity="relu") is t
    assert t.device == device
    _check_uniform(t.numpy(), math.sqrt(2.0) * math.sqrt(3.0 / fan))
    init.kaiming_normal_(t, a=0.2, mode=mode)
    _check_normal(t.numpy(), math.sqrt(2.0 / (1 + 0.2 ** 2)) / math.sqrt(fan))


def test_xavier(device):
    t = gpunn.empty(300, 200, device=device)
    init.xavier_uniform_(t, gain=2.0)
    _check_uniform(t.numpy(), 2.0 * math.sqrt(6.0 / 500))
    init.xavier_normal_(t)
    _check_normal(t.numpy(), math.sqrt(2.0 / 500))


def test_fans_of_conv_shaped_tensors():
    t = gpunn.empty(32, 16, 3, 3)  # fan_in = 16*9 = 144, fan_out = 32*9 = 288
    init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
    _check_normal(t.numpy(), math.sqrt(2.0 / 288))
    init.xavier_uniform_(t)
    _check_uniform(t.numpy(), math.sqrt(6.0 / (144 + 288)))
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
