"""DataLoader: mini-batches of arrays, in order or shuffled reproducibly, delivered on a device.

`DataLoader(X, y)` batches whole arrays: one gather per batch. It also takes PyTorch's map-style
datasets (any object with `__len__` and `__getitem__`, such as `TensorDataset` or a `Dataset`
subclass): those are read sample by sample and each batch is made by `collate_fn`
(`default_collate` unless given), as in PyTorch, in the main process.

As in PyTorch, batches come in the data's order unless `shuffle=True`. A shuffled epoch's order
is a function of the loader's seed and the epoch number alone. The seed is `seed=` when given,
else one draw from gpunn's generator when the loader is built, so the order follows
`gpunn.manual_seed` as PyTorch's follows `torch.manual_seed`, and a loader built afresh every
epoch gets a fresh order. `loader.state_dict()` records the seed with the epoch and batch
position, so a run resumed from a checkpoint sees exactly the batches it would have seen.
"""

import math
from collections.abc import Mapping

import numpy as np

from gpunn import backends
from gpunn.device import device as as_device, of as device_of
from gpunn.dtypes import as_dtype
from gpunn.errors import ShapeError
from gpunn.random import generator
from gpunn.tensor import Tensor, _host_array

__all__ = ["DataLoader", "Dataset", "TensorDataset", "default_collate"]


class Dataset:
    """PyTorch's map-style dataset: a subclass defines `__getitem__(index)` (one sample) and
    `__len__` (how many), and `DataLoader(dataset, batch_size=...)` batches it."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index) to return one sample")


class TensorDataset(Dataset):
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

    Given a map-style dataset instead (see the module docstring), each batch is
    `collate_fn([dataset[i] for i in batch_indices])`, moved to `device`; `batch_size` then
    defaults to 1, as in PyTorch. `DataLoader(TensorDataset(X, y))` without a `collate_fn` takes
    the fast array path.

    Each complete pass advances `epoch`; `set_epoch(e)` picks the order explicitly.
    Iterating twice at the same time over one loader is not supported (position is shared).

    `num_workers` and `pin_memory` are accepted for PyTorch code and ignored for arrays: a batch is a slice
    of arrays already in memory, so there is no loading to spread over workers, and on a GPU the
    data usually moves to the device once, up front (see above), leaving no per-step copy to pin.
    Data too large to preload is copied batch by batch from ordinary (unpinned) host memory.

    `distributed=True` (under gpunn.distributed, or with explicit `rank` and `world_size`) makes
    `batch_size` the global batch: every rank computes the same (seed, epoch) order and takes its
    contiguous share of each global batch (sizes differing by at most one), so every rank takes
    `len(loader)` steps, nothing is padded or repeated, and the ranks together see exactly the
    batches one process sees. `state_dict()` is the same whatever the number of ranks.

    A map-style dataset is read in the main process, so `num_workers > 0` is refused for one;
    PyTorch's other loading options (`sampler=`, `batch_sampler=`, ...) are refused too, each
    with what to use instead.
    """

    PRELOAD_BYTES = 256 * 2**20

    def __init__(self, X, y=None, batch_size=None, shuffle=False, drop_last=False, device="cpu", seed=None,
                 check_finite=False, dtype=None, preload=None, num_workers=0, pin_memory=False, collate_fn=None,
                 distributed=False, rank=None, world_size=None, **torch_options):
        self._dataset = _map_style(X, y, collate_fn, num_workers, torch_options,
                                   check_finite=check_finite, dtype=dtype, preload=preload)
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        if batch_size is None:  # PyTorch's default for a dataset is 1; gpunn's arrays take 32
            batch_size = 1 if self._dataset is not None or isinstance(X, TensorDataset) else 32
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        if isinstance(X, TensorDataset) and self._dataset is None:
            if y is not None:
                raise ValueError("DataLoader takes a TensorDataset of X or of (X, y) alone; got one and a y")
            X, y = (*X.tensors, None)[:2]
        elif self._dataset is None:
            _refuse_dataset_habit(X)
        self.device = as_device(device)
        self.batch_size = int(batch_size)
        self.rank, self.world_size = _shard(distributed, rank, world_size)
        if self._dataset is not None and self.world_size > 1:
            raise ValueError("DataLoader(distributed=True) shards arrays (DataLoader(X, y) or a TensorDataset); "
                             "a map-style dataset is read sample by sample and is not sharded yet: load it into "
                             "arrays, or give each rank its own part of the data set")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._seed_drawn = seed is None and self.shuffle
        if self._seed_drawn:  # like RandomSampler: the global generator picks the order
            seed = int(generator().integers(2**63))
        self.seed = None if seed is None else int(seed)
        if self._dataset is not None:  # read sample by sample: nothing to place
            self.X = self.y = None
            n = len(self._dataset)
            if n == 0:
                raise ShapeError(f"DataLoader: the data set is empty (len({type(X).__name__}) is 0); "
                                 "give it at least one sample")
        else:
            self.X = self._place(X, "X", dtype)
            self.y = None if y is None else self._place(y, "y", None)
            n = self.X.shape[0]
        if n == 0:
            raise ShapeError("DataLoader: the data set is empty (X has 0 rows); give it at least one sample")
        if self.y is not None and self.y.shape[0] != n:
            raise ShapeError(f"DataLoader: X has {n} rows but y has {self.y.shape[0]}; "
                             "they must describe the same samples")
        if check_finite and self._dataset is None:
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
        """The dataset given, or for arrays a TensorDataset of Tensors (no copy), where they live now."""
        if self._dataset is not None:
            return self._dataset
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
        if self._dataset is not None:
            yield from self._iter_dataset(start)
            return
        size, stop, n = self.batch_size, len(self), self.num_samples
        order = self.order()
        on_device = [a for a in (self.X, self.y) if a is not None and not isinstance(a, np.ndarray)]
        device_order = self.device.put(order) if on_device else None  # one transfer per epoch
        self._position = start
        for b in range(start, stop):
            begin, end = b * size, min((b + 1) * size, n)  # the standard leaves out-of-range stops open
            if self.world_size > 1:
                begin, end = _share(begin, end, self.rank, self.world_size)
            self._position = b + 1
            xb = self._gather(self.X, order, device_order, begin, end)
            yield xb if self.y is None else (xb, self._gather(self.y, order, device_order, begin, end))
        self.epoch += 1
        self._position = 0

    def _iter_dataset(self, start):
        """The map-style path: each batch is collate_fn of its samples, then moved to the device."""
        order, size = self.order(), self.batch_size
        self._position = start
        for b in range(start, len(self)):
            self._position = b + 1
            samples = [self._dataset[int(i)] for i in order[b * size:(b + 1) * size]]
            yield _to_device(self.collate_fn(samples), self.device)
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
                f"drop_last={self.drop_last}, device='{self.device}', seed={self.seed}, epoch={self.epoch}"
                + (f", rank={self.rank}, world_size={self.world_size})" if self.world_size > 1 else ")"))


def _shard(distributed, rank, world_size):
    """(rank, world size) of a sharded loader; (0, 1) for a whole one."""
    if not distributed:
        if rank is not None or world_size is not None:
            raise ValueError("DataLoader: rank and world_size apply only with distributed=True")
        return 0, 1
    if rank is None and world_size is None:
        from gpunn import distributed as dist
        if not dist.is_initialized():
            raise ValueError("DataLoader(distributed=True) needs gpunn.distributed.init_process_group() first "
                             "(or explicit rank= and world_size=)")
        return dist.get_rank(), dist.get_world_size()
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (rank, world_size))
    if not ok or not 0 <= rank < world_size:
        raise ValueError(f"DataLoader: need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    return int(rank), int(world_size)


def _share(begin, end, rank, world_size):
    """Rank `rank`'s contiguous part of the rows begin..end: the first (end - begin) % world_size ranks
    take one row more, so the parts differ by at most one and cover every row once."""
    base, extra = divmod(end - begin, world_size)
    start = begin + rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _refuse_dataset_habit(X):
    """`DataLoader((X, y))`: in PyTorch a data set of two samples, almost surely meant as
    `DataLoader(X, y)`; stacking it would fail with a ragged-list error (or, for equal shapes,
    silently make one sample per array), so name the call gpunn takes instead."""
    if isinstance(X, tuple) and len(X) > 1 and all(_is_array(a) and a.ndim > 0 for a in X):
        raise ValueError(f"DataLoader takes the arrays as separate arguments: DataLoader(X, y, batch_size=...); "
                         f"got a tuple of {len(X)} arrays as X; unpack it: DataLoader(*data, batch_size=...)")


def _is_sample_list(X):
    """A list (or tuple) of per-sample (x, y) pairs of different shapes: PyTorch's simplest
    map-style dataset, read sample by sample (rows of equal length are stacked as data instead)."""
    if not isinstance(X, (list, tuple)) or not X:
        return False
    first = X[0]
    return isinstance(first, (list, tuple)) and len(first) > 1 and len({_shape(v) for v in first}) > 1


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


# --- map-style datasets ------------------------------------------------------------------------------

# PyTorch DataLoader options gpunn does not have: name -> (the value that means "not used", what to do)
_TORCH_OPTIONS = {
    "sampler": (None, "pass shuffle=True (with seed=) for a random order; for another order or a subset, "
                      "wrap the dataset in one whose __getitem__ maps indices"),
    "batch_sampler": (None, "pass batch_size=, shuffle= and drop_last="),
    "generator": (None, "pass seed= (an int) to fix the shuffled order"),
    "timeout": (0, "leave it out: batches are made in the main process"),
    "worker_init_fn": (None, "leave it out: there are no worker processes"),
    "multiprocessing_context": (None, "leave it out: there are no worker processes"),
    "prefetch_factor": (None, "leave it out: there are no worker processes"),
    "persistent_workers": (False, "leave it out: there are no worker processes"),
    "pin_memory_device": ("", "leave it out (see pin_memory in DataLoader's docstring)"),
    "in_order": (True, "leave it out: batches always come in order"),
}


def _map_style(X, y, collate_fn, num_workers, torch_options, **array_only):
    """The dataset to read sample by sample (PyTorch's path), or None for the array path. Refuses
    what that path cannot do, naming what to use instead."""
    for name, value in torch_options.items():
        if name not in _TORCH_OPTIONS:
            raise TypeError(f"DataLoader got an unexpected keyword argument {name!r}")
        unused, advice = _TORCH_OPTIONS[name]
        if not (value is unused or type(value) is type(unused) and value == unused):
            raise ValueError(f"DataLoader: {name}= is not supported by gpunn; {advice}")
    is_dataset = isinstance(X, Dataset) or _is_sample_list(X) or (  # (array-likes, such as a pandas
        hasattr(X, "__getitem__") and hasattr(X, "__len__") and not hasattr(X, "__array__")  # DataFrame, are data)
        and not isinstance(X, (list, tuple, str, bytes, Mapping, Tensor)) and not _is_array(X))
    if isinstance(X, TensorDataset) and collate_fn is None and len(X.tensors) <= 2:
        return None  # whole arrays: the fast path
    if not is_dataset:
        if collate_fn is None:
            return None
        X = TensorDataset(X) if y is None else TensorDataset(X, y)  # collate_fn sees (x, y) samples
        y = None
    if y is not None:
        raise ValueError(f"DataLoader takes a dataset alone (its samples hold the targets); got a "
                         f"{type(X).__name__} and a y. Pass batch_size= by name: DataLoader(dataset, batch_size=64)")
    if num_workers:
        raise ValueError(f"DataLoader: num_workers={num_workers} is not supported for a {type(X).__name__}: gpunn "
                         "reads a dataset's samples in the main process. Pass num_workers=0, or give whole arrays "
                         "(DataLoader(X, y) or a TensorDataset), which need no workers")
    given = [name for name, value in array_only.items() if value not in (None, False)]
    if given:
        raise ValueError(f"DataLoader: {', '.join(given)} apply to arrays, not to a {type(X).__name__} read sample "
                         "by sample; do that in the dataset's __getitem__ (or in collate_fn)")
    return X


def default_collate(batch):
    """PyTorch's default_collate: a list of samples -> one batch of the same structure. Tensors and
    NumPy arrays are stacked, Python ints/floats/bools become int64/float64/bool tensors, strings
    stay a list, dicts and tuples/lists are collated field by field (tuples give lists, as in
    PyTorch)."""
    from gpunn.ops_api import stack
    from gpunn.tensor import tensor

    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch)
    if isinstance(elem, (np.ndarray, np.generic)) and elem.dtype.kind in "biuf":
        return Tensor._wrap(np.stack([np.asarray(e) for e in batch]), as_device("cpu"))
    if _is_array(elem):  # a raw backend array
        dev = device_of(elem)
        return Tensor._wrap(dev.xp.stack(batch), dev)
    if isinstance(elem, bool):
        return tensor(batch, dtype="bool")
    if isinstance(elem, (int, float)):
        return tensor(batch, dtype="int64" if isinstance(elem, int) else "float64")
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, (list, tuple)):
        if any(len(sample) != len(elem) for sample in batch):
            raise ShapeError("default_collate: the samples of a batch have different numbers of fields; "
                             "each sample must have the same structure")
        fields = [default_collate(list(column)) for column in zip(*batch)]
        return type(elem)(*fields) if hasattr(elem, "_fields") else fields  # a namedtuple keeps its type
    raise TypeError(f"default_collate: a sample holds a {type(elem).__name__}, which it cannot batch; return "
                    "Tensors, NumPy arrays, numbers, strings, or dicts/tuples of them, or pass collate_fn=")


def _to_device(batch, device):
    """`batch` with every Tensor in it moved to `device` (structure kept)."""
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(value, device) for value in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch
