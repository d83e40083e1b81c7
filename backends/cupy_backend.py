"""CuPy on CUDA devices. Imported only when a "cuda" device is asked for.

The generic array-API ops run here unchanged; `fast_paths` overrides the primitives and optimizer
updates that a small model's step spends its kernel launches on (cupy_kernels), and uses
scatter-add for indexing gradients. `capture` / `replay` record a step into a CUDA graph for
gpunn.compile_step.
"""

import cupy
import cupyx
import array_api_compat.cupy as xp

from gpunn import ops
from gpunn.precision import get_float32_matmul_precision

from . import Backend, cupy_kernels


def _index_add(g, out, x, index):
    """Gradient of x[index]: one atomic scatter-add instead of the generic one-hot product."""
    gx = cupy.zeros(x.shape, dtype=g.dtype)
    cupyx.scatter_add(gx, index, cupy.broadcast_to(g, out.shape))
    return gx


def _scatter_sum(index, src, axis, shape):
    """ops._scatter_sum as one atomic scatter-add (memory of the index, not index x shape[axis]);
    float32 and float64 only, the dtypes CuPy adds atomically everywhere: others take the generic."""
    if src.dtype not in (cupy.float32, cupy.float64):
        return ops._scatter_sum(xp, index, src, axis, shape)
    out = cupy.zeros(shape, dtype=src.dtype)
    where = tuple(index if d == axis else cupy.arange(n).reshape([n if e == d else 1 for e in range(index.ndim)])
                  for d, n in enumerate(index.shape))
    cupyx.scatter_add(out, where, src)
    return out


ops.HALF_DTYPES.add(cupy.dtype(cupy.float16))  # its float16 products accumulate in float32 (gpunn.ops._product)


class CupyBackend(Backend):
    name = "cuda"
    xp = xp
    views = True  # slices are writable views: optimizers may keep flat buffers (gpunn.optim.flat)
    fuse_by_default = True

    def __init__(self):
        self.fast_paths = {**cupy_kernels.fast_paths(), **ops.scatter_fast_paths(_index_add, _scatter_sum)}
        if get_float32_matmul_precision() == "high":  # else leave CuPy as configured (CUPY_TF32)
            self.set_tf32(True)

    def set_tf32(self, enabled):
        """TF32 for CuPy's own 2-D float32 products too (dot, tensordot), through CuPy's per-dtype
        compute type (cupy._core, not a public API). CuPy's batched products ignore it; gpunn's
        linear runs batches as one 2-D product, so only matmul of 3-D operands stays full FP32."""
        from cupy._core import _routines_linalg as linalg

        # off: "to be decided", which hands the choice back to CuPy's own CUPY_TF32 variable
        linalg.set_compute_type(cupy.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_TBD)

    def native_device(self, index):
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise ValueError(f"there is no cuda:{index}; this machine has {count} CUDA device(s)")
        return cupy.cuda.Device(index)

    def context(self, index):
        """Entered around every op: array-api-compat's CuPy may ignore device= when creating."""
        return cupy.cuda.Device(index)

    def device_count(self):
        return cupy.cuda.runtime.getDeviceCount()

    def to_host(self, array):
        return cupy.asnumpy(array)

    def from_host(self, host, native):
        with native:
            return cupy.asarray(host)

    def copy_between(self, array, index):
        with cupy.cuda.Device(index):
            return cupy.asarray(array)

    def from_dlpack(self, obj):
        return cupy.from_dlpack(obj)

    def synchronize(self, native):
        native.synchronize()

    def shares_memory(self, a, b):
        return cupy.may_share_memory(a, b)  # bounds of device pointers only: no kernel, no sync

    def capture(self, run):
        """Record the work `run()` launches into a CUDA graph: (graph, its memory pool, run's result).

        Nothing executes while recording. Capture needs a stream other than the default one, so it
        records on a side stream that first waits for the current one; arrays allocated inside come
        from a pool of the graph's own, so no other array is ever handed an address a replay
        writes to (keep the pool as long as the graph)."""
        current = cupy.cuda.get_current_stream()
        side = cupy.cuda.Stream(non_blocking=True)
        side.wait_event(current.record())
        pool = cupy.cuda.MemoryPool()
        with cupy.cuda.using_allocator(pool.malloc), side:
            side.begin_capture()
            try:
                result = run()
            except BaseException:
                try:
                    side.end_capture()
                except Exception:  # an invalidated capture may refuse to end; the first error matters
                    pass
                raise
            graph = side.end_capture()
        return graph, pool, result

    def replay(self, graph):
        graph.launch(cupy.cuda.get_current_stream())

    def copy_into(self, dst, src):
        """dst[...] = src, in stream order; as one device-to-device memcpy when both are contiguous
        with the same dtype and shape, which costs the host a fraction of CuPy's general setitem
        (compile_step copies the batch in and the loss out on every call)."""
        if (src.dtype == dst.dtype and src.shape == dst.shape and src.flags.c_contiguous and dst.flags.c_contiguous
                and src.data.device_id == dst.data.device_id):
            if src.nbytes:
                dst.data.copy_from_device_async(src.data, src.nbytes)  # on the current stream
        else:
            dst[...] = src

    def uploader(self, array):
        """A function writing small host NumPy arrays into `array` in stream order (see Uploader)."""
        return Uploader(array)

    def describe(self, native):
        props = cupy.cuda.runtime.getDeviceProperties(native.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        free, total = native.mem_info
        return f"{name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), CuPy {cupy.__version__}"


class Uploader:
    """Writes small host arrays (compile_step's per-step scalars) into one device array, in stream
    order, without waiting for the GPU.

    A copy from pageable memory may make the driver wait for the stream, which would stop the host
    from running ahead of graph replays; so the values go through a ring of pinned buffers, each
    reused only once its previous copy has finished (an event says so). Owned by the graph that
    reads the array, so it lives exactly as long."""

    slots = 4

    def __init__(self, array):
        self.array = array
        self.pinned = cupyx.empty_pinned((self.slots,) + array.shape, dtype=array.dtype)
        self.events = [None] * self.slots
        self.next = 0

    def __call__(self, host):
        i = self.next
        if self.events[i] is not None:
            self.events[i].synchronize()  # in practice long done: it was queued `slots` uploads ago
        self.pinned[i][...] = host
        stream = cupy.cuda.get_current_stream()
        self.array.set(self.pinned[i], stream=stream)
        self.events[i] = stream.record()
        self.next = (i + 1) % self.slots


BACKEND = CupyBackend()

