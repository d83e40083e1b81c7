"""MNIST and Fashion-MNIST from their IDX files, with an optional download.

Both sets use the same four file names, so ``root`` is the folder that holds
the files of one kind (for example ``data/mnist`` and ``data/fashion``).
Files may be gzip-compressed (as published) or already unpacked.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.request
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gpunn._files import atomic_write

from .idx import read_idx_with_magic

# Mirrors are tried in order. The Fashion-MNIST bucket serves plain HTTP only;
# the MD5 check below is what guards against a damaged or altered download.
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    "fashion": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# The published MD5 sums of the gzip files (the ones torchvision also checks).
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# (images, labels) base names for the training and the test split.
SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IMAGE_MAGIC = 0x0803  # 2051: uint8, 3 dims (count, rows, cols)
LABEL_MAGIC = 0x0801  # 2049: uint8, 1 dim (count)
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10


def load_mnist(root, kind: str = "mnist", train: bool = True, download: bool = False):
    """Return MNIST or Fashion-MNIST as ``(X, y)``.

    X is float32 of shape (n, 784) with pixels scaled to [0, 1]; y is int64
    with labels 0..9. ``train`` picks the 60000-image training split or the
    10000-image test split. With ``download=True`` missing files are fetched
    into ``root`` first; files already there are used as they are.
    """
    if kind not in MIRRORS:
        raise ValueError(f"kind must be one of {sorted(MIRRORS)}, got {kind!r}")
    if not isinstance(train, bool):
        raise ValueError(f"train must be True or False, got {train!r}")
    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False, got {download!r}")
    if not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root must be a path (str or os.PathLike), got {root!r}")
    root = Path(root).expanduser()

    paths = []
    for name in SPLIT_FILES[train]:
        path = _find(root, name)
        if path is None and download:
            path = _download(root, kind, name + ".gz")
        if path is None:
            raise FileNotFoundError(
                f"{kind} file {name}.gz (or unpacked {name}) not found in {root}. "
                f"Fetch it with download=True (on the command line: --download), "
                f"or point root= (on the command line: --data-root) at the "
                f"folder that holds the {kind} IDX files."
            )
        paths.append(path)
    image_path, label_path = paths

    images = _read_checked(image_path, IMAGE_MAGIC, "images")
    labels = _read_checked(label_path, LABEL_MAGIC, "labels")
    if images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"count mismatch: {image_path} has {len(images)} images but "
            f"{label_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= N_CLASSES:
        raise ValueError(f"{label_path}: labels outside 0..{N_CLASSES - 1}")

    X = images.reshape(len(images), -1).astype(np.float32)
    X /= 255.0
    y = labels.astype(np.int64)
    return X, y


def _find(root: Path, name: str) -> Path | None:
    """Return the gzip or the unpacked file for ``name``, whichever exists."""
    for candidate in (root / (name + ".gz"), root / name):
        if candidate.is_file():
            return candidate
    return None


def _read_checked(path: Path, magic: int, what: str) -> np.ndarray:
    found, array = read_idx_with_magic(path)
    if found != magic:
        raise ValueError(
            f"{path}: bad magic number {found}, expected {magic} for an MNIST {what} file"
        )
    return array


def _fetch(url: str, out: BinaryIO) -> None:
    """Copy the body at ``url`` into ``out``. Tests replace this function."""
    with urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, out)


def _md5(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _MirrorFailed(ValueError):
    """A mirror that could not be read (network or HTTP error), told apart from a failed write."""


def _download(root: Path, kind: str, filename: str) -> Path:
    """Fetch ``filename`` from the first mirror that gives the right MD5.

    The body goes to a temporary file next to the target and is renamed into
    place only once verified, so an interrupted or bad download never leaves a
    file that a later run would mistake for a good one.
    """
    root.mkdir(parents=True, exist_ok=True)
    target = root / filename
    expected = MD5[kind][filename]
    failures = []
    for base in MIRRORS[kind]:
        url = base + filename
        try:
            with atomic_write(target) as out:
                try:
                    _fetch(url, out)
                except (OSError, http.client.HTTPException) as err:  # the mirror failed, not the disk:
                    raise _MirrorFailed(err) from err  # (atomic_write would word an OSError as a write error)
                out.flush()
                got = _md5(out.name)
                if got != expected:
                    raise ValueError(f"MD5 {got} does not match the published {expected}")
            return target
        except (OSError, ValueError) as err:
            failures.append(f"{url}: {err}")
    raise OSError(f"could not download {kind} {filename}: " + "; ".join(failures))
