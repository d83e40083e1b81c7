"""Argument checks shared by the data set functions.

Each helper raises a ValueError that names the argument and what it accepts,
so a bad call fails at the boundary instead of deep inside NumPy.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int in [minimum, maximum], else raise ValueError."""
    # bool is an int subclass; n=True is almost surely a mistake.
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be an integer >= {minimum}{upper}, got {value!r}")
    return value


def check_nonneg(name: str, value) -> float:
    """Return ``value`` as a finite float >= 0, else raise ValueError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and value >= 0.0
    if not ok:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_positive(name: str, value) -> float:
    """Return ``value`` as a finite float > 0, else raise ValueError."""
    value = check_nonneg(name, value)
    if value == 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def make_rng(seed) -> np.random.Generator:
    """Turn ``seed`` into a Generator; the same int always gives the same data."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise ValueError(
        f"seed must be an integer >= 0, None or a numpy Generator, got {seed!r}"
    )
