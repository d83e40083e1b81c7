"""Checks that the fake CuPy keeps the CUDA rules it claims to keep, each by a case that must fail.

    PYTHONPATH=scripts/fake_cuda python scripts/fake_cuda/selftest.py

One line per rule; exit status 1 if any rule does not hold. The last checks are gpunn's own: a
compiled training step replays its graph with the batch and learning rate of each call (equal to
the eager step), and breaking the learning-rate upload is caught by that comparison.
"""

import sys

import numpy as np

import cupy
import cupyx
from cupy import _fake

results = []


def check(rule, run, raises=None):
    try:
        outcome = run()
    except Exception as exc:  # noqa: BLE001 (the point is which one)
        ok = raises is not None and isinstance(exc, raises)
        detail = f"{type(exc).__name__}: {str(exc)[:70]}"
    else:
        ok = raises is None and outcome is True
        detail = "no error" if raises is not None else f"{outcome}"
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'}  {rule:<62} {detail}")


def capture(run):
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            result = run()
        finally:
            graph = stream.end_capture()
    return graph, result


def replay_semantics():
    x = cupy.asarray(np.arange(3, dtype=np.float32))
    scale = 2.0
    graph, y = capture(lambda: x * scale + 1)
    recorded_nothing_ran = bool(np.isnan(y._a).all())  # (peeking at the emulated memory: no sync)
    x[...] = cupy.asarray(np.array([10, 20, 30], np.float32))
    scale = 100.0  # a Python scalar is baked in at capture
    graph.launch()
    return recorded_nothing_ran and np.array_equal(y.get(), [21, 41, 61])


def in_place_and_indices():
    x = cupy.asarray(np.array([3.0, 1.0, 2.0]))
    dst = cupy.zeros(3)

    def run():
        cupy.copyto(dst, x * 2)
        x.sort()
        return x[cupy.argmax(x).reshape(1)]
    graph, top = capture(run)
    untouched = np.array_equal(dst.get(), [0, 0, 0]) and np.array_equal(x.get(), [3, 1, 2])
    graph.launch()
    return untouched and np.array_equal(dst.get(), [6, 2, 4]) and np.array_equal(x.get(), [1, 2, 3]) \
        and np.array_equal(top.get(), [3])


def cublas_on_the_old_stream():
    """gpunn's cuBLAS handle must follow the current stream into a capture: with the rebinding
    broken, the capture fails (on a GPU the products would run outside the graph)."""
    import warnings

    import gpunn
    from gpunn import nn, optim
    from gpunn.backends import cublas_gemm
    from gpunn.functional import cross_entropy

    cuda = gpunn.device("cuda")
    x = gpunn.tensor(np.ones((4, 8), np.float32), device=cuda)
    y = gpunn.tensor(np.zeros(4, np.int64), device=cuda)
    model = nn.MLP([8, 4, 3]).to(cuda)
    step = gpunn.compile_step(model, cross_entropy, optim.SGD(model.parameters(), lr=0.1))
    bind = cublas_gemm._Handle.bind
    cublas_gemm._Handle.bind = lambda self, tf32: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(3):
                step(x, y)
    finally:
        cublas_gemm._Handle.bind = bind
    return step.mode == "eager" and "cuBLAS gemm queued on stream" in (step.reason or "") or step.reason


def gpunn_compiled_step(break_upload=False):
    """Max relative difference between compile_step's losses and the eager ones over 12 steps of a
    StepLR schedule (a new learning rate every 4 steps)."""
    import gpunn
    from gpunn import nn, optim
    from gpunn.functional import cross_entropy

    cuda = gpunn.device("cuda")
    rng = np.random.default_rng(0)
    batches = [(gpunn.tensor(rng.standard_normal((16, 8)).astype(np.float32), device=cuda),
                gpunn.tensor(rng.integers(0, 3, 16), device=cuda)) for _ in range(3)]
    losses = {}
    for mode in ("eager", "graph"):
        gpunn.manual_seed(0)
        model = nn.MLP([8, 16, 3]).to(cuda)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.1)
        step = gpunn.compile_step(model, cross_entropy, opt)
        if mode == "eager":
            step = None
        backend = cuda.backend
        saved = backend.uploader
        if break_upload and mode == "graph":
            type(backend).uploader = lambda self, array: (lambda host: None)
        try:
            out = []
            for k in range(12):
                x, y = batches[k % 3]
                if step is None:
                    loss = cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                else:
                    loss = step(x, y)
                out.append(loss.item())
                sched.step()
        finally:
            type(backend).uploader = saved
        assert step is None or step.mode == "graph", step.reason
        losses[mode] = np.array(out)
    return float(np.max(np.abs(losses["graph"] - losses["eager"]) / np.abs(losses["eager"])))


def main():
    a0 = cupy.arange(3)
    with cupy.cuda.Device(1):
        a1 = cupy.arange(3)
    check("np.asarray of a device array raises (no implicit transfer)", lambda: np.asarray(a0), TypeError)
    check("a NumPy operand raises", lambda: a0 + np.ones(3), TypeError)
    check("an op on another device's array raises", lambda: a1 + 1, ValueError)

    def on_its_device():
        with cupy.cuda.Device(1):
            return int((a1 + 1).sum()) == 6
    check("the same op on its own device runs", on_its_device)
    check("float() while capturing raises", lambda: capture(lambda: float(a0.sum())), _fake.CaptureError)
    check("a boolean mask while capturing raises", lambda: capture(lambda: a0[a0 > 0]), _fake.CaptureError)
    f32 = cupy.ones((2, 2), dtype=np.float32)
    check("CuPy's own cuBLAS product while capturing raises", lambda: capture(lambda: f32 @ f32), NotImplementedError)
    check("a pageable host copy while capturing raises",
          lambda: capture(lambda: cupy.asarray(np.ones(3))), _fake.CaptureError)
    pinned = cupyx.empty_pinned((3,), np.int64)
    check("a pinned host copy while capturing raises too", lambda: capture(lambda: a0.set(pinned)), _fake.CaptureError)
    check("a list index while capturing raises (a host copy)", lambda: capture(lambda: a0[[0, 1]]), _fake.CaptureError)
    check("cuRAND while capturing raises", lambda: capture(lambda: cupy.random.rand(3)), NotImplementedError)

    def on_another_stream():
        other = cupy.cuda.Stream(non_blocking=True)

        def run():
            with other:
                return a0 + 1
        capture(run)
    check("a launch on another stream while capturing raises", on_another_stream, _fake.CaptureError)
    check("capture records, replays run, Python scalars are baked in", replay_semantics)
    check("in-place calls and device-made indices are recorded too", in_place_and_indices)

    def fixed_type():
        kernel = cupy.ElementwiseKernel("T x, float32 s", "T y", "y = x * s", "selftest_scale")
        kernel(cupy.ones(2, dtype=np.float32), cupy.asarray(np.float64(2.0)))
    check("a fixed-type kernel parameter refuses another dtype", fixed_type, TypeError)

    def peer_copy():
        with cupy.cuda.Device(1):
            b = cupy.asarray(a0)
        return b.device.id == 1 and np.array_equal(b.get(), a0.get()) and cupy.asarray(a0) is a0
    check("asarray copies another device's array, returns its own", peer_copy)

    def sync_refused():
        with cupyx.allow_synchronize(False):
            a0.get()
    check("x.get() under allow_synchronize(False) raises", sync_refused, cupyx.DeviceSynchronized)
    check("gpunn: compiled steps equal eager ones under a schedule",
          lambda: (lambda d: d < 1e-6 or f"max rel diff {d:.1e}")(gpunn_compiled_step()))
    check("gpunn, control: without the learning-rate upload they differ",
          lambda: (lambda d: d > 1e-3 or f"max rel diff only {d:.1e}")(gpunn_compiled_step(break_upload=True)))
    check("gpunn, control: cuBLAS left on the old stream fails the capture", cublas_on_the_old_stream)
    failed = results.count(False)
    print(f"{len(results) - failed} of {len(results)} rules hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
