"""CuPy's rules that gpunn's CUDA path relies on, each by a case that must fail, and the fake held to them.

The same tests run on two CuPys, chosen by the environment variable GPUNN_CUPY:
- "fake": the fake CuPy of tests/cuda/fake_cuda (tests/cuda/test_fake_cuda.py runs this file in a
  subprocess with it on PYTHONPATH): the fake keeps each rule it claims;
- "real": real CuPy on a GPU (scripts/gpu_check.sh): the rules are CuPy's, so the fake claims
  nothing CuPy does not do.
Without GPUNN_CUPY this file is skipped, so the main test run never imports a CuPy of its own.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

WHICH = os.environ.get("GPUNN_CUPY")
if WHICH not in ("fake", "real"):
    pytest.skip("set GPUNN_CUPY=fake (with tests/cuda/fake_cuda on PYTHONPATH) or GPUNN_CUPY=real (on a GPU)",
                allow_module_level=True)

cupy = pytest.importorskip("cupy")
import cupyx  # noqa: E402

import gpunn  # noqa: E402

NAMES = Path(__file__).parent / "fake_cuda" / "cupy_names.txt"
CaptureFailure = cupy.cuda.runtime.CUDARuntimeError  # what CUDA reports for work it cannot record
fake_only = pytest.mark.skipif(WHICH != "fake", reason="a property of the fake itself, not of CuPy")


def _cuda_reason():
    reason = gpunn.cuda.why_unavailable()
    return None if reason is None else f"no usable CUDA device: {reason}"


needs_cuda = pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
needs_two = pytest.mark.skipif(gpunn.cuda.device_count() < 2, reason="needs two CUDA devices")


def test_the_cupy_under_test_is_the_one_asked_for():
    assert ("fake" in cupy.__version__) == (WHICH == "fake"), f"GPUNN_CUPY={WHICH} but cupy {cupy.__version__}"


def recorded_names():
    rows = [line.split() for line in NAMES.read_text().splitlines() if line.strip() and not line.startswith("#")]
    names = {}
    for module, name in rows:
        names.setdefault(module, set()).add(name)
    return names


def names_not_shared():
    """{module: names} on the fake that real CuPy lacks (cupy_names.txt); on real CuPy, the names
    of that list it lacks (so the list, and the fake, claims nothing this CuPy does not have)."""
    import importlib

    found = {}
    for module, recorded in recorded_names().items():
        here = {n for n in dir(importlib.import_module(module)) if not n.startswith("_")}
        extra = here - recorded if WHICH == "fake" else recorded - here
        if extra:
            found[module] = sorted(extra)
    return found


def test_the_fake_exposes_only_names_real_cupy_has():
    assert names_not_shared() == {}


def test_control_the_name_check_catches_a_numpy_only_function(monkeypatch):
    """Negative control: on the fake, NumPy's busday_count (not CuPy's) is caught; on real CuPy,
    a recorded name gone missing is."""
    assert hasattr(np, "busday_count") and not hasattr(cupy, "busday_count")
    if WHICH == "fake":
        monkeypatch.setattr(cupy, "busday_count", np.busday_count, raising=False)
        assert names_not_shared() == {"cupy": ["busday_count"]}
    else:
        monkeypatch.delattr(cupy, "ElementwiseKernel")
        assert names_not_shared() == {"cupy": ["ElementwiseKernel"]}


# --- CuPy's rules ------------------------------------------------------------------------------------


def capture(run):
    """(graph, result) of `run` recorded on a fresh stream; an error in `run` is the one raised."""
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            result = run()
        except BaseException:
            try:
                stream.end_capture()
            except Exception:  # noqa: BLE001 (CUDA invalidates a capture that failed: the first error counts)
                pass
            raise
        graph = stream.end_capture()
    return graph, result


@pytest.fixture
def a0():
    with cupy.cuda.Device(0):
        return cupy.arange(3)


@needs_cuda
def test_no_implicit_transfer_to_numpy(a0):
    with pytest.raises(TypeError):
        np.asarray(a0)


@needs_cuda
def test_a_numpy_operand_is_refused(a0):
    with pytest.raises(TypeError):
        a0 + np.ones(3)


@needs_cuda
@needs_two
def test_an_op_runs_only_on_its_arrays_device(a0):
    with cupy.cuda.Device(1):
        a1 = cupy.arange(3)
        assert int((a1 + 1).sum()) == 6
    with pytest.raises(ValueError):
        a1 + 1  # device 0 is current


@needs_cuda
@needs_two
def test_asarray_copies_another_devices_array_and_returns_its_own(a0):
    with cupy.cuda.Device(1):
        b = cupy.asarray(a0)
    assert b.device.id == 1 and np.array_equal(b.get(), a0.get())
    assert cupy.asarray(a0) is a0


CAPTURE_FAILURES = {
    "float() syncs": (lambda a: float(a.sum()), CaptureFailure),
    "a boolean mask syncs": (lambda a: a[a > 0], CaptureFailure),
    "CuPy's own cuBLAS product": (lambda a: cupy.ones((2, 2), np.float32) @ cupy.ones((2, 2), np.float32),
                                  NotImplementedError),
    "a pageable host copy": (lambda a: cupy.asarray(np.ones(3)), CaptureFailure),
    "a pinned host copy": (lambda a: a.set(cupyx.empty_pinned((3,), np.int64)), CaptureFailure),
    "a list index (a host copy)": (lambda a: a[[0, 1]], CaptureFailure),
    "cuRAND": (lambda a: cupy.random.rand(3), NotImplementedError),
}


@needs_cuda
@pytest.mark.parametrize("case", CAPTURE_FAILURES)
def test_capture_refuses(case, a0):
    run, error = CAPTURE_FAILURES[case]
    with pytest.raises(error):
        capture(lambda: run(a0))


@needs_cuda
def test_capture_refuses_a_launch_on_another_stream(a0):
    other = cupy.cuda.Stream(non_blocking=True)

    def run():
        with other:
            return a0 + 1
    with pytest.raises(CaptureFailure):
        capture(run)


@needs_cuda
def test_capture_records_replays_run_and_python_scalars_are_baked_in():
    x = cupy.asarray(np.arange(3, dtype=np.float32))
    scale = 2.0
    graph, y = capture(lambda: x * scale + 1)
    x[...] = cupy.asarray(np.array([10, 20, 30], np.float32))
    scale = 100.0  # not seen by the replay: the 2.0 was recorded
    graph.launch()
    assert np.array_equal(y.get(), [21, 41, 61])


@needs_cuda
@fake_only
def test_fake_capture_runs_nothing_until_a_replay():
    """The fake's arrays made while capturing hold NaN until a replay (peeking at its memory)."""
    x = cupy.asarray(np.arange(3, dtype=np.float32))
    graph, y = capture(lambda: x * 2.0)
    assert np.isnan(y._a).all()
    graph.launch()
    assert np.array_equal(y.get(), [0, 2, 4])


@needs_cuda
def test_in_place_calls_and_device_made_indices_are_recorded():
    x = cupy.asarray(np.array([3.0, 1.0, 2.0]))
    dst = cupy.zeros(3)

    def run():
        cupy.copyto(dst, x * 2)
        x.sort()
        return x[cupy.argmax(x).reshape(1)]
    graph, top = capture(run)
    assert np.array_equal(dst.get(), [0, 0, 0]) and np.array_equal(x.get(), [3, 1, 2])  # recorded, not run
    graph.launch()
    assert np.array_equal(dst.get(), [6, 2, 4]) and np.array_equal(x.get(), [1, 2, 3])
    assert np.array_equal(top.get(), [3])


@needs_cuda
def test_a_fixed_type_kernel_parameter_refuses_another_dtype():
    kernel = cupy.ElementwiseKernel("T x, float32 s", "T y", "y = x * s", "contract_scale")
    with pytest.raises(TypeError):
        kernel(cupy.ones(2, dtype=np.float32), cupy.asarray(np.float64(2.0)))


@needs_cuda
def test_a_host_read_under_allow_synchronize_false_raises(a0):
    with cupyx.allow_synchronize(False):
        with pytest.raises(cupyx.DeviceSynchronized):
            a0.get()


# --- gpunn's CUDA graphs under these rules -------------------------------------------------------------


def compiled_against_eager(break_upload=False):
    """Max relative difference between compile_step's losses and the eager ones over 12 steps of a
    StepLR schedule (a new learning rate every 4 steps)."""
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
        step = gpunn.compile_step(model, cross_entropy, opt) if mode == "graph" else None
        backend = type(cuda.backend)
        saved = backend.uploader
        if break_upload and step is not None:
            backend.uploader = lambda self, array: (lambda host: None)
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
            backend.uploader = saved
        assert step is None or step.mode == "graph", step.reason
        losses[mode] = np.array(out)
    return float(np.max(np.abs(losses["graph"] - losses["eager"]) / np.abs(losses["eager"])))


@needs_cuda
def test_gpunn_compiled_steps_equal_eager_ones_under_a_schedule():
    assert compiled_against_eager() < 1e-6


@needs_cuda
def test_control_without_the_learning_rate_upload_they_differ():
    assert compiled_against_eager(break_upload=True) > 1e-3


@needs_cuda
@fake_only
def test_control_cublas_left_on_the_old_stream_fails_the_capture():
    """gpunn's cuBLAS handle must follow the current stream into a capture: with the rebinding
    broken, the fake refuses the capture (on a GPU the products would run outside the graph)."""
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
    assert step.mode == "eager" and "cuBLAS gemm queued on stream" in (step.reason or ""), step.reason
