"""One seeded host generator for every random number gpunn draws.

Values are drawn on the host in float64 and then cast and moved, so one seed gives the same
numbers on every device (cpu, cuda, strict) and in every run.
"""

import math

import numpy as np

_generator = np.random.Generator(np.random.PCG64(0))


def manual_seed(seed):
    """Reset the generator: same seed, same initial weights and random draws on every device."""
    global _generator
    _generator = np.random.Generator(np.random.PCG64(int(seed)))
    return _generator


def generator():
    """The host generator itself, for code that draws NumPy values (data shuffling, init)."""
    return _generator


def get_rng_state():
    """A JSON-serializable snapshot of the generator, saved in checkpoints."""
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state


def _draw(values, dtype, device, requires_grad):
    from gpunn.tensor import tensor

    return tensor(values, dtype=dtype, device=device, requires_grad=requires_grad)


def _sample(name, draw, shape):
    """draw(shape) on the host, with gpunn's errors for a shape that cannot be: a negative size
    (ShapeError) or more values than memory holds (OutOfMemoryError), not NumPy's."""
    from gpunn.errors import OutOfMemoryError, ShapeError

    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 for n in shape):
        raise ShapeError(f"{name}: sizes must be non-negative integers, got shape {shape}")
    size = math.prod(shape) * 8  # drawn as float64 on the host, then cast
    try:
        if size > np.iinfo(np.intp).max:
            raise MemoryError("larger than any array can be")
        return draw(shape)
    except MemoryError as exc:
        raise OutOfMemoryError(f"{name}: the host ran out of memory drawing shape {shape} ({size / 2**30:.1f} GiB "
                               f"as float64 before the cast; {exc}); use a smaller shape") from None


def rand(*shape, dtype="float32", device=None, requires_grad=False):
    return _draw(_sample("rand", _generator.random, shape), dtype, device, requires_grad)


def randn(*shape, dtype="float32", device=None, requires_grad=False):
    return _draw(_sample("randn", _generator.standard_normal, shape), dtype, device, requires_grad)


def randint(low, high=None, size=(), dtype="int64", device=None):
    """Integers in [low, high); `randint(high, size)` as in PyTorch."""
    if isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    return _draw(_generator.integers(low, high, size=size), dtype, device, False)


def randperm(n, device=None):
    return _draw(_generator.permutation(n), "int64", device, False)


def rand_like(input, *, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) values of input's shape, dtype and device (or those given), as torch.rand_like."""
    return rand(input.shape, dtype=dtype or input.dtype, device=device or input.device, requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False):
    """Standard normal values of input's shape, dtype and device (or those given), as torch.randn_like."""
    return randn(input.shape, dtype=dtype or input.dtype, device=device or input.device, requires_grad=requires_grad)
