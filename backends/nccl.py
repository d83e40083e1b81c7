"""NCCL through CuPy (`cupy.cuda.nccl`): the all-reduce gpunn.distributed runs on CUDA arrays.

The process group (MPI) stays in gpunn.distributed: it broadcasts the unique id this module draws
and waits on the event `all_reduce` returns. Everything that names CuPy lives here, so that no
module outside backends/ imports it. Imported only where NCCL is wanted.
"""

import functools

_OPS = ("sum", "avg", "max", "min")  # avg: a sum, divided by the caller (NCCL's own avg is newer)


@functools.cache
def missing():
    """Why NCCL cannot be used here, or None."""
    try:
        from cupy.cuda import nccl
    except Exception as exc:  # ImportError, or CuPy failing to find its CUDA libraries
        return f"cupy.cuda.nccl cannot be imported: {exc}"
    if not getattr(nccl, "available", True):
        return "this CuPy was built without NCCL (pip install nvidia-nccl-cu12 or -cu13)"
    return None


def _nccl():
    from cupy.cuda import nccl
    return nccl


def version():
    """NCCL's version as an int (e.g. 22703)."""
    return int(_nccl().get_version())


def unique_id():
    """A new communicator id (drawn by one rank, sent to the others), as a list of ints."""
    return list(_nccl().get_unique_id())


def communicator(size, uid, rank):
    """This process's communicator for `size` ranks, on the current CUDA device."""
    return _nccl().NcclCommunicator(size, tuple(uid), rank)


def refusal(array):
    """Why NCCL cannot all-reduce `array` in place, or None."""
    if str(array.dtype) not in _types() or not array.flags.c_contiguous:
        return (f"NCCL takes contiguous arrays of {', '.join(_types())}, got "
                f"{array.dtype}{'' if array.flags.c_contiguous else ' (strided)'}")
    return None


def all_reduce(comm, array, op):
    """Queue an in-place all-reduce of `array` (check `refusal` first) on the current stream.
    Returns an event to wait on, or None while a CUDA graph is being recorded (the replay
    synchronizes then)."""
    import cupy

    nccl = _nccl()
    ops = {"sum": nccl.NCCL_SUM, "avg": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
    stream = cupy.cuda.get_current_stream()
    comm.allReduce(array.data.ptr, array.data.ptr, array.size, _types()[str(array.dtype)], ops[op], stream.ptr)
    if stream.is_capturing():
        return None
    return stream.record()


def _types():
    nccl = _nccl()
    return {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
            "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8, "int8": nccl.NCCL_INT8}
