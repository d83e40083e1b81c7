"""Whole training steps as one callable, and the float32 matmul precision switch.

`step = compile_step(model, loss_fn, optimizer)` then `loss = step(xb, yb)` runs forward, backward
and the optimizer update. The API is the one a CUDA-graph capture will sit behind (recording the
whole step once and replaying it with few launches); that capture is not written yet, so today
every device runs the step eagerly, and the step says once why. The returned loss is a detached
tensor: reading it (`.item()`) is the only host sync.
"""

import warnings

_PRECISIONS = ("highest", "high")
_matmul_precision = "highest"


class CompileWarning(UserWarning):
    """A compiled step fell back to eager execution (the message says why)."""


def set_float32_matmul_precision(precision):
    """"highest" (default, as in PyTorch) keeps full float32 products; "high" will let CUDA devices
    use TF32 tensor cores for float32 matrix products. Recorded only for now: no backend reads it
    yet, and it never affects the CPU."""
    global _matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"float32 matmul precision must be one of {_PRECISIONS}, not {precision!r}")
    _matmul_precision = precision


def get_float32_matmul_precision():
    return _matmul_precision


class CompiledStep:
    """`loss = step(xb, yb)`: one training step; `mode` says how it runs, `reason` why."""

    def __init__(self, model, loss_fn, optimizer, example_batch=None):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        params = list(model.parameters())
        device = params[0].device if params else None
        self.mode, self.reason = "eager", _why_eager(device)
        self._said = False

    def __call__(self, xb, yb):
        if not self._said and self.reason:
            self._said = True
            warnings.warn(f"compile_step runs eagerly: {self.reason}", CompileWarning, stacklevel=2)
        loss = self.loss_fn(self.model(xb), yb)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def _why_eager(device):
    if device is None:
        return "the model has no parameters"
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device and the model is on {device}"
    return "CUDA graph capture is not available in this version; each op launches on its own"


def compile_step(model, loss_fn, optimizer, example_batch=None):
    """A training step for `model`, `loss_fn(output, target)` and `optimizer` (see module doc)."""
    return CompiledStep(model, loss_fn, optimizer, example_batch)
