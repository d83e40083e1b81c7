"""Weight initialisation with PyTorch's names and formulas (torch.nn.init).

Random values are drawn from gpunn's one seeded host generator in float64, cast to the tensor's
dtype on the host and then moved to its device: `gpunn.manual_seed(s)` gives bit-identical
weights on cpu, cuda and strict. Each function rebinds `t._array` (never recorded by autograd)
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
    return t._write(t.device.put(host))


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
    return t._write(val)


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


def trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Values from N(mean, std^2) conditioned on [a, b] (a and b are values, not multiples of std).

    Drawn exactly by rejection, so the law holds even when [a, b] lies far in a tail (torch's
    inverse-CDF method warns there that its values may be wrong)."""
    if not std > 0:
        raise ValueError(f"trunc_normal_: std must be > 0, got {std}")
    if not a <= b:
        raise ValueError(f"trunc_normal_: lower bound a={a} exceeds upper bound b={b}")
    if a == b:
        return _fill(t, np.full(t.shape, float(a)))
    draws = _standard_truncated_normal(_random.generator(), (a - mean) / std, (b - mean) / std, t.numel())
    return _fill(t, np.clip(mean + std * draws, a, b).reshape(t.shape))  # clip: rounding only


def _standard_truncated_normal(rng, lo, hi, n):
    """n draws of N(0, 1) conditioned on [lo, hi] by rejection from the proposal that accepts a
    good fraction for this interval (Robert 1995): the normal itself when the interval holds a
    quarter of its mass, a uniform on a narrow interval, else an exponential tail beyond lo."""
    if hi <= 0:  # mirror a lower tail onto the upper one
        return -_standard_truncated_normal(rng, -hi, -lo, n)
    mass = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    kept, count = [np.empty(0)], 0
    while count < n:
        m = 2 * (n - count) + 16
        if mass >= 0.25:
            z = rng.standard_normal(m)
            z = z[(lo <= z) & (z <= hi)]
        elif lo <= 0 or (hi - lo) * lo <= 1:  # narrow: the density varies little across it
            z = rng.uniform(lo, hi, m)
            peak = max(lo, 0.0)  # where the density is highest
            z = z[rng.uniform(size=m) <= np.exp((peak * peak - z * z) / 2)]
        else:  # a wide interval in the upper tail: lo + Exp(rate), the rate that accepts most
            rate = (lo + math.sqrt(lo * lo + 4)) / 2
            z = lo + rng.exponential(1 / rate, m)
            z = z[(z <= hi) & (rng.uniform(size=m) <= np.exp(-(z - rate) ** 2 / 2))]
        kept.append(z)
        count += z.size
    return np.concatenate(kept)[:n]


def orthogonal_(t, gain=1.0):
    """A (semi-)orthogonal matrix times `gain`: rows orthonormal if there are fewer rows than
    columns, else columns; dims after the first are flattened, as in torch. The QR factor of a
    Gaussian matrix with its signs fixed by R's diagonal is uniform among orthogonal matrices."""
    if len(t.shape) < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, got shape {t.shape}")
    if t.numel() == 0:
        return t
    rows = t.shape[0]
    cols = t.numel() // rows
    flat = _random.generator().standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diagonal(r))
    if rows < cols:
        q = q.T
    return _fill(t, gain * q.reshape(t.shape))


def eye_(t):
    """The identity matrix (ones on the main diagonal of a 2-d tensor of any dtype)."""
    if len(t.shape) != 2:
        raise ValueError(f"eye_: only tensors with 2 dimensions are supported, got shape {t.shape}")
    return _put_exact(t, np.eye(*t.shape))


def dirac_(t, groups=1):
    """The Dirac delta for a convolution weight (out, in, *kernel) of 3 to 5 dims: each of the first
    min(out/groups, in) channels of each group passes its input channel through unchanged."""
    shape = t.shape
    if len(shape) not in (3, 4, 5):
        raise ValueError(f"dirac_: only tensors with 3, 4, or 5 dimensions are supported, got shape {shape}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or shape[0] % groups:
        raise ValueError(f"dirac_: dim 0 (size {shape[0]}) must be divisible by groups={groups!r}")
    per_group = shape[0] // groups
    centre = tuple(n // 2 for n in shape[2:])
    values = np.zeros(shape)
    for g in range(groups):
        for d in range(min(per_group, shape[1])):
            values[(g * per_group + d, d) + centre] = 1
    return _put_exact(t, values)


def _put_exact(t, values):
    """Store host `values` (exact in every dtype: zeros and ones) into `t`, keeping its dtype."""
    return t._write(t.device.put(np.ascontiguousarray(values.astype(t.dtype.name))))
