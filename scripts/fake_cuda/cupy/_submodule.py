"""cupy.linalg, cupy.fft, cupy.random for the fake CuPy: NumPy's functions on emulated device memory."""

import numpy as np

from . import _fake


def fill(namespace, module):
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        value = getattr(module, name, None)
        if value is None:
            continue
        if callable(value) and not isinstance(value, type):
            value = _fake.function(name, value)
        namespace[name] = value
    namespace["__all__"] = list(names)


__all__ = ["fill", "np"]
