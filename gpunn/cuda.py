"""CUDA availability, asked without ever failing (the probe, which imports CuPy, is the backends')."""

from gpunn import backends


def why_unavailable(index=0):
    """None when cuda:index can be used, else a sentence saying why not."""
    count, reason = backends.probe_cuda()
    if reason:
        return reason
    if index >= count:
        return f"there is no cuda:{index}; this machine has {count} CUDA device(s)"
    return None


def is_available():
    return why_unavailable(0) is None


def device_count():
    return backends.probe_cuda()[0]
