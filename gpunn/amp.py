"""Mixed precision with PyTorch's API (torch.amp): `autocast` (gpunn.mixed_precision, re-exported
here) and `GradScaler`.

`GradScaler` multiplies the loss by a scale so that half-precision gradients do not underflow,
divides the gradients back before the optimizer step, skips steps whose gradients are not finite
and adapts the scale, as torch.amp.GradScaler does. The scale, its growth count and the inf check
stay on the device; only `step()` outside a recorded step asks the host whether to skip, as
PyTorch's does. Inside `compile_step`'s CUDA graph the skip happens on the device instead.
"""

from gpunn.dtypes import float16, float32, float64
from gpunn.mixed_precision import (autocast, cast_inputs, get_autocast_dtype,  # noqa: F401 (torch.amp's names)
                                     is_autocast_enabled, runs_in_float32, state)


def _full(dev, value, dtype):
    """A 0-d array of `value` on `dev` (CuPy takes its device from the context, strict from device=)."""
    if dev.ctx is None:
        return dev.xp.full((), value, dtype=dev.dtype(dtype), device=dev.native)
    with dev.ctx:
        return dev.xp.full((), value, dtype=dev.dtype(dtype))


# --- GradScaler ----------------------------------------------------------------------------------

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """Dynamic loss scaling, as torch.amp.GradScaler:

        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)            # optional: before clip_grad_norm_
        scaler.step(optimizer)                # skipped when a gradient is inf or NaN
        scaler.update()                       # scale * backoff_factor after a skip, * growth_factor
                                              # after growth_interval finite steps in a row

    Works with every optimizer, fused or not. `device` is accepted for PyTorch code: the scale
    lives on the device of the first loss it scales."""

    def __init__(self, device=None, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must lie in (0, 1), got {backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval > 0):
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self._enabled = bool(enabled)
        self._init_scale, self._growth_factor = float(init_scale), float(growth_factor)
        self._backoff_factor, self._growth_interval = float(backoff_factor), growth_interval
        self._init_growth_tracker = 0
        self._device = self._scale = self._growth_tracker = None  # made by the first scale()
        self._per_optimizer = {}  # id(optimizer) -> {"stage": ..., "found_inf": 0-d array or None}

    def is_enabled(self):
        return self._enabled

    def _lazy_init(self, dev):
        self._scale = _full(dev, self._init_scale, float32)
        self._growth_tracker = _full(dev, self._init_growth_tracker, "int32")
        self._device = dev

    def scale(self, outputs):
        """outputs * scale: a tensor, or tensors in (nested) lists and tuples."""
        if not self._enabled:
            return outputs
        from gpunn.tensor import Tensor

        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._lazy_init(outputs.device)
            return outputs * Tensor._wrap(outputs.device.put(self._scale), outputs.device)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: expected a Tensor or tensors in lists or tuples, got "
                        f"{type(outputs).__name__}")

    def _stage(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    def _scale_made(self, what):
        if self._scale is None:
            raise RuntimeError(f"GradScaler.{what}: no loss was scaled yet; call scaler.scale(loss).backward() "
                               "first in each iteration")

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by the scale in place, noting whether any is inf or NaN.
        Call it at most once per step, before clipping (clip_grad_norm_) the true gradients."""
        if not self._enabled:
            return
        stage = self._stage(optimizer)
        if stage["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if stage["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        self._scale_made("unscale_")
        stage["found_inf"] = self._unscale_grads(optimizer)
        stage["stage"] = _UNSCALED

    def _unscale_grads(self, optimizer):
        """One pass over the gradients: found_inf (0-d float32 on the scale's device, 1 if any is
        not finite) and the gradients times 1/scale."""
        from gpunn.optim.flat import covering
        from gpunn.tensor import Tensor

        dev, xp = self._device, self._device.xp
        with dev.scope:
            # 1/scale in float64, then float32, as PyTorch does
            inv = xp.astype(1.0 / xp.astype(self._scale, dev.dtype(float64)), dev.dtype(float32))
        found = _full(dev, 0.0, float32)
        whole, single = [], []  # flat groups whose buffer holds every gradient; other parameters with one
        for index, group in enumerate(optimizer.param_groups):
            flat = getattr(optimizer, "_flat", {}).get(index)
            if flat is not None and covering(flat.params) is flat:
                whole.append(flat)  # every gradient is a view of flat.grad: one pass over the buffer
            for p in group["params"]:
                if p.grad is None or (flat is not None and flat in whole and flat.holds(p)):
                    continue
                if p.grad.dtype == float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                single.append(p)
        arrays = [(flat.grad, flat.device) for flat in whole] + [(p.grad._array, p.device) for p in single]
        for array, where in arrays:
            with where.scope:
                bad = where.xp.any(~where.xp.isfinite(array))
            with dev.scope:
                found = xp.maximum(found, xp.astype(dev.put(bad), found.dtype))
        for flat in whole:
            with flat.device.scope:
                flat.grad *= flat.device.xp.astype(flat.device.put(inv), flat.grad.dtype)
        # a new gradient tensor each: a gradient may be a read-only broadcast, or one array shared
        # by several parameters (the gradients of a + b), which an in-place write would divide twice
        for p in single:
            g = p.grad._array
            with p.device.scope:
                p.grad = Tensor._wrap(g * p.device.xp.astype(p.device.put(inv), g.dtype), p.device)
        return found

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step(*args, **kwargs) unless a gradient was inf or NaN (unscaling first if
        unscale_ was not called); returns what optimizer.step returned, None when skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        stage = self._stage(optimizer)
        if stage["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if stage["stage"] == _READY:
            self.unscale_(optimizer)
        found = stage["found_inf"]
        from gpunn.autograd import mode

        result = None
        if mode.recording:  # inside a CUDA graph: no host sync; the step is undone on the device
            self._step_where_finite(optimizer, found)
        elif not float(self._device.backend.to_host(found)):
            result = optimizer.step(*args, **kwargs)
        stage["stage"] = _STEPPED
        return result

    def _step_where_finite(self, optimizer, found):
        """Run the (fused) step, then put back every flat buffer it wrote where found_inf is set."""
        dev, xp = self._device, self._device.xp
        flats = [flat for flat in optimizer._flat_groups() or () if flat is not None]
        with dev.scope:
            kept = [(a, xp.asarray(a, copy=True)) for flat in flats for a in (flat.param, *flat.buffers.values())]
            skip = found > 0
        optimizer.step()
        with dev.scope:
            for array, before in kept:
                array[...] = xp.where(skip, before, array)

    def update(self, new_scale=None):
        """After the step: set the scale to `new_scale` (a float or a 1-element tensor), or grow or
        back it off as the inf checks of this iteration found. Runs on the device."""
        if not self._enabled:
            return
        self._scale_made("update")
        dev, xp = self._device, self._device.xp
        if new_scale is not None:
            from gpunn.tensor import Tensor

            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise ValueError("GradScaler.update: new_scale must be a float or a 1-element tensor that does "
                                     "not require grad")
                value = xp.reshape(xp.astype(dev.put(new_scale._array), self._scale.dtype), ())
            else:
                value = float(new_scale)
            with dev.scope:
                self._scale[...] = value
        else:
            found = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
            if not found:
                raise RuntimeError("GradScaler.update: no inf checks were recorded since the last update(); call "
                                   "scaler.step(optimizer) (or unscale_) first")
            with dev.scope:
                total = found[0]
                for f in found[1:]:
                    total = total + f
                self._update_scale(xp, total)
        self._per_optimizer = {}

    def _update_scale(self, xp, found):
        """torch._amp_update_scale_: back off after an inf; grow after growth_interval good steps
        (unless the grown scale would be inf); count good steps in the tracker."""
        scale, tracker = self._scale, self._growth_tracker
        inf = found > 0
        successful = tracker + 1
        grow = ~inf & (successful == self._growth_interval)
        grown = scale * self._growth_factor
        new_scale = xp.where(inf, scale * self._backoff_factor, xp.where(grow & xp.isfinite(grown), grown, scale))
        new_tracker = xp.where(inf | grow, xp.zeros_like(tracker), successful)
        scale[...] = new_scale
        tracker[...] = new_tracker

    # --- reading and saving ----------------------------------------------------------------------

    def _host(self, array, default):
        if array is None:
            return default
        return self._device.backend.to_host(array).item()

    def get_scale(self):
        """The scale as a Python float (a host sync); 1.0 when disabled."""
        return float(self._host(self._scale, self._init_scale)) if self._enabled else 1.0

    def _get_growth_tracker(self):
        return int(self._host(self._growth_tracker, self._init_growth_tracker)) if self._enabled else 0

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = int(new_interval)

    def _constants(self):
        """What a recorded step bakes in (compile_step records again when it changes)."""
        return (self._enabled, self._growth_factor, self._backoff_factor, self._growth_interval)

    def state_dict(self):
        """PyTorch's layout: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker
        ({} when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._scale is not None:  # written in place: a recorded step reads these arrays
            with self._device.scope:
                self._scale[...] = self._init_scale
                self._growth_tracker[...] = self._init_growth_tracker
