"""A run resumed from a checkpoint in a fresh process continues bit for bit as if never stopped.

This file is also the script of the resumed half: `python test_resume.py CKPT OUT [--forget PART]`
loads CKPT, trains to the end and writes the losses and final parameters to OUT.
"""

import json
import subprocess
import sys

import numpy as np

import gpunn
from gpunn import io, nn, optim
from gpunn.data import DataLoader

TOTAL_STEPS, SAVE_AT = 20, 10  # 50 samples in batches of 8: 7 batches an epoch, saved mid-epoch 1


def _setup(init_seed=0):
    """Model, optimizer, scheduler and loader, built the same way in every process."""
    rng = np.random.default_rng(42)
    X = rng.standard_normal((50, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    gpunn.manual_seed(init_seed)
    model = nn.MLP([4, 16, 3])
    optimizer = optim.Adam(model.parameters(), lr=0.02)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    loader = DataLoader(X, y, batch_size=8, shuffle=True, seed=7)
    return model, optimizer, scheduler, loader


def _train(model, optimizer, scheduler, loader, step, stop, checkpoint=None):
    """Train from `step` to `stop` (saving `checkpoint` there if given); the input noise draws on
    gpunn's generator, so its state matters too."""
    losses = []
    while step < stop:
        for xb, yb in loader:
            xb = xb + 0.05 * gpunn.randn(*xb.shape)
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if step == stop:
                break
    if checkpoint is not None:
        io.save_checkpoint(checkpoint, model, optimizer, scheduler, step=step, loader=loader.state_dict())
    return losses


def _parameters(model):
    return {name: p.numpy() for name, p in model.state_dict().items()}


def _resume(checkpoint, out, forget=None):
    """The second half, in this (fresh) process: different init seed, then everything restored."""
    model, optimizer, scheduler, loader = _setup(init_seed=1234)
    gpunn.randn(3)  # the generator is wherever a fresh process leaves it, until the checkpoint says otherwise
    meta = io.load_checkpoint(checkpoint, model, None if forget == "optimizer" else optimizer,
                              None if forget == "scheduler" else scheduler)
    if forget != "loader":
        loader.load_state_dict(meta["loader"])
    losses = _train(model, optimizer, scheduler, loader, meta["step"], TOTAL_STEPS)
    io.save(model.state_dict(), f"{out}.safetensors")
    with open(f"{out}.json", "w") as f:
        json.dump(losses, f)


def _run_resumed(tmp_path, forget=None):
    out = tmp_path / f"resumed-{forget}"
    command = [sys.executable, __file__, str(tmp_path / "ckpt.safetensors"), str(out)]
    if forget:
        command += ["--forget", forget]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(f"{out}.json") as f:
        losses = json.load(f)
    return losses, {name: t.numpy() for name, t in io.load(f"{out}.safetensors").items()}


def _first_half(tmp_path):
    return _train(*_setup(), 0, SAVE_AT, checkpoint=tmp_path / "ckpt.safetensors")


def _same(params_a, params_b):
    return params_a.keys() == params_b.keys() and all(np.array_equal(params_a[k], params_b[k]) for k in params_a)


def test_resumed_run_is_bit_identical(tmp_path):
    model, optimizer, scheduler, loader = _setup()
    reference = _train(model, optimizer, scheduler, loader, 0, TOTAL_STEPS)
    reference_params = _parameters(model)
    assert len(reference) == TOTAL_STEPS and len(set(reference)) > 1

    first = _first_half(tmp_path)
    assert first == reference[:SAVE_AT]
    rest, params = _run_resumed(tmp_path)
    assert first + rest == reference  # Python floats from float32: == is bit equality
    assert _same(params, reference_params)


def test_resume_without_each_part_diverges(tmp_path):
    """Negative controls: leave out the optimizer, scheduler or loader state and the run differs,
    so the bit-identity above is earned by restoring them."""
    model, optimizer, scheduler, loader = _setup()
    reference = _train(model, optimizer, scheduler, loader, 0, TOTAL_STEPS)
    reference_params = _parameters(model)
    _first_half(tmp_path)
    for part in ("optimizer", "scheduler", "loader"):
        rest, params = _run_resumed(tmp_path, forget=part)
        assert rest != reference[SAVE_AT:], part
        assert not _same(params, reference_params), part


def test_state_dict_round_trip_between_cpu_and_strict1(tmp_path):
    gpunn.manual_seed(3)
    source = nn.MLP([5, 7, 2])
    io.save(source.state_dict(), tmp_path / "m.safetensors")
    target = nn.MLP([5, 7, 2], device="strict:1")
    target.load_state_dict(io.load(tmp_path / "m.safetensors", device="strict:1"))
    assert all(p.device == gpunn.device("strict:1") for p in target.parameters())
    assert _same(_parameters(target), _parameters(source))

    io.save(target.state_dict(), tmp_path / "back.safetensors")  # strict:1 -> file -> cpu
    back = nn.MLP([5, 7, 2])
    back.load_state_dict(io.load(tmp_path / "back.safetensors"))
    assert _same(_parameters(back), _parameters(source))


def test_checkpoint_moves_from_cpu_to_strict1(tmp_path):
    model, optimizer, scheduler, loader = _setup()
    _train(model, optimizer, scheduler, loader, 0, 5, checkpoint=tmp_path / "ckpt.safetensors")
    model2, optimizer2, scheduler2, _ = _setup(init_seed=99)
    model2.to("strict:1")
    optimizer2 = optim.Adam(model2.parameters(), lr=0.02)
    scheduler2 = optim.lr_scheduler.StepLR(optimizer2, step_size=4, gamma=0.5)
    meta = io.load_checkpoint(tmp_path / "ckpt.safetensors", model2, optimizer2, scheduler2)
    assert meta["step"] == 5
    assert _same(_parameters(model2), _parameters(model))
    assert scheduler2.state_dict() == scheduler.state_dict()
    state, state2 = optimizer.state_dict(), optimizer2.state_dict()
    assert state2["param_groups"] == state["param_groups"]
    for i, entry in state["state"].items():
        for name, value in entry.items():
            value2 = state2["state"][i][name]
            if isinstance(value, gpunn.Tensor):
                assert value2.device == gpunn.device("strict:1")
                assert value2.dtype == value.dtype and np.array_equal(value2.numpy(), value.numpy())
            else:
                assert value2 == value and type(value2) is type(value)


if __name__ == "__main__":
    args = sys.argv[1:]
    _resume(args[0], args[1], forget=args[3] if len(args) > 3 and args[2] == "--forget" else None)
