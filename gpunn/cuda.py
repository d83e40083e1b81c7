"""CUDA availability, asked without ever failing: CuPy is imported only here and in its backend."""

import functools


@functools.lru_cache(maxsize=None)
def _probe():
    """(device count, reason it is unusable or None). Cached: the answer does not change in a run."""
    try:
        import cupy
    except ImportError:
        return 0, "CuPy is not installed (pip install 'gpunn[cuda12]' or 'gpunn[cuda13]')"
    except Exception as exc:  # a broken CuPy install raises all sorts of things
        return 0, f"CuPy failed to import: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return 0, f"no usable CUDA driver ({exc})"
    if count == 0:
        return 0, "no CUDA device found"
    try:
        with cupy.cuda.Device(0):
            (cupy.arange(2) + 1).sum().item()
    except Exception as exc:
        return 0, f"CUDA device 0 failed a test computation ({exc})"
    return count, None


def why_unavailable(index=0):
    """None when cuda:index can be used, else a sentence saying why not."""
    count, reason = _probe()
    if reason:
        return reason
    if index >= count:
        return f"there is no cuda:{index}; this machine has {count} CUDA device(s)"
    return None


def is_available():
    return why_unavailable(0) is None


def device_count():
    return _probe()[0]
