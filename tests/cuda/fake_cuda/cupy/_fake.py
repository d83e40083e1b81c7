"""The fake CuPy's machinery: its ndarray, the current device and stream, launches and capture.

Every device operation is a *launch*: a closure over emulated device memory (cuda_emulation's
NaN-poisoned, guarded NumPy buffers). Outside a capture it runs at once; while a stream captures,
it is appended to the graph instead and nothing runs, as with a real CUDA graph: arrays made
during capture hold NaN until a replay fills them, Python scalars passed to an operation are baked
into the graph, and anything that needs a value on the host (float(x), x.get(), bool masks) fails.
"""

import contextlib
import ctypes
import os
import threading
import warnings

import numpy as np

from cuda_emulation import DeviceArray, allocation, device_empty, to_device

DEVICE_COUNT = int(os.environ.get("FAKE_CUDA_DEVICES", "2"))


class CUDARuntimeError(RuntimeError):
    """cupy.cuda.runtime.CUDARuntimeError: an error the CUDA runtime reports."""


class CaptureError(CUDARuntimeError):
    """What CUDA reports for work that cannot be recorded (cudaErrorStreamCaptureUnsupported)."""


class DeviceSynchronized(RuntimeError):
    """cupyx.allow_synchronize(False) was violated."""


_local = threading.local()  # per thread, as in CuPy: the current device and the stack of current streams
_capture = {"graph": None, "stream": None, "sync_allowed": True, "counting": False}


def current_device():
    return getattr(_local, "device", 0)


def set_current_device(index):
    _local.device = index


def stream_stack():
    if not hasattr(_local, "streams"):
        _local.streams = []
    return _local.streams


def capturing():
    return _capture["graph"] is not None


LAUNCHES = []  # (name, captured) of every launch while count_launches() is active, else None


def launch(run, name, stream=None):
    """Run a device operation now, or record it into the graph being captured (work queued on any
    other stream meanwhile is refused: it would run once now and never in a replay). `stream`: the
    stream it was given, else the current one."""
    counted(name)
    if _capture["graph"] is not None:
        stack = stream_stack()
        if (stream if stream is not None else stack[-1] if stack else None) is not _capture["stream"]:
            raise CaptureError(f"{name} launched on another stream than the one capturing a graph")
        _capture["graph"].append(run)
    else:
        run()


def counted(name):
    if _capture["counting"]:
        LAUNCHES.append((name, capturing()))


@contextlib.contextmanager
def count_launches():
    """Collect (name, captured) of each kernel launch, copy and cuBLAS call made inside."""
    start, _capture["counting"] = len(LAUNCHES), True
    found = []
    try:
        yield found
    finally:
        _capture["counting"] = False
        found.extend(LAUNCHES[start:])
        del LAUNCHES[start:]


def sync_point(what):
    """A host read of device data: illegal while capturing, refused under allow_synchronize(False)."""
    if capturing():
        raise CaptureError(f"cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing "
                           f"({what} waits for the GPU)")
    if not _capture["sync_allowed"]:
        raise DeviceSynchronized(f"synchronization is not allowed here ({what})")


def check_device(array):
    if array._device != current_device():
        raise ValueError(f"The device where the array resides ({array._device}) is different from the current "
                         f"device ({current_device()}). Peer access is unavailable between these devices.")


def poisoned(shape, dtype):
    return device_empty(shape, np.dtype(dtype))


# --- the array ------------------------------------------------------------------------------------

def wrap(host, device=None):
    """A fake CuPy array around emulated device memory (`host` is adopted if it is already device memory)."""
    a = ndarray.__new__(ndarray)
    a._a = host if isinstance(host, DeviceArray) else to_device(np.asarray(host))
    a._device = current_device() if device is None else device
    return a


class HostInput(TypeError):
    pass


def unwrap(x, allow_host=False, other_devices=False):
    """The emulated memory behind fake arrays inside x (lists, tuples, dicts); NumPy arrays are refused
    as CuPy refuses them (an implicit host-to-device transfer) unless allow_host; arrays of another
    device than the current one are refused unless other_devices (a copy between devices)."""
    if isinstance(x, ndarray):
        if not other_devices:
            check_device(x)
        return x._a
    if isinstance(x, np.ndarray):
        if allow_host:
            return x
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array passed to a CuPy operation "
                        "(move it with cupy.asarray first)")
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v, allow_host, other_devices) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v, allow_host, other_devices) for k, v in x.items()}
    return x


def _leaves(x, kind):
    """The objects of type `kind` inside x (nested lists, tuples and dicts), in order."""
    if isinstance(x, kind):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v, kind)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v, kind)


def _arrays(x):
    return _leaves(x, np.ndarray)


def _fakes(x):
    return _leaves(x, ndarray)


# CuPy routes these through its shared cuBLAS handle, which CuPy 14 refuses to use while a stream
# captures (NotImplementedError); gpunn's own products call cuBLAS directly instead (cublas_gemm)
CUBLAS_ROUTINES = {"matmul", "dot", "tensordot", "inner", "vdot", "einsum", "tensorsolve", "solve", "inv",
                   "cholesky", "qr", "svd", "eigh", "det", "slogdet", "lstsq", "pinv", "matrix_power",
                   "multi_dot", "vecdot", "matvec", "vecmat"}

DATA_DEPENDENT = {"bincount", "histogram", "histogram2d", "histogramdd", "nonzero", "argwhere", "flatnonzero", "unique", "unique_values", "unique_counts",
                  "unique_inverse", "unique_all", "compress", "extract", "trim_zeros"}


def is_host_data(x):
    """Host data CuPy would copy to the device: arrays of any kind but 0-d, lists and tuples."""
    if isinstance(x, np.ndarray):
        return not isinstance(x, DeviceArray) and x.ndim > 0
    return isinstance(x, (list, tuple)) and len(x) > 0 and not any(isinstance(v, (DeviceArray, slice)) for v in x)


def host_copy_while_capturing():
    return CaptureError("cudaErrorStreamCaptureUnsupported: the stream is capturing, so host-to-device transfers "
                        "are disallowed (pinned memory too; only a 0-d host scalar, a fill, can be recorded)")


def _same_view(a, b):
    return (a.shape == b.shape and a.dtype == b.dtype and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _zeroed_integers(x):
    if isinstance(x, DeviceArray) and x.dtype.kind in "iu":
        return np.zeros_like(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_zeroed_integers(v) for v in x)
    if isinstance(x, dict):
        return {k: _zeroed_integers(v) for k, v in x.items()}
    return x


# copying from another device is CuPy's peer copy; every other operation needs its arrays on the current device
CROSS_DEVICE_COPIES = {"asarray", "array", "asanyarray"}
# NumPy answers these with a Python bool, CuPy with a 0-d device array (a kernel)
DEVICE_ANSWERS = {"allclose", "array_equal", "array_equiv"}
# CuPy returns the very array passed when nothing needs doing (NumPy may return a view of it)
RETURNS_ITSELF = {"asarray", "asanyarray", "ascontiguousarray"}
# NumPy functions and methods that work in place and return None
IN_PLACE = {"copyto", "put", "place", "putmask", "fill_diagonal", "put_along_axis", "sort", "partition", "resize",
            "itemset", "setfield"}
CURAND_ROUTINES = {"rand", "randn", "random", "random_sample", "uniform", "normal", "standard_normal", "randint",
                   "integers", "choice", "permutation", "shuffle", "binomial", "poisson", "exponential", "bernoulli"}


def call(name, fn, args, kwargs, allow_host=False):
    """fn(*args, **kwargs) on emulated device memory, as one launch; results become fake arrays.

    `out=` runs in place. Otherwise the result's shape comes from running fn at once (while
    capturing, on whatever the inputs hold); a result sharing memory with an input is a view and
    needs no launch (nor its inputs on the current device); every other result gets memory of its
    own that the launch (re)fills."""
    fakes = list(_fakes((args, kwargs)))
    if isinstance(fn, np.ufunc) and any(isinstance(a, (list, tuple)) for a in args):
        raise TypeError(f"Unsupported type {type(next(a for a in args if isinstance(a, (list, tuple))))}: "
                        f"cupy.{name} takes arrays and scalars")
    other_devices = name in CROSS_DEVICE_COPIES
    # devices are checked where something is launched: a view needs no current device, as in CuPy
    raw_args, raw_kwargs = unwrap(args, allow_host, True), unwrap(kwargs, allow_host, True)

    def on_current_device():
        if not other_devices:
            for f in fakes:
                check_device(f)

    if capturing():
        if name in DATA_DEPENDENT:
            raise CaptureError(f"cudaErrorStreamCaptureUnsupported: {name} needs its result's size on the host")
        if name in CUBLAS_ROUTINES and any(a.dtype.kind in "fc" for a in _arrays((raw_args, raw_kwargs))):
            raise NotImplementedError(f"cupy.{name} uses cuBLAS, which CuPy does not call while a stream is "
                                      "capturing a CUDA graph")
        if allow_host and raw_args and is_host_data(raw_args[0]):  # asarray(host data)
            raise host_copy_while_capturing()
        if name in CURAND_ROUTINES:
            raise NotImplementedError(f"cupy.random.{name} uses cuRAND, which CuPy refuses while a stream captures")
    if name in IN_PLACE:  # returns None: the launch is the whole effect (not run at capture)
        on_current_device()
        launch(lambda: fn(*raw_args, **raw_kwargs), name)
        return None
    out = raw_kwargs.get("out")
    if out is not None:
        on_current_device()
        launch(lambda: fn(*raw_args, **raw_kwargs), name)
        return kwargs["out"]
    if capturing():  # nothing runs while capturing: this run is for the result's shape and dtype only
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                result = fn(*raw_args, **raw_kwargs)
            except IndexError:  # indices made in this capture hold INT_MIN until a replay
                result = fn(*_zeroed_integers(raw_args), **_zeroed_integers(raw_kwargs))
    else:
        result = fn(*raw_args, **raw_kwargs)
    inputs = [a for a in _arrays((raw_args, raw_kwargs)) if isinstance(a, DeviceArray)]
    device = None if other_devices or not fakes else fakes[0]._device

    owned = []  # (index path, fresh buffer) of the results that are not views

    def adopt(r, path):
        if isinstance(r, np.generic):  # CuPy's reductions give 0-d arrays, never scalars
            r = np.asarray(r)
        if isinstance(r, np.ndarray) and r.dtype != object:
            for f in fakes:
                if f._device == current_device() or not other_devices:
                    if r is f._a or (name in RETURNS_ITSELF and _same_view(r, f._a)):
                        return f
            if any(np.may_share_memory(r, a) for a in inputs):  # a view (NumPy may drop the subclass)
                if other_devices and any(f._device != current_device() for f in fakes):  # CuPy copies it here
                    buffer = poisoned(r.shape, r.dtype)
                    launch(lambda: buffer.__setitem__(..., r), "memcpy peer to peer")
                    return wrap(buffer)
                return wrap(r if isinstance(r, DeviceArray) else r.view(DeviceArray), device)
            buffer = poisoned(r.shape, r.dtype)
            if not capturing():
                buffer[...] = r
            owned.append((path, buffer))
            return wrap(buffer, device)
        if isinstance(r, (list, tuple)):
            return type(r)(adopt(v, path + (i,)) for i, v in enumerate(r))
        return r

    if name in DEVICE_ANSWERS:
        result = np.asarray(result)
    wrapped = adopt(result, ())
    if owned:
        on_current_device()
    if owned and not capturing():
        counted(name)  # it ran above
    if owned and capturing():
        def refill():
            fresh = fn(*raw_args, **raw_kwargs)
            for path, buffer in owned:
                value = fresh
                for i in path:
                    value = value[i]
                buffer[...] = value
        launch(refill, name)
    return wrapped


def function(name, fn, allow_host=False):
    def fake(*args, **kwargs):
        return call(name, fn, args, kwargs, allow_host)
    fake.__name__ = fake.__qualname__ = name
    fake.__doc__ = f"cupy.{name} (fake: NumPy's, on emulated device memory)"
    return fake


def _binary(ufunc):
    def op(self, other):
        return call(ufunc.__name__, ufunc, (self, other), {})

    def rop(self, other):
        return call(ufunc.__name__, ufunc, (other, self), {})

    def iop(self, other):
        call(ufunc.__name__, ufunc, (self, other), {"out": self})
        return self
    return op, rop, iop


def _unary(ufunc):
    return lambda self: call(ufunc.__name__, ufunc, (self,), {})


def _host_read(convert, what):
    """A method reading the array's value on the host: a synchronization (see sync_point)."""
    def read(self):
        sync_point(what)
        return convert(self._a)
    read.__name__ = what
    return read


class ndarray:
    """cupy.ndarray, faked: emulated device memory on a device; no implicit conversion to NumPy."""

    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the fake cupy.ndarray takes a shape and dtype only")
        self._a = poisoned(shape if isinstance(shape, tuple) else (shape,), dtype)
        self._device = current_device()

    # metadata: no launch
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: wrap(self._a.T, self._device))
    mT = property(lambda self: wrap(np.swapaxes(self._a, -1, -2), self._device))

    @property
    def device(self):
        from cupy.cuda import Device
        return Device(self._device)

    @property
    def data(self):
        return MemoryPointer(self._a.ctypes.data, self._device)

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"fake_cupy.ndarray(shape={self.shape}, dtype={self.dtype}, device={self._device})"

    # host reads: synchronize
    def get(self, stream=None, order="C", out=None):
        sync_point("ndarray.get")
        host = np.array(self._a, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    item = _host_read(lambda a: a.item(), "ndarray.item")
    tolist = _host_read(lambda a: a.tolist(), "ndarray.tolist")
    __float__ = _host_read(float, "float(ndarray)")
    __int__ = _host_read(int, "int(ndarray)")
    __index__ = _host_read(lambda a: a.__index__(), "operator.index(ndarray)")
    __bool__ = _host_read(bool, "bool(ndarray)")
    __complex__ = _host_read(complex, "complex(ndarray)")

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def set(self, host, stream=None):
        if not isinstance(host, np.ndarray):
            raise TypeError(f"ndarray.set takes a NumPy array, not {type(host).__name__}")
        if host.dtype != self.dtype:
            raise TypeError(f"ndarray.set: {host.dtype} into {self.dtype}")
        if host.shape != self.shape:
            raise ValueError(f"ndarray.set: shape {host.shape} into {self.shape}")
        if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
            raise RuntimeError("ndarray.set: the array must be contiguous")
        if capturing():
            raise host_copy_while_capturing()
        target = self._a
        launch(lambda: target.__setitem__(..., host), "copy host to device")

    # indexing
    def __getitem__(self, key):
        key = _index(key)
        return call("getitem", lambda a, k: a[k], (self, key), {})

    def __setitem__(self, key, value):
        key = _index(key)
        check_device(self)
        target, raw_key, raw = self._a, unwrap(key), unwrap(value, allow_host=True)  # CuPy copies host values in
        if capturing() and (is_host_data(raw) or any(is_host_data(k) for k in _parts(raw_key))):
            raise host_copy_while_capturing()
        launch(lambda: target.__setitem__(raw_key, raw), "setitem")

    # a few methods with CuPy-specific behaviour; the rest come from NumPy through __getattr__
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        return call("astype", lambda a: a.astype(dtype, order=order), (self,), {})

    def fill(self, value):
        target = self._a
        check_device(self)
        launch(lambda: target.fill(value), "fill")

    def copy(self, order="C"):
        return call("copy", lambda a: np.array(a, order=order, copy=True), (self,), {})

    def view(self, dtype=None):
        return wrap(self._a.view() if dtype is None else self._a.view(dtype), self._device)

    def __dlpack_device__(self):
        return 2, self._device

    def __dlpack__(self, *args, **kwargs):
        raise BufferError("the fake CuPy cannot export DLPack capsules")

    def __getattr__(self, name):
        if name.startswith("__") or name in ("ctypes", "base", "__array_interface__", "__array_struct__"):
            raise AttributeError(f"'cupy.ndarray' has no attribute {name!r}")
        method = getattr(np.ndarray, name, None)
        if method is None or not callable(method):
            raise AttributeError(f"'cupy.ndarray' has no attribute {name!r}")
        return lambda *args, **kwargs: call(name, lambda a, *x, **k: getattr(a, name)(*x, **k), (self, *args), kwargs)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        return call(ufunc.__name__, ufunc, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return call(func.__name__, func, args, kwargs)


def _parts(key):
    return key if isinstance(key, tuple) else (key,)


def _index(key):
    """An index with fake arrays in it; a boolean mask needs its count on the host (a sync), and
    a list or host array index is copied to the device (not while capturing)."""
    for p in _parts(key):
        if isinstance(p, ndarray) and p.dtype == np.bool_:
            sync_point("boolean-mask indexing")
        if capturing() and is_host_data(p):
            raise host_copy_while_capturing()
    return key


for _name, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                      ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                      ("matmul", np.matmul), ("and", np.bitwise_and), ("or", np.bitwise_or),
                      ("xor", np.bitwise_xor), ("lshift", np.left_shift), ("rshift", np.right_shift)):
    _op, _rop, _iop = _binary(_ufunc)
    setattr(ndarray, f"__{_name}__", _op)
    setattr(ndarray, f"__r{_name}__", _rop)
    setattr(ndarray, f"__i{_name}__", _iop)
for _name, _ufunc in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                      ("eq", np.equal), ("ne", np.not_equal)):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc)[0])
for _name, _ufunc in (("neg", np.negative), ("pos", np.positive), ("abs", np.absolute), ("invert", np.invert)):
    setattr(ndarray, f"__{_name}__", _unary(_ufunc))


@contextlib.contextmanager
def capture_into(graph_ops, stream):
    if capturing():
        raise CaptureError("a stream is already capturing")
    _capture["graph"], _capture["stream"] = graph_ops, stream
    try:
        yield
    finally:
        _capture["graph"] = _capture["stream"] = None


def empty(shape, dtype=float, order="C"):
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if order == "F":  # a C buffer of the reversed shape, transposed
        return wrap(poisoned(shape[::-1], dtype).T)
    return wrap(poisoned(shape, dtype))



class MemoryPointer:
    """cupy.cuda.MemoryPointer: an address on a device; copies between pointers are launches."""

    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id

    def copy_from_device_async(self, src, size, stream=None):
        for p in (self.ptr, src.ptr):
            if allocation(p, size) is None:
                raise RuntimeError(f"cudaErrorIllegalAddress: {size} bytes at {p:#x} are not one device allocation")
        if src.device_id != self.device_id:
            raise RuntimeError("the fake CuPy copies within one device only")
        dst_ptr, src_ptr = self.ptr, src.ptr
        launch(lambda: ctypes.memmove(dst_ptr, src_ptr, size), "memcpy device to device", stream)


class PinnedArray(np.ndarray):
    """Host memory from cupyx.empty_pinned: copies from it may be asynchronous (outside a capture;
    CuPy refuses every host-to-device copy while a stream captures)."""
