"""gpunn's exception types: each message names what is wrong and what to do.

Every class also derives from the built-in exception a Python user would catch for the same
fault, so `except ValueError` keeps working.
"""


class GpunnError(Exception):
    """Base class of every error gpunn raises on purpose."""


class DeviceError(GpunnError, RuntimeError):
    """Inputs on different devices, an unknown device spec, or a device that cannot work here."""


class ShapeError(GpunnError, ValueError):
    """Shapes that do not fit an op (broadcasting, matrix products, reshapes, empty batches)."""


class IndexOutOfRangeError(ShapeError, IndexError):
    """An index beyond a tensor's extent (an IndexError too, as Python code expects)."""


class DTypeError(GpunnError, TypeError):
    """An integer or boolean tensor where a floating-point one is needed, or dtypes that must match."""


class GraphError(GpunnError, RuntimeError):
    """Misuse of the autograd graph: a second backward, backward without grad, in-place edits."""


class AnomalyError(GpunnError, FloatingPointError):
    """A NaN or inf produced in backward while gpunn.detect_anomaly() is on."""


class OutOfMemoryError(GpunnError, MemoryError):
    """A device allocation failed; the message gives the size asked for and a hint."""


def is_out_of_memory(exc):
    """True for a host MemoryError and for a backend's allocation failure (CuPy's OutOfMemoryError)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
