"""Hyper-parameter checks shared by the optimizers: each error names the argument and the range."""

import math


def number(owner, name, value, low=0.0, high=math.inf, high_open=False):
    """`value` as a float within [low, high] (or [low, high)), else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if not (low <= value and (value < high if high_open else value <= high)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{owner}: invalid {name} {value}: it must lie in [{low}, {high}{bracket}")
    return value
