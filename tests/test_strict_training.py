"""The whole training loop on array-api-strict, on both of its devices: proof that the code path
uses only the standard and that every array stays on its device and in its dtype."""

import numpy as np
import pytest

import gpunn
from gpunn import functional as F, nn, optim
from gpunn.data import DataLoader
from gpunn.datasets import moons
from gpunn.optim.lr_scheduler import StepLR


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
