"""backends/nccl.py against a stand-in for `cupy.cuda.nccl` (no GPU here): the arguments each NCCL
call gets, the refusals, and the capture rule. The real library runs in scripts/gpu_check.sh's
DDP steps."""

import sys
import types

import numpy as np
import pytest

from gpunn.backends import nccl as backend


class FakeStream:
    ptr = 7

    def __init__(self, capturing=False):
        self.capturing = capturing

    def is_capturing(self):
        return self.capturing

    def record(self):
        return "event"


class FakeComm:
    def __init__(self, size, uid, rank):
        self.args, self.calls = (size, uid, rank), []

    def allReduce(self, *args):  # noqa: N802 (NCCL's name)
        self.calls.append(args)


@pytest.fixture
def fake_nccl(monkeypatch):
    """cupy, cupy.cuda and cupy.cuda.nccl as modules with the few names backends/nccl.py uses."""
    nccl = types.ModuleType("cupy.cuda.nccl")
    for i, name in enumerate(["NCCL_FLOAT16", "NCCL_FLOAT32", "NCCL_FLOAT64", "NCCL_INT32", "NCCL_INT64",
                              "NCCL_UINT8", "NCCL_INT8", "NCCL_SUM", "NCCL_MAX", "NCCL_MIN"]):
        setattr(nccl, name, 100 + i)
    nccl.get_version = lambda: 22703
    nccl.get_unique_id = lambda: (3, 1, 4)
    nccl.NcclCommunicator = FakeComm
    cuda = types.ModuleType("cupy.cuda")
    cuda.nccl, cuda.stream = nccl, FakeStream()
    cuda.get_current_stream = lambda: cuda.stream
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda
    for name, module in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.nccl", nccl)):
        monkeypatch.setitem(sys.modules, name, module)
    backend.missing.cache_clear()
    yield nccl
    backend.missing.cache_clear()


class Array:
    """What NCCL reads of a CuPy array: dtype, layout, pointer and size."""

    def __init__(self, host):
        self.dtype, self.flags, self.size = host.dtype, host.flags, host.size
        self.data = types.SimpleNamespace(ptr=12345)


def test_all_reduce_passes_pointer_count_type_and_op(fake_nccl):
    comm = backend.communicator(2, backend.unique_id(), 1)
    assert comm.args == (2, (3, 1, 4), 1) and backend.version() == 22703 and backend.missing() is None
    for dtype, code in (("float32", fake_nccl.NCCL_FLOAT32), ("float64", fake_nccl.NCCL_FLOAT64),
                        ("int64", fake_nccl.NCCL_INT64)):
        array = Array(np.zeros((3, 4), dtype))
        assert backend.refusal(array) is None
        assert backend.all_reduce(comm, array, "avg") == "event"
        assert comm.calls[-1] == (12345, 12345, 12, code, fake_nccl.NCCL_SUM, FakeStream.ptr)
    backend.all_reduce(comm, Array(np.zeros(5, "float16")), "max")
    assert comm.calls[-1][3:5] == (fake_nccl.NCCL_FLOAT16, fake_nccl.NCCL_MAX)


def test_inside_a_graph_recording_nothing_is_waited_on(fake_nccl):
    sys.modules["cupy.cuda"].stream = FakeStream(capturing=True)
    comm = backend.communicator(1, [0], 0)
    assert backend.all_reduce(comm, Array(np.zeros(2, "float32")), "sum") is None
    assert len(comm.calls) == 1


def test_refuses_strided_arrays_and_other_dtypes(fake_nccl):
    """The negative control of the family: what NCCL cannot take is named, not sent."""
    assert "strided" in backend.refusal(Array(np.zeros((4, 4), "float32")[:, ::2]))
    assert "complex64" in backend.refusal(Array(np.zeros(3, "complex64")))


def test_missing_says_why_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    monkeypatch.setitem(sys.modules, "cupy.cuda", None)
    backend.missing.cache_clear()
    try:
        assert "cannot be imported" in backend.missing()
    finally:
        backend.missing.cache_clear()
