"""Matrix products through cuBLAS directly: no transpose copies, TF32 on request, capturable.

CuPy's own matmul re-binds CuPy's shared cuBLAS handle to the current stream on every call and
refuses to do so while a stream is being captured into a CUDA graph. This module keeps a handle of
its own (with its own workspace, as cuBLAS asks for under capture) and calls `cublasSgemm_v2` /
`cublasDgemm_v2` through ctypes on the library CuPy already loaded, so the same call works
eagerly and inside `compile_step`'s graph. Row-major products are computed as the column-major
product of the transposes, so `x @ w.T` never materialises `w.T`. float16 products (autocast) go
through `cublasGemmEx` with float32 compute (CUBLAS_COMPUTE_32F): half inputs on tensor cores,
float32 accumulation, one rounding of the result.
"""

import ctypes
import ctypes.util

import cupy
import numpy as np
from cupy_backends.cuda.libs import cublas as _loads_libcublas  # noqa: F401 (imported for its side effect)

_OP_N, _OP_T = 0, 1
_STATUS = {1: "NOT_INITIALIZED", 7: "INVALID_VALUE", 8: "ARCH_MISMATCH", 13: "EXECUTION_FAILED",
           14: "INTERNAL_ERROR", 15: "NOT_SUPPORTED"}
_DEFAULT_MATH, _TF32_TENSOR_OP_MATH = 0, 3
_WORKSPACE_BYTES = 32 * 2**20  # cuBLAS's recommendation for Hopper
_R_16F, _COMPUTE_32F, _GEMM_DEFAULT = 2, 68, -1  # cudaDataType CUDA_R_16F, cublasComputeType, cublasGemmAlgo

# alpha and beta are read through host pointers: they must outlive every call (and every capture);
# float16 products compute in float32, so their alpha and beta are float32 too
_SCALARS = {np.dtype(dt): (np.ones((), dt), np.zeros((), dt)) for dt in (np.float32, np.float64)}
_SCALARS[np.dtype(np.float16)] = _SCALARS[np.dtype(np.float32)]
_ONE_ZERO = {dt: (one.ctypes.data, zero.ctypes.data) for dt, (one, zero) in _SCALARS.items()}  # (ndarray.ctypes is slow)

# The C signatures, declared once: ctypes then converts plain ints in C, which is several times
# cheaper per call than building a ctypes object per argument in Python (a step makes ~10 products)
_P, _I = ctypes.c_void_p, ctypes.c_int
_SIGNATURES = {
    "cublasSetStream_v2": (_P, _P),
    "cublasSetWorkspace_v2": (_P, _P, ctypes.c_size_t),
    "cublasSetMathMode": (_P, _I),
    "cublasSgemm_v2": (_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I),
    "cublasDgemm_v2": (_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I),
    "cublasGemmEx": (_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _P, _I, _I, _P, _P, _I, _I, _I, _I),
}


def _library():
    """The libcublas CuPy uses (same library, same handle table): found as CuPy finds it, else among
    the process's mappings by the major version of CuPy's CUDA (torch may have mapped another)."""
    try:
        from cuda import pathfinder

        return ctypes.CDLL(pathfinder.load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception:  # an older CuPy, or CUDA from the system: look at what is loaded
        pass
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.rsplit(" ", 1)[-1].strip() for line in maps]
    except OSError:
        paths = []
    loaded = sorted((p for p in paths if "/libcublas.so" in p), key=lambda p: f".so.{major}" not in p)
    if loaded:
        return ctypes.CDLL(loaded[0])
    found = ctypes.util.find_library("cublas")
    if found is None:
        raise ImportError("libcublas is not loaded and cannot be found; install CuPy with its CUDA libraries")
    return ctypes.CDLL(found)


def _declare(lib):
    for name, argtypes in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int
    return lib


class _Handle:
    """One cuBLAS handle per device: bound to the current stream and math mode before each call."""

    def __init__(self, lib):
        self.lib = lib
        handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.ptr = handle.value
        self.workspace = cupy.empty(_WORKSPACE_BYTES, dtype=cupy.uint8)  # lives as long as the handle
        self.workspace_ptr = self.workspace.data.ptr
        self.stream = self.math = None

    @staticmethod
    def _check(status, what):
        if status == 3:  # CUBLAS_STATUS_ALLOC_FAILED
            from gpunn.errors import OutOfMemoryError

            raise OutOfMemoryError(f"{what}: cuBLAS could not allocate memory; use a smaller batch or model")
        if status != 0:
            name = _STATUS.get(status, "unknown")
            raise RuntimeError(f"{what} failed with cuBLAS status {status} ({name}); check that the arrays are on "
                               "the current device and the CUDA installation matches CuPy's")

    def bind(self, tf32):
        """Before every call: the current stream (then the workspace, which setting a stream
        resets) when it changed, e.g. into and out of a capture's side stream, and the math mode.
        gpunn queues all work on one stream, so the shared workspace is never used by two products
        at once."""
        stream = cupy.cuda.get_current_stream().ptr
        if stream != self.stream:
            self._check(self.lib.cublasSetStream_v2(self.ptr, stream), "cublasSetStream")
            self._check(self.lib.cublasSetWorkspace_v2(self.ptr, self.workspace_ptr, _WORKSPACE_BYTES),
                        "cublasSetWorkspace")
            self.stream = stream
        math = _TF32_TENSOR_OP_MATH if tf32 else _DEFAULT_MATH
        if math != self.math:
            self._check(self.lib.cublasSetMathMode(self.ptr, math), "cublasSetMathMode")
            self.math = math


_lib = None
_handles = {}


def _handle():
    global _lib
    if _lib is None:
        _lib = _declare(_library())
    device = cupy.cuda.runtime.getDevice()  # the current device (cheaper than building a Device)
    handle = _handles.get(device)
    if handle is None:
        handle = _handles[device] = _Handle(_lib)
    return handle


def _rowmajor(a, transposed):
    """(array to pass, its leading dimension, cuBLAS op) for a 2-D operand used as `a` or `a.T`.

    A C-contiguous array is passed as is; an F-contiguous one (a transposed view) as its
    transpose with the op flipped, so neither is copied. Anything else is made contiguous."""
    if a.flags.c_contiguous:
        return a, a.shape[1], transposed
    if a.flags.f_contiguous:
        return a.T, a.shape[0], not transposed
    a = cupy.ascontiguousarray(a)
    return a, a.shape[1], transposed


def gemm(a, b, trans_a=False, trans_b=False, out=None, accumulate=False, tf32=False):
    """out = op(a) @ op(b) (+ out if accumulate) for 2-D float16/float32/float64 CuPy arrays, row-major.

    op(x) is x or x.T. `out` (C-contiguous, the right shape) is written in place when given.
    """
    dtype = a.dtype
    if dtype not in _SCALARS or b.dtype != dtype:
        raise TypeError(f"gemm needs two float16, float32 or float64 arrays, got {a.dtype} and {b.dtype}")
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    if (b.shape[1] if trans_b else b.shape[0]) != k:
        raise ValueError(f"gemm: inner dimensions differ: {a.shape}{'ᵀ' if trans_a else ''} @ "
                         f"{b.shape}{'ᵀ' if trans_b else ''}")
    if out is None:
        if accumulate:
            raise ValueError("gemm: accumulate=True adds to `out`; pass out=")
        out = cupy.empty((m, n), dtype=dtype)
    elif not out.flags.c_contiguous or out.shape != (m, n) or out.dtype != dtype:
        raise ValueError(f"gemm: out must be a C-contiguous {dtype} array of shape {(m, n)}")
    if m == 0 or n == 0:
        return out
    if k == 0:
        if not accumulate:
            out.fill(0)
        return out
    a, lda, ta = _rowmajor(a, trans_a)
    b, ldb, tb = _rowmajor(b, trans_b)
    handle = _handle()
    handle.bind(tf32 and dtype == np.float32)
    one, zero = _ONE_ZERO[dtype]
    # row-major C (m x n) = op(A) op(B)  <=>  column-major C^T (n x m) = op(B)^T op(A)^T
    op_b, op_a, beta = _OP_T if tb else _OP_N, _OP_T if ta else _OP_N, one if accumulate else zero
    if dtype == np.float16:
        status = handle.lib.cublasGemmEx(handle.ptr, op_b, op_a, n, m, k, one, b.data.ptr, _R_16F, ldb,
                                         a.data.ptr, _R_16F, lda, beta, out.data.ptr, _R_16F, n, _COMPUTE_32F,
                                         _GEMM_DEFAULT)
        _Handle._check(status, "cublasGemmEx")
        return out
    fn = handle.lib.cublasSgemm_v2 if dtype == np.float32 else handle.lib.cublasDgemm_v2
    status = fn(handle.ptr, op_b, op_a, n, m, k, one, b.data.ptr, ldb, a.data.ptr, lda, beta, out.data.ptr, n)
    _Handle._check(status, "cublasSgemm" if dtype == np.float32 else "cublasDgemm")
    return out
