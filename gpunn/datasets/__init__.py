"""Data sets for gpunn: plain NumPy arrays, no dependency on the rest of gpunn.

- load_digits: the 8x8 UCI digits, shipped with the package (no network).
- load_mnist / read_idx: MNIST and Fashion-MNIST from IDX files, optional download.
- train_test_split: a seeded, stratified split.
- xor, moons, spirals, blobs, regression_1d, step_features: synthetic lecture sets.
"""

from .digits import load_digits
from .idx import read_idx
from .mnist import load_mnist
from .split import train_test_split
from .synthetic import blobs, moons, regression_1d, spirals, step_features, xor

__all__ = [
    "load_digits",
    "load_mnist",
    "read_idx",
    "train_test_split",
    "xor",
    "moons",
    "spirals",
    "blobs",
    "regression_1d",
    "step_features",
]
