"""Train/test split that keeps class proportions.

Stratifying matters for small sets like the digits: a plain random 25% can
leave a class noticeably under-represented in the test set, which makes the
test accuracy noisier than it needs to be.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._checks import make_rng


def train_test_split(X, y, test_size=0.25, stratify: bool = True, seed=0):
    """Split ``(X, y)`` into ``(X_train, X_test, y_train, y_test)``.

    ``test_size`` is a fraction in (0, 1), giving round(test_size * n) test
    rows, or an int count in [1, n - 1]. With ``stratify=True`` every class
    is split in proportion (each class's test count is within one of its exact
    share). Rows are picked with numpy.random.default_rng(seed), so the same
    seed gives the same split.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0:
        raise ValueError("X must have at least one dimension (one row per sample)")
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
    n = len(y)
    if len(X) != n:
        raise ValueError(f"X and y must have the same number of rows, got {len(X)} and {n}")
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")
    if not isinstance(stratify, bool):
        raise ValueError(f"stratify must be True or False, got {stratify!r}")
    n_test = _test_count(test_size, n)
    rng = make_rng(seed)

    if stratify:
        test_idx = _stratified_test_indices(y, n_test, rng)
    else:
        test_idx = rng.permutation(n)[:n_test]

    is_test = np.zeros(n, dtype=bool)
    is_test[test_idx] = True
    # Shuffle both parts so neither comes out grouped by class.
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = rng.permutation(np.flatnonzero(is_test))
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]


def _test_count(test_size, n: int) -> int:
    """Turn a fraction or a count into a number of test rows in [1, n - 1]."""
    if isinstance(test_size, bool):
        pass  # fall through to the error below
    elif isinstance(test_size, numbers.Integral):
        if 1 <= test_size <= n - 1:
            return int(test_size)
    elif isinstance(test_size, numbers.Real) and 0.0 < test_size < 1.0:
        n_test = int(round(test_size * n))
        if 1 <= n_test <= n - 1:
            return n_test
        raise ValueError(
            f"test_size={test_size} gives {n_test} test rows out of {n}; "
            f"both parts need at least one row"
        )
    raise ValueError(
        f"test_size must be a float in (0, 1) or an int in [1, {n - 1}], got {test_size!r}"
    )


def _stratified_test_indices(y: np.ndarray, n_test: int, rng) -> np.ndarray:
    """Pick ``n_test`` indices so that each class gives its share, within one."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        rare = classes[counts.argmin()]
        raise ValueError(
            f"stratify=True needs at least 2 samples per class, class {rare!r} has "
            f"{counts.min()}; pass stratify=False for this data"
        )

    # Largest-remainder rounding: floor every class's exact share, then give
    # the leftover rows to the classes with the biggest fractional parts.
    exact = n_test * counts / len(y)
    take = np.floor(exact).astype(np.int64)
    leftover = n_test - take.sum()
    order = np.argsort(-(exact - take), kind="stable")
    take[order[:leftover]] += 1

    picked = []
    for c, k in enumerate(take):
        members = np.flatnonzero(inverse == c)
        picked.append(rng.permutation(members)[:k])
    return np.concatenate(picked)
