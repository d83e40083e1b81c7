"""Backends: an array namespace plus the few things the array API standard lacks.

A backend knows nothing of Tensor. It gives:
  xp                 the array namespace (array-api-compat's view of the library)
  to_host(a)         a NumPy copy of an array of this backend
  from_host(h, dev)  a NumPy array moved onto native device `dev`
  synchronize(dev)   wait until queued work on `dev` is done
  fast_paths         {primitive name: Primitive} overrides of the generic ops

Backends are loaded lazily: importing gpunn never imports CuPy.
"""

import importlib

_MODULES = {"cpu": "numpy_backend", "strict": "strict_backend", "cuda": "cupy_backend"}
_loaded = {}


def get(kind):
    """The backend object for a device type ("cpu", "strict" or "cuda"), imported on first use."""
    if kind not in _loaded:
        module = importlib.import_module(f"{__name__}.{_MODULES[kind]}")
        _loaded[kind] = module.BACKEND
    return _loaded[kind]


def owner(array):
    """The device type whose backend made `array` (None for non-arrays)."""
    module = type(array).__module__
    if module == "numpy" or module.startswith("numpy."):
        return "cpu"
    if module.startswith("array_api_strict"):
        return "strict"
    if module.startswith("cupy"):
        return "cuda"
    return None
