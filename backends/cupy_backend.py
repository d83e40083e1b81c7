"""CuPy on CUDA devices. Imported only when a "cuda" device is asked for.

The generic array-API ops run here unchanged; `fast_paths` overrides a few primitives where CuPy
has something better than the standard offers (scatter-add for indexing gradients).
"""

import cupy
import cupyx
import array_api_compat.cupy as xp

from gpunn import ops


def _index_add_grad(xp_, g, out, x, index):
    """Gradient of x[index]: one atomic scatter-add instead of the generic one-hot product."""
    if not ops.has_array_index(index):  # slices and ints: the generic setitem is already direct
        return ops.getitem.grads[0](xp_, g, out, x, index)
    gx = cupy.zeros(x.shape, dtype=g.dtype)
    cupyx.scatter_add(gx, index, cupy.broadcast_to(g, out.shape))
    return gx


class CupyBackend:
    name = "cuda"
    xp = xp
    views = True  # slices are writable views: optimizers may keep flat buffers (gpunn.optim.flat)
    fuse_by_default = True

    def __init__(self):
        self.fast_paths = {"getitem": ops.getitem.override(grads=(_index_add_grad,))}

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

    def describe(self, native):
        props = cupy.cuda.runtime.getDeviceProperties(native.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        free, total = native.mem_info
        return f"{name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), CuPy {cupy.__version__}"


BACKEND = CupyBackend()

