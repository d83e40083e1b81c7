"""Tests for gpunn.datasets. No test touches the network: downloads go
through a monkeypatched fetch that copies local files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import gpunn.datasets as ds
from gpunn.datasets import mnist as mnist_module

PACKAGE_DIR = Path(ds.__file__).parent
VENDORED = PACKAGE_DIR / "data" / "digits.csv.gz"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "digits.csv.gz"


# ---------------------------------------------------------------- digits


def test_load_digits_shape_dtype_range(monkeypatch, tmp_path):
    # Run from elsewhere: the loader must not depend on the working directory.
    monkeypatch.chdir(tmp_path)
    X, y = ds.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 1797
    assert np.all(np.abs(counts - 1797 / 10) <= 10), counts


def test_load_digits_matches_csv_read_independently():
    table = np.loadtxt(VENDORED, delimiter=",")  # loadtxt gunzips .gz itself
    X, y = ds.load_digits()
    np.testing.assert_array_equal(X * 16, table[:, :64])
    np.testing.assert_array_equal(y, table[:, 64])
    # Every pixel is a multiple of 1/16, as the pixel counts are integers.
    np.testing.assert_array_equal(X * 16, np.round(X * 16))


def test_load_digits_returns_fresh_arrays():
    X1, y1 = ds.load_digits()
    X1[:] = -1
    y1[:] = -1
    X2, y2 = ds.load_digits()
    assert X2.min() == 0.0 and y2.min() == 0


@pytest.mark.skipif(not SHARED.exists(), reason="no shared/ data next to this checkout")
def test_vendored_digits_byte_identical_to_shared_copy():
    assert VENDORED.read_bytes() == SHARED.read_bytes()


def test_vendored_data_carries_licence_note():
    note = (PACKAGE_DIR / "data" / "README.md").read_text()
    for phrase in ("CC BY 4.0", "Alpaydin", "Kaynak", "1998", "1797"):
        assert phrase in note


def test_package_does_not_import_the_rest_of_gpunn():
    for source in PACKAGE_DIR.glob("*.py"):
        text = source.read_text()
        assert "from .." not in text and "import gpunn" not in text, source.name


# ---------------------------------------------------------------- IDX

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
         np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array, code=None):
    """Encode ``array`` as IDX: magic, big-endian dims, big-endian data."""
    array = np.asarray(array)
    if code is None:
        code = CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, payload, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", list(CODES))
def test_read_idx_roundtrip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(array), gz)
    got = ds.read_idx(path)
    assert got.shape == (3, 4, 5)
    assert got.dtype == np.dtype(dtype)  # same kind, native byte order
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    path = write(tmp_path / "labels-no-suffix", idx_bytes(array), gz=True)
    np.testing.assert_array_equal(ds.read_idx(path), array)


def test_read_idx_bad_magic(tmp_path):
    payload = bytearray(idx_bytes(np.zeros(4, np.uint8)))
    payload[0] = 0x12
    path = write(tmp_path / "bad.idx", bytes(payload))
    with pytest.raises(ValueError, match="bad magic") as err:
        ds.read_idx(path)
    assert "bad.idx" in str(err.value)


def test_read_idx_unknown_dtype_code(tmp_path):
    path = write(tmp_path / "code.idx", idx_bytes(np.zeros(4, np.uint8), code=0x0A))
    with pytest.raises(ValueError, match="bad magic"):
        ds.read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_truncated_data(tmp_path, gz):
    payload = idx_bytes(np.zeros((2, 3), np.int32))[:-1]
    path = write(tmp_path / "short.idx", payload, gz)
    with pytest.raises(ValueError, match="truncated") as err:
        ds.read_idx(path)
    assert "short.idx" in str(err.value)


def test_read_idx_truncated_header(tmp_path):
    payload = idx_bytes(np.zeros((2, 3), np.uint8))[:9]  # magic + 1 of 2 dims
    with pytest.raises(ValueError, match="truncated header"):
        ds.read_idx(write(tmp_path / "h.idx", payload))
    with pytest.raises(ValueError, match="truncated"):
        ds.read_idx(write(tmp_path / "tiny.idx", b"\x00\x00"))


def test_read_idx_extra_bytes_is_size_mismatch(tmp_path):
    payload = idx_bytes(np.zeros(4, np.uint8)) + b"\x00"
    with pytest.raises(ValueError, match="size mismatch"):
        ds.read_idx(write(tmp_path / "long.idx", payload))


def test_read_idx_corrupt_gzip(tmp_path):
    payload = gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-8]
    path = write(tmp_path / "cut.idx.gz", payload)
    with pytest.raises(ValueError, match="cut.idx.gz"):
        ds.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.idx"):
        ds.read_idx(tmp_path / "nothing.idx")


# ---------------------------------------------------------------- MNIST


def fake_split(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


@pytest.fixture
def mnist_dir(tmp_path):
    """Train split gzip-compressed, test split unpacked: both must load."""
    root = tmp_path / "mnist"
    root.mkdir()
    train, test = fake_split(7, seed=1), fake_split(3, seed=2)
    write(root / "train-images-idx3-ubyte.gz", idx_bytes(train[0]), gz=True)
    write(root / "train-labels-idx1-ubyte.gz", idx_bytes(train[1]), gz=True)
    write(root / "t10k-images-idx3-ubyte", idx_bytes(test[0]))
    write(root / "t10k-labels-idx1-ubyte", idx_bytes(test[1]))
    return root, train, test


@pytest.mark.parametrize("train", [True, False])
def test_load_mnist_gzip_and_raw(mnist_dir, train):
    root, train_split, test_split = mnist_dir
    images, labels = train_split if train else test_split
    X, y = ds.load_mnist(root, train=train)
    assert X.dtype == np.float32 and X.shape == (len(images), 784)
    assert y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_allclose(X, images.reshape(len(images), 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_accepts_str_root_and_fashion_kind(mnist_dir):
    root, train_split, _ = mnist_dir
    X, y = ds.load_mnist(str(root), kind="fashion")
    np.testing.assert_array_equal(y, train_split[1])


def test_load_mnist_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ds.load_mnist(tmp_path / "empty", train=False)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte" in message
    assert "download=True" in message and "--data-root" in message
    # both audiences: the Python argument and the command-line option, each for both fixes
    assert "root=" in message and "--download" in message


def test_load_mnist_count_mismatch(mnist_dir):
    root, _, _ = mnist_dir
    write(root / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match="count mismatch"):
        ds.load_mnist(root, train=False)


def test_load_mnist_wrong_magic(mnist_dir):
    root, _, _ = mnist_dir
    # A valid IDX file, but a label file where the images should be.
    write(root / "t10k-images-idx3-ubyte", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="2051") as err:
        ds.load_mnist(root, train=False)
    assert "t10k-images-idx3-ubyte" in str(err.value)


def test_load_mnist_wrong_image_size(mnist_dir):
    root, _, _ = mnist_dir
    write(root / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((3, 27, 28), np.uint8)))
    with pytest.raises(ValueError, match="27x28"):
        ds.load_mnist(root, train=False)


def test_load_mnist_labels_out_of_range(mnist_dir):
    root, _, _ = mnist_dir
    write(root / "t10k-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 10], np.uint8)))
    with pytest.raises(ValueError, match="labels"):
        ds.load_mnist(root, train=False)


def test_load_mnist_truncated_file(mnist_dir):
    root, _, _ = mnist_dir
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        ds.load_mnist(root, train=False)


@pytest.mark.parametrize("kwargs, name", [
    ({"kind": "kmnist"}, "kind"),
    ({"train": "yes"}, "train"),
    ({"download": 1}, "download"),
])
def test_load_mnist_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        ds.load_mnist(tmp_path, **kwargs)


def test_published_md5_table_is_complete():
    names = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    for kind in ("mnist", "fashion"):
        assert set(mnist_module.MD5[kind]) == names
        for digest in mnist_module.MD5[kind].values():
            assert len(digest) == 32 and int(digest, 16) >= 0
    assert mnist_module.MD5["mnist"] != mnist_module.MD5["fashion"]


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local stand-in for the download mirror; records the URLs asked for."""
    source = tmp_path / "mirror"
    source.mkdir()
    images, labels = fake_split(4, seed=3)
    write(source / "t10k-images-idx3-ubyte.gz", idx_bytes(images), gz=True)
    write(source / "t10k-labels-idx1-ubyte.gz", idx_bytes(labels), gz=True)
    requested = []

    def fake_fetch(url, out):
        requested.append(url)
        with open(source / url.rsplit("/", 1)[1], "rb") as f:
            shutil.copyfileobj(f, out)

    monkeypatch.setattr(mnist_module, "_fetch", fake_fetch)
    return source, images, labels, requested


def test_download_fetches_verifies_and_loads(tmp_path, monkeypatch, mirror):
    source, images, labels, requested = mirror
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        digest = hashlib.md5((source / name).read_bytes()).hexdigest()
        monkeypatch.setitem(mnist_module.MD5["mnist"], name, digest)
    root = tmp_path / "new" / "mnist"

    X, y = ds.load_mnist(root, train=False, download=True)

    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(X * 255.0, images.reshape(4, 784), atol=1e-4)
    assert len(requested) == 2
    assert all(url.startswith(mnist_module.MIRRORS["mnist"][0]) for url in requested)
    assert sorted(p.name for p in root.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    # A second call finds the files and does not fetch again.
    ds.load_mnist(root, train=False, download=True)
    assert len(requested) == 2


def test_download_rejects_bad_md5_and_leaves_nothing(tmp_path, mirror):
    # The real published MD5s cannot match the fake files.
    root = tmp_path / "mnist"
    with pytest.raises(OSError, match="MD5"):
        ds.load_mnist(root, train=False, download=True)
    assert list(root.iterdir()) == []  # no partial or unverified file left


def test_download_reports_a_failed_mirror_as_such_not_as_a_write_error(tmp_path, monkeypatch):
    def unreachable(url, out):
        out.write(b"half a file")
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(mnist_module, "_fetch", unreachable)
    root = tmp_path / "mnist"
    with pytest.raises(OSError, match="could not download") as info:
        ds.load_mnist(root, train=False, download=True)
    assert "Connection reset by peer" in str(info.value) and "cannot write" not in str(info.value)
    assert list(root.iterdir()) == []


# ---------------------------------------------------------------- split


def test_split_stratified_proportions():
    X, y = ds.load_digits()
    X_tr, X_te, y_tr, y_te = ds.train_test_split(X, y, test_size=0.25, seed=0)
    assert len(y_te) == round(0.25 * len(y))
    assert len(y_tr) + len(y_te) == len(y)
    counts = np.bincount(y, minlength=10)
    test_counts = np.bincount(y_te, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * counts) <= 1), test_counts


def test_split_int_test_size_and_unbalanced_classes():
    y = np.array([0] * 90 + [1] * 10)
    X = np.arange(100)
    _, X_te, _, y_te = ds.train_test_split(X, y, test_size=20, seed=5)
    assert len(y_te) == 20
    assert np.count_nonzero(y_te == 0) == 18 and np.count_nonzero(y_te == 1) == 2


def test_split_disjoint_and_complete_and_rows_stay_paired():
    n = 103
    ids = np.arange(n)
    X = np.stack([ids, ids * 10], axis=1)
    y = ids % 4
    X_tr, X_te, y_tr, y_te = ds.train_test_split(X, y, test_size=0.3, seed=1)
    train_ids, test_ids = X_tr[:, 0], X_te[:, 0]
    assert np.intersect1d(train_ids, test_ids).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, test_ids])), ids)
    np.testing.assert_array_equal(y_tr, train_ids % 4)
    np.testing.assert_array_equal(y_te, test_ids % 4)
    np.testing.assert_array_equal(X_te[:, 1], test_ids * 10)


@pytest.mark.parametrize("stratify", [True, False])
def test_split_deterministic_for_a_seed(stratify):
    X = np.arange(200).reshape(100, 2)
    y = np.arange(100) % 3
    a = ds.train_test_split(X, y, stratify=stratify, seed=7)
    b = ds.train_test_split(X, y, stratify=stratify, seed=7)
    c = ds.train_test_split(X, y, stratify=stratify, seed=8)
    for part_a, part_b in zip(a, b):
        np.testing.assert_array_equal(part_a, part_b)
    assert not np.array_equal(a[1], c[1])


def test_split_without_stratify_has_the_requested_size():
    X = np.arange(50)
    y = np.zeros(50, dtype=np.int64)
    X_tr, X_te, _, _ = ds.train_test_split(X, y, test_size=0.1, stratify=False)
    assert len(X_te) == 5 and len(X_tr) == 45
    assert len(set(X_tr) | set(X_te)) == 50


@pytest.mark.parametrize("test_size", [0, 0.0, 1.0, 1.5, -0.2, 10, True, "0.2"])
def test_split_rejects_bad_test_size(test_size):
    X, y = np.arange(10), np.arange(10) % 2
    with pytest.raises(ValueError, match="test_size"):
        ds.train_test_split(X, y, test_size=test_size)


def test_split_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same number of rows"):
        ds.train_test_split(np.arange(5), np.arange(4))
    with pytest.raises(ValueError, match="one-dimensional"):
        ds.train_test_split(np.arange(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="per class"):
        ds.train_test_split(np.arange(5), np.array([0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="seed"):
        ds.train_test_split(np.arange(4), np.array([0, 0, 1, 1]), seed=-1)


# ---------------------------------------------------------------- synthetic

CLASSIFICATION = {
    "xor": (ds.xor, {}, 2, 200),
    "moons": (ds.moons, {}, 2, 200),
    "spirals": (ds.spirals, {}, 3, 300),
    "spirals5": (ds.spirals, {"classes": 5, "n": 101}, 5, 101),
    "blobs": (ds.blobs, {}, 3, 300),
    "blobs4d": (ds.blobs, {"centers": 4, "dim": 4, "n": 99}, 4, 99),
}


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_classification_sets(name):
    make, kwargs, n_classes, n = CLASSIFICATION[name]
    X, y = make(**kwargs, seed=0)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.shape[0] == n and y.shape == (n,)
    counts = np.bincount(y)
    assert len(counts) == n_classes and counts.max() - counts.min() <= 1

    X_same, y_same = make(**kwargs, seed=0)
    np.testing.assert_array_equal(X, X_same)
    np.testing.assert_array_equal(y, y_same)
    X_other, _ = make(**kwargs, seed=1)
    assert not np.allclose(X, X_other)


def test_xor_truth_table():
    X, y = ds.xor(n=4, noise=0.0)
    np.testing.assert_array_equal(X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])


def test_xor_labels_follow_the_corners():
    X, y = ds.xor(n=200, noise=0.0)
    np.testing.assert_array_equal(y, X[:, 0].astype(int) ^ X[:, 1].astype(int))
    X_noisy, y_noisy = ds.xor(n=200, noise=0.1)
    np.testing.assert_array_equal(y_noisy, y)
    assert 0.05 < np.std(X_noisy - X) < 0.15


def test_moons_without_noise_lie_on_two_unit_circles():
    X, y = ds.moons(n=100, noise=0.0)
    upper, lower = X[y == 0].astype(np.float64), X[y == 1].astype(np.float64)
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-6)
    assert upper[:, 1].min() >= -1e-6  # the upper half circle
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, atol=1e-6)
    assert lower[:, 1].max() <= 0.5 + 1e-6  # the lower half circle


def test_spirals_without_noise_wind_outwards():
    X, y = ds.spirals(n=90, classes=3, noise=0.0)
    radius = np.hypot(X[:, 0], X[:, 1])
    assert radius.min() > 0.05 and radius.max() <= 1.0 + 1e-6
    for k in range(3):
        assert np.all(np.diff(radius[y == k]) > 0)
    # The arms start at different angles, so their first points differ.
    starts = np.array([X[y == k][0] for k in range(3)])
    assert np.min(np.abs(starts[:, None] - starts[None]).sum(-1) + np.eye(3)) > 0.1


def test_blobs_std_zero_puts_each_class_on_one_point():
    X, y = ds.blobs(n=30, centers=3, std=0.0, dim=3)
    assert X.shape == (30, 3)
    for k in range(3):
        assert np.ptp(X[y == k], axis=0).max() == 0.0
    assert len(np.unique(X, axis=0)) == 3


FORMULAS = {
    "square": lambda x: x ** 2,
    "sin": lambda x: np.sin(np.pi * x),
    "abs": lambda x: np.abs(x),
    "step": lambda x: (x >= 0).astype(np.float64),
}


@pytest.mark.parametrize("name", list(FORMULAS))
def test_regression_1d_matches_formula(name):
    x, t = ds.regression_1d(name, n=50, seed=3)
    assert x.shape == (50, 1) and t.shape == (50, 1)
    assert x.dtype == np.float32 and t.dtype == np.float32
    assert np.all((x > -1) & (x < 1))
    np.testing.assert_allclose(t, FORMULAS[name](x.astype(np.float64)), atol=1e-6)

    x2, t2 = ds.regression_1d(name, n=50, seed=3)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(x, ds.regression_1d(name, n=50, seed=4)[0])


def test_regression_1d_noise_has_the_requested_std():
    x, t = ds.regression_1d("sin", n=5000, seed=0, noise=0.2)
    residual = t[:, 0] - np.sin(np.pi * x[:, 0].astype(np.float64))
    assert 0.18 < residual.std() < 0.22
    assert abs(residual.mean()) < 0.02


def test_regression_1d_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        ds.regression_1d("cube")
    for name in FORMULAS:
        assert name in str(err.value)


def test_step_features_shapes_and_features():
    d = ds.step_features(n_train=30, n_test=70, n_features=50, n_nonzero=5, seed=2)
    assert d["X_train"].shape == (30, 50) and d["X_test"].shape == (70, 50)
    assert d["y_train"].shape == (30,) and d["y_test"].shape == (70,)
    assert d["x_train"].shape == (30,) and d["x_test"].shape == (70,)
    assert d["w_true"].shape == (50,) and np.count_nonzero(d["w_true"]) == 5
    assert d["X_train"].dtype == np.float64
    np.testing.assert_allclose(d["thresholds"], np.arange(50) / 50)
    for part in ("train", "test"):
        x = d["x_" + part]
        assert np.all((x >= 0) & (x < 1))
        expected = (x[:, None] >= d["thresholds"][None, :]).astype(np.float64)
        np.testing.assert_array_equal(d["X_" + part], expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_features_targets_are_steps_plus_t_noise(seed):
    d = ds.step_features(seed=seed)
    for part in ("train", "test"):
        residual = d["y_" + part] - d["X_" + part] @ d["w_true"]
        spread = np.median(np.abs(d["y_" + part] - np.median(d["y_" + part])))
        assert np.median(np.abs(residual)) < spread  # w_true explains part of y
    # Student t with 3 dof: median |noise| is about 0.765.
    residual = d["y_test"] - d["X_test"] @ d["w_true"]
    assert 0.6 < np.median(np.abs(residual)) < 0.95
    assert abs(np.median(residual)) < 0.15


def test_step_features_deterministic_for_a_seed():
    a, b, c = ds.step_features(seed=4), ds.step_features(seed=4), ds.step_features(seed=5)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["y_train"], c["y_train"])


@pytest.mark.parametrize("call, name", [
    (lambda: ds.xor(n=0), "n"),
    (lambda: ds.xor(noise=-0.1), "noise"),
    (lambda: ds.xor(n=2.5), "n"),
    (lambda: ds.moons(noise=float("nan")), "noise"),
    (lambda: ds.moons(n=True), "n"),
    (lambda: ds.spirals(classes=1), "classes"),
    (lambda: ds.spirals(n=2, classes=3), "n"),
    (lambda: ds.blobs(centers=0), "centers"),
    (lambda: ds.blobs(std=-1), "std"),
    (lambda: ds.blobs(dim=0), "dim"),
    (lambda: ds.blobs(seed="a"), "seed"),
    (lambda: ds.regression_1d("sin", n=0), "n"),
    (lambda: ds.regression_1d("sin", noise=-1), "noise"),
    (lambda: ds.step_features(n_train=0), "n_train"),
    (lambda: ds.step_features(n_test=0), "n_test"),
    (lambda: ds.step_features(n_features=0), "n_features"),
    (lambda: ds.step_features(n_features=5, n_nonzero=6), "n_nonzero"),
    (lambda: ds.step_features(df=0), "df"),
])
def test_synthetic_argument_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call()
