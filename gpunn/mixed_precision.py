"""Autocast: mixed precision's op policy (torch.autocast), per thread.

Under `autocast(device_type)`, each op whose primitive has an `autocast` policy (gpunn.ops) casts
its floating inputs on devices of that type before it runs, following PyTorch's op lists: matrix
products ("lower": matmul, linear, the fused linear+activation) take half-precision inputs and
accumulate in float32; exp, log, pow, sum, logsumexp, softmax, log-softmax and the losses ("fp32")
run in float32; concat and stack ("widest") run in the widest input dtype. float64 inputs are never
cast. A cast is an op in the graph, so gradients reach float32 parameters in float32. The state is
per thread; `apply` asks one attribute of it per op with a policy, so ops outside autocast pay
nothing else. This module sits below the tensor layer; gpunn.amp adds the GradScaler on top.
"""

import functools
import threading
import warnings

from gpunn import backends
from gpunn.dtypes import as_dtype, bfloat16, float16, float32, float64
from gpunn.errors import DTypeError

_DEVICE_TYPES = {"cpu": "NumPy", "cuda": "CuPy", "strict": "array-api-strict"}  # device type -> its library


class _State(threading.local):
    """This thread's autocast: {device type: dtype} for the types it is on, and whether any is."""

    enabled = False

    def __init__(self):
        self.dtypes = {}

    def key(self):
        """What a recorded step depends on (compile_step records again when it changes)."""
        return tuple(sorted((k, v.name) for k, v in self.dtypes.items()))


state = _State()


class autocast:
    """`with gpunn.autocast("cuda"):` (or `@gpunn.autocast("cpu")` on a function) runs the forward
    pass in mixed precision on devices of that type; nestable, `enabled=False` turns it off inside.

    dtype is float16 (the default on every device; PyTorch's CPU default is bfloat16, which NumPy
    and CuPy lack) or bfloat16 where the backend has it. `cache_enabled` is accepted for PyTorch code
    (gpunn casts a weight each time it is used)."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if not isinstance(device_type, str) or device_type not in _DEVICE_TYPES:
            raise ValueError(f"autocast: device_type must be one of {', '.join(map(repr, _DEVICE_TYPES))} (a device "
                             f"type, not a device like 'cuda:0'), got {device_type!r}")
        self.device_type = device_type
        self.fast_dtype = float16 if dtype is None else as_dtype(dtype)
        if self.fast_dtype not in (float16, bfloat16):
            raise DTypeError(f"autocast: dtype must be gpunn.float16 or gpunn.bfloat16, got {self.fast_dtype}; "
                             "float32 code needs no autocast")
        self.enabled = bool(enabled)
        self._outer = []  # the state each (nested) entry replaced

    def __enter__(self):
        turn_on = self.enabled and _usable(self.device_type, self.fast_dtype)
        dtypes = state.dtypes
        self._outer.append(dtypes.get(self.device_type))
        if turn_on:
            dtypes[self.device_type] = self.fast_dtype
        else:
            dtypes.pop(self.device_type, None)
        state.enabled = bool(dtypes)
        return self

    def __exit__(self, *exc):
        previous = self._outer.pop()
        if previous is None:
            state.dtypes.pop(self.device_type, None)
        else:
            state.dtypes[self.device_type] = previous
        state.enabled = bool(state.dtypes)
        return False

    def __call__(self, func):
        """As a decorator: every call of `func` runs under this autocast."""
        @functools.wraps(func)
        def run(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self.enabled):
                return func(*args, **kwargs)
        return run


def _usable(device_type, dtype):
    """True when the backend of `device_type` has `dtype`; a DTypeError names the one that lacks it.
    A device type whose library is not installed gets a warning and no autocast, as in PyTorch."""
    try:
        xp = backends.get(device_type).xp
    except ImportError as exc:
        warnings.warn(f"autocast({device_type!r}): {_DEVICE_TYPES[device_type]} cannot be imported ({exc}); "
                      "autocast is off", UserWarning, stacklevel=3)
        return False
    if not hasattr(xp, dtype.name):
        other = " and no half-precision type at all (the array API standard has none)" if device_type == "strict" \
            else "; use dtype=gpunn.float16"
        raise DTypeError(f"autocast: {_DEVICE_TYPES[device_type]}, the backend of device type {device_type!r}, has "
                         f"no {dtype.name}{other}")
    return True


def is_autocast_enabled(device_type=None):
    """Whether autocast is on in this thread for `device_type` (for any type when None)."""
    return state.enabled if device_type is None else device_type in state.dtypes


def get_autocast_dtype(device_type):
    """The dtype autocast uses on `device_type` now (float16 when it is off, its default)."""
    return state.dtypes.get(device_type, float16)


def _eligible(t):
    """Floating tensors other than float64 are cast, as in PyTorch."""
    dt = t.dtype
    return dt.is_floating_point and dt != float64


def cast_inputs(primitive, args):
    """`args` with their floating tensors cast as `primitive.autocast` says (see the module doc),
    for the device type of the first tensor among them; unchanged where autocast is off there."""
    from gpunn.tensor import Tensor

    tensors = [a for a in args if isinstance(a, Tensor)]
    if not tensors:
        return args
    target = state.dtypes.get(tensors[0].device.type)
    if target is None:
        return args
    policy = primitive.autocast
    if policy == "lower":
        wanted = target
    elif policy == "fp32":
        wanted = float32
    else:  # "widest": float32 if any input is wider than the autocast dtype or differs from it
        kinds = {t.dtype for t in tensors if _eligible(t)} | {target}
        wanted = target if len(kinds) == 1 else float32
    return tuple(_cast(a, wanted) if isinstance(a, Tensor) else a for a in args)


def _cast(t, wanted):
    if not _eligible(t) or t.dtype == wanted:
        return t
    from gpunn import ops
    from gpunn.tensor import apply

    return apply(ops.astype, t, dtype=t.device.dtype(wanted))


def _fp32(value):
    from gpunn.tensor import Tensor

    if isinstance(value, Tensor) and value.device.type in state.dtypes:
        return _cast(value, float32)
    return value


def runs_in_float32(function):
    """For a function on PyTorch's float32 list that gpunn builds of several ops (a loss, a
    normalization): under autocast its tensor arguments are cast to float32 first."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        if state.enabled:
            args = tuple(map(_fp32, args))
            kwargs = {k: _fp32(v) for k, v in kwargs.items()}
        return function(*args, **kwargs)
    return run
