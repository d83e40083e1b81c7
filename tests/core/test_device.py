"""Devices: specs, interning, errors that say why, data that never moves implicitly, a whole
training loop on array-api-strict, and work on a second device inside its context."""

import pickle
import re
import traceback
import warnings

import numpy as np
import pytest

import gpunn
import gpunn.functional as F
from gpunn import backends, nn, optim
from gpunn.data import DataLoader
from gpunn.datasets import moons
from gpunn.device import DeviceWarning, of as device_of
from gpunn.optim.lr_scheduler import StepLR
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


# --- creation on a device, host copies, DLPack ----------------------------------------------------

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


# --- the whole training loop on array-api-strict, on both of its devices --------------------------
# Proof that the code path uses only the standard and that every array stays on its device and in
# its dtype.


def _arrays_of(model, opt):
    for name, p in model.named_parameters():
        yield f"param {name}", p
        if p.grad is not None:
            yield f"grad {name}", p.grad
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, gpunn.Tensor):
                yield f"optimizer state {i}.{key}", value


def _train(model, opt, sched, loader, epochs):
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()
            losses.append(loss.item())
        sched.step()
    return losses


@pytest.mark.parametrize("spec", ["strict", "strict:1"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_loop_on_strict_keeps_device_and_dtype(spec, dtype, tmp_path):
    dev = gpunn.device(spec)
    X, y = moons(n=128, noise=0.1, seed=0)
    gpunn.manual_seed(0)
    model = nn.MLP([2, 16, 2], activation="tanh", dtype=dtype).to(dev)
    opt = optim.Adam(model.parameters(), lr=0.05)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    loader = DataLoader(X, y, batch_size=32, shuffle=True, device=dev, seed=0, dtype=dtype)
    losses = _train(model, opt, sched, loader, epochs=3)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]

    for what, t in _arrays_of(model, opt):
        assert t.device == dev, f"{what} moved to {t.device}"
        assert t.dtype == dtype, f"{what} became {t.dtype}"

    path = tmp_path / "ckpt.safetensors"
    gpunn.save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, loader=loader.state_dict())
    gpunn.manual_seed(123)
    model2 = nn.MLP([2, 16, 2], activation="tanh", dtype=dtype).to(dev)
    opt2 = optim.Adam(model2.parameters(), lr=0.05)
    sched2 = StepLR(opt2, step_size=2, gamma=0.5)
    meta = gpunn.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    loader2 = DataLoader(X, y, batch_size=32, shuffle=True, device=dev, seed=0, dtype=dtype)
    loader2.load_state_dict(meta["loader"])

    assert _train(model2, opt2, sched2, loader2, epochs=2) == _train(model, opt, sched, loader, epochs=2)
    for (what, a), (_, b) in zip(_arrays_of(model, opt), _arrays_of(model2, opt2)):
        assert b.device == dev and b.dtype == dtype, what
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=what)


def test_device_check_sees_a_stray_array():
    """Negative control: a buffer left on another device is found by the same walk."""
    dev = gpunn.device("strict:1")
    model = nn.MLP([2, 4, 2]).to(dev)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(gpunn.ones(3, 2, device=dev)).sum().backward()
    opt.step()
    opt.state[model[0].weight]["momentum_buffer"] = gpunn.zeros(4, 2)  # on cpu: the wrong device
    strays = [what for what, t in _arrays_of(model, opt) if t.device != dev]
    assert strays == ["optimizer state 0.momentum_buffer"]


# --- work on a second device runs while that device is current, as CuPy needs on cuda:1 -----------
# CuPy launches every kernel, and allocates every result, on the *current* device, so gpunn enters a
# CUDA device's context (`Device.ctx`) around all the work it does on that device's arrays: on
# cuda:1, an op run outside it would fail, or compute on cuda:0. No second GPU is at hand, so the
# fixture below gives array-api-strict's second device ("strict:1") the same rule: a context that
# makes it current, and a record of every array made on one device while another is current.


class _Current:
    """A reentrant 'make this device current' context, like cupy.cuda.Device(i)."""

    def __init__(self, stack, native):
        self.stack, self.native = stack, native

    def __enter__(self):
        self.stack.append(self.native)

    def __exit__(self, *exc):
        self.stack.pop()


@pytest.fixture
def made_off_device(monkeypatch):
    """Call sites that made a strict array on a device other than the current one (a list that
    the test reads at its end); strict:1 is current only inside its device's context."""
    from array_api_strict import _array_object

    default = _array_object.CPU_DEVICE
    stack, wrong = [default], []
    create = _array_object.Array._new.__func__

    def checked_new(cls, x, /, device):
        if device is None:  # a creation function without device=: the current device, as in CuPy
            device = stack[-1]
        elif device != stack[-1]:
            ours = [f for f in traceback.extract_stack() if "/gpunn/" in f.filename or "/backends/" in f.filename]
            wrong.append(f"{ours[-1].filename.rsplit('/', 2)[-2:]}:{ours[-1].lineno} {ours[-1].line}" if ours
                         else "".join(traceback.format_stack(limit=6)))
        return create(cls, x, device=device)

    monkeypatch.setattr(_array_object.Array, "_new", classmethod(checked_new))
    for spec in ("strict", "strict:1"):
        dev = gpunn.device(spec)
        ctx = _Current(stack, dev.native)
        monkeypatch.setattr(dev, "ctx", ctx)
        monkeypatch.setattr(dev, "scope", ctx)
    for backend in {id(b): b for b in (gpunn.device("strict").backend, gpunn.device("strict:1").backend)}.values():
        def from_host_on(host, native, _from_host=backend.from_host):  # CuPy's makes the target current too
            with _Current(stack, native):
                return _from_host(host, native)

        monkeypatch.setattr(backend, "from_host", from_host_on)
    return wrong


def _report(wrong):
    return f"{len(wrong)} arrays made off their device, at:\n" + "\n".join(sorted(set(wrong)))


def test_the_check_sees_work_outside_the_context(made_off_device):
    """Negative control: an op on strict:1's arrays outside its context is caught."""
    t = gpunn.ones(3, device="strict:1")
    assert not made_off_device
    t.device.xp.exp(t._array)
    assert len(made_off_device) == 1


@pytest.mark.parametrize("make_optimizer", [
    lambda p: optim.Adam(p, lr=0.05),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: optim.AdamW(p, lr=0.05),
    lambda p: optim.RMSprop(p, lr=0.01),
    lambda p: optim.Adagrad(p, lr=0.1),
], ids=["adam", "sgd", "adamw", "rmsprop", "adagrad"])
def test_training_on_a_second_device_runs_in_its_context(made_off_device, make_optimizer):
    dev = gpunn.device("strict:1")
    X, y = moons(n=96, noise=0.1, seed=0)
    gpunn.manual_seed(0)
    model = nn.MLP([2, 16, 2], activation="relu").to(dev)
    opt = make_optimizer(model.parameters())
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loader = DataLoader(X, y, batch_size=32, shuffle=True, device=dev, seed=0)
    losses = _train(model, opt, sched, loader, epochs=2)
    assert np.all(np.isfinite(losses))
    assert not made_off_device, _report(made_off_device)


def test_tensor_methods_on_a_second_device_run_in_its_context(made_off_device, tmp_path):
    dev = gpunn.device("strict:1")
    gpunn.manual_seed(0)
    x = gpunn.randn(4, 3, device=dev, requires_grad=True)
    w = gpunn.rand(3, 3, device=dev, requires_grad=True)
    y = (x @ w).tanh()
    (y * y).mean().backward()
    z = x.detach()
    home = gpunn.randn(4, 3, device="strict", requires_grad=True)  # its gradient comes back across a .to()
    with gpunn.detect_anomaly():  # its finiteness checks too run with the right device current
        (home.to(dev) * x).sum().backward()
    checks = [z > 0, z == z, z.argmax(dim=1), z.argmin(), z.max(dim=0).indices, (z > 0).any(), (z > 0).all(),
              z.softmax(axis=-1), z.clip(-1, 1), z[1:, :2], z[gpunn.tensor([0, 2], device=dev)],
              gpunn.cat([z, z]), gpunn.stack([z, z]), gpunn.where(z > 0, z, 0.0)]
    z[0, 0] = 5.0
    z.zero_()
    z.fill_(2.0)
    z.copy_(gpunn.ones(4, 3, device="strict"))
    z += 1
    gpunn.nn.init.kaiming_uniform_(w.detach())
    assert [t.device for t in checks] == [dev] * len(checks)
    assert float((x.grad * 0).sum()) == 0.0 and w.grad.device == dev and home.grad.device == gpunn.device("strict")
    assert not made_off_device, _report(made_off_device)


def test_checkpoints_and_moves_run_in_the_right_context(made_off_device, tmp_path):
    dev = gpunn.device("strict:1")
    gpunn.manual_seed(0)
    model = nn.MLP([3, 4, 2]).to(dev)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = gpunn.randn(5, 3, device=dev)
    loss = F.cross_entropy(model(x), gpunn.tensor([0, 1, 0, 1, 1], device=dev))
    loss.backward()
    nn.utils.clip_grad_value_(model.parameters(), 0.5)
    opt.step()
    gpunn.save_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=opt)
    model2 = nn.MLP([3, 4, 2]).to(dev)
    opt2 = optim.Adam(model2.parameters(), lr=0.01)
    gpunn.load_checkpoint(tmp_path / "c.safetensors", model=model2, optimizer=opt2)
    back = model2.to("strict")
    assert all(p.device == gpunn.device("strict") for p in back.parameters())
    assert not made_off_device, _report(made_off_device)
