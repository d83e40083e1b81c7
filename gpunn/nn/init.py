"""Weight initialisation with PyTorch's names and formulas (torch.nn.init).

Random values are drawn from gpunn's one seeded host generator in float64, cast to the tensor's
dtype on the host and then moved to its device: `gpunn.manual_seed(s)` gives bit-identical
weights on cpu, cuda and strict. Each function rebinds `t.data` (never recorded by autograd)
and returns `t`.
"""

import math
import warnings

import numpy as np

from gpunn import random as _random
from gpunn.errors import DTypeError

_LINEAR_LIKE = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps activations' variance stable through `nonlinearity` (PyTorch's table)."""
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; use one of "
                     f"{', '.join(_LINEAR_LIKE + ('tanh', 'relu', 'leaky_relu', 'selu'))}")


def _calculate_fan_in_and_fan_out(t):
    """fan_in = in_features * receptive field, fan_out = out_features * receptive field."""
    shape = t.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, got shape {shape}; "
                         "use uniform_ or normal_ for biases")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(t, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', not {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def _fill(t, values):
    """Store host float64 `values` into `t`: cast on the host (same bits everywhere), then move."""
    if not t.dtype.is_floating_point:
        raise DTypeError(f"random initialisation needs a floating-point tensor, not {t.dtype}; create it with "
                         "dtype='float32'")
    host = np.ascontiguousarray(np.asarray(values, dtype=np.float64).astype(t.dtype.name))
    t.data = t.device.put(host)
    return t


def _draws_nothing(t):
    if t.numel() == 0:
        warnings.warn("initialising a zero-element tensor is a no-op", stacklevel=3)
        return True
    return False


def uniform_(t, a=0.0, b=1.0):
    """Values from U(a, b)."""
    if a > b:
        raise ValueError(f"uniform_: lower bound a={a} exceeds upper bound b={b}")
    return _fill(t, _random.generator().uniform(a, b, size=t.shape))


def normal_(t, mean=0.0, std=1.0):
    """Values from N(mean, std^2)."""
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    return _fill(t, mean + std * _random.generator().standard_normal(size=t.shape))


def constant_(t, val):
    if t.device.ctx is None:
        t.data = t.device.xp.full_like(t.data, val)
    else:
        with t.device.ctx:  # CuPy allocates on the current device
            t.data = t.device.xp.full_like(t.data, val)
    return t


def zeros_(t):
    return constant_(t, 0)


def ones_(t):
    return constant_(t, 1)


def xavier_uniform_(t, gain=1.0):
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if _draws_nothing(t):
        return t
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(t, -bound, bound)


def xavier_normal_(t, gain=1.0):
    """Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    if _draws_nothing(t):
        return t
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He: U(-b, b) with b = gain * sqrt(3 / fan); gain from `nonlinearity` (slope `a`)."""
    fan = _fan(t, mode)
    if _draws_nothing(t):
        return t
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He: N(0, std^2) with std = gain / sqrt(fan)."""
    fan = _fan(t, mode)
    if _draws_nothing(t):
        return t
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))
