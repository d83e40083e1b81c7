"""Backends: an array namespace plus the few things the array API standard lacks.

A backend knows nothing of Tensor. Every backend gives:
  name, xp           its device type ("cpu", "cuda", "strict") and array namespace (array-api-compat's)
  native_device(i), device_count(), describe(native)
  to_host(a)         a NumPy copy of an array of this backend
  from_host(h, dev)  a NumPy array moved onto native device `dev`
  synchronize(dev)   wait until queued work on `dev` is done
  shares_memory(a, b) whether two arrays of this backend may share memory (a view and its base)
  fast_paths         {name: override} of generic functions written against xp, looked up by name:
                     primitives of gpunn.ops and the optimizer updates of gpunn.updates
and may give:
  views              True when slices are writable views (then optimizers may keep flat buffers)
  fuse_by_default    optimizers built with fused=None use flat buffers here
  chain_layers       nn.Sequential runs consecutive Linear layers as one node (ops.linear_chain),
                     where per-layer fused kernels and gradient slots do not matter more
  context(i)         a context entered around every op on device i
  copy_between(a, i), from_dlpack(obj)
                     direct transfers between two of its devices, and DLPack import
  capture(run), replay(graph), uploader(array)
                     CUDA-graph recording for gpunn.compile_step
  copy_into(dst, src)
                     dst[...] = src for arrays of one device, where the backend has a cheaper way
  set_tf32(enabled)  told by gpunn.set_float32_matmul_precision

Backends are loaded lazily: importing gpunn never imports CuPy. probe_cuda() asks CuPy whether
CUDA is usable, so that no module outside backends/ imports it.
"""

import functools
import importlib


class Backend:
    """The optional members' defaults: slices are not writable views, optimizers do not fuse,
    nn.Sequential does not chain layers."""

    views = False
    fuse_by_default = False
    chain_layers = False

_MODULES = {"cpu": "numpy_backend", "strict": "strict_backend", "cuda": "cupy_backend"}
_loaded = {}


def get(kind):
    """The backend object for a device type ("cpu", "strict" or "cuda"), imported on first use."""
    if kind not in _loaded:
        module = importlib.import_module(f"{__name__}.{_MODULES[kind]}")
        _loaded[kind] = module.BACKEND
    return _loaded[kind]


def loaded():
    """{device type: backend} for the backends imported so far."""
    return dict(_loaded)


def owner(array):
    """The device type whose backend made `array` (None for non-arrays)."""
    module = type(array).__module__
    if module == "numpy" or module.startswith("numpy."):
        return "cpu"
    if module.startswith("array_api_strict"):
        return "strict"
    if module.startswith("cupy"):
        return "cuda"
    return None


@functools.lru_cache(maxsize=None)
def probe_cuda():
    """(CUDA device count, reason CUDA is unusable or None), asked of CuPy without ever failing;
    gpunn.cuda says it in words. Cached: the answer does not change in a run."""
    try:
        import cupy
    except ImportError:
        return 0, "CuPy is not installed (pip install 'gpunn[cuda12]' or 'gpunn[cuda13]')"
    except Exception as exc:  # a broken CuPy install raises all sorts of things
        return 0, f"CuPy failed to import: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return 0, f"no usable CUDA driver ({exc})"
    if count == 0:
        return 0, "no CUDA device found"
    try:
        with cupy.cuda.Device(0):
            (cupy.arange(2) + 1).sum().item()
    except Exception as exc:
        return 0, f"CUDA device 0 failed a test computation ({exc})"
    return count, None
