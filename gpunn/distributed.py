"""Processes that train together, with torch.distributed's names, on MPI (and NCCL on CUDA).

mpi4py is the engine, imported only by `init_process_group`/`is_available`: `mpiexec -n N` starts
the processes; MPI gives ranks, local ranks (a shared-memory split of the world), the CPU
collectives and `Abort`, which ends the whole job when one rank fails. On CUDA, tensors are
all-reduced through NCCL (`backends/nccl.py`: CuPy's `NcclCommunicator`, its unique id broadcast over
MPI, as ChainerMN did); where NCCL is missing they are staged through host memory and MPI.

Failing ranks never hang the job. `init_process_group` installs a `sys.excepthook` that prints the
traceback with the rank and calls `MPI.COMM_WORLD.Abort(1)`; `abort(message)` does the same for
an error path that returns instead of raising (the CLI's `gpunn: error:`). A collective that waits
longer than `timeout` (default 30 minutes) aborts the job naming the operation: every collective
here is non-blocking (`Iallreduce`, `Ibcast`, ... or an NCCL call followed by a CUDA event) and is
polled against that deadline, because a blocking MPI call cannot be interrupted.

Objects are exchanged as JSON (`broadcast_object`, `all_gather_object`), never pickled.
"""

import datetime
import json
import os
import sys
import time
import traceback

import numpy as np

from gpunn.errors import GpunnError

__all__ = ["DistributedError", "is_available", "init_process_group", "is_initialized", "get_rank", "get_world_size",
           "get_local_rank", "get_local_world_size", "barrier", "all_reduce", "broadcast", "broadcast_object",
           "all_gather_object", "destroy_process_group", "launched", "abort", "backend_of"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
_LAUNCH_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")  # set by mpiexec for each rank
_OPS = ("sum", "avg", "max", "min")


class DistributedError(GpunnError, RuntimeError):
    """A process group used before it exists, an unknown backend or op, or tensors that differ between ranks."""


_group = None  # the process group while initialized


class _Group:
    def __init__(self, MPI, backend, timeout):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()  # our own context: user code on COMM_WORLD cannot mix with ours
        self.local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank, self.local_size = self.local.Get_rank(), self.local.Get_size()
        self.backend, self.timeout = backend, timeout
        self.nccl = {}  # CUDA device index -> NcclCommunicator, made at the first all-reduce there
        self.previous_hook = sys.excepthook


def is_available():
    """True when mpi4py (and an MPI library) can be imported."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def launched():
    """The world size an MPI launcher (mpiexec, srun with PMI) gave this process, or 1 when it was started
    on its own: how `gpunn train` decides to run distributed without being told."""
    for name in _LAUNCH_SIZE:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def init_process_group(backend="auto", timeout=None):
    """Join the processes `mpiexec` started. backend: "mpi" (every collective over MPI), "nccl" (CUDA
    tensors over NCCL, which must then be usable) or "auto" (NCCL for CUDA tensors where available,
    else host staging over MPI). timeout: a datetime.timedelta or seconds; a collective that waits
    longer aborts the whole job. Calling it again while initialized is an error, as in PyTorch."""
    global _group
    if backend not in ("auto", "mpi", "nccl"):
        raise DistributedError(f"init_process_group: backend must be 'auto', 'mpi' or 'nccl', got {backend!r}")
    if _group is not None:
        raise DistributedError("init_process_group was already called; call destroy_process_group() first")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    if not seconds > 0:
        raise DistributedError(f"init_process_group: timeout must be positive, got {timeout!r}")
    if backend == "nccl":
        why = _nccl_missing()
        if why is not None:
            raise DistributedError(f"backend 'nccl' is not usable here ({why}); use backend='auto' to stage CUDA "
                                   "tensors through host memory and MPI")
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"gpunn.distributed needs mpi4py and an MPI library ({exc}); install them with "
                               "pip install 'gpunn[mpi]' (mpi4py and the mpich wheel, which brings mpiexec)") from None
    _group = _Group(MPI, backend, seconds)
    sys.excepthook = _abort_on_exception
    return None


def is_initialized():
    return _group is not None


def _need():
    if _group is None:
        raise DistributedError("the default process group is not initialized; call "
                               "gpunn.distributed.init_process_group() first (and start the processes with mpiexec)")
    return _group


def get_rank():
    return _need().rank


def get_world_size():
    return _need().size


def get_local_rank():
    """This process's rank among those on the same machine: pick `cuda:{local_rank}` with it."""
    return _need().local_rank


def get_local_world_size():
    return _need().local_size


def destroy_process_group():
    """Leave the group (collectives then raise); MPI itself stays up until the process ends."""
    global _group
    if _group is None:
        return
    group, _group = _group, None
    sys.excepthook = group.previous_hook
    group.nccl.clear()
    group.local.Free()
    group.comm.Free()


# --- ending the job --------------------------------------------------------------------------------


def abort(message, status=1):
    """Print `message` naming this rank and end every process of the job (MPI_Abort)."""
    group = _group
    rank = f"rank {group.rank}" if group is not None else "a rank"
    print(f"gpunn: error: {rank}: {message}", file=sys.stderr, flush=True)
    if group is not None:
        group.MPI.COMM_WORLD.Abort(status)
    os._exit(status)


def _abort_on_exception(kind, value, tb):
    rank = _group.rank if _group is not None else "?"
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(f"gpunn: rank {rank} raised; ending the job\n{text}")
    sys.stderr.flush()
    if _group is not None:
        _group.MPI.COMM_WORLD.Abort(1)


def _wait(done, what):
    """Poll `done()` until it is True; past the group's timeout, abort the job naming `what`.
    Spins briefly (a step's collective usually completes within microseconds), then sleeps in
    short naps so a rank waiting for a slow one leaves the core to it."""
    group = _need()
    if done():
        return
    start = time.monotonic()
    deadline, nap = start + group.timeout, 0.0
    while not done():
        now = time.monotonic()
        if now > deadline:
            abort(f"{what} waited more than {group.timeout:g} s for the other ranks (the timeout of "
                  "init_process_group); a rank is stuck or died")
        if now - start > 1e-3:
            nap = min(max(nap * 2, 2e-5), 1e-3)
            time.sleep(nap)


# --- collectives on tensors -------------------------------------------------------------------------


def _mpi_op(group, op):
    if op not in _OPS:
        raise DistributedError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
    return {"sum": group.MPI.SUM, "avg": group.MPI.SUM, "max": group.MPI.MAX, "min": group.MPI.MIN}[op]


def backend_of(device):
    """Which engine moves arrays of `device`: 'mpi' (NumPy arrays, in place), 'nccl', or 'staged'
    (copied to the host, reduced over MPI and copied back)."""
    group = _need()
    if device.type == "cpu":
        return "mpi"
    if device.type == "cuda" and group.backend != "mpi" and _nccl_missing() is None:
        return "nccl"
    return "staged"


def all_reduce(tensor, op="sum"):
    """Reduce `tensor` over all ranks, in place: op 'sum', 'avg', 'max' or 'min'."""
    reduce_array(tensor._array, tensor.device, op, what=f"all_reduce({op}) of a {tuple(tensor.shape)} tensor")
    return tensor


def reduce_array(array, device, op="sum", what="all_reduce"):
    """all_reduce on a raw backend array of `device` (DistributedDataParallel's flat buffers)."""
    group = _need()
    mpi_op = _mpi_op(group, op)
    kind = backend_of(device)
    if kind == "nccl":
        _nccl_all_reduce(group, array, device, op, what)
    elif kind == "mpi" and array.flags.c_contiguous:
        _mpi_all_reduce(group, array, mpi_op, what)
    else:  # a strided NumPy view, array-api-strict, or CUDA without NCCL: through a host copy
        host = np.ascontiguousarray(device.backend.to_host(array) if kind != "mpi" else array)
        _mpi_all_reduce(group, host, mpi_op, what)
        with device.scope:
            array[...] = device.put(host) if kind != "mpi" else host
    if op == "avg":
        with device.scope:
            array /= group.size
    return array


def _mpi_all_reduce(group, host, mpi_op, what):
    request = group.comm.Iallreduce(group.MPI.IN_PLACE, host, op=mpi_op)
    _wait(request.Test, what)


def broadcast(tensor, src=0):
    """Overwrite `tensor` on every rank with rank `src`'s values, in place."""
    group = _need()
    array, device = tensor._array, tensor.device
    host = np.ascontiguousarray(device.backend.to_host(array) if device.type != "cpu" else array)
    request = group.comm.Ibcast(host, root=src)
    _wait(request.Test, f"broadcast from rank {src} of a {tuple(tensor.shape)} tensor")
    if device.type != "cpu" or host is not array:
        with device.scope:
            array[...] = device.put(host)
    return tensor


def barrier():
    group = _need()
    request = group.comm.Ibarrier()
    _wait(request.Test, "barrier")


def _exchange_bytes(group, data, src, what):
    """Broadcast bytes from `src` (its length first)."""
    size = np.array([len(data) if group.rank == src else 0], dtype=np.int64)
    request = group.comm.Ibcast(size, root=src)
    _wait(request.Test, what)
    buffer = np.frombuffer(data, dtype=np.uint8).copy() if group.rank == src else np.empty(int(size[0]), np.uint8)
    request = group.comm.Ibcast(buffer, root=src)
    _wait(request.Test, what)
    return buffer.tobytes()


def broadcast_object(obj, src=0):
    """Rank `src`'s `obj` on every rank. Objects travel as JSON (no pickle): dicts, lists, strings,
    numbers, booleans and None."""
    group = _need()
    data = json.dumps(obj).encode() if group.rank == src else b""
    return json.loads(_exchange_bytes(group, data, src, f"broadcast_object from rank {src}"))


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank (as JSON, like broadcast_object)."""
    group = _need()
    data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    sizes = np.empty(group.size, dtype=np.int64)
    request = group.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes)
    _wait(request.Test, "all_gather_object")
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    request = group.comm.Iallgatherv(data, [out, sizes])
    _wait(request.Test, "all_gather_object")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return [json.loads(out[a:b].tobytes()) for a, b in zip(starts[:-1], starts[1:])]


# --- NCCL (CUDA): the CuPy calls live in backends/nccl.py -------------------------------------------


def _nccl():
    from gpunn.backends import nccl  # (imported where NCCL is wanted: it names CuPy)
    return nccl


def _nccl_missing():
    """Why NCCL cannot be used here, or None."""
    return _nccl().missing()


def nccl_version():
    """NCCL's version as an int (e.g. 22703), or None where NCCL is missing."""
    return None if _nccl_missing() is not None else _nccl().version()


def _nccl_comm(group, device):
    """This device's NCCL communicator, made collectively the first time: rank 0 draws the unique
    id, MPI broadcasts it, every rank joins with its rank."""
    comm = group.nccl.get(device.index)
    if comm is None:
        uid = broadcast_object(_nccl().unique_id() if group.rank == 0 else None)
        with device.scope:
            comm = group.nccl[device.index] = _nccl().communicator(group.size, uid, group.rank)
    return comm


def _nccl_all_reduce(group, array, device, op, what):
    refusal = _nccl().refusal(array)
    if refusal is not None:
        raise DistributedError(f"{what}: {refusal}")
    comm = _nccl_comm(group, device)
    with device.scope:
        event = _nccl().all_reduce(comm, array, op)
    if event is not None:  # None inside compile_step's graph: the replay synchronizes, not us
        _wait(lambda: event.done, what)
