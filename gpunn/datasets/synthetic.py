"""Small synthetic sets from the lecture, for seeing what a network learns.

Every function takes a ``seed`` and returns the same arrays for the same
arguments; inputs are float32 (the dtype the networks train in). Class labels
are int64 and as balanced as ``n`` allows.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_int, check_nonneg, check_positive, make_rng


def xor(n: int = 200, noise: float = 0.1, seed=0):
    """Points around the corners of the unit square, labelled by XOR.

    The classic set a single linear layer cannot separate. Row i sits at
    corner i % 4 of (0,0), (0,1), (1,0), (1,1), so ``xor(4, noise=0)`` is
    exactly the truth table, plus Gaussian noise with std ``noise``.
    """
    n = check_int("n", n)
    noise = check_nonneg("noise", noise)
    rng = make_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    which = np.arange(n) % 4
    X = corners[which] + noise * rng.standard_normal((n, 2))
    y = (corners[which, 0] != corners[which, 1]).astype(np.int64)
    return X.astype(np.float32), y


def moons(n: int = 200, noise: float = 0.1, seed=0):
    """Two interleaving half circles, labels 0 (upper) and 1 (lower).

    The lower moon is the upper one turned over and shifted by (1, -0.5), so
    the classes hook into each other and need a curved boundary. Gaussian
    noise with std ``noise`` is added to both coordinates.
    """
    n = check_int("n", n)
    noise = check_nonneg("noise", noise)
    rng = make_rng(seed)
    n_upper = (n + 1) // 2
    n_lower = n // 2
    t_upper = np.linspace(0.0, np.pi, n_upper)
    t_lower = np.linspace(0.0, np.pi, n_lower)
    upper = np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1)
    lower = np.stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)
    X = np.concatenate([upper, lower]) + noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n_upper, np.int64), np.ones(n_lower, np.int64)])
    return X.astype(np.float32), y


def spirals(n: int = 300, classes: int = 3, noise: float = 0.1, seed=0):
    """``classes`` spiral arms winding out from the origin, one per label.

    Arm k starts at angle 2*pi*k/classes and turns by 2*pi*r as its radius r
    grows from 0.1 to 1, so neighbouring arms interleave. Gaussian noise with std
    ``noise`` is added to both coordinates.
    """
    classes = check_int("classes", classes, minimum=2)
    n = check_int("n", n, minimum=classes)
    noise = check_nonneg("noise", noise)
    rng = make_rng(seed)
    # Spread n over the arms as evenly as possible: sizes differ by at most 1.
    y = np.repeat(np.arange(classes, dtype=np.int64),
                  [n // classes + (k < n % classes) for k in range(classes)])
    # Start the arms a little off the origin so they do not share a point.
    radius = np.concatenate([np.linspace(0.1, 1.0, np.sum(y == k)) for k in range(classes)])
    angle = 2.0 * np.pi * (y / classes + radius)
    X = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    X += noise * rng.standard_normal((n, 2))
    return X.astype(np.float32), y


def blobs(n: int = 300, centers: int = 3, std: float = 1.0, seed=0, dim: int = 2):
    """Isotropic Gaussian clusters, one per label.

    The ``centers`` cluster means are drawn uniformly from [-10, 10]^dim, so
    with the default std of 1 most clusters are well apart; raise ``std`` to
    make them overlap. Row i belongs to cluster i % centers.
    """
    n = check_int("n", n)
    centers = check_int("centers", centers)
    std = check_nonneg("std", std)
    dim = check_int("dim", dim)
    rng = make_rng(seed)
    means = rng.uniform(-10.0, 10.0, size=(centers, dim))
    y = np.arange(n, dtype=np.int64) % centers
    X = means[y] + std * rng.standard_normal((n, dim))
    return X.astype(np.float32), y


# The four target functions of PRML (Bishop, 2006), figure 5.3.
REGRESSION_TARGETS = {
    "square": np.square,
    "sin": lambda x: np.sin(np.pi * x),
    "abs": np.abs,
    "step": lambda x: np.where(x >= 0.0, 1.0, 0.0),
}


def regression_1d(name: str, n: int = 50, seed=0, noise: float = 0.0):
    """Samples of a 1-D function for fitting with a small network.

    ``name`` picks the target: "square" (x^2), "sin" (sin(pi x)), "abs" (|x|)
    or "step" (0 for x < 0, 1 for x >= 0). Returns ``(x, t)``, both float32 of
    shape (n, 1), with x uniform in (-1, 1) and t = f(x) plus Gaussian noise
    with std ``noise`` (0 by default, as in the figure).
    """
    if name not in REGRESSION_TARGETS:
        raise ValueError(f"name must be one of {sorted(REGRESSION_TARGETS)}, got {name!r}")
    n = check_int("n", n)
    noise = check_nonneg("noise", noise)
    rng = make_rng(seed)
    # Round x to float32 first so t is exactly f of the x the caller sees.
    x = rng.uniform(-1.0, 1.0, size=(n, 1)).astype(np.float32)
    t = REGRESSION_TARGETS[name](x.astype(np.float64))
    t = t + noise * rng.standard_normal((n, 1))
    return x, t.astype(np.float32)


def step_features(n_train: int = 100, n_test: int = 900, n_features: int = 400,
                  n_nonzero: int = 10, df: float = 3, seed=0):
    """The ridge-regression set from the lecture: sparse steps plus heavy-tailed noise.

    Scalars x are uniform in [0, 1). Feature j is the step 1[x >= s_j] with
    thresholds s_j = j / n_features, so phi(x) @ w is a piecewise constant
    function that jumps by w_j at s_j. The true w has ``n_nonzero`` standard
    normal entries at random positions, the rest zero, and the targets get
    Student-t noise with ``df`` degrees of freedom (outliers that make the
    choice of regulariser matter). Feature matrices are float64 because the
    set is meant for closed-form solvers.

    Returns a dict with "X_train", "y_train", "X_test", "y_test" (features and
    targets), "x_train", "x_test" (the raw scalars), "w_true" and "thresholds".
    """
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    n_features = check_int("n_features", n_features)
    n_nonzero = check_int("n_nonzero", n_nonzero, minimum=0, maximum=n_features)
    df = check_positive("df", df)
    rng = make_rng(seed)

    thresholds = np.arange(n_features) / n_features
    w_true = np.zeros(n_features)
    support = rng.choice(n_features, size=n_nonzero, replace=False)
    w_true[support] = rng.standard_normal(n_nonzero)

    def sample(m):
        x = rng.uniform(0.0, 1.0, size=m)
        X = (x[:, None] >= thresholds[None, :]).astype(np.float64)
        y = X @ w_true + rng.standard_t(df, size=m)
        return x, X, y

    x_train, X_train, y_train = sample(n_train)
    x_test, X_test, y_test = sample(n_test)
    return {
        "X_train": X_train, "y_train": y_train,
        "X_test": X_test, "y_test": y_test,
        "x_train": x_train, "x_test": x_test,
        "w_true": w_true, "thresholds": thresholds,
    }
