"""DataLoader: mini-batches of arrays, in order or shuffled reproducibly, delivered on a device.

As in PyTorch, batches come in the data's order unless `shuffle=True`. A shuffled epoch's order
is a function of the loader's seed and the epoch number alone. The seed is `seed=` when given,
else one draw from gpunn's generator when the loader is built, so the order follows
`gpunn.manual_seed` as PyTorch's follows `torch.manual_seed`, and a loader built afresh every
epoch gets a fresh order. `loader.state_dict()` records the seed with the epoch and batch
position, so a run resumed from a checkpoint sees exactly the batches it would have seen.
"""

import math

import numpy as np

from gpunn import backends
from gpunn.device import device as as_device, of as device_of
from gpunn.dtypes import as_dtype
from gpunn.errors import ShapeError
from gpunn.random import generator
from gpunn.tensor import Tensor, _host_array

__all__ = ["DataLoader", "TensorDataset"]


class TensorDataset:
    """PyTorch's TensorDataset: arrays or Tensors that share their first axis (samples).

    `DataLoader(TensorDataset(X, y), ...)` is `DataLoader(X, y, ...)`; `loader.dataset` gives one
    back, so `len(loader.dataset)` counts samples as in PyTorch.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one array, e.g. TensorDataset(X, y)")
        lengths = [t.shape[0] if getattr(t, "ndim", 0) else None for t in tensors]
        if None in lengths or len(set(lengths)) > 1:
            raise ShapeError(f"TensorDataset: the arrays must share their first axis (samples); "
                             f"got shapes {', '.join(str(tuple(getattr(t, 'shape', ()))) for t in tensors)}")
        self.tensors = tensors

    def __len__(self):
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)


class DataLoader:
    """Iterate over `(xb, yb)` batches of `X` and `y` (or `xb` alone when `y` is None), in order
    unless `shuffle=True` (PyTorch's default).

    `X` and `y` are NumPy arrays, backend arrays or Tensors whose first axis indexes samples
    (or `X` is a `TensorDataset` of one or two of them). With `shuffle=True` each epoch has its own
    order, fixed by `seed` (default: drawn from gpunn's generator, see the module docstring).
    For a device other than the cpu, the data moves there once, up front, and each batch is
    gathered on the device: no host-to-device copy per step. That happens when `preload` is True,
    or by default (None) when X and y together take at most 256 MiB; otherwise they stay on the
    host and each batch is gathered there and moved once. `dtype` casts `X` once, up front; `y`
    keeps its dtype (integer labels stay integers).

    Each complete pass advances `epoch`; `set_epoch(e)` picks the order explicitly.
    Iterating twice at the same time over one loader is not supported (position is shared).

    `num_workers` and `pin_memory` are accepted for PyTorch code and ignored: a batch is a slice
    of arrays already in memory, so there is no loading to spread over workers, and on a GPU the
    data usually moves to the device once, up front (see above), leaving no per-step copy to pin.
    Data too large to preload is copied batch by batch from ordinary (unpinned) host memory.
    """

    PRELOAD_BYTES = 256 * 2**20

    def __init__(self, X, y=None, batch_size=32, shuffle=False, drop_last=False, device="cpu", seed=None,
                 check_finite=False, dtype=None, preload=None, num_workers=0, pin_memory=False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        if isinstance(X, TensorDataset):
            if y is not None or len(X.tensors) > 2:
                raise ValueError("DataLoader takes a TensorDataset of X or of (X, y) alone; "
                                 f"got one of {len(X.tensors)} arrays{' and a y' if y is not None else ''}")
            X, y = (*X.tensors, None)[:2]
        else:
            _refuse_dataset_habit(X)
        self.device = as_device(device)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._seed_drawn = seed is None and self.shuffle
        if self._seed_drawn:  # like RandomSampler: the global generator picks the order
            seed = int(generator().integers(2**63))
        self.seed = None if seed is None else int(seed)
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
            data = data._array
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

    @property
    def dataset(self):
        """The loader's data as a TensorDataset of Tensors (no copy), where they live now."""
        arrays = [a for a in (self.X, self.y) if a is not None]
        return TensorDataset(*(Tensor._wrap(a, device_of(a)) for a in arrays))

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
        """Where the loader stands: the epoch, how many of its batches were already served, and the
        shuffle seed (so a loader built again, whatever gpunn's generator holds, keeps the order)."""
        if self._position and self._position >= len(self):  # suspended after the last batch: that epoch is done
            return {"epoch": self.epoch + 1, "batch": 0, "seed": self.seed}
        return {"epoch": self.epoch, "batch": self._position, "seed": self.seed}

    def load_state_dict(self, state):
        """Make the next iteration continue where `state_dict()` was taken, in the same order."""
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if not 0 <= batch <= len(self):
            raise ValueError(f"load_state_dict: batch {batch} is outside 0..{len(self)} for this loader")
        if batch == len(self):
            epoch, batch = epoch + 1, 0
        if state.get("seed") is not None:
            self.seed = int(state["seed"])
        elif "seed" not in state and self._seed_drawn:  # saved before states recorded the seed, when
            self.seed = 0  # an unseeded loader used 0 (None: from an unshuffled loader, keep ours)
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
        else:
            with dev.scope:
                array = dev.xp.take(data, device_order[begin:end], axis=0)
        return Tensor._wrap(array, dev)

    def __repr__(self):
        return (f"DataLoader({self.num_samples} samples, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, device='{self.device}', seed={self.seed}, epoch={self.epoch})")


def _refuse_dataset_habit(X):
    """PyTorch code hands DataLoader a dataset: `DataLoader((X, y))` or a list of (x, y) samples.
    Stacking those would fail with a ragged-list error (or, for equal shapes, silently make one
    sample per array), so name the call gpunn takes instead."""
    if not isinstance(X, (list, tuple)) or not X:
        return
    if isinstance(X, tuple) and len(X) > 1 and all(_is_array(a) and a.ndim > 0 for a in X):
        raise ValueError(f"DataLoader takes the arrays as separate arguments: DataLoader(X, y, batch_size=...); "
                         f"got a tuple of {len(X)} arrays as X; unpack it: DataLoader(*data, batch_size=...)")
    first = X[0]
    if isinstance(first, (list, tuple)) and len(first) > 1 and len({_shape(v) for v in first}) > 1:
        raise ValueError(f"DataLoader takes whole arrays: DataLoader(X, y, batch_size=...), one sample per row; "
                         f"got a {type(X).__name__} of per-sample {type(first).__name__}s like (x, y). Stack them "
                         "first: X = np.stack([x for x, _ in samples]); y = np.array([t for _, t in samples])")


def _is_array(value):
    return isinstance(value, Tensor) or (backends.owner(value) is not None and hasattr(value, "ndim"))


def _shape(value):
    """The shape `value` would have as an array; None for a ragged nest of lists."""
    if _is_array(value):
        return tuple(value.shape)
    try:
        return np.shape(value)
    except ValueError:
        return None


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
