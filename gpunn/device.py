"""Device: where an array lives, and the backend that computes on it.

Specs: "cpu" (NumPy), "cuda" / "cuda:N" (CuPy), "strict" / "strict:1" (array-api-strict, for
tests), and "auto" (the first usable CUDA device, else cpu). Devices are interned, so one spec is
one object, they compare equal by spec and print as it. There is no current device: the device
belongs to the data.
"""

import warnings
from contextlib import nullcontext

from gpunn import backends, ops, updates
from gpunn.errors import DeviceError, DTypeError

_interned = {}
_NO_CONTEXT = nullcontext()  # reusable and reentrant: the scope of devices without a context


class DeviceWarning(UserWarning):
    """A note on the device gpunn picked for you (`device("auto")`), not a problem. Silence it with
    `warnings.filterwarnings("ignore", category=DeviceWarning)`; `gpunn train` shows it as one line."""


def checked_fast_paths(backend):
    """backend.fast_paths, each key the name of a primitive of gpunn.ops or of an update rule of
    gpunn.updates (a typo would silently leave the generic version in place), and each overriding
    primitive under its own name."""
    known = {p.name for p in vars(ops).values() if isinstance(p, ops.Primitive)}
    known |= {name for name, f in vars(updates).items() if callable(f) and name.endswith("_update")}
    for key, fast in backend.fast_paths.items():
        if key not in known:
            raise DeviceError(f"backend {backend.name!r} registers a fast path under {key!r}, which names no "
                              "primitive of gpunn.ops and no update rule of gpunn.updates; use the generic "
                              "function's name")
        if isinstance(fast, ops.Primitive) and fast.name != key:
            raise DeviceError(f"backend {backend.name!r} registers primitive {fast.name!r} under {key!r}; a fast "
                              "path overrides the primitive of its own name")
    return backend.fast_paths


class Device:
    __slots__ = ("type", "index", "backend", "xp", "native", "fast_paths", "ctx", "scope", "_dtypes", "spec")

    def __init__(self, type, index, backend):
        self.type, self.index, self.backend = type, index, backend
        # its name as written ("cpu", "cuda:0", "strict"); it hashes every dict key a device is part of
        self.spec = "cpu" if type == "cpu" else "strict" if type == "strict" and index == 0 else f"{type}:{index}"
        self.xp = backend.xp
        self.native = backend.native_device(index)
        self.fast_paths = checked_fast_paths(backend)
        self.ctx = backend.context(index) if hasattr(backend, "context") else None  # None: hot paths skip `with`
        self.scope = self.ctx if self.ctx is not None else _NO_CONTEXT  # always usable in a `with`
        self._dtypes = {}

    def __str__(self):
        return self.spec

    def __repr__(self):
        return f"device('{self.spec}')"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except (DeviceError, ValueError):
                return False
        return isinstance(other, Device) and other.spec == self.spec

    def __hash__(self):
        return hash(self.spec)

    def __reduce__(self):
        return (device, (self.spec,))

    def put(self, array):
        """`array` (NumPy, or any backend's) on this device; a no-op if it is already here."""
        kind = backends.owner(array)
        if kind == self.type and (kind == "cpu" or _native_of(array) == self.native):
            return array
        if kind is None:
            raise TypeError(f"cannot move {type(array).__name__} to {self}: expected an array")
        if kind == self.type == "cuda" and hasattr(self.backend, "copy_between"):
            return self.backend.copy_between(array, self.index)
        host = backends.get(kind).to_host(array) if kind != "cpu" else array
        return self.backend.from_host(host, self.native)

    def dtype(self, dt):
        """This backend's dtype object for a gpunn dtype (cached: creation calls are frequent)."""
        found = self._dtypes.get(dt)
        if found is None:
            from gpunn.dtypes import as_dtype

            name = as_dtype(dt).name
            found = getattr(self.xp, name, None)
            if found is None:  # e.g. float16, which the array API standard (strict) lacks
                raise DTypeError(f"dtype {name} is not available on device {self}; use float32 or float64")
            self._dtypes[dt] = found
        return found

    def synchronize(self):
        """Wait for queued work on this device (needed before reading clocks)."""
        self.backend.synchronize(self.native)

    def describe(self):
        return self.backend.describe(self.native)


def _native_of(array):
    return getattr(array, "device", None)


def _parse(spec):
    text = spec.strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "strict") or (index and not index.isdigit()) or (kind == "cpu" and index not in ("", "0")):
        raise DeviceError(f"unknown device {spec!r}; use 'cpu', 'cuda', 'cuda:N', 'auto', 'strict' or 'strict:1'")
    return kind, int(index or 0)


def device(spec="cpu"):
    """The Device for a spec string (or a Device, returned as is)."""
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise DeviceError(f"a device spec must be a string like 'cpu' or 'cuda:0', not {type(spec).__name__}")
    if spec.strip().lower() == "auto":
        return _auto()
    kind, index = _parse(spec)
    key = (kind, index)
    found = _interned.get(key)
    if found is None:
        if kind == "cuda":
            from gpunn import cuda

            reason = cuda.why_unavailable(index)
            if reason:
                raise DeviceError(f"device {spec!r} cannot be used: {reason}. Use 'cpu' or 'auto' "
                                  "(on the command line: --device cpu or --device auto).")
        try:
            backend = backends.get(kind)
        except ImportError as exc:
            raise DeviceError(f"device {spec!r} needs {exc.name}: install it (pip install 'gpunn[test]')") from None
        try:
            found = _interned[key] = Device(kind, index, backend)
        except ValueError as exc:
            raise DeviceError(str(exc)) from None
    return found


def _auto():
    """cuda:0 when usable, else cpu, with a DeviceWarning saying which (Python shows it once per
    calling line)."""
    from gpunn import cuda

    reason = cuda.why_unavailable(0)
    chosen = device("cpu") if reason else device("cuda:0")
    why = f" ({reason})" if reason else ""
    warnings.warn(f"device 'auto' -> {chosen}{why}", DeviceWarning, stacklevel=3)
    return chosen


def of(array):
    """The Device an array lives on."""
    kind = backends.owner(array)
    if kind is None:
        raise TypeError(f"expected an array, got {type(array).__name__}")
    if kind == "cpu":
        return device("cpu")
    native = _native_of(array)
    if kind == "strict":
        return device("strict" if native == backends.get("strict").native_device(0) else "strict:1")
    return device(f"cuda:{native.id}")


def cuda_device(spec=None):
    """The Device that `.cuda(device)` means: None is cuda:0, an int N is cuda:N."""
    if spec is None:
        spec = "cuda"
    elif isinstance(spec, int) and not isinstance(spec, bool):
        spec = f"cuda:{spec}"
    dev = device(spec)
    if dev.type != "cuda":
        raise DeviceError(f"cuda(device={spec!r}): that is not a CUDA device; use .to({str(dev)!r}) to move there")
    return dev
