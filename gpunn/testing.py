"""Checks for users and for gpunn's own tests: gradients against finite differences."""

import numpy as np

from gpunn.autograd import no_grad
from gpunn.tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare backprop gradients of `fn(*inputs)` with central differences, in float64.

    `inputs` are tensors (those with requires_grad are checked); `fn` returns a tensor. The
    output is reduced with fixed random weights so every output entry matters. Returns True, or
    raises AssertionError naming the input and its worst entry.
    """
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for t in inputs:
        if isinstance(t, Tensor) and t.requires_grad and t.dtype.name != "float64":
            raise TypeError(f"gradcheck needs float64 inputs for reliable differences, got {t.dtype}")
    out = fn(*inputs)
    weights = np.random.default_rng(1234).uniform(0.5, 1.5, size=out.shape)
    w = Tensor._wrap(out.device.put(weights.astype(np.float64)), out.device)

    def objective():
        with no_grad():
            return float((fn(*inputs) * w).sum().item())

    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    (out * w).sum().backward()
    for k, t in enumerate(inputs):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        numeric = np.zeros(t.shape)
        original = t._array
        host = t.numpy()
        for idx in np.ndindex(*t.shape):
            values = []
            for step in (eps, -eps):
                moved = host.copy()
                moved[idx] += step
                t._array = t.device.put(moved)
                values.append(objective())
            numeric[idx] = (values[0] - values[1]) / (2 * eps)
        t._array = original
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        error = np.where(np.isnan(analytic) & np.isnan(numeric), 0.0, error)
        error = np.where(np.isnan(error), np.inf, error)  # NaN on one side only is a failure, not a pass
        if error.size and error.max() > 0:
            worst = np.unravel_index(np.argmax(error), error.shape)
            raise AssertionError(
                f"gradcheck: input {k} (shape {t.shape}) at index {tuple(int(i) for i in worst)}: "
                f"backprop {analytic[worst]:.8g} vs finite differences {numeric[worst]:.8g}")
    return True
