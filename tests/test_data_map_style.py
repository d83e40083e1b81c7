"""Map-style datasets in DataLoader (PyTorch's protocol), default_collate, collate_fn, drop_last,
the gpunn.utils.data names, and the loader options gpunn refuses."""

import collections

import numpy as np
import pytest

import gpunn
from gpunn.data import DataLoader, Dataset, TensorDataset, default_collate
from gpunn.errors import ShapeError

Pair = collections.namedtuple("Pair", "x label")


def _squares(lib, n=7):
    """A map-style dataset in either framework: sample i is (tensor [i, i*i], i)."""
    base = lib.utils.data.Dataset

    class Squares(base):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return lib.tensor([float(i), float(i * i)]), i

    return Squares()


def _as_numpy(batch):
    """A batch of either framework as nested NumPy arrays and plain values."""
    if hasattr(batch, "numpy") and hasattr(batch, "shape"):
        return batch.numpy()
    if isinstance(batch, dict):
        return {k: _as_numpy(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_as_numpy(v) for v in batch]
    return batch


def _same(a, b):
    """Nested equality of two _as_numpy results, dtypes included."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


@pytest.mark.parametrize("batch_size,drop_last", [(3, False), (3, True), (7, False), (1, False)])
def test_map_style_batches_match_pytorch(device, batch_size, drop_last):
    torch = pytest.importorskip("torch")
    ours = DataLoader(_squares(gpunn), batch_size=batch_size, drop_last=drop_last, device=device)
    theirs = torch.utils.data.DataLoader(_squares(torch), batch_size=batch_size, drop_last=drop_last)
    assert len(ours) == len(theirs)
    got = list(ours)
    for batch in got:
        assert all(t.device == device for t in batch)
    assert _same(_as_numpy(got), _as_numpy(list(theirs)))


def test_comparison_catches_a_wrong_batch():
    """Negative control for _same: a batch with two samples swapped, or a dtype changed, differs."""
    torch = pytest.importorskip("torch")
    theirs = _as_numpy(list(torch.utils.data.DataLoader(_squares(torch), batch_size=3)))
    swapped = _as_numpy(list(DataLoader(_squares(gpunn), batch_size=3)))
    swapped[0][1] = swapped[0][1][::-1].copy()
    assert not _same(swapped, theirs)
    widened = _as_numpy(list(DataLoader(_squares(gpunn), batch_size=3)))
    widened[0][0] = widened[0][0].astype(np.float64)
    assert not _same(widened, theirs)


SAMPLES = {
    "ints": [1, 2, 3],
    "floats": [0.5, 1.5],
    "bools": [True, False],
    "strings": ["a", "b"],
    "numpy": [np.arange(3, dtype=np.float32), np.ones(3, dtype=np.float32)],
    "numpy scalars": [np.float32(1), np.float32(2)],
    "dicts": [{"x": 1.0, "name": "a"}, {"x": 2.0, "name": "b"}],
    "tuples": [(1, 2.0), (3, 4.0)],
    "nested": [{"pair": ([1, 2], 0.5)}, {"pair": ([3, 4], 1.5)}],
}


@pytest.mark.parametrize("name", SAMPLES)
def test_default_collate_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    assert _same(_as_numpy(default_collate(SAMPLES[name])),
                 _as_numpy(torch.utils.data.default_collate(SAMPLES[name])))


def test_default_collate_stacks_tensors_and_keeps_namedtuples(device):
    samples = [Pair(gpunn.tensor([1.0, 2.0], device=device), 0), Pair(gpunn.tensor([3.0, 4.0], device=device), 1)]
    batch = default_collate(samples)
    assert isinstance(batch, Pair) and batch.x.device == device
    np.testing.assert_array_equal(batch.x.numpy(), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(batch.label.numpy(), [0, 1])
    with pytest.raises(ShapeError, match="different numbers of fields"):
        default_collate([(1, 2), (3,)])
    with pytest.raises(TypeError, match="collate_fn="):
        default_collate([object(), object()])


def test_collate_fn_gets_the_samples_of_each_batch():
    seen = []

    def collate(samples):
        seen.append([label for _, label in samples])
        return len(samples)

    loader = DataLoader(_squares(gpunn, n=5), batch_size=2, collate_fn=collate)
    assert list(loader) == [2, 2, 1] and seen == [[0, 1], [2, 3], [4]]
    X = np.arange(10.0).reshape(5, 2)
    pairs = list(DataLoader(X, np.arange(5), batch_size=4, collate_fn=lambda s: s))  # arrays: (x, y) samples
    assert len(pairs) == 2 and np.array_equal(pairs[1][0][0], X[4]) and pairs[1][0][1] == 4


def test_shuffled_dataset_follows_the_seed_and_covers_every_sample():
    loader = DataLoader(_squares(gpunn, n=11), batch_size=4, shuffle=True, seed=5)
    labels = np.concatenate([yb.numpy() for _, yb in loader])
    assert sorted(labels.tolist()) == list(range(11))
    np.testing.assert_array_equal(labels, loader.order(0))  # the same order as the array path's
    arrays = DataLoader(np.arange(11.0)[:, None], np.arange(11), batch_size=4, shuffle=True, seed=5)
    np.testing.assert_array_equal(labels, np.concatenate([yb.numpy() for _, yb in arrays]))
    second = np.concatenate([yb.numpy() for _, yb in loader])
    assert not np.array_equal(labels, second)  # a new epoch, a new order


def test_dataset_loader_resumes_mid_epoch():
    loader = DataLoader(_squares(gpunn, n=9), batch_size=2, shuffle=True, seed=3)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    rest = [yb.numpy().tolist() for _, yb in it]
    again = DataLoader(_squares(gpunn, n=9), batch_size=2, shuffle=True, seed=99)
    again.load_state_dict(state)
    assert [yb.numpy().tolist() for _, yb in again] == rest


def test_dataset_defaults_and_properties():
    dataset = _squares(gpunn, n=3)
    loader = DataLoader(dataset)
    assert loader.batch_size == 1 and len(loader) == 3 and loader.dataset is dataset  # PyTorch's default
    assert DataLoader(np.ones((40, 2))).batch_size == 32  # arrays keep gpunn's
    assert DataLoader(TensorDataset(np.ones((4, 2)))).batch_size == 1


def test_array_likes_stay_on_the_array_path():
    """Control for the protocol check: an object with __array__ (a pandas DataFrame, say) is data,
    even though it has __len__ and __getitem__ too."""

    class Frame:
        def __init__(self, values):
            self.values = values

        def __array__(self, dtype=None, copy=None):
            return self.values

        def __len__(self):
            return len(self.values)

        def __getitem__(self, column):
            raise AssertionError("a column lookup, not a sample")

    loader = DataLoader(Frame(np.arange(8.0).reshape(4, 2)), Frame(np.arange(4)), batch_size=3)
    assert loader.X.shape == (4, 2) and len(loader) == 2


def test_a_tensor_dataset_of_three_tensors_is_batched_by_collate():
    X, y, w = np.arange(10.0).reshape(5, 2), np.arange(5), np.linspace(0, 1, 5)
    batches = list(DataLoader(TensorDataset(X, y, w), batch_size=2))
    assert len(batches) == 3 and len(batches[0]) == 3
    np.testing.assert_array_equal(batches[2][0].numpy(), X[4:])
    np.testing.assert_array_equal(batches[1][2].numpy(), w[2:4])


@pytest.mark.parametrize("option,value,phrase", [
    ("num_workers", 2, "num_workers=0"),
    ("sampler", [0, 1], "shuffle=True"),
    ("batch_sampler", [[0, 1]], "batch_size="),
    ("generator", object(), "seed="),
    ("persistent_workers", True, "no worker"),
    ("dtype", "float32", "__getitem__"),
])
def test_unsupported_options_say_what_to_use(option, value, phrase):
    with pytest.raises(ValueError, match=f"{option}.*{phrase}"):
        DataLoader(_squares(gpunn), batch_size=2, **{option: value})


def test_unknown_options_and_misplaced_arguments():
    with pytest.raises(TypeError, match="unexpected keyword argument 'shuffel'"):
        DataLoader(_squares(gpunn), shuffel=True)
    with pytest.raises(ValueError, match="batch_size= by name"):
        DataLoader(_squares(gpunn), 64)
    with pytest.raises(ShapeError, match="empty"):
        DataLoader(_squares(gpunn, n=0))
    assert len(DataLoader(_squares(gpunn), batch_size=2, timeout=0, sampler=None)) == 4  # defaults are fine


def test_utils_data_has_pytorchs_names():
    from gpunn.utils.data import DataLoader as L, Dataset as D, TensorDataset as T, default_collate as c

    assert (L, D, T, c) == (DataLoader, Dataset, TensorDataset, default_collate)
    assert gpunn.utils.data.DataLoader is DataLoader
    assert isinstance(TensorDataset(np.ones(2)), gpunn.utils.data.Dataset)


@pytest.mark.parametrize("as_lists", [False, True], ids=["arrays", "python-lists"])
def test_a_list_of_samples_batches_like_pytorch(as_lists):
    torch = pytest.importorskip("torch")
    X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    samples = [(X[i].tolist(), int(y[i])) if as_lists else (X[i], y[i]) for i in range(5)]
    ours = list(DataLoader(samples, batch_size=2))
    assert _same(_as_numpy(ours), _as_numpy(list(torch.utils.data.DataLoader(samples, batch_size=2))))
