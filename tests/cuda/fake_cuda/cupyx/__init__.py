"""cupyx, faked: scatter_add, pinned host memory, allow_synchronize."""

import contextlib as _contextlib

import numpy as _np

from cupy import _fake
from cupy._fake import DeviceSynchronized  # noqa: F401


def scatter_add(a, slices, value):
    target, index, raw = _fake.unwrap(a), _fake.unwrap(slices), _fake.unwrap(value)
    _fake.launch(lambda: _np.add.at(target, index, raw), "scatter_add")


def empty_pinned(shape, dtype=float, order="C"):
    return _np.empty(shape, dtype, order).view(_fake.PinnedArray)


def zeros_pinned(shape, dtype=float, order="C"):
    return _np.zeros(shape, dtype, order).view(_fake.PinnedArray)


@_contextlib.contextmanager
def allow_synchronize(allow):
    previous = _fake._capture["sync_allowed"]
    _fake._capture["sync_allowed"] = allow
    try:
        yield
    finally:
        _fake._capture["sync_allowed"] = previous
