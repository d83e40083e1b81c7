"""Mixed precision: gpunn.autocast and gpunn.amp.GradScaler, against torch.amp where torch is installed."""

import math
import threading
import warnings

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
import gpunn.functional as F
import gpunn.optim as optim
from gpunn.errors import DTypeError
from helpers import rng

HALF_DEVICES = ("cpu", "cuda")  # device types whose backend has float16 (strict has none)


def _half_ok(device):
    return device.type in HALF_DEVICES


def _t(array, device, requires_grad=False):
    return gpunn.tensor(np.asarray(array), device=device, requires_grad=requires_grad)


# --- autocast: which dtype each op runs in ---------------------------------------------------------

def test_autocast_policies_on_every_device(device):
    """Products in float16, PyTorch's (CUDA) float32 list in float32, concat in the widest type,
    float64 never cast; strict, which has no float16, refuses with a clear error."""
    if not _half_ok(device):
        with pytest.raises(DTypeError, match="array-api-strict.*no float16"):
            with gpunn.autocast(device.type):
                pass
        return
    g = rng(0)
    x, w = _t(g.standard_normal((4, 5), dtype=np.float32), device), _t(g.standard_normal((3, 5), dtype=np.float32), device)
    b = _t(g.standard_normal(3, dtype=np.float32), device)
    with gpunn.autocast(device.type):
        assert (x @ w.T).dtype == gpunn.float16
        assert F.linear(x, w, b).dtype == gpunn.float16
        assert F.linear_act(x, w, b, "relu").dtype == gpunn.float16
        h = x.abs().half()
        for out in (h.exp(), h.log(), h ** 2, h.sum(), h.softmax(dim=1), h.log_softmax(dim=1), h.logsumexp(axis=1)):
            assert out.dtype == gpunn.float32
        assert F.layer_norm(h, (5,)).dtype == gpunn.float32
        assert gpunn.cat([h, x]).dtype == gpunn.float32
        assert gpunn.cat([h, h]).dtype == gpunn.float16
        assert (h + h).dtype == gpunn.float16  # not on any list: runs as it comes
        assert (x.double() @ w.double().T).dtype == gpunn.float64  # float64 is never cast
    # negative control: outside autocast nothing is cast
    assert (x @ w.T).dtype == gpunn.float32 and x.half().exp().dtype == gpunn.float16


def test_autocast_only_touches_its_device_type(device):
    """autocast("cpu") leaves tensors on other device types alone."""
    x = _t(np.ones((2, 3), np.float32), device)
    other = "cuda" if device.type == "cpu" else "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (autocast("cuda") without CuPy: a warning, and off)
        with gpunn.autocast(other):
            assert (x @ x.T).dtype == gpunn.float32


def test_autocast_nesting_decorator_threads_and_errors():
    x = gpunn.ones(2, 2)
    with gpunn.autocast("cpu"):
        assert gpunn.is_autocast_enabled("cpu") and gpunn.get_autocast_dtype("cpu") == gpunn.float16
        with gpunn.autocast("cpu", enabled=False):
            assert (x @ x).dtype == gpunn.float32 and not gpunn.is_autocast_enabled()
        assert (x @ x).dtype == gpunn.float16
        seen = []
        thread = threading.Thread(target=lambda: seen.append((x @ x).dtype))  # per-thread state
        thread.start()
        thread.join()
        assert seen == [gpunn.float32]
    assert not gpunn.is_autocast_enabled()

    @gpunn.amp.autocast("cpu")
    def forward(a):
        return a @ a

    assert forward(x).dtype == gpunn.float16 and (x @ x).dtype == gpunn.float32
    with pytest.raises(ZeroDivisionError):
        with gpunn.autocast("cpu"):
            1 / 0
    assert not gpunn.is_autocast_enabled()  # restored after an exception
    with pytest.raises(DTypeError, match="NumPy.*no bfloat16"):
        with gpunn.autocast("cpu", dtype=gpunn.bfloat16):
            pass
    with pytest.raises(ValueError, match="device type"):
        gpunn.autocast("cuda:0")
    with pytest.raises(DTypeError, match="float16 or gpunn.bfloat16"):
        gpunn.autocast("cpu", dtype=gpunn.float32)


def test_half_products_accumulate_in_float32(device):
    """fp16 inputs, float32 accumulation, one rounding: 1 + 2048 ones sum to 2049 -> rounds to 2048
    only at the end; a float16 running sum (the negative control) sticks at 2048 after 2048 terms
    and loses every later 1."""
    if not _half_ok(device):
        pytest.skip("no float16 on this device")
    n = 4096
    a = np.ones((1, n), np.float16)
    b = np.ones((n, 1), np.float16)
    b[:2048] = 0.5  # 1024 from these, then 2048 ones: 3072, exact in float16 when accumulated wide
    got = (_t(a, device) @ _t(b, device)).numpy()
    wide = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    assert got.dtype == np.float16 and got[0, 0] == wide[0, 0] == 3072
    running = np.float16(0)
    for v in (a[0] * b[:, 0]):
        running = np.float16(running + v)
    assert running != wide[0, 0]  # what float16 accumulation would give (2048)


def test_autocast_gradients_reach_float32_parameters(device):
    if not _half_ok(device):
        pytest.skip("no float16 on this device")
    g = rng(1)
    w = _t(g.standard_normal((3, 4), dtype=np.float32), device, requires_grad=True)
    x = _t(g.standard_normal((5, 4), dtype=np.float32), device)
    with gpunn.autocast(device.type):
        loss = F.cross_entropy(F.linear(x, w), _t(np.array([0, 1, 2, 0, 1]), device))
    assert loss.dtype == gpunn.float32
    loss.backward()
    assert w.grad.dtype == gpunn.float32 and w.dtype == gpunn.float32
    w32 = w.detach().requires_grad_()
    F.cross_entropy(F.linear(x, w32), _t(np.array([0, 1, 2, 0, 1]), device)).backward()
    np.testing.assert_allclose(w.grad.numpy(), w32.grad.numpy(), rtol=0, atol=2e-3)


# --- against torch.autocast on the CPU -----------------------------------------------------------

def _pair(array, requires_grad=False):
    torch = pytest.importorskip("torch")
    return (gpunn.tensor(array, requires_grad=requires_grad),
            torch.tensor(array, requires_grad=requires_grad))


def _same(ours, theirs, tol):
    torch = pytest.importorskip("torch")
    assert ours.dtype.name == str(theirs.dtype).removeprefix("torch."), (ours.dtype, theirs.dtype)
    np.testing.assert_allclose(ours.detach().numpy().astype(np.float64),
                               theirs.detach().to(torch.float64).numpy(), rtol=tol, atol=tol)


def test_autocast_matches_torch_cpu_autocast():
    """Output dtypes and values of the ops both CPU op lists share, and the float32 gradients."""
    torch = pytest.importorskip("torch")
    g = rng(2)
    x, tx = _pair(g.standard_normal((6, 5)).astype(np.float32))
    w, tw = _pair(g.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    b, tb = _pair(g.standard_normal(4).astype(np.float32), requires_grad=True)
    y, ty = _pair(np.array([0, 1, 2, 3, 0, 1]))
    t01, tt01 = _pair(g.uniform(size=(6, 4)).astype(np.float32))
    tf = torch.nn.functional
    with gpunn.autocast("cpu"), torch.autocast("cpu", dtype=torch.float16):
        pairs = [(x @ w.T, tx @ tw.T), (F.linear(x, w, b), tf.linear(tx, tw, tb)),
                 (F.linear_act(x, w, b, "relu"), tf.relu(tf.linear(tx, tw, tb)))]
        logits, tlogits = pairs[1]
        pairs += [(F.cross_entropy(logits, y), tf.cross_entropy(tlogits, ty)),
                  (F.nll_loss(logits, y), tf.nll_loss(tlogits, ty)),
                  (F.mse_loss(logits, t01), tf.mse_loss(tlogits, tt01)),
                  (F.binary_cross_entropy_with_logits(logits, t01), tf.binary_cross_entropy_with_logits(tlogits, tt01)),
                  (gpunn.cat([logits, t01]), torch.cat([tlogits, tt01])),
                  (gpunn.stack([logits, logits]), torch.stack([tlogits, tlogits]))]
    for ours, theirs in pairs:
        _same(ours, theirs, 2e-3)
    (pairs[3][0] + pairs[6][0]).backward()
    (pairs[3][1] + pairs[6][1]).backward()
    for ours, theirs in ((w, tw), (b, tb)):
        assert ours.grad.dtype == gpunn.float32 and theirs.grad.dtype == torch.float32
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=2e-3, atol=2e-3)


def test_autocast_torch_comparison_catches_a_wrong_policy(monkeypatch):
    """Negative control: linear left in float32 under autocast no longer matches torch's dtype."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(gpunn.ops, "linear", gpunn.ops.linear.replace(autocast=None))
    x, tx = _pair(np.ones((2, 3), np.float32))
    w, tw = _pair(np.ones((4, 3), np.float32))
    with gpunn.autocast("cpu"), torch.autocast("cpu", dtype=torch.float16):
        ours, theirs = F.linear(x, w), torch.nn.functional.linear(tx, tw)
    with pytest.raises(AssertionError):
        _same(ours, theirs, 1e-3)


# --- GradScaler against torch.amp.GradScaler ---------------------------------------------------------

def _mlp():
    gpunn.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _torch_copy(model):
    torch = pytest.importorskip("torch")
    twin = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for ours, theirs in zip(model.parameters(), twin.parameters()):
            theirs.copy_(torch.tensor(ours.detach().numpy()))
    return twin


def _batches(steps, bad_step):
    g = rng(3)
    out = []
    for i in range(steps):
        xb = g.standard_normal((5, 6)).astype(np.float32)
        if i == bad_step:
            xb[0, 0] = np.inf  # the gradients of this step are inf/NaN
        out.append((xb, g.integers(0, 3, size=5)))
    return out


def _run_gpunn(opt_name, fused, clip, steps, bad_step, **scaler_args):
    model = _mlp()
    kw = {"fused": fused}
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, **kw) if opt_name == "sgd" else \
        optim.Adam(model.parameters(), lr=0.01, **kw)
    scaler = gpunn.amp.GradScaler(**scaler_args)
    scales, params = [], []
    for xb, yb in _batches(steps, bad_step):
        opt.zero_grad()
        with gpunn.autocast("cpu"):
            loss = F.cross_entropy(model(gpunn.tensor(xb)), gpunn.tensor(yb))
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append([p.detach().numpy().copy() for p in model.parameters()])
    return scales, params, scaler


def _run_torch(model, opt_name, clip, steps, bad_step, **scaler_args):
    torch = pytest.importorskip("torch")
    twin = _torch_copy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd" else \
        torch.optim.Adam(twin.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", **scaler_args)
    scales, params = [], []
    for xb, yb in _batches(steps, bad_step):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(twin(torch.tensor(xb)), torch.tensor(yb))
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append([p.detach().numpy().copy() for p in twin.parameters()])
    return scales, params


SCALER_ARGS = dict(init_scale=2.0 ** 10, growth_interval=3)


@pytest.mark.parametrize("opt_name,fused,clip", [("sgd", False, False), ("sgd", True, True), ("adam", True, False),
                                                 ("adam", False, True)])
def test_grad_scaler_matches_torch_and_skips_the_inf_step(opt_name, fused, clip):
    pytest.importorskip("torch")
    steps, bad = 9, 4
    scales, params, _ = _run_gpunn(opt_name, fused, clip, steps, bad, **SCALER_ARGS)
    their_scales, their_params = _run_torch(_mlp(), opt_name, clip, steps, bad, **SCALER_ARGS)
    assert scales == their_scales  # grows after 3 good steps, halves at the inf step
    assert scales[bad] == scales[bad - 1] / 2 and scales[2] == 2.0 ** 11
    for i, (ours, theirs) in enumerate(zip(params, their_params)):
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3, err_msg=f"step {i}")
    for a, b in zip(params[bad], params[bad - 1]):  # the inf step changed nothing
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


def test_grad_scaler_comparison_catches_a_wrong_backoff():
    """Negative control: a scaler that backs off by 0.25 gives another scale sequence than torch's."""
    pytest.importorskip("torch")
    scales, _, _ = _run_gpunn("sgd", False, False, 6, 2, backoff_factor=0.25, **SCALER_ARGS)
    their_scales, _ = _run_torch(_mlp(), "sgd", False, 6, 2, **SCALER_ARGS)
    assert scales != their_scales


def test_grad_scaler_state_dict_round_trip_and_torch_layout():
    torch = pytest.importorskip("torch")
    _, _, scaler = _run_gpunn("sgd", False, False, 5, 1, **SCALER_ARGS)
    saved = scaler.state_dict()
    theirs = torch.amp.GradScaler("cpu", **SCALER_ARGS)
    theirs.scale(torch.ones(()))
    assert saved.keys() == theirs.state_dict().keys()
    fresh = gpunn.amp.GradScaler()
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == saved and fresh.get_scale() == scaler.get_scale()
    assert gpunn.amp.GradScaler(enabled=False).state_dict() == {}
    with pytest.raises(RuntimeError, match="empty"):
        gpunn.amp.GradScaler().load_state_dict({})


def test_grad_scaler_misuse_and_disabled(device):
    w = _t(np.ones(3, np.float32), device, requires_grad=True)
    opt = optim.SGD([w], lr=0.5)
    scaler = gpunn.amp.GradScaler(init_scale=4.0)
    with pytest.raises(RuntimeError, match="no loss was scaled"):
        scaler.unscale_(opt)
    loss = scaler.scale((w * w).sum())
    assert loss.item() == 12.0
    loss.backward()
    scaler.unscale_(opt)
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])  # divided by the scale
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(w.detach().numpy(), [0.0, 0.0, 0.0])
    scaler.update(new_scale=8.0)
    assert scaler.get_scale() == 8.0
    off = gpunn.amp.GradScaler(enabled=False)
    assert off.scale(loss) is loss and off.get_scale() == 1.0


def test_shared_gradient_arrays_are_unscaled_once():
    """a + b hands both leaves one gradient array: unscaling must divide it once, not twice."""
    a, b = gpunn.ones(2, requires_grad=True), gpunn.ones(2, requires_grad=True)
    scaler = gpunn.amp.GradScaler(init_scale=8.0)
    scaler.scale((a + b).sum()).backward()
    scaler.unscale_(optim.SGD([a, b], lr=1.0))
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_device_side_skip_keeps_params_and_state():
    """The skip used inside a recorded step: buffers put back where found_inf is set, a normal step
    where it is not (SGD with momentum, fused flat buffers)."""
    def setup():
        model = _mlp()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
        scaler = gpunn.amp.GradScaler(init_scale=1.0)
        for last in (False, True):  # a first full step makes the flat buffers and momentum to protect
            opt.zero_grad()
            scaler.scale(model(gpunn.ones(2, 6)).sum()).backward()
            scaler.unscale_(opt)
            if not last:
                scaler.step(opt)
                scaler.update()
        return model, opt, scaler

    model, opt, scaler = setup()
    before = [p.detach().numpy().copy() for p in model.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].numpy().copy() for p in model.parameters()]
    scaler._step_where_finite(opt, np.ones((), np.float32))
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    for p, m in zip(model.parameters(), momentum):
        np.testing.assert_array_equal(opt.state[p]["momentum_buffer"].numpy(), m)
    scaler._step_where_finite(opt, np.zeros((), np.float32))
    assert any(not np.array_equal(p.detach().numpy(), b) for p, b in zip(model.parameters(), before))


# --- numerics: the digits MLP -------------------------------------------------------------------

def _digits_accuracy(amp):
    from gpunn.datasets import load_digits, train_test_split

    x, y = load_digits()
    x = x.astype(np.float32)  # (already scaled to [0, 1])
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, seed=0)
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = gpunn.amp.GradScaler(enabled=amp)
    order = np.random.default_rng(0)
    for _ in range(15):
        perm = order.permutation(len(xtr))
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            with gpunn.autocast("cpu", enabled=amp):
                out = model(gpunn.tensor(xtr[idx]))
                loss = F.cross_entropy(out, gpunn.tensor(ytr[idx]))
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    with gpunn.no_grad(), gpunn.autocast("cpu", enabled=amp):
        pred = model(gpunn.tensor(xte)).argmax(axis=1).numpy()
    return 100.0 * float(np.mean(pred == yte)), out.dtype


def test_autocast_training_on_digits_matches_fp32_accuracy():
    """Issue 19's numerics target: within 0.5 points of float32 test accuracy (360 test digits)."""
    (fp32, dtype32), (mixed, dtype16) = _digits_accuracy(False), _digits_accuracy(True)
    assert dtype32 == gpunn.float32 and dtype16 == gpunn.float16  # the mixed run did run in half precision
    assert fp32 > 94.0
    assert abs(fp32 - mixed) <= 0.5, (fp32, mixed)


# --- compile_step and gpunn train ----------------------------------------------------------------

@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_compile_step_with_a_scaler_matches_the_hand_written_loop(device, opt_name):
    """Same scales and parameters as the loop of _run_gpunn, with an inf step skipped; on CUDA
    (also the fake CuPy) the later steps replay a recorded graph, whose skip and scale update run
    on the device. (Adam after a skip inside a graph counts one step more for its bias corrections,
    see docs/pytorch-differences.md, so its parameters are compared up to the skip.)"""
    if not _half_ok(device):
        pytest.skip("no float16 on this device")
    steps, bad = 9, 6  # the inf arrives after the graph is recorded (third call)
    model = _mlp().to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True) if opt_name == "sgd" else \
        optim.Adam(model.parameters(), lr=0.01, fused=True)
    scaler = gpunn.amp.GradScaler(**SCALER_ARGS)
    step = gpunn.compile_step(model, F.cross_entropy, opt, max_grad_norm=0.5, scaler=scaler)
    scales, params = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gpunn.compile.CompileWarning)  # (eager on the cpu, with a note)
        for xb, yb in _batches(steps, bad):
            with gpunn.autocast(device.type):
                step(_t(xb, device), _t(yb, device))
            scales.append(scaler.get_scale())
            params.append([p.detach().numpy().copy() for p in model.parameters()])
    assert step.mode == ("graph" if device.type == "cuda" else "eager")
    expected_scales, expected_params, _ = _run_gpunn(opt_name, True, True, steps, bad, **SCALER_ARGS)
    assert scales == expected_scales
    tol = 1e-3 if device.type == "cuda" else 1e-6  # CUDA's half products round differently (float16 level)
    compared = steps if opt_name == "sgd" or device.type != "cuda" else bad + 1
    for ours, theirs in zip(params[:compared], expected_params):
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    for a, b in zip(params[bad], params[bad - 1]):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


def test_gpunn_train_amp(tmp_path):
    """--amp trains the digits MLP about as well as float32, records itself in config.json, keeps
    the scaler's state in the checkpoint, and a device without float16 is a usage error."""
    from gpunn.cli import main

    common = ["train", "--dataset", "digits", "--hidden", "32", "--epochs", "3", "--device", "cpu", "--no-progress",
              "--no-compile"]
    assert main([*common, "--out", str(tmp_path / "fp32")]) == 0
    assert main([*common, "--amp", "--clip-norm", "1", "--out", str(tmp_path / "amp")]) == 0
    import json

    config = json.loads((tmp_path / "amp" / "config.json").read_text())
    assert config["amp"] is True and config["compile"] is False
    accuracy = [json.loads((tmp_path / name / "summary.json").read_text())["test_accuracy"] for name in ("fp32", "amp")]
    assert abs(accuracy[0] - accuracy[1]) < 0.02, accuracy
    meta = gpunn.load_checkpoint(tmp_path / "amp" / "checkpoint.safetensors")
    assert meta["scaler"]["scale"] == 2.0 ** 16 and meta["scaler"]["_growth_tracker"] > 0
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--device", "strict", "--amp", "--no-progress",
                 "--out", str(tmp_path / "strict")]) == 2


def test_bench_amp_times_gpunn_and_torch_mixed_precision_steps(tmp_path):
    """`gpunn bench --amp`: gpunn-amp and torch-amp rows beside the float32 ones, paired by vs_torch,
    their first losses checked against the float32 forward pass at float16's tolerance."""
    pytest.importorskip("torch")
    import json

    from gpunn.cli import bench

    args = bench.build_parser().parse_args(["--devices", "cpu", "--sizes", "16-8-4", "--batch-sizes", "8", "--amp",
                                            "--repeats", "1", "--warmup", "1", "--block-ms", "0", "--no-plot",
                                            "--out", str(tmp_path / "bench")])
    assert bench.main(args) == 0
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = {r["impl"]: r for r in report["results"]}
    assert {"gpunn", "gpunn-amp", "torch", "torch-amp"} <= rows.keys()
    assert rows["gpunn-amp"]["vs_torch"] == rows["gpunn-amp"]["median_ms"] / rows["torch-amp"]["median_ms"]
    amp_checks = [c for c in report["loss_checks"] if c["impl"].endswith("-amp")]
    assert amp_checks and all(c["ok"] and c["rtol"] == bench.AMP_RTOL for c in amp_checks)


@pytest.mark.parametrize("amp", [False, True])
def test_gpunn_train_compiles_by_default_on_cuda_only(device, amp, monkeypatch):
    """fit records its steps with compile_step on CUDA (a graph replays, the GradScaler inside it
    with --amp) unless compile=False; elsewhere it does not call compile_step at all."""
    from gpunn.cli.train import TrainConfig, fit

    if amp and not _half_ok(device):
        pytest.skip("no float16 on this device")
    made = []
    original = gpunn.compile_step

    def recording(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(gpunn, "compile_step", recording)
    config = dict(dataset="xor", hidden=(8,), epochs=2, device=str(device), amp=amp, optimizer="sgd")
    fit(TrainConfig(**config))
    if device.type == "cuda":
        assert len(made) == 1 and made[0].mode == "graph", made and made[0].reason
        assert (made[0].scaler is not None) == amp
    else:
        assert made == []
    made.clear()
    fit(TrainConfig(**config, compile=False))
    assert made == []


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_grad_scaler_skips_inf_steps_with_every_optimizer(name):
    """The same loop with each optimizer: the inf step leaves the parameters as they were and backs
    the scale off, the finite ones change them (the torch comparison above checks the values)."""
    model = _mlp()
    opt = getattr(optim, name)(model.parameters(), lr=0.01)
    scaler = gpunn.amp.GradScaler(init_scale=2.0 ** 8)
    for i, (xb, yb) in enumerate(_batches(3, bad_step=1)):
        before = [p.detach().numpy().copy() for p in model.parameters()]
        opt.zero_grad()
        with gpunn.autocast("cpu"):
            loss = F.cross_entropy(model(gpunn.tensor(xb)), gpunn.tensor(yb))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        changed = [not np.array_equal(p.detach().numpy(), b) for p, b in zip(model.parameters(), before)]
        assert (not any(changed)) if i == 1 else all(changed), (i, changed)
    assert scaler.get_scale() == 2.0 ** 7
