"""CUDA emulated on the CPU: kernels, device memory and cuBLAS, for gpunn's tests.

Used by the fake CuPy in this folder (the whole CUDA path of gpunn, run on the CPU: see
tests/cuda/test_fake_cuda.py). Needs only NumPy and g++.

Raw kernels: each block runs alone, its threads as cooperative fibers (ucontext) that switch only at
__syncthreads (all live threads of the block) and __shfl_xor_sync (all 32 lanes of the warp); a
deadlock is reported. __shared__ is a function static, NaN-filled before each block. Emulated device
memory is NaN inside (as if uninitialised) with NaN guard zones either side, so reading outside an
array or leaving an output unwritten shows as NaN, and writing outside one is caught. The launcher
checks each argument's size and kind against the kernel's parameter. Elementwise kernels are a C++
loop over the kernel's own operation. cuBLAS is a stand-in library taking the ctypes arguments
gpunn passes and reading BLAS's column-major contract literally from raw addresses.
"""

import atexit
import ctypes
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
import types
import weakref

import numpy as np

SHIM = r"""
// CUDA on the CPU: one block at a time, its threads as fibers that switch at barriers only.
#include <math.h>
#include <string.h>
#include <ucontext.h>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
typedef dim3 uint3;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One block runs at a time: a function's statics are its shared memory, in a section of their own
// that the launcher fills with 0xff bytes (NaN, -1) before each block, as if left uninitialised.
#define __shared__ static __attribute__((section("emu_shared")))
extern "C" char __start_emu_shared[] __attribute__((weak)), __stop_emu_shared[] __attribute__((weak));

inline float max(float a, float b) { return fmaxf(a, b); }  // CUDA's: a NaN operand loses
inline double max(double a, double b) { return fmax(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }

namespace emu {
enum State { READY, AT_SYNCTHREADS, AT_SHUFFLE, DONE };
struct Fiber { ucontext_t context; uint3 index; int warp, lane, parity; State state; };

static std::vector<Fiber> fibers;
static Fiber* current;
static ucontext_t scheduler;
static uint3 block_index;
static dim3 block_dim, grid_dim;
static int live, at_syncthreads;
static std::vector<int> warp_arrived, warp_size;
static std::vector<unsigned long long> slots;  // shuffle values: [warp][parity][lane]
static std::function<void()> body;
static const char* failure;

inline void yield() { swapcontext(&current->context, &scheduler); }

inline void release(State state, int first, int count) {
  for (int i = first; i < first + count; ++i) if (fibers[i].state == state) fibers[i].state = READY;
}

inline void syncthreads() {  // the last live thread to arrive releases all; every arrival yields
  current->state = AT_SYNCTHREADS;
  if (++at_syncthreads == live) { at_syncthreads = 0; release(AT_SYNCTHREADS, 0, (int)fibers.size()); }
  yield();
}

inline void syncwarp() {  // all lanes of the warp, exited ones included: a full mask needs them all
  const int w = current->warp;
  current->state = AT_SHUFFLE;
  if (++warp_arrived[w] == warp_size[w]) { warp_arrived[w] = 0; release(AT_SHUFFLE, w * 32, warp_size[w]); }
  yield();
}

[[noreturn]] inline void fail(const char* why) { failure = why; current->state = DONE; yield(); abort(); }

static void fiber_main() {
  body();
  current->state = DONE;  // an exited thread no longer counts at __syncthreads
  if (--live > 0 && at_syncthreads == live) { at_syncthreads = 0; release(AT_SYNCTHREADS, 0, (int)fibers.size()); }
  yield();
}

template <typename A> constexpr long long size_of() { return sizeof(std::remove_pointer_t<A>); }
template <typename A> char kind_of() {  // NumPy's dtype.kind; upper case: a pointer to such elements
  using V = std::remove_cv_t<std::remove_pointer_t<A>>;
  const char k = std::is_same_v<V, bool> ? 'b' : std::is_floating_point_v<V> ? 'f' : std::is_unsigned_v<V> ? 'u' : 'i';
  return std::is_pointer_v<A> ? (char)toupper(k) : k;
}
template <typename... A, size_t... I> std::tuple<A...> unpack(void** params, std::index_sequence<I...>) {
  return std::tuple<A...>{*static_cast<A*>(params[I])...};
}

// cuLaunchKernel's convention (params[i] points at argument i), with sizes and kinds to check.
template <typename... A>
int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, void** params, const long long* sizes,
           const char* kinds, int count, int reverse, char* message, int capacity) {
  constexpr int n = sizeof...(A);
  const long long want_sizes[n + 1] = {size_of<A>()..., 0};
  const char want_kinds[n + 1] = {kind_of<A>()..., 0};
  if (count != n) return snprintf(message, capacity, "the kernel takes %d arguments, %d were passed", n, count), 1;
  for (int i = 0; i < n; ++i)
    if (sizes[i] != want_sizes[i] || kinds[i] != want_kinds[i])
      return snprintf(message, capacity, "argument %d: the kernel takes kind '%c' of %lld bytes, got '%c' of %lld "
                      "(upper case: a pointer to such elements)",
                      i, want_kinds[i], want_sizes[i], kinds[i], sizes[i]), 1;
  std::tuple<A...> args = unpack<A...>(params, std::index_sequence_for<A...>{});
  body = [&] { std::apply(kernel, args); };
  grid_dim = {grid[0], grid[1], grid[2]};
  block_dim = {block[0], block[1], block[2]};
  const int threads = block[0] * block[1] * block[2], warps = (threads + 31) / 32;
  const size_t stack = 128 << 10;
  std::unique_ptr<char[]> stacks(new char[threads * stack]);
  fibers.assign(threads, Fiber{});
  slots.assign(warps * 64, 0);
  warp_size.assign(warps, 32);
  if (threads % 32) warp_size[warps - 1] = threads % 32;
  failure = nullptr;
  for (unsigned bz = 0; bz < grid[2]; ++bz)
  for (unsigned by = 0; by < grid[1]; ++by)
  for (unsigned bx = 0; bx < grid[0]; ++bx) {
    block_index = {bx, by, bz};
    live = threads;
    at_syncthreads = 0;
    warp_arrived.assign(warps, 0);
    if (__start_emu_shared) memset(__start_emu_shared, 0xff, __stop_emu_shared - __start_emu_shared);
    for (int i = 0; i < threads; ++i) {
      Fiber& f = fibers[i];
      f.index = {i % block[0], i / block[0] % block[1], i / (block[0] * block[1])};
      f.warp = i / 32, f.lane = i % 32, f.parity = 0, f.state = READY;
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = stacks.get() + i * stack;
      f.context.uc_stack.ss_size = stack;
      f.context.uc_link = nullptr;
      makecontext(&f.context, fiber_main, 0);
    }
    while (live > 0) {
      bool ran = false;
      for (int k = 0; k < threads; ++k) {
        const int i = reverse ? threads - 1 - k : k;
        if (fibers[i].state != READY) continue;
        current = &fibers[i];
        ran = true;
        swapcontext(&scheduler, &fibers[i].context);
        if (failure)
          return snprintf(message, capacity, "block (%u, %u, %u), thread %d: %s", bx, by, bz, i, failure), 1;
      }
      if (!ran) {
        int at_barrier = 0, at_shuffle = 0;
        for (const Fiber& f : fibers) at_barrier += f.state == AT_SYNCTHREADS, at_shuffle += f.state == AT_SHUFFLE;
        return snprintf(message, capacity, "deadlock in block (%u, %u, %u): %d threads wait at __syncthreads, %d at a "
                        "shuffle, %d have returned", bx, by, bz, at_barrier, at_shuffle, threads - live), 1;
      }
    }
  }
  return 0;
}
}  // namespace emu

#define threadIdx (emu::current->index)
#define blockIdx (emu::block_index)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::syncthreads(); }

template <typename V> V __shfl_xor_sync(unsigned mask, V value, int lane_mask, int width = 32) {
  static_assert(sizeof(V) <= 8, "a shuffle moves at most 8 bytes");
  if (mask != 0xffffffffu || width != 32 || lane_mask < 0 || lane_mask > 31)
    emu::fail("__shfl_xor_sync: only a full mask, width 32 and lane masks 0..31 are emulated");
  emu::Fiber& me = *emu::current;
  unsigned long long* row = &emu::slots[(me.warp * 2 + me.parity) * 32];  // two sets: no second barrier
  memcpy(&row[me.lane], &value, sizeof(V));
  me.parity ^= 1;
  emu::syncwarp();
  const int other = me.lane ^ lane_mask;
  if (other < emu::warp_size[me.warp]) memcpy(&value, &row[other], sizeof(V));
  return value;
}
"""

_C_TYPES = {np.dtype(t): c for t, c in ((np.float32, "float"), (np.float64, "double"), (np.bool_, "bool"),
                                        (np.int32, "int"), (np.int64, "long long"), (np.uint32, "unsigned int"),
                                        (np.uint64, "unsigned long long"))}
_BUILD_DIR = os.path.join(tempfile.gettempdir(), "gpunn_kernel_emulation")
FLAGS = ["-O2", "-std=c++20", "-fPIC", "-shared", "-ffp-contract=off"]
# fiber order of raw launches: FAKE_CUDA_REVERSE=1 runs each block's threads in reverse, so a race
# between barriers gives other numbers than the forward order (tests/cuda/test_fake_cuda.py runs both)
SCHEDULE = {"reverse": int(os.environ.get("FAKE_CUDA_REVERSE", "0"))}
KERNELS = {"present": set(), "ran": set()}  # names, so that a kernel without a check shows


@atexit.register
def _log_kernels():
    """With FAKE_CUDA_KERNEL_LOG=path, write the kernels made and those launched when the process
    ends (tests/cuda/test_fake_cuda.py: every kernel gpunn makes is run by some test)."""
    path = os.environ.get("FAKE_CUDA_KERNEL_LOG")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({kind: sorted(names) for kind, names in KERNELS.items()}, f)


def compile_library(source):
    """g++ `source` into a shared library, cached by its hash and the flags; loaded with ctypes."""
    key = hashlib.sha256((source + " ".join(FLAGS)).encode()).hexdigest()[:20]
    path = os.path.join(_BUILD_DIR, f"{key}.so")
    if not os.path.exists(path):
        os.makedirs(_BUILD_DIR, exist_ok=True)
        mine = f"{path[:-3]}.{os.getpid()}"  # two processes building the same library write apart
        with open(mine + ".cpp", "w") as f:
            f.write(source)
        done = subprocess.run(["g++", *FLAGS, mine + ".cpp", "-o", mine + ".so"], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"g++ failed on {mine}.cpp:\n{done.stderr[-4000:]}")
        os.replace(mine + ".so", path)  # atomic: a reader sees no library or a whole one
        os.replace(mine + ".cpp", path[:-3] + ".cpp")
    return ctypes.CDLL(path)


# --- emulated device memory: poisoned, with guard zones -------------------------------------------

_GUARD = 64  # elements either side of every emulated device array
_buffers = weakref.WeakValueDictionary()  # id(buffer) -> buffer, for the guard check
_allocations = weakref.WeakValueDictionary()  # id -> device array owning its memory, for cuBLAS's addresses


def _poison(dtype):
    return np.nan if dtype.kind == "f" else True if dtype.kind == "b" else np.iinfo(dtype).min


class DeviceArray(np.ndarray):
    """An emulated device array: a NumPy array whose `.data.ptr` is its address, as CuPy's is. Every
    one that is not a view of another (buffers, and the results of NumPy operations on them, as
    CuPy's results are device memory) is an allocation that cuBLAS may address."""

    def __array_finalize__(self, _):
        base = self.base
        while base is not None:  # a view of device memory (perhaps through a plain NumPy view)
            if isinstance(base, DeviceArray):
                return
            base = getattr(base, "base", None)
        _allocations[id(self)] = self

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def device_empty(shape, dtype):
    """An uninitialised device array, emulated: NaN (or the most negative integer) inside and around it."""
    dtype, shape = np.dtype(dtype), tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    buffer = DeviceArray(math.prod(shape) + 2 * _GUARD, dtype)
    buffer.fill(_poison(dtype))
    _buffers[id(buffer)] = buffer
    return buffer[_GUARD:_GUARD + math.prod(shape)].reshape(shape)


def to_device(host):
    out = device_empty(host.shape, host.dtype)
    out[...] = host
    return out


def guards_intact(buffer):
    poison = np.full(_GUARD, _poison(buffer.dtype), buffer.dtype).tobytes()
    return buffer[:_GUARD].tobytes() == poison and buffer[-_GUARD:].tobytes() == poison


def check_guards(arrays):
    """Raise if a launch wrote into the guard zones of any of its arrays."""
    for a in arrays:
        buffer = _buffers.get(id(a.base)) if isinstance(a, np.ndarray) else None
        if buffer is not None and not guards_intact(buffer):
            raise RuntimeError("the kernel wrote outside an array")


def allocation(address, nbytes):
    """The emulated device allocation (guard zones included) holding bytes [address, address + nbytes), or None."""
    for buffer in list(_allocations.values()):
        start = buffer.ctypes.data
        if start <= address and address + nbytes <= start + buffer.nbytes:
            return buffer
    return None


# --- raw kernels: cupy.RawModule on fibers ----------------------------------------------------------

class EmulatedRawModule:
    """cupy.RawModule(code=...) compiled by g++ behind the CUDA shim."""

    def __init__(self, code, options=(), **_):
        names = re.findall(r"__global__\s+void\s+(\w+)\s*\(", code)
        launchers = "".join(
            f'\nextern "C" int emu_launch_{k}(const unsigned* emu_g, const unsigned* emu_b, void** emu_p, '
            "const long long* emu_s, const char* emu_k, int emu_n, int emu_r, char* emu_m, int emu_c) "
            f"{{ return emu::launch(::{k}, emu_g, emu_b, emu_p, emu_s, emu_k, emu_n, emu_r, emu_m, emu_c); }}"
            for k in names)
        self.library = compile_library(SHIM + code + launchers)
        KERNELS["present"].update(names)

    def get_function(self, name):
        return EmulatedKernel(name, getattr(self.library, f"emu_launch_{name}"))


class EmulatedKernel:
    """kernel(grid, block, args): NumPy arrays are device pointers, NumPy scalars values, as in CuPy."""

    def __init__(self, name, launcher):
        self.name, self.launcher = name, launcher

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        if shared_mem:
            raise NotImplementedError("dynamic shared memory is not emulated")
        KERNELS["ran"].add(self.name)
        holders, sizes, kinds = [], [], ""
        for a in args:
            if isinstance(a, np.ndarray):
                holders.append(ctypes.c_void_p(a.ctypes.data))
                kinds += a.dtype.kind.upper()
            elif isinstance(a, np.generic):
                holders.append(np.array(a))
                kinds += a.dtype.kind
            else:
                raise TypeError(f"pass NumPy scalars, not {type(a).__name__}: Python numbers' C types are CuPy's guess")
            sizes.append(a.dtype.itemsize)
        pointers = [ctypes.addressof(h) if isinstance(h, ctypes.c_void_p) else h.ctypes.data for h in holders]
        dims = [(ctypes.c_uint * 3)(*(tuple(d) + (1, 1))[:3]) for d in (grid, block)]
        message = ctypes.create_string_buffer(500)
        failed = self.launcher(dims[0], dims[1], (ctypes.c_void_p * len(args))(*pointers),
                               (ctypes.c_longlong * len(args))(*sizes), kinds.encode(), len(args),
                               SCHEDULE["reverse"], message, len(message))
        if failed:
            raise RuntimeError(message.value.decode())
        check_guards(args)


# --- elementwise kernels: cupy.ElementwiseKernel as a C++ loop --------------------------------------

class EmulatedElementwise:
    """CuPy's ElementwiseKernel semantics: placeholder types bound by CuPy's own rule, all arrays
    broadcast together, outputs given (of the broadcast shape) or allocated, `i` the flat index."""

    def __init__(self, kernel):
        self.kernel = kernel
        KERNELS["present"].add(kernel.name)

    def __call__(self, *args):
        k = self.kernel
        KERNELS["ran"].add(k.name)
        if len(args) not in (k.nin, k.nargs):
            raise TypeError(f"{k.name} takes {k.nin} or {k.nargs} arguments, got {len(args)}")
        ins, outs = args[:k.nin], list(args[k.nin:])
        in_types, out_types, type_map = k._decide_params_type(
            tuple(a.dtype if isinstance(a, np.ndarray) else None for a in ins), tuple(o.dtype for o in outs))
        shape = np.broadcast_shapes(*(a.shape for a in args if isinstance(a, np.ndarray)))
        if any(o.shape != shape for o in outs):
            raise ValueError(f"{k.name}: out shape is mismatched")
        outs += [device_empty(shape, t) for t in out_types[len(outs):]]
        is_array = [isinstance(a, np.ndarray) for a in ins] + [True] * k.nout
        library = compile_library(self.source(type_map._pairs, is_array))
        alive, c_args = [], []
        for a, t in zip(ins, in_types):
            if isinstance(a, np.ndarray):
                a = a if a.shape == shape and a.flags.c_contiguous else np.ascontiguousarray(np.broadcast_to(a, shape))
                alive.append(a)
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            else:
                c_args.append(np.ctypeslib.as_ctypes_type(t)(t.type(a)))
        work = [o if o.flags.c_contiguous else np.ascontiguousarray(o) for o in outs]
        c_args += [ctypes.c_void_p(o.ctypes.data) for o in work] + [ctypes.c_longlong(math.prod(shape))]
        getattr(library, k.name)(*c_args)
        for o, w in zip(outs, work):
            if w is not o:
                o[...] = w
        check_guards(list(args) + outs)
        return outs[0] if k.nout == 1 else tuple(outs)

    def source(self, type_pairs, is_array):
        k = self.kernel
        params, refs = [], []
        for p, array in zip(k.in_params + k.out_params, is_array):
            const = "const " if p.is_const else ""
            if p.raw:
                raise NotImplementedError(f"{k.name}: raw parameters are not emulated")
            if array:
                params.append(f"{const}{p.ctype}* _raw_{p.name}")
                refs.append(f"{const}{p.ctype} &{p.name} = _raw_{p.name}[i];")
            else:
                params.append(f"const {p.ctype} {p.name}")
        typedefs = "".join(f"typedef {_C_TYPES[np.dtype(t)]} {name};\n" for name, t in type_pairs)
        return (f"{SHIM}{typedefs}{k.preamble}\n"
                f'extern "C" void {k.name}({", ".join(params)}, long long _n) {{\n'
                "  struct { long long n; long long size() const { return n; } } _ind{_n};\n"
                f"  for (ptrdiff_t i = 0; i < _n; ++i) {{\n    {' '.join(refs)}\n    {k.operation};\n  }}\n}}\n")


# --- cuBLAS: libcublas's entry points, as cublas_gemm calls them, on emulated device memory ---------

_C_KINDS = {"P": ctypes.c_void_p, "i": ctypes.c_int, "z": ctypes.c_size_t}
_BY_REFERENCE = type(ctypes.byref(ctypes.c_int()))


def c_values(args, kinds):
    """The values of ctypes arguments, each checked to be the ctypes type of its C parameter (P a
    pointer, i an int, z a size_t): ctypes would pass anything else (a Python int) in another size."""
    if len(args) != len(kinds):
        raise TypeError(f"the C function takes {len(kinds)} arguments, {len(args)} were passed")
    for i, (a, kind) in enumerate(zip(args, kinds)):
        if type(a) is not _C_KINDS[kind]:
            raise TypeError(f"argument {i}: pass a ctypes.{_C_KINDS[kind].__name__}, not {type(a).__name__}")
    return [a.value or 0 for a in args]


def device_matrix(address, rows, cols, ld, dtype):
    """The column-major rows x cols matrix at a device address, element (i, j) at i + j * ld: a
    writable view of the emulated memory there, and the buffer holding it."""
    nbytes = ((cols - 1) * ld + rows) * dtype.itemsize
    buffer = allocation(address, nbytes)
    if buffer is None or address % dtype.itemsize:
        raise RuntimeError(f"illegal address: {nbytes} bytes at {address:#x} are not inside one device allocation "
                           f"(or not aligned for {dtype})")
    memory = np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype)
    return np.lib.stride_tricks.as_strided(memory, (rows, cols), (dtype.itemsize, ld * dtype.itemsize)), buffer


def host_scalar(address, dtype):
    """*alpha or *beta, read on the host (CUBLAS_POINTER_MODE_HOST, the default)."""
    if allocation(address, dtype.itemsize) is not None:
        raise RuntimeError(f"{address:#x} is device memory: in host pointer mode cuBLAS reads alpha and beta there")
    return dtype.type(np.ctypeslib.as_ctypes_type(dtype).from_address(address).value)


class CFunction:
    """A stand-in C entry point: once `argtypes` is declared it converts plain Python values as
    ctypes does (so the checks of c_values below see what the C function would receive)."""

    def __init__(self, function):
        self.function, self.argtypes, self.restype = function, None, ctypes.c_int

    def __call__(self, *args):
        if self.argtypes is not None:
            if len(args) != len(self.argtypes):
                raise TypeError(f"the C function takes {len(self.argtypes)} arguments, {len(args)} were passed")
            args = [a if isinstance(a, (t, _BY_REFERENCE)) else t(a) for a, t in zip(args, self.argtypes)]
        return self.function(*args)


def tf32(x):
    """float32 values rounded (to nearest even) to TF32's 10 explicit mantissa bits, as tensor cores
    read their inputs under TF32 math; the product then accumulates in float32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x0FFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


class EmulatedCublas:
    """The libcublas functions cublas_gemm calls, taking the ctypes arguments it passes. Gemm is
    BLAS's column-major contract read literally from raw addresses: C = alpha op(A) op(B) + beta C,
    C not read when beta is 0, after cuBLAS's argument checks (status 7, INVALID_VALUE). `flaw`
    breaks it for the negative controls: "swapped ld" (A read with ldb, B with lda), "ignores beta"."""

    def __init__(self, flaw=None):
        self.flaw, self.handles, self.calls, self.modes = flaw, {}, 0, []  # modes: the math mode of each gemm
        for name in ("cublasSetStream_v2", "cublasSetWorkspace_v2", "cublasSetMathMode", "cublasSgemm_v2",
                     "cublasDgemm_v2", "cublasGemmEx"):
            setattr(self, name, CFunction(getattr(self, name)))

    def cublasCreate_v2(self, handle):
        if type(handle) is not _BY_REFERENCE or type(handle._obj) is not ctypes.c_void_p:
            raise TypeError("cublasCreate_v2 takes ctypes.byref(a ctypes.c_void_p)")
        handle._obj.value = 0xcb1a5000 + len(self.handles)
        self.handles[handle._obj.value] = {"math": 0, "workspace": None, "stream": 0}
        return 0

    def cublasSetStream_v2(self, *args):
        handle, stream = c_values(args, "PP")
        if handle not in self.handles:
            return 1  # NOT_INITIALIZED
        self.handles[handle]["workspace"] = None  # setting a stream resets the workspace
        self.handles[handle]["stream"] = stream
        return 0

    def cublasSetWorkspace_v2(self, *args):
        handle, workspace, nbytes = c_values(args, "PPz")
        if handle not in self.handles:
            return 1
        if allocation(workspace, nbytes) is None:
            raise RuntimeError("cublasSetWorkspace: the workspace is not device memory of that size")
        self.handles[handle]["workspace"] = workspace, nbytes
        return 0

    def cublasSetMathMode(self, *args):
        handle, mode = c_values(args, "Pi")
        if handle not in self.handles:
            return 1
        if mode & ~16 not in (0, 1, 2, 3):  # DEFAULT, TENSOR_OP, PEDANTIC, TF32 (| DISALLOW_REDUCED_PRECISION)
            return 7
        self.handles[handle]["math"] = mode  # TF32 (3): inputs rounded to TF32 in gemm
        return 0

    def cublasSgemm_v2(self, *args):
        return self.gemm(np.dtype(np.float32), args)

    def cublasDgemm_v2(self, *args):
        return self.gemm(np.dtype(np.float64), args)

    def cublasGemmEx(self, *args):
        return self.gemm(np.dtype(np.float16), args)

    def gemm(self, dtype, args):
        """Sgemm/Dgemm, or GemmEx (19 arguments) as gpunn calls it: float16 A, B and C, float32
        compute (CUBLAS_COMPUTE_32F), alpha and beta float32; anything else NOT_SUPPORTED (15)."""
        compute = dtype
        if len(args) == 19:
            (handle, op_a, op_b, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c, c_type, ldc, compute_type,
             algo) = c_values(args, "PiiiiiPPiiPiiPPiiii")
            if (a_type, b_type, c_type, compute_type) != (2, 2, 2, 68):  # CUDA_R_16F x3, CUBLAS_COMPUTE_32F
                return 15
            compute = np.dtype(np.float32)
        else:
            handle, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = c_values(args, "PiiiiiPPiPiPPi")
        self.calls += 1
        if handle not in self.handles:
            return 1
        self.modes.append(self.handles[handle]["math"])
        rows_a, cols_a = (m, k) if op_a == 0 else (k, m)
        rows_b, cols_b = (k, n) if op_b == 0 else (n, k)
        if (op_a not in (0, 1, 2) or op_b not in (0, 1, 2) or min(m, n, k) < 0 or lda < max(1, rows_a)
                or ldb < max(1, rows_b) or ldc < max(1, m) or not alpha or not beta):
            return 7
        if m == 0 or n == 0:
            return 0
        if self.flaw == "swapped ld":
            lda, ldb = ldb, lda
        alpha, beta = host_scalar(alpha, compute), host_scalar(beta, compute)
        if self.flaw == "ignores beta":
            beta = compute.type(0)
        out, buffer = device_matrix(c, m, n, ldc, dtype)
        product = np.zeros((m, n), compute)
        if alpha != 0 and k > 0:
            mat_a, mat_b = (device_matrix(p, r, q, ld, dtype)[0].astype(compute) for p, r, q, ld in
                            ((a, rows_a, cols_a, lda), (b, rows_b, cols_b, ldb)))
            if self.handles[handle]["math"] & ~16 == 3 and dtype == np.float32:  # TF32 tensor-op math
                mat_a, mat_b = tf32(mat_a), tf32(mat_b)
            product = alpha * ((mat_a if op_a == 0 else mat_a.T) @ (mat_b if op_b == 0 else mat_b.T))
        out[...] = product if beta == 0 else product + beta * out.astype(compute)  # one rounding to C's type
        if id(buffer) in _buffers and not guards_intact(buffer):
            raise RuntimeError("gemm wrote outside an array")
        return 0
