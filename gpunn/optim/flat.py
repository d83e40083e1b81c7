"""Flat buffers: a parameter group's parameters, gradients and optimizer state each as one array.

Every parameter's `._array` becomes a view of one contiguous buffer, every gradient a view of a
second (the backward pass writes into it: `Tensor._grad_slot`, a GradSlot), and every state entry (momentum,
moment estimates) a view of one buffer per name. An optimizer step is then a few whole-buffer ops
(one kernel with a backend fast path) instead of a few ops per parameter, and clip_grad_norm_
is one reduction. On a GPU that is the difference between ~10 and ~100 kernel launches per step.

The per-parameter tensors stay the truth users see. Anything that rebinds one of them to another
array (load_state_dict, `p.copy_(...)`, a hand-written update, a gradient assigned by hand) is
noticed by identity before the next flat step and copied back into the buffer, so the flat path
never silently trains a stale copy. Only backends whose slices are writable views can hold flat
buffers (`Backend.views`: NumPy and CuPy; the array API standard does not promise views).
"""

import math
import operator
import weakref

from gpunn.autograd import mode
from gpunn.errors import DeviceError, DTypeError, ShapeError
from gpunn.tensor import Tensor


_live = weakref.WeakSet()  # every FlatGroup, for covering() to find


def supports_flat(device):
    return getattr(device.backend, "views", False)


def covering(params):
    """The FlatGroup whose parameters are exactly `params` (in order) and whose gradients all sit
    in its buffer, or None: then whole-buffer gradient ops (clipping) are safe."""
    for flat in list(_live):
        if len(flat.params) == len(params) and all(a is b for a, b in zip(flat.params, params)):
            if all(p.grad is not None and p.grad._array is slot for p, slot in zip(params, flat._views["grad"])):
                return flat
    return None


class GradSlot:
    """Where backward writes one parameter's gradient: its view of the flat buffer (`array`), and
    the gradient tensor last handed out around it, held weakly. A backward that overwrites the
    slot first `claim`s it: if someone still holds that tensor (say `g = p.grad` before
    `zero_grad()`), it gets a copy of its values, as in PyTorch, where each backward after
    zero_grad() makes a new tensor. Nobody holding it (the usual case) costs nothing."""

    __slots__ = ("array", "device", "_handed")

    def __init__(self, array, device):
        self.array, self.device, self._handed = array, device, None

    def claim(self):
        held = self._handed() if self._handed is not None else None
        if held is not None and held._array is self.array and not mode.recording:  # (a recorded copy would
            # run on every replay, so a gradient held across a captured step is not protected)
            with self.device.scope:
                held._array = self.device.xp.asarray(held._array, copy=True)
        self._handed = None

    def hand_out(self):
        """A new gradient tensor around the slot (after the slot was claimed and written)."""
        return self.adopt(Tensor._wrap(self.array, self.device))

    def adopt(self, tensor):
        """Make `tensor` (a parameter's current gradient) a view of the slot, keeping it."""
        tensor._array = self.array
        self._handed = weakref.ref(tensor)
        return tensor


class FlatGroup:
    """Parameters of one device and floating dtype laid out end to end in `param`, with `grad`
    and named state buffers of the same layout."""

    def __init__(self, params):
        self.params = list(params)
        first = self.params[0]
        self.device, self.dtype = first.device, first._array.dtype
        self.shapes = [tuple(p._array.shape) for p in self.params]
        sizes = [math.prod(s) for s in self.shapes]
        self.bounds = [(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(len(sizes))]
        self.size = sum(sizes)
        self._ids = {id(p) for p in self.params}
        _live.add(self)
        self.buffers = {}  # state name -> flat array
        self._views = {}  # "param", "grad" or a state name -> per-parameter views
        with self.device.scope:
            xp = self.device.xp
            self.param = xp.empty((self.size,), dtype=self.dtype)
            self.grad = xp.zeros((self.size,), dtype=self.dtype)
            self._views["param"] = self._split(self.param)
            self._views["grad"] = self._split(self.grad)
            for p, view in zip(self.params, self._views["param"]):
                view[...] = p._array
                p._array = view
            self.slots = [GradSlot(view, self.device) for view in self._views["grad"]]
            for p, slot in zip(self.params, self.slots):
                p._grad_slot = slot
                if p.grad is not None:
                    slot.array[...] = p.grad._array
                    slot.adopt(p.grad)

    def holds(self, p):
        return id(p) in self._ids

    def holds_exactly(self, params):
        """True when `params` are this group's parameters, in order."""
        return len(params) == len(self.params) and all(map(operator.is_, params, self.params))

    def moved(self):
        """True when a parameter was cast or moved since the layout (model.double(), model.to(...)):
        the buffers no longer fit and the next step lays them out again."""
        for p, view in zip(self.params, self._views["param"]):
            if p._array is not view and (p.device is not self.device or p._array.dtype != self.dtype):
                return True  # (an array still the buffer's view has neither moved nor changed dtype)
        return False

    def _split(self, flat):
        xp = self.device.xp
        return [xp.reshape(flat[a:b], shape) for (a, b), shape in zip(self.bounds, self.shapes)]

    def scratch(self, count):
        """`count` zeroed arrays shaped like a small flat buffer (two elements: a one-element array
        would pick another kernel variant), for compiling the update before a graph is recorded."""
        with self.device.scope:
            return [self.device.xp.zeros((min(2, self.size),), dtype=self.dtype) for _ in range(count)]

    def zero_grads(self):
        """zero_grad(set_to_none=False): one fill; each existing gradient a view of the zeroed buffer."""
        with self.device.scope:
            self.grad[...] = 0
        for p, slot in zip(self.params, self.slots):
            p._grad_slot = slot
            if p.grad is not None:  # zeroed in place, as in PyTorch; a parameter without one keeps none
                slot.adopt(p.grad)

    # --- keeping the per-parameter tensors and the buffers the same arrays --------------------

    def sync_params(self):
        """Copy back any parameter whose `._array` was rebound since the last step."""
        for i, (p, view) in enumerate(zip(self.params, self._views["param"])):
            if p._array is not view:
                self._check(p, p._array, i, f"parameter {i}")
                view[...] = p._array
                p._array = view

    def sync_grads(self):
        """True when every parameter has a gradient, each then a view of `grad`; False if any is
        None (the step then falls back to the per-parameter path, which skips those)."""
        if any(p.grad is None for p in self.params):
            return False
        for i, (p, slot) in enumerate(zip(self.params, self.slots)):
            p._grad_slot = slot
            if p.grad._array is not slot.array:  # assigned by hand, or rebound: copy it in (cast if need be)
                self._check(p.grad, p.grad._array, i, f"the gradient of parameter {i}", dtype=False)
                given = p.grad._array
                slot.claim()
                slot.array[...] = given
                p.grad = slot.hand_out()  # a new tensor: the user's may be shared
        return True

    def state(self, name, entries):
        """The flat buffer behind `entries[i][name]` for every parameter i (entries are the
        optimizer's per-parameter state dicts), re-packing entries that were replaced.

        When no parameter has the entry yet, it is created as zeros. When only some have it,
        returns None: the caller takes the per-parameter path.
        """
        present = [name in e for e in entries]
        if not all(present):
            if any(present):
                return None
            with self.device.scope:
                buffer = self.device.xp.zeros_like(self.param)
            self.buffers[name] = buffer
            self._views[name] = views = self._split(buffer)
            for e, view in zip(entries, views):
                e[name] = Tensor._wrap(view, self.device)
            return buffer
        buffer = self.buffers.get(name)
        if buffer is None:
            with self.device.scope:
                buffer = self.buffers[name] = self.device.xp.empty_like(self.param)
            self._views[name] = self._split(buffer)
        for i, (e, view) in enumerate(zip(entries, self._views[name])):
            t = e[name]
            if t._array is not view:
                self._check(t, t._array, i, f"optimizer state {name!r} of parameter {i}")
                view[...] = t._array
                t._array = view
        return buffer

    def sync_state(self, entries):
        """Re-pack every state buffer from `entries` (after optimizer.load_state_dict, say)."""
        for name in self.buffers:
            self.state(name, entries)

    def _check(self, owner, array, index, what, dtype=True):
        dev = getattr(owner, "device", self.device)
        if dev is not self.device:
            raise DeviceError(f"{what} moved from {self.device} to {dev} after the optimizer was built; build "
                              "the optimizer after model.to(device)")
        if dtype and array.dtype != self.dtype:
            raise DTypeError(f"{what} is now {array.dtype}, but the optimizer was built for {self.dtype}; build "
                             "the optimizer after model.to(dtype)")
        if tuple(array.shape) != self.shapes[index]:
            raise ShapeError(f"{what} now has shape {tuple(array.shape)}, but the optimizer was built for "
                             f"{self.shapes[index]}; build a new optimizer for a resized model")
