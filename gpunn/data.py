"""DataLoader: mini-batches of arrays, shuffled reproducibly, delivered on a device.

The shuffle order of an epoch depends only on `seed` and the epoch number, never on a global
generator, so a run resumed from a checkpoint sees exactly the batches it would have seen:
save `loader.state_dict()` (epoch and batch position) and give it back to `load_state_dict`.
"""

import math

import numpy as np

from gpunn import backends
from gpunn.device import device as as_device
from gpunn.dtypes import as_dtype
from gpunn.errors import ShapeError
from gpunn.tensor import Tensor, _host_array

__all__ = ["DataLoader"]


class DataLoader:
    """Iterate over `(xb, yb)` batches of `X` and `y` (or `xb` alone when `y` is None).

    `X` and `y` are NumPy arrays, backend arrays or Tensors whose first axis indexes samples.
    For a device other than the cpu, the data moves there once, up front, and each batch is
    gathered on the device: no host-to-device copy per step. That happens when `preload` is True,
    or by default (None) when X and y together take at most 256 MiB; otherwise they stay on the
    host and each batch is gathered there and moved once. `dtype` casts `X` once, up front; `y`
    keeps its dtype (integer labels stay integers).

    Each complete pass advances `epoch`; `set_epoch(e)` picks the order explicitly.
    Iterating twice at the same time over one loader is not supported (position is shared).
    """

    PRELOAD_BYTES = 256 * 2**20

    def __init__(self, X, y=None, batch_size=32, shuffle=True, drop_last=False, device="cpu", seed=0,
                 check_finite=False, dtype=None, preload=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.device = as_device(device)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.X = self._place(X, "X", dtype)
        self.y = None if y is None else self._place(y, "y", None)
        n = self.X.shape[0]
        if n == 0:
            raise ShapeError("DataLoader: the data set is empty (X has 0 rows); give it at least one sample")
        if self.y is not None and self.y.shape[0] != n:
            raise ShapeError(f"DataLoader: X has {n} rows but y has {self.y.shape[0]}; "
                             "they must describe the same samples")
        if check_finite:
            _check_finite(self.X)
        host = [a for a in (self.X, self.y) if isinstance(a, np.ndarray)]
        if self.device.type != "cpu" and host and (
                preload or (preload is None and sum(a.nbytes for a in host) <= self.PRELOAD_BYTES)):
            self.X = self.device.put(self.X)
            self.y = None if self.y is None else self.device.put(self.y)
        self.num_samples = n
        self.epoch = 0
        self._start = 0  # batch where the next iteration begins (set by load_state_dict)
        self._position = 0  # batches handed out so far in the current epoch

    def _place(self, data, name, dtype):
        """Host data stays on the host, one contiguous NumPy array; data already on a device
        moves to `device` once (and comes home once when `device` is the cpu)."""
        if isinstance(data, Tensor):
            data = data.data
        if backends.owner(data) not in (None, "cpu"):
            data = self.device.put(data)
        if backends.owner(data) in (None, "cpu"):
            if isinstance(data, (list, tuple)):  # follow tensor()'s rule: Python floats -> float32
                data = _host_array(data, None)
            data = np.asarray(data)
            if data.dtype.kind not in "biuf":
                raise TypeError(f"DataLoader: {name} must hold numbers, got dtype {data.dtype}")
            if data.ndim == 0:  # before ascontiguousarray, which would make it 1-d
                raise ShapeError(f"DataLoader: {name} is a scalar; it needs a first axis of samples")
            data = np.ascontiguousarray(data)
            return data if dtype is None else data.astype(as_dtype(dtype).name, copy=False)
        if data.ndim == 0:
            raise ShapeError(f"DataLoader: {name} is a scalar; it needs a first axis of samples")
        return data if dtype is None else self.device.xp.astype(data, self.device.dtype(as_dtype(dtype)))

    def __len__(self):
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch):
        """Start the next iteration at the beginning of `epoch` (its order is fixed by seed and epoch)."""
        self.epoch, self._start, self._position = int(epoch), 0, 0

    def order(self, epoch=None):
        """The sample indices of an epoch, in the order they are served (a NumPy int64 array)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)

    def state_dict(self):
        """Where the loader stands: the epoch, and how many of its batches were already served."""
        if self._position and self._position >= len(self):  # suspended after the last batch: that epoch is done
            return {"epoch": self.epoch + 1, "batch": 0}
        return {"epoch": self.epoch, "batch": self._position}

    def load_state_dict(self, state):
        """Make the next iteration continue where `state_dict()` was taken."""
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if not 0 <= batch <= len(self):
            raise ValueError(f"load_state_dict: batch {batch} is outside 0..{len(self)} for this loader")
        if batch == len(self):
            epoch, batch = epoch + 1, 0
        self.epoch, self._start, self._position = epoch, batch, batch

    def __iter__(self):
        start, self._start = self._start, 0
        size, stop, n = self.batch_size, len(self), self.num_samples
        order = self.order()
        on_device = [a for a in (self.X, self.y) if a is not None and not isinstance(a, np.ndarray)]
        device_order = self.device.put(order) if on_device else None  # one transfer per epoch
        self._position = start
        for b in range(start, stop):
            begin, end = b * size, min((b + 1) * size, n)  # the standard leaves out-of-range stops open
            self._position = b + 1
            xb = self._gather(self.X, order, device_order, begin, end)
            yield xb if self.y is None else (xb, self._gather(self.y, order, device_order, begin, end))
        self.epoch += 1
        self._position = 0

    def _gather(self, data, order, device_order, begin, end):
        dev = self.device
        if isinstance(data, np.ndarray):
            batch = data[order[begin:end]]  # one fancy index: a fresh, contiguous host array
            array = dev.put(batch)
        elif dev.ctx is None:
            array = dev.xp.take(data, device_order[begin:end], axis=0)
        else:
            with dev.ctx:
                array = dev.xp.take(data, device_order[begin:end], axis=0)
        return Tensor._wrap(array, dev)

    def __repr__(self):
        return (f"DataLoader({self.num_samples} samples, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, device='{self.device}', seed={self.seed}, epoch={self.epoch})")


def _check_finite(X):
    """Raise naming the first row (and position within it) that holds a NaN or an infinity."""
    host = X if isinstance(X, np.ndarray) else backends.get(backends.owner(X)).to_host(X)
    if host.dtype.kind != "f":
        return
    bad = ~np.isfinite(host.reshape(host.shape[0], -1))
    if not bad.any():
        return
    row, flat = (int(i) for i in np.argwhere(bad)[0])
    where = np.unravel_index(flat, host.shape[1:]) if host.ndim > 1 else ()
    column = f", column {int(where[0])}" if len(where) == 1 else (
        f", position {tuple(int(i) for i in where)}" if where else "")
    value = host[(row, *where)]
    raise ValueError(f"DataLoader: X has a non-finite value ({value}) at row {row}{column}; "
                     "clean or impute the data, or leave check_finite off")
