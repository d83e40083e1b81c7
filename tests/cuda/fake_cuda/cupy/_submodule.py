"""cupy.linalg, cupy.fft, cupy.random for the fake CuPy: NumPy's functions on emulated device memory.

Only names real CuPy has (cupy_names.txt, recorded from CuPy): code calling a NumPy-only function
fails on the fake as it would on a GPU.
"""

import functools
import os

import numpy as np

from . import _fake


@functools.cache
def real_names(module):
    """The public names of real CuPy's `module` (e.g. "cupy.linalg"), from cupy_names.txt."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cupy_names.txt")
    with open(path, encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip() and not line.startswith("#")]
    return frozenset(name for owner, name in rows if owner == module)


def fill(namespace, module):
    """NumPy's `module`'s functions, on emulated memory, under the names real CuPy's has too."""
    real = real_names(namespace["__name__"])
    names = [n for n in getattr(module, "__all__", None) or dir(module) if not n.startswith("_") and n in real]
    for name in names:
        value = getattr(module, name, None)
        if value is None:
            continue
        if callable(value) and not isinstance(value, type):
            value = _fake.function(name, value)
        namespace[name] = value
    namespace["__all__"] = list(names)


__all__ = ["fill", "np"]
