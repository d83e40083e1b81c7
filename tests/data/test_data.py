"""DataLoader: reproducible order, full coverage, batch layout, devices, dtypes, resume, errors;
map-style datasets (PyTorch's protocol), default_collate, collate_fn, drop_last, the
gpunn.utils.data names, and the loader options gpunn refuses."""

import collections

import numpy as np
import pytest

import gpunn
from gpunn.data import DataLoader, Dataset, TensorDataset, default_collate
from gpunn.errors import ShapeError

DEVICES = ["cpu", "strict", "strict:1"]


def _data(n=23, d=3):
    """Rows whose first column is their index, so a batch tells which samples it holds."""
    X = np.zeros((n, d), dtype=np.float64)
    X[:, 0] = np.arange(n)
    X[:, 1:] = np.arange(n)[:, None] * 10.0 + np.arange(1, d)
    return X, np.arange(n, dtype=np.int64) * 7


def _rows(batch):
    return batch.numpy()[:, 0].astype(np.int64)


def _epoch_rows(loader):
    return np.concatenate([_rows(xb) for xb, _ in loader])


def _covers_each_row_once(rows, n):
    return len(rows) == n and np.array_equal(np.sort(rows), np.arange(n))


def test_same_seed_and_epoch_give_the_same_order():
    X, y = _data()
    a, b = DataLoader(X, y, batch_size=5, shuffle=True, seed=3), DataLoader(X, y, batch_size=5, shuffle=True, seed=3)
    for _ in range(3):
        assert np.array_equal(_epoch_rows(a), _epoch_rows(b))
    assert a.epoch == b.epoch == 3


def test_an_explicit_seed_ignores_the_global_generator():
    X, y = _data()
    gpunn.manual_seed(1)
    first = _epoch_rows(DataLoader(X, y, batch_size=5, shuffle=True, seed=3))
    gpunn.manual_seed(2)
    np.random.seed(99)
    gpunn.randn(10)
    assert np.array_equal(_epoch_rows(DataLoader(X, y, batch_size=5, shuffle=True, seed=3)), first)


def test_order_differs_across_epochs_and_seeds():
    X, y = _data(n=50)
    loader = DataLoader(X, y, batch_size=8, shuffle=True, seed=0)
    epoch0, epoch1 = _epoch_rows(loader), _epoch_rows(loader)
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(epoch0, _epoch_rows(DataLoader(X, y, batch_size=8, shuffle=True, seed=1)))


def test_set_epoch_replays_an_epoch():
    X, y = _data(n=50)
    loader = DataLoader(X, y, batch_size=8, shuffle=True)
    orders = [_epoch_rows(loader) for _ in range(3)]
    loader.set_epoch(1)
    assert np.array_equal(_epoch_rows(loader), orders[1])
    assert loader.epoch == 2
    assert np.array_equal(orders[2], loader.order(2)[:len(orders[2])])


@pytest.mark.parametrize("n,batch_size", [(23, 5), (20, 5), (1, 4), (7, 1), (7, 100)])
def test_every_row_exactly_once_per_epoch(n, batch_size):
    X, y = _data(n=n)
    loader = DataLoader(X, y, batch_size=batch_size, shuffle=True, seed=5)
    for _ in range(2):
        rows, labels = [], []
        for xb, yb in loader:
            rows.append(_rows(xb))
            labels.append(yb.numpy())
        rows = np.concatenate(rows)
        assert _covers_each_row_once(rows, n)
        assert np.array_equal(np.concatenate(labels), y[rows])  # labels travel with their rows
        assert np.array_equal(loader.X[rows], X[rows])


def test_coverage_check_catches_a_repeated_row(monkeypatch):
    """Negative control: an order that serves one row twice must fail the coverage check."""
    X, y = _data(n=12)
    loader = DataLoader(X, y, batch_size=5)
    monkeypatch.setattr(loader, "order", lambda epoch=None: np.r_[np.arange(11), 3])
    assert not _covers_each_row_once(_epoch_rows(loader), 12)


def test_partial_last_batch_and_len():
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=5)
    sizes = [len(xb) for xb, _ in loader]
    assert sizes == [5, 5, 5, 5, 3]
    assert len(loader) == 5


def test_drop_last():
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=5, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert all(len(xb) == len(yb) == 5 for xb, yb in batches)
    rows = np.concatenate([_rows(xb) for xb, _ in batches])
    assert len(set(rows.tolist())) == 20
    assert np.array_equal(np.sort(rows), np.sort(loader.order(0)[:20]))  # the dropped rows are the last ones
    assert len(DataLoader(X, y, batch_size=5, drop_last=False)) == 5


def test_the_default_keeps_the_order_like_pytorch():
    """An evaluation loader written the PyTorch way must not scramble predictions against labels."""
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=4)
    assert not loader.shuffle
    for _ in range(2):
        assert np.array_equal(_epoch_rows(loader), np.arange(23))


def test_without_a_seed_the_order_follows_manual_seed():
    X, y = _data(n=40)

    def first_epoch(global_seed):
        gpunn.manual_seed(global_seed)
        return _epoch_rows(DataLoader(X, y, batch_size=8, shuffle=True))

    assert np.array_equal(first_epoch(1), first_epoch(1))
    assert not np.array_equal(first_epoch(1), first_epoch(2))


def test_a_loader_built_again_without_a_seed_reshuffles():
    """Scripts that build the loader inside the epoch loop must not see one order every epoch."""
    X, y = _data(n=40)
    gpunn.manual_seed(0)
    orders = [_epoch_rows(DataLoader(X, y, batch_size=8, shuffle=True)) for _ in range(3)]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])


def test_an_unshuffled_loader_leaves_the_generator_alone():
    gpunn.manual_seed(3)
    expected = gpunn.randn(4).numpy()
    gpunn.manual_seed(3)
    DataLoader(*_data(n=10), batch_size=4)
    np.testing.assert_array_equal(gpunn.randn(4).numpy(), expected)


def test_state_dict_keeps_a_drawn_seed_across_rebuilding():
    """A resumed script builds its loader under another generator state; the saved state wins."""
    X, y = _data(n=23)
    gpunn.manual_seed(0)
    loader = DataLoader(X, y, batch_size=5, shuffle=True)
    expected = [_rows(xb) for _ in range(2) for xb, _ in loader]
    loader.set_epoch(0)
    seen = []
    for xb, _ in loader:
        seen.append(_rows(xb))
        if len(seen) == 3:
            break
    state = loader.state_dict()
    gpunn.manual_seed(99)
    fresh = DataLoader(X, y, batch_size=5, shuffle=True)
    assert fresh.seed != loader.seed  # control: rebuilt alone, it would serve another order
    fresh.load_state_dict(state)
    while len(seen) < 10:
        seen.extend(_rows(xb) for xb, _ in fresh)
    assert len(seen) == 10 and all(np.array_equal(a, b) for a, b in zip(seen, expected))


def test_a_state_without_a_seed_keeps_the_loaders_own():
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=5, shuffle=True, seed=6)
    loader.load_state_dict({"epoch": 2, "batch": 1})  # as saved before states carried the seed
    assert loader.seed == 6
    assert np.array_equal(np.concatenate([_rows(xb) for xb, _ in loader]), loader.order(2)[5:])


def test_a_state_without_a_seed_means_the_old_default_for_an_unseeded_loader():
    """States saved before they carried the seed came from loaders whose default seed was 0."""
    X, y = _data(n=23)
    gpunn.manual_seed(3)
    loader = DataLoader(X, y, batch_size=5, shuffle=True)  # draws a seed of its own
    loader.load_state_dict({"epoch": 2, "batch": 1})
    assert loader.seed == 0
    assert np.array_equal(np.concatenate([_rows(xb) for xb, _ in loader]), loader.order(2)[5:])


def test_a_state_from_an_unshuffled_loader_keeps_a_shuffled_loaders_seed():
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=5, shuffle=True, seed=4)
    loader.load_state_dict(DataLoader(X, y, batch_size=5).state_dict())  # its seed is None
    assert loader.seed == 4 and len([b for b in loader]) == 5


def test_no_shuffle_keeps_the_order():
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=4, shuffle=False)
    for _ in range(2):
        assert np.array_equal(_epoch_rows(loader), np.arange(23))


def test_x_only_yields_tensors():
    X, _ = _data(n=9)
    batches = list(DataLoader(X, batch_size=4, shuffle=False))
    assert all(isinstance(b, gpunn.Tensor) for b in batches)
    assert np.array_equal(np.concatenate([b.numpy() for b in batches]), X)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("source", ["numpy", "tensor-strict:1"])
def test_batches_on_device_with_dtypes(device, source):
    X, y = _data(n=11)
    Xs = X if source == "numpy" else gpunn.tensor(X, device="strict:1")
    loader = DataLoader(Xs, y, batch_size=4, shuffle=True, device=device, dtype="float32", seed=2)
    # everything small moves to the loader's device once, up front (the cpu keeps NumPy arrays)
    assert isinstance(loader.X, np.ndarray) == (device == "cpu")
    order = loader.order(0)
    for i, (xb, yb) in enumerate(loader):
        assert xb.device == gpunn.device(device) and yb.device == gpunn.device(device)
        assert xb.dtype == gpunn.float32
        assert yb.dtype == gpunn.int64
        assert not xb.requires_grad
        rows = order[i * 4:(i + 1) * 4]
        assert np.array_equal(xb.numpy(), X[rows].astype(np.float32))
        assert np.array_equal(yb.numpy(), y[rows])


@pytest.mark.parametrize("device", DEVICES)
def test_dtype_none_keeps_dtypes(device):
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.arange(6, dtype=np.int32)
    xb, yb = next(iter(DataLoader(X, y, batch_size=4, device=device)))
    assert xb.dtype == gpunn.float64 and yb.dtype == gpunn.int32


def test_batches_do_not_alias_the_data():
    X, y = _data(n=8)
    loader = DataLoader(X, y, batch_size=4, shuffle=False)
    xb, _ = next(iter(loader))
    xb._array[...] = -1.0
    assert np.array_equal(loader.X, X)


def test_state_dict_resumes_mid_epoch():
    X, y = _data(n=23)
    loader = DataLoader(X, y, batch_size=5, shuffle=True, seed=4)
    expected = [_rows(xb) for _ in range(3) for xb, _ in loader]  # 15 batches over 3 epochs
    loader = DataLoader(X, y, batch_size=5, shuffle=True, seed=4)
    seen = []
    for xb, _ in loader:
        seen.append(_rows(xb))
    for xb, _ in loader:
        seen.append(_rows(xb))
        if len(seen) == 7:
            break
    state = loader.state_dict()
    assert state == {"epoch": 1, "batch": 2, "seed": 4}
    fresh = DataLoader(X, y, batch_size=5, shuffle=True, seed=4)
    fresh.load_state_dict(state)
    while len(seen) < 15:
        seen.extend(_rows(xb) for xb, _ in fresh)
    assert all(np.array_equal(a, b) for a, b in zip(seen, expected)) and len(seen) == 15


def test_state_after_the_last_batch_points_to_the_next_epoch():
    X, y = _data(n=10)
    loader = DataLoader(X, y, batch_size=5, shuffle=True, seed=2)
    for i, _ in enumerate(loader):
        if i == 1:
            assert loader.state_dict() == {"epoch": 1, "batch": 0, "seed": 2}
    assert loader.state_dict() == {"epoch": 1, "batch": 0, "seed": 2}
    with pytest.raises(ValueError, match="batch 3"):
        loader.load_state_dict({"epoch": 0, "batch": 3})


def test_abandoned_iteration_restarts_the_epoch():
    """Peeking at one batch must not skip it in the training loop that follows."""
    X, y = _data(n=10)
    loader = DataLoader(X, y, batch_size=5, shuffle=True)
    first, _ = next(iter(loader))
    assert np.array_equal(_epoch_rows(loader), loader.order(0))
    assert np.array_equal(_rows(first), loader.order(0)[:5])


def test_length_mismatch_names_both():
    X, y = _data(n=10)
    with pytest.raises(ShapeError, match="X has 10 rows but y has 9"):
        DataLoader(X, y[:9])


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_bad_batch_size(batch_size):
    X, y = _data(n=10)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(X, y, batch_size=batch_size)


def test_empty_data_set():
    with pytest.raises(ShapeError, match="empty"):
        DataLoader(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ShapeError, match="scalar"):
        DataLoader(np.float64(3.0))
    with pytest.raises(ShapeError, match="scalar"):
        DataLoader(gpunn.tensor(3.0, device="strict:1"), device="strict:1")
    with pytest.raises(TypeError, match="numbers"):
        DataLoader(np.array(["a", "b"]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_row_and_column(device, bad):
    X, y = _data(n=10)
    X[6, 2] = bad
    X[8, 0] = bad  # a later one: the first is reported
    source = X if device == "cpu" else gpunn.tensor(X, device=device)
    with pytest.raises(ValueError, match="row 6, column 2"):
        DataLoader(source, y, check_finite=True, device=device)
    DataLoader(source, y, check_finite=False, device=device)  # off by default: no check, no error


def test_check_finite_accepts_clean_data_and_checks_the_cast():
    X, y = _data(n=10)
    DataLoader(X, y, check_finite=True)
    X[4, 1] = 1e300  # finite in float64, inf once cast to float32
    DataLoader(X, y, check_finite=True)
    with pytest.raises(ValueError, match="row 4, column 1"), pytest.warns(RuntimeWarning, match="overflow"):
        DataLoader(X, y, check_finite=True, dtype="float32")


def test_check_finite_on_images_names_the_position():
    X = np.zeros((4, 2, 3), dtype=np.float32)
    X[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 2, position \(1, 0\)"):
        DataLoader(X, check_finite=True)


def test_data_moves_to_the_device_once_and_batches_match_the_host_path():
    X, y = _data(n=10)
    on_device = DataLoader(X, y, batch_size=4, shuffle=True, device="strict:1", seed=3)
    on_host = DataLoader(X, y, batch_size=4, shuffle=True, device="strict:1", seed=3, preload=False)
    assert not isinstance(on_device.X, np.ndarray) and not isinstance(on_device.y, np.ndarray)
    assert isinstance(on_host.X, np.ndarray)  # control: the per-batch path keeps host arrays
    for (xa, ya), (xb, yb) in zip(on_device, on_host):
        assert xa.device == xb.device == "strict:1"
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())


def test_data_larger_than_the_preload_limit_stays_on_the_host(monkeypatch):
    monkeypatch.setattr(DataLoader, "PRELOAD_BYTES", 16)
    X, y = _data(n=10)
    assert isinstance(DataLoader(X, y, device="strict:1").X, np.ndarray)
    assert not isinstance(DataLoader(X, y, device="strict:1", preload=True).X, np.ndarray)


# --- PyTorch habits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda X, y: (X, y), lambda X, y: (gpunn.tensor(X), gpunn.tensor(y)),
                                  lambda X, y: (X, X)],
                         ids=["arrays", "tensors", "equal-shapes"])
def test_a_tuple_of_arrays_names_the_right_call(make):
    X, y = _data(n=10)
    with pytest.raises(ValueError, match=r"DataLoader\(X, y, batch_size=...\).*tuple of 2 arrays"):
        DataLoader(make(X, y), batch_size=3)


@pytest.mark.parametrize("container", [list, tuple])
def test_a_list_of_samples_is_a_dataset_as_in_pytorch(container):
    X, y = _data(n=10)
    batches = list(DataLoader(container([(X[i], y[i]) for i in range(10)]), batch_size=3))
    assert len(batches) == 4
    np.testing.assert_array_equal(batches[3][0].numpy(), X[9:])
    np.testing.assert_array_equal(np.concatenate([yb.numpy() for _, yb in batches]), y)


def test_rows_given_as_lists_or_tuples_still_stack():
    """Control: nested rows of equal length are data, not a data set of samples."""
    rows = [(0.5, 1.0), (1.5, 2.0), (2.5, 3.0)]
    loader = DataLoader(rows, [0, 1, 0], batch_size=2)
    assert loader.X.shape == (3, 2) and len(loader) == 2
    assert DataLoader([np.ones(2), np.zeros(2)]).X.shape == (2, 2)
    with pytest.raises(ShapeError, match="different lengths"):  # a ragged list keeps its own message
        DataLoader([[1.0, 2.0], [3.0]])


def test_num_workers_and_pin_memory_are_accepted_and_change_nothing():
    X, y = _data(n=11)
    plain = DataLoader(X, y, batch_size=4, shuffle=True, seed=1)
    pytorch_style = DataLoader(X, y, batch_size=4, shuffle=True, seed=1, num_workers=4, pin_memory=True)
    for (xa, ya), (xb, yb) in zip(plain, pytorch_style, strict=True):
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_dataset_gives_the_samples_back_like_pytorch(device):
    X, y = _data(n=11)
    loader = DataLoader(X, y, batch_size=4, device=device)
    dataset = loader.dataset
    assert len(dataset) == 11 and len(dataset.tensors) == 2
    assert all(isinstance(t, gpunn.Tensor) for t in dataset.tensors)
    np.testing.assert_array_equal(dataset.tensors[0].numpy(), X)
    xi, yi = dataset[3]
    np.testing.assert_array_equal(xi.numpy(), X[3])
    assert yi.item() == y[3]
    assert len(DataLoader(X, batch_size=4).dataset.tensors) == 1


def test_a_tensor_dataset_unpacks_into_x_and_y():
    X, y = _data(n=11)
    direct = list(DataLoader(X, y, batch_size=4))
    for (xa, ya), (xb, yb) in zip(direct, DataLoader(TensorDataset(X, y), batch_size=4), strict=True):
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
    with pytest.raises(ShapeError, match="first axis"):
        TensorDataset(X, y[:5])
    with pytest.raises(ValueError, match="TensorDataset"):
        DataLoader(TensorDataset(X, y), y)


def test_data_loader_from_lists_follows_tensors_dtype_rule():
    from gpunn.data import DataLoader

    xb, yb = next(iter(DataLoader([[0.5, 1.0], [1.5, 2.0]], [0, 1], batch_size=2, shuffle=False)))
    assert xb.dtype == "float32" and yb.dtype == "int64"


# --- map-style datasets (PyTorch's protocol), collate, the gpunn.utils.data names ---------------------


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
