"""A fake CuPy for gpunn's tests: the whole CUDA path of gpunn, run on the CPU.

    PYTHONPATH=tests/cuda/fake_cuda python -m pytest -m gpu        # gpunn's GPU tests, on fake devices
    PYTHONPATH=tests/cuda/fake_cuda python -m gpunn train --device cuda --compile

CI has no GPU: this shows the Python side of the CUDA path works on every change, and
tests/cuda/test_cupy_contract.py holds the fake to real CuPy (run on a GPU by scripts/gpu_check.sh).
It exposes only names real CuPy has (cupy_names.txt). Arrays live in emulated device memory (cuda_emulation: NaN-poisoned, guarded NumPy
buffers) on FAKE_CUDA_DEVICES devices (default 2); NumPy does the arithmetic, except gpunn's own
kernels, which run their CUDA sources compiled by g++ (ElementwiseKernel, RawModule), and cuBLAS,
which is cuda_emulation's stand-in library. CuPy's rules that catch real bugs are kept:
- no implicit conversion to NumPy (np.asarray(x) raises), NumPy arrays refused as operands;
- an operation on an array of another device than the current one raises (no peer access);
- float(x), bool(x), x.get(), boolean masks are host syncs: cupyx.allow_synchronize(False) refuses them;
- CUDA graph capture records instead of running: arrays made while capturing hold NaN until a
  replay, Python scalars are baked in, host syncs and copies from pageable memory are errors.
What it cannot show: speed, the GPU's rounding (exp, tanh, TF32), races, real driver errors.
"""

import numpy as _np

from . import _fake
from ._fake import ndarray  # noqa: F401
from ._submodule import real_names as _real_names

__version__ = "14.2.0+fake"

# functions taking host data: the only entry points for NumPy arrays
_HOST_IN = {"asarray", "array", "asanyarray", "ascontiguousarray", "asfortranarray"}
_SKIP = {"ndarray", "empty", "empty_like", "asnumpy", "get_array_module", "from_dlpack", "ndim", "shape", "size"}


def _build():
    """NumPy's names that real CuPy has too (cupy_names.txt): no NumPy-only function passes here."""
    real = _real_names(__name__)
    for name in dir(_np):
        if name.startswith("_") or name in _SKIP or name not in real:
            continue
        value = getattr(_np, name)
        if type(value).__name__ == "module":
            continue  # linalg, fft, random: the fake's own submodules, imported below
        if isinstance(value, type) or not callable(value):
            globals()[name] = value  # dtypes, dtype classes, finfo, constants
        else:
            globals()[name] = _fake.function(name, value, allow_host=name in _HOST_IN)
    for name in ("dtype", "finfo", "iinfo", "issubdtype", "result_type", "can_cast", "promote_types", "isdtype",
                 "isscalar", "ndim", "shape", "size"):
        if hasattr(_np, name) and name in real:
            globals()[name] = getattr(_np, name) if name not in ("result_type", "can_cast", "ndim", "shape", "size") \
                else _unwrapped(getattr(_np, name))


def _unwrapped(fn):
    """Functions that read only metadata: fake arrays pass as their emulated memory."""
    def call(*args, **kwargs):
        return fn(*_fake.unwrap(args, allow_host=True), **_fake.unwrap(kwargs, allow_host=True))
    return call


_build()
bool_ = _np.bool_


def empty(shape, dtype=float, order="C"):
    return _fake.empty(shape, dtype, order)


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    keeps_f = order == "F" or (order in ("K", "A") and a.flags.f_contiguous and not a.flags.c_contiguous)
    return _fake.empty(a.shape if shape is None else shape, a.dtype if dtype is None else dtype,
                       "F" if keeps_f and shape is None else "C")


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def from_dlpack(obj, *, device=None, copy=None):
    if isinstance(obj, ndarray):
        return obj
    raise BufferError(f"the fake CuPy imports only its own arrays by DLPack, not {type(obj).__name__}")


class ElementwiseKernel:
    """cupy.ElementwiseKernel: its CUDA operation compiled by g++ as a loop (cuda_emulation), one launch."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True, preamble="",
                 no_return=False, return_tuple=False, loop_prep="", after_loop="", options=()):
        from ._kernel import Kernel
        self._kernel = Kernel(in_params, out_params, operation, name, preamble)
        self.name = name

    def __call__(self, *args, size=None, block_size=None):  # (CuPy's takes no stream=: the current one)
        return self._kernel(*args)


class RawModule:
    """cupy.RawModule(code=...): compiled by g++ behind the CUDA shim (cuda_emulation); launches recorded."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        from cuda_emulation import EmulatedRawModule
        self._module = EmulatedRawModule(code, options)

    def get_function(self, name):
        from ._kernel import RawFunction
        return RawFunction(self._module.get_function(name))


def get_default_memory_pool():
    from .cuda import MemoryPool
    return MemoryPool()


def get_default_pinned_memory_pool():
    from .cuda import MemoryPool
    return MemoryPool()


from . import cuda  # noqa: E402,F401
from . import linalg, fft, random  # noqa: E402,F401
from ._core import _routines_linalg  # noqa: E402,F401
from ._cublas import install as _install_cublas  # noqa: E402

_install_cublas()
