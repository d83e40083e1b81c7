"""DistributedDataParallel: one model replica per process, gradients averaged after each backward.

The all-reduce runs inside backward, as in PyTorch, without hooks in the engine: forward wraps the
module's output in one extra node (`ddp_sync`) whose only input is a stand-in leaf. When backward
reaches that node it runs backward through the module's own graph, then reduces the gradients
and hands nothing further on. Gradients that sit in a fused optimizer's flat buffer are reduced
as that buffer (one collective per parameter group); the others are packed into one buffer per
device and dtype. Each rank weights its gradient by its share of the samples of the global batch
(the rows of forward's first argument), so a ragged last batch gives exactly what one process
computes on the whole batch.
"""

import contextlib
import zlib

import numpy as np

from gpunn import autograd, distributed
from gpunn.autograd import no_grad
from gpunn.nn.module import Module
from gpunn.ops import Primitive
from gpunn.optim import flat as flat_buffers
from gpunn.tensor import Tensor, apply

__all__ = ["DistributedDataParallel"]


def _sync_rule(xp, g, out, x, ddp, inner):
    ddp._backward(inner, g)
    return g  # to the stand-in leaf, which nothing reads


_SYNC = Primitive("ddp_sync", lambda xp, x, ddp, inner: x, _sync_rule)


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training over the ranks of gpunn.distributed.

    At construction every rank must hold the same parameter names, shapes and dtypes (checked, a
    DistributedError otherwise); rank 0's parameters and buffers are then copied to every rank.
    After each backward through its output, every parameter's gradient is the average over the
    global batch (`weight_by_samples=False`: the plain mean over ranks, PyTorch's rule).
    `state_dict()` has the module's own keys.

    A rank whose share of a batch is empty (a ragged last batch with fewer samples than ranks)
    has no loss to take backward; it calls `reduce_gradients()` instead, so that it joins the
    reduction (with weight 0) and its optimizer steps with the same gradients as everyone's.
    """

    def __init__(self, module, weight_by_samples=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a gpunn.nn.Module, got {type(module).__name__}")
        self.module = module
        object.__setattr__(self, "weight_by_samples", bool(weight_by_samples))
        object.__setattr__(self, "_syncing", True)
        object.__setattr__(self, "_samples", 0)  # rows seen by forward since the last reduction
        self._agree(module)

    # --- construction: the same model everywhere ------------------------------------------------

    @staticmethod
    def _agree(module):
        items = list(module._state_items())
        mine = [[name, list(t.shape), t.dtype.name] for name, t in items]
        everyone = distributed.all_gather_object(mine)
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise distributed.DistributedError(
                    f"DistributedDataParallel: rank {rank} holds other parameters than rank 0 "
                    f"({_first_difference(everyone[0], theirs)}); build the same model on every rank")
        with no_grad():
            for _, t in items:
                distributed.broadcast(t, src=0)

    # --- the state dict is the module's -----------------------------------------------------------

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        return self.module.state_dict(destination, prefix, keep_vars)

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict)

    # --- forward and backward ---------------------------------------------------------------------

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally; the first one outside reduces the
        sum (weighted by all samples seen since the last reduction)."""
        previous = self._syncing
        object.__setattr__(self, "_syncing", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_syncing", previous)

    def forward(self, *args, **kwargs):
        inner = self.module(*args, **kwargs)
        if not autograd.is_grad_enabled():
            return inner
        first = args[0] if args else next(iter(kwargs.values()), None)
        object.__setattr__(self, "_samples", self._samples + (first.shape[0] if getattr(first, "ndim", 0) else 1))
        if not self._syncing or not getattr(inner, "requires_grad", False):
            return inner
        if not isinstance(inner, Tensor):
            raise TypeError(f"DistributedDataParallel: the module returned a {type(inner).__name__}; it supports "
                            "modules that return one Tensor")
        stand_in = Tensor._wrap(inner._array, inner.device)
        stand_in.requires_grad = True
        return apply(_SYNC, stand_in, ddp=self, inner=inner)

    def _backward(self, inner, g):
        autograd.backward(inner, g)
        self.reduce_gradients()

    def reduce_gradients(self):
        """Average every parameter's gradient over the ranks (what backward does; call it yourself
        after a backward that did not go through this module's output)."""
        local = self._samples if self.weight_by_samples else 1
        object.__setattr__(self, "_samples", 0)
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params or distributed.get_world_size() == 1:  # the average over one rank is its own gradient
            return
        flats, rest = _layout(params)
        buffers = [(f.grad, f.device) for f in flats] + [(_pack(ps, device), device) for (device, _), ps in rest.items()]
        with no_grad():
            if all(distributed.backend_of(device) == "nccl" for _, device in buffers):
                self._reduce_on_devices(buffers, local)
            else:
                self._reduce_over_mpi(buffers, [f.size for f in flats] + [b.shape[0] for b, _ in buffers[len(flats):]],
                                      local)
            for ((device, _), ps), (packed, _) in zip(rest.items(), buffers[len(flats):]):
                _unpack(ps, device, packed)

    def _reduce_over_mpi(self, buffers, sizes, local):
        """The sample counts (and a fingerprint of the layout) gathered on the host, then each buffer
        scaled by this rank's share and summed over the ranks."""
        group = distributed._need()
        mine = np.array([local, zlib.crc32(repr(sizes).encode())], dtype=np.int64)
        everyone = np.empty((group.size, 2), dtype=np.int64)
        request = group.comm.Iallgather(mine, everyone)
        distributed._wait(request.Test, "DistributedDataParallel's sample count")
        if (everyone[:, 1] != mine[1]).any():
            bad = int(np.argmax(everyone[:, 1] != mine[1]))
            raise distributed.DistributedError(
                f"DistributedDataParallel: rank {bad} lays out its gradients differently from rank {group.rank} "
                "(a fused optimizer on some ranks only?); build the same model and optimizer on every rank")
        total = int(everyone[:, 0].sum())
        scale = _weight(local, total, group.size)
        for array, device in buffers:
            with device.scope:
                if scale == 0:
                    array[...] = 0  # no samples here: the gradient of an empty batch is 0/0
                elif scale != 1:
                    array *= scale
            distributed.reduce_array(array, device, "sum", what=_what(array))

    def _reduce_on_devices(self, buffers, local):
        """NCCL: the count is summed on the device too, so nothing waits for the host and the whole
        reduction can be recorded into a CUDA graph (compile_step) and replayed."""
        device = buffers[0][1]
        xp = device.xp
        with device.scope:
            total = xp.full((1,), float(local), dtype=device.dtype("float64"))
        distributed.reduce_array(total, device, "sum", what="DistributedDataParallel's sample count")
        for array, dev in buffers:
            with dev.scope:
                if local == 0:
                    array[...] = 0
                else:
                    array *= xp.astype(float(local) / total, array.dtype)
            distributed.reduce_array(array, dev, "sum", what=_what(array))

    def _not_capturable(self):
        """Why compile_step cannot record a step of this model into a CUDA graph, or None."""
        devices = {p.device for p in self.module.parameters()}
        if distributed.get_world_size() > 1 and any(distributed.backend_of(d) != "nccl" for d in devices):
            return ("DistributedDataParallel reduces the gradients over MPI through host memory, which a CUDA "
                    "graph cannot record (NCCL can: install it, pip install nvidia-nccl-cu12 or -cu13)")
        return None

    def extra_repr(self):
        return f"weight_by_samples={self.weight_by_samples}"


def _layout(params):
    """The fused optimizers' flat buffers that hold only gradients of `params` (each then reduced
    whole), and the other parameters grouped by (device, dtype), in the parameters' order."""
    position = {id(p): i for i, p in enumerate(params)}
    flats = []
    live = (f for f in flat_buffers._live  # (not the buffers of an earlier optimizer over the same parameters)
            if all(id(p) in position and getattr(p, "_grad_slot", None) is slot
                   for p, slot in zip(f.params, f.slots)))
    for f in sorted(live, key=lambda f: position[id(f.params[0])]):
        for p in f.params:  # an unused parameter counts as a zero gradient: every rank reduces the same
            if p.grad is None:
                p.grad = Tensor._wrap(p.device.xp.zeros_like(p._array), p.device)
        if f.sync_grads():
            flats.append(f)
    covered = {id(p) for f in flats for p in f.params}
    rest = {}
    for p in params:
        if id(p) not in covered:
            rest.setdefault((p.device, p.dtype), []).append(p)
    return flats, rest


def _weight(local, total, world_size):
    """This rank's share of the global batch: what its gradient (a mean over its own samples) is
    scaled by before the sum over the ranks."""
    return local / total if total else 1.0 / world_size


def _what(array):
    return f"DistributedDataParallel's all-reduce of {array.shape[0]} gradients"


def _pack(params, device):
    """The gradients of `params` end to end in one new array (zeros for a parameter without one)."""
    xp = device.xp
    with device.scope:
        parts = [xp.reshape(p.grad._array if p.grad is not None else xp.zeros_like(p._array), (-1,))
                 for p in params]
        return xp.concat(parts) if len(parts) > 1 else xp.asarray(parts[0], copy=True)


def _unpack(params, device, packed):
    xp = device.xp
    start = 0
    for p in params:
        n = p.numel()
        with device.scope:
            values = xp.reshape(packed[start:start + n], tuple(p.shape))
        start += n
        if p.grad is None:
            p.grad = Tensor._wrap(values, device)
        else:
            p.grad.copy_(Tensor._wrap(values, device))


def _first_difference(a, b):
    for x, y in zip(a, b):
        if x != y:
            return f"{x[0]} {x[2]}{tuple(x[1])} against {y[0]} {y[2]}{tuple(y[1])}"
    longer, what = (a, "rank 0 has") if len(a) > len(b) else (b, "it has")
    return f"{what} {longer[min(len(a), len(b))][0]} in addition" if len(a) != len(b) else "different order"
