"""Work on a second device runs while that device is current, as CuPy needs on cuda:1.

CuPy launches every kernel, and allocates every result, on the *current* device, so gpunn enters
a CUDA device's context (`Device.ctx`) around all the work it does on that device's arrays: on
cuda:1, an op run outside it would fail, or compute on cuda:0. No second GPU is at hand, so the
fixture below gives array-api-strict's second device ("strict:1") the same rule: a context that
makes it current, and a record of every array made on one device while another is current.
"""

import traceback

import numpy as np
import pytest

import gpunn
from gpunn import functional as F, nn, optim
from gpunn.data import DataLoader
from gpunn.datasets import moons

from tests.test_strict_training import _train


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
