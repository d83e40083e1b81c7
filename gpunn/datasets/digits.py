"""The 8x8 handwritten digits that ship inside the package.

They are the default training set: small enough to vendor (57 KB), so a fresh
install can train and test with no network. Licence: see data/README.md.
"""

from __future__ import annotations

import gzip
import io
from importlib import resources

import numpy as np

N_SAMPLES = 1797
N_PIXELS = 64
MAX_PIXEL = 16


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return the UCI digits as ``(X, y)``.

    X is float32 of shape (1797, 64), pixel counts divided by 16 so they lie in
    [0, 1]; y is int64 of shape (1797,) with labels 0..9. The file is read
    through importlib.resources so that it also works from an installed wheel.
    """
    source = resources.files(__package__).joinpath("data").joinpath("digits.csv.gz")
    raw = source.read_bytes()
    text = gzip.decompress(raw)
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)

    # The file is vendored, so these only fail if the package was damaged.
    if table.shape != (N_SAMPLES, N_PIXELS + 1):
        raise ValueError(
            f"digits.csv.gz: expected shape {(N_SAMPLES, N_PIXELS + 1)}, got {table.shape}"
        )
    pixels, labels = table[:, :N_PIXELS], table[:, N_PIXELS]
    if pixels.min() < 0 or pixels.max() > MAX_PIXEL:
        raise ValueError(f"digits.csv.gz: pixel values outside 0..{MAX_PIXEL}")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError("digits.csv.gz: labels outside 0..9")

    X = (pixels / MAX_PIXEL).astype(np.float32)
    y = labels.astype(np.int64)
    return X, y
