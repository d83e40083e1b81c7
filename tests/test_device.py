"""Devices: specs, interning, errors that say why, data that never moves implicitly, seeds."""

import pickle
import re
import warnings

import numpy as np
import pytest

import gpunn
import gpunn.functional as F
from gpunn import backends
from gpunn.device import DeviceWarning, of as device_of
from helpers import assert_close

HOST_DEVICES = ["cpu", "strict", "strict:1"]


def test_spec_equality_interning_and_printing():
    d = gpunn.device("strict:1")
    assert d == "strict:1" and d == gpunn.device("strict:1")
    assert d is gpunn.device("strict:1") is gpunn.device(" Strict:1 ")
    assert gpunn.device("strict:0") is gpunn.device("strict")
    assert gpunn.device("cpu:0") is gpunn.device("cpu")
    assert repr(d) == "device('strict:1')" and str(d) == "strict:1"
    assert str(gpunn.device("strict")) == "strict" and str(gpunn.device("cpu")) == "cpu"
    assert d != "strict" and d != gpunn.device("cpu") and d != "not a device" and d != 1
    assert hash(d) == hash(gpunn.device("strict:1"))
    assert gpunn.device(d) is d
    assert pickle.loads(pickle.dumps(d)) is d
    assert (d.type, d.index) == ("strict", 1)


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:1", "strict:2", "gpu:0", ""])
def test_unknown_spec_names_the_spec(spec):
    with pytest.raises(gpunn.DeviceError) as info:
        gpunn.device(spec)
    assert repr(spec) in str(info.value) or f"strict:{spec[-1:]}" in str(info.value)


def test_non_string_spec_raises():
    with pytest.raises(gpunn.DeviceError, match="string"):
        gpunn.device(0)


@pytest.mark.skipif(gpunn.cuda.is_available(), reason="a CUDA device is usable here")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_says_why_and_what_to_use(spec):
    reason = gpunn.cuda.why_unavailable()
    assert reason
    with pytest.raises(gpunn.DeviceError) as info:
        gpunn.device(spec)
    message = str(info.value)
    assert spec in message and reason in message
    assert "'auto'" in message and "cpu" in message
    # a script has no --device: the Python spelling comes first, the command line's after it
    assert "Use 'cpu' or 'auto'" in message and "on the command line: --device cpu" in message
    with pytest.raises(gpunn.DeviceError):
        gpunn.zeros(2, device=spec)


@pytest.mark.skipif(gpunn.cuda.is_available(), reason="a CUDA device is usable here")
def test_auto_falls_back_to_cpu():
    with pytest.warns(DeviceWarning):
        assert gpunn.device("auto") is gpunn.device("cpu")
    with pytest.warns(DeviceWarning):
        assert gpunn.zeros(2, device="auto").device == "cpu"
    assert not gpunn.cuda.is_available() and gpunn.cuda.device_count() == 0


@pytest.mark.skipif(gpunn.cuda.is_available(), reason="a CUDA device is usable here")
def test_auto_says_what_it_picked_as_a_warning_users_can_filter(capfd):
    """Library code does not print: the note is a DeviceWarning pointing at the caller's line."""
    with pytest.warns(DeviceWarning, match=r"device 'auto' -> cpu \(") as caught:
        gpunn.device("auto")
    assert gpunn.cuda.why_unavailable() in str(caught[0].message)
    assert caught[0].filename == __file__  # the user's line, not gpunn's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeviceWarning)
        gpunn.device("auto")  # silenced: no exception, no output
    assert capfd.readouterr().err == ""


@pytest.mark.gpu
def test_auto_picks_the_gpu_when_usable():
    assert gpunn.device("auto") == "cuda:0"


# --- nothing moves implicitly ---------------------------------------------------------------------

MIXED = {
    "add": lambda a, b: a + b,
    "radd": lambda a, b: b + a,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "matmul": lambda a, b: a @ b,
    "maximum": gpunn.maximum,
    "minimum": gpunn.minimum,
    "where": lambda a, b: gpunn.where(a > 0, a, b),
    "where_condition": lambda a, b: gpunn.where(b > 0, a, a),
    "concat": lambda a, b: gpunn.concat([a, b]),
    "stack": lambda a, b: gpunn.stack([a, b]),
    "comparison": lambda a, b: a < b,
    "mse_loss": F.mse_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
    "linear": lambda a, b: F.linear(a, b),
    "cross_entropy": lambda a, b: F.cross_entropy(a, b[:, 0].long()),
    "setitem": lambda a, b: a.detach().__setitem__(0, b[0]),
    "index": lambda a, b: a[b.long()],
}
NAMES = {"radd": "add", "where_condition": "where", "mse_loss": "sub", "bce_with_logits": "bce_with_logits",
         "index": "getitem"}


@pytest.fixture
def count_transfers(monkeypatch):
    """Counts every move of an array onto or off a strict device."""
    calls = []
    strict = backends.get("strict")
    for name in ("from_host", "to_host"):
        original = getattr(strict, name)
        monkeypatch.setattr(strict, name, lambda *a, _original=original, _name=name, **k: (
            calls.append(_name), _original(*a, **k))[1])
    return calls


@pytest.mark.parametrize("first, second", [("strict", "strict:1"), ("strict:1", "strict"), ("cpu", "strict")])
@pytest.mark.parametrize("op", MIXED)
def test_mixing_devices_raises_and_copies_nothing(op, first, second, count_transfers):
    a = gpunn.ones(2, 2, device=first, requires_grad=True)
    b = gpunn.zeros(2, 2, device=second)
    count_transfers.clear()
    with pytest.raises(gpunn.DeviceError) as info:
        MIXED[op](a, b)
    message = str(info.value)
    assert NAMES.get(op, op) in message
    assert {first, second} <= set(re.findall(r"\b(?:cpu|strict(?::1)?)\b", message))
    assert count_transfers == []


def test_the_transfer_counter_counts(count_transfers):
    """Negative control for the fixture above: a real move is seen."""
    gpunn.ones(2, device="strict").to("strict:1")
    assert count_transfers


def test_index_tensor_on_another_device_raises():
    x = gpunn.ones(3, device="strict")
    with pytest.raises(gpunn.DeviceError, match="strict:1"):
        x[gpunn.tensor([0, 1], device="strict:1")]


def test_data_stays_on_its_device_through_a_training_step():
    """Every intermediate and every gradient of a small model lives on strict:1."""
    dev = gpunn.device("strict:1")
    w = gpunn.randn(3, 2, device=dev, requires_grad=True)
    b = gpunn.zeros(3, device=dev, requires_grad=True)
    x = gpunn.randn(4, 2, device=dev)
    hidden = F.linear(x, w, b).tanh()
    loss = F.cross_entropy(hidden, gpunn.tensor([0, 1, 2, 1], device=dev)) + (w * w).mean()
    assert hidden.device is dev and loss.device is dev
    loss.backward()
    assert w.grad.device is dev and b.grad.device is dev
    assert w.grad._array.device == dev.native


def test_to_moves_between_devices_and_is_a_no_op_on_the_same_one():
    x = gpunn.tensor([1.0, 2.0], device="strict")
    y = x.to("strict:1")
    assert y.device == "strict:1" and y._array.device == gpunn.device("strict:1").native
    assert_close(y, [1.0, 2.0])
    assert x.to("strict") is x
    assert x.to(gpunn.device("strict:1"), dtype="float64").dtype == gpunn.float64
    assert x.to(device="cpu").device == "cpu"


def test_put_moves_arrays_from_any_backend():
    one = gpunn.device("strict:1")
    moved = one.put(np.arange(3.0))
    assert backends.owner(moved) == "strict" and moved.device == one.native
    back = gpunn.device("cpu").put(moved)
    assert isinstance(back, np.ndarray) and back.tolist() == [0.0, 1.0, 2.0]
    assert one.put(moved) is moved


# --- creation on a device, host copies, DLPack, seeds ---------------------------------------------

CREATORS = {
    "zeros": lambda d: gpunn.zeros(2, 3, device=d),
    "ones": lambda d: gpunn.ones((2, 3), device=d),
    "empty": lambda d: gpunn.empty(2, device=d),
    "full": lambda d: gpunn.full((2,), 1.5, device=d),
    "arange": lambda d: gpunn.arange(4, device=d),
    "eye": lambda d: gpunn.eye(3, device=d),
    "tensor": lambda d: gpunn.tensor([[1.0, 2.0]], device=d),
    "rand": lambda d: gpunn.rand(2, device=d),
    "randn": lambda d: gpunn.randn(2, 2, device=d),
    "randint": lambda d: gpunn.randint(0, 5, size=(3,), device=d),
    "randperm": lambda d: gpunn.randperm(4, device=d),
    "zeros_like": lambda d: gpunn.zeros_like(gpunn.ones(2, device=d)),
    "ones_like": lambda d: gpunn.ones_like(gpunn.ones(2, device=d)),
    "full_like": lambda d: gpunn.full_like(gpunn.ones(2, device=d), 7.0),
}


@pytest.mark.parametrize("name", CREATORS)
def test_creation_functions_honour_device(device, name):
    t = CREATORS[name](device)
    assert t.device == device
    assert device_of(t._array) == device  # where the array really is, not only what the tensor says


@pytest.mark.parametrize("name", ["zeros", "ones", "full", "tensor", "randn"])
def test_creation_on_the_second_strict_device_puts_data_there(name):
    one = gpunn.device("strict:1")
    assert CREATORS[name](one)._array.device == one.native
    assert CREATORS[name](gpunn.device("strict"))._array.device != one.native


def test_numpy_shares_on_the_cpu_and_copies_from_other_devices(device):
    t = gpunn.tensor([1.0, 2.0], device=device)
    host = t.numpy()
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    host[0] = 99.0
    assert t.numpy()[0] == (99.0 if device.type == "cpu" else 1.0)  # torch's numpy() shares on the CPU
    graph = gpunn.tensor([1.0, 2.0], device=device, requires_grad=True)
    graph.numpy()[0] = 99.0  # a tensor that requires grad gives a copy (PyTorch raises)
    assert graph.numpy()[0] == 1.0


def test_item_gives_python_numbers(device):
    f, i, b = gpunn.tensor([[2.5]], device=device), gpunn.tensor(3, device=device), gpunn.tensor(True, device=device)
    assert f.item() == 2.5 and type(f.item()) is float
    assert i.item() == 3 and type(i.item()) is int
    assert b.item() is True
    with pytest.raises(ValueError, match="one element"):
        gpunn.tensor([1.0, 2.0], device=device).item()


def test_dlpack_round_trip_with_numpy():
    source = np.arange(6.0).reshape(2, 3)
    t = gpunn.from_dlpack(source)
    assert t.device == "cpu" and t.dtype == gpunn.float64 and t.shape == (2, 3)
    source[0, 0] = 42.0  # from_dlpack shares memory
    assert t.numpy()[0, 0] == 42.0
    back = np.from_dlpack(t)
    np.testing.assert_array_equal(back, source)


@pytest.mark.parametrize("spec", HOST_DEVICES)
def test_dlpack_export_from_every_host_device(spec):
    t = gpunn.tensor([[1.0, 2.0], [3.0, 4.0]], device=spec)
    np.testing.assert_array_equal(np.from_dlpack(t), [[1.0, 2.0], [3.0, 4.0]])


def test_dlpack_round_trip_with_torch():
    torch = pytest.importorskip("torch")
    source = torch.arange(4.0)
    t = gpunn.from_dlpack(source)
    assert t.dtype == gpunn.float32 and t.numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    back = torch.from_dlpack(gpunn.tensor([1.5, 2.5]))
    assert back.tolist() == [1.5, 2.5] and back.dtype == torch.float32
    from_strict = torch.from_dlpack(gpunn.tensor([1.0, -1.0], device="strict:1"))
    assert from_strict.tolist() == [1.0, -1.0]


@pytest.mark.parametrize("draw", [lambda d: gpunn.randn(3, 2, device=d), lambda d: gpunn.rand(4, device=d),
                                  lambda d: gpunn.randint(0, 100, size=(5,), device=d),
                                  lambda d: gpunn.randperm(6, device=d)])
def test_manual_seed_gives_the_same_values_on_every_device(draw):
    values = []
    for spec in HOST_DEVICES:
        gpunn.manual_seed(123)
        values.append(draw(spec).numpy())
    for other in values[1:]:
        np.testing.assert_array_equal(values[0], other)
    gpunn.manual_seed(124)
    assert not np.array_equal(draw("cpu").numpy(), values[0])  # negative control: the seed matters


def test_rng_state_round_trip():
    gpunn.manual_seed(5)
    state = gpunn.get_rng_state()
    first = gpunn.randn(3).numpy()
    gpunn.set_rng_state(state)
    np.testing.assert_array_equal(gpunn.randn(3, device="strict:1").numpy(), first)


def test_synchronize_and_describe(device):
    device.synchronize()
    assert isinstance(device.describe(), str) and device.describe()


def test_fast_paths_name_primitives_or_update_rules():
    """Every backend's fast path overrides something that exists (checked when a device is made);
    a misspelt name would leave the generic version silently in place, so it is an error."""
    from gpunn.device import checked_fast_paths

    for kind in ("cpu", "strict"):
        backend = gpunn.device(kind).backend
        assert checked_fast_paths(backend) is backend.fast_paths

    class Misspelt:
        name, fast_paths = "test", {"cross_entropi": gpunn.ops.cross_entropy}

    with pytest.raises(gpunn.DeviceError, match="'cross_entropi', which names no primitive"):
        checked_fast_paths(Misspelt)

    class Misfiled:
        name, fast_paths = "test", {"relu": gpunn.ops.tanh}

    with pytest.raises(gpunn.DeviceError, match="registers primitive 'tanh' under 'relu'"):
        checked_fast_paths(Misfiled)
