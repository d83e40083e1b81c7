"""NumPy on the host: the CPU backend."""

import math

import numpy as np
import array_api_compat.numpy as xp

from gpunn import ops

from . import Backend


def _index_add(g, out, x, index):
    """Gradient of x[index] via bincount: much faster than the generic one-hot product."""
    flat = np.arange(x.size).reshape(x.shape)[index].ravel()
    summed = np.bincount(flat, weights=np.broadcast_to(g, out.shape).ravel(), minlength=x.size)
    return summed.astype(g.dtype, copy=False).reshape(x.shape)


def _scatter_sum(index, src, axis, shape):
    """ops._scatter_sum by bincount over flat positions: memory of the index's size, not the
    generic one-hot's index size times shape[axis] (which bincount(x) on a big x could not afford)."""
    where = list(np.indices(index.shape, sparse=True))
    where[axis] = index
    flat = np.ravel_multi_index(tuple(np.broadcast_arrays(*where)), shape)
    summed = np.bincount(flat.ravel(), weights=np.broadcast_to(src, index.shape).ravel(), minlength=math.prod(shape))
    return summed.astype(src.dtype, copy=False).reshape(shape)


def _cross_entropy_forward(xp_, logits, target, reduction="mean", ignore_index=-100):
    """The generic forward with a gather and an in-place scatter instead of one-hot products.

    Targets equal to ignore_index never reach it: on the cpu, functional.cross_entropy finds
    them on the host and takes the composite path."""
    logits = np.ascontiguousarray(logits)  # (row-major, so the flat positions below are views' positions)
    rows, classes = logits.shape
    picked = np.arange(0, rows * classes, classes) + target  # flat positions: 3x faster than e[rows, target]
    shifted = logits - np.maximum.reduce(logits, axis=1, keepdims=True)  # ufunc reductions: no Python wrapper
    e = np.exp(shifted)
    total = np.add.reduce(e, axis=1, keepdims=True)
    per_row = np.log(total[:, 0]) - shifted.reshape(-1)[picked]  # (both fresh and contiguous: views)
    e /= total
    e.reshape(-1)[picked] -= 1
    if reduction == "mean":
        e /= per_row.shape[0]
        return np.add.reduce(per_row) / per_row.shape[0], e
    return (np.add.reduce(per_row) if reduction == "sum" else per_row), e


def _linear_grad_b(xp, g, out, x, w, b):
    """The bias gradient as one ufunc reduction (np.sum's Python wrapper costs a small step 4 us)."""
    if g.ndim == 2:
        return np.add.reduce(g, axis=0)
    return ops.linear.grads[2](xp, g, out, x, w, b)


def _linear_grad_w_into(xp, g, out, x, w, b, dest, accumulate):
    """The weight gradient g.T @ x written by BLAS straight into a fused optimizer's slot (no copy)."""
    if accumulate or g.ndim != 2 or x.ndim != 2 or not g.dtype == x.dtype == dest.dtype:
        return False
    np.matmul(g.T, x, out=dest)
    return True


def _linear_grad_b_into(xp, g, out, x, w, b, dest, accumulate):
    if accumulate or g.ndim != 2 or g.dtype != dest.dtype:
        return False
    np.sum(g, axis=0, out=dest)
    return True


# linear_act's activations: relu and tanh in place on the freshly made product (nobody else holds it);
# the table's other activations keep their generic forward
_IN_PLACE = {"relu": lambda xp, y: np.maximum(y, 0, out=y), "tanh": lambda xp, y: np.tanh(y, out=y)}
_ACTIVATIONS = {name: p.override(forward=_IN_PLACE[name]) if name in _IN_PLACE else p
                for name, p in ops.ACTIVATIONS.items()}




def _chain_forward(xp_, x, *params, activations):
    """linear_chain as one writes it in NumPy: per layer a product, the bias and the activation
    added in place (float16 and batched inputs take the generic forward)."""
    if x.ndim != 2 or x.dtype in ops.HALF_DTYPES:
        return _GENERIC_CHAIN.forward(xp_, x, *params, activations=activations)
    inputs = [x]
    for k, act in enumerate(activations):
        y = inputs[-1] @ params[2 * k].T
        if params[2 * k + 1] is not None:
            y += params[2 * k + 1]
        inputs.append(y if act is None else _ACTIVATIONS[act].forward(xp_, y))
    return inputs[-1], inputs


def _chain_backward(xp_, g, inputs, x, *params, needs, activations):
    """linear_chain's joint backward with NumPy's products, and ReLU's mask applied in place to the
    gradients the pass made itself (never to the incoming g, which another node may hold)."""
    if g.ndim != 2 or g.dtype in ops.HALF_DTYPES:
        return _GENERIC_CHAIN.backward(xp_, g, inputs, x, *params, needs=needs, activations=activations)
    grads, owned = [None] * len(needs), False
    for k in range(len(activations) - 1, -1, -1):
        out, h = inputs[k + 1], inputs[k]
        act = activations[k]
        if act == "relu":
            g = np.multiply(g, out > 0, out=g if owned else None)
        elif act is not None:
            g = _ACTIVATIONS[act].grads[0](xp_, g, out, None)
        if needs[2 * k + 1]:
            grads[2 * k + 1] = g.T @ h
        if needs[2 * k + 2]:
            grads[2 * k + 2] = np.add.reduce(g, axis=0)
        if k or needs[0]:
            g, owned = g @ params[2 * k], True
    grads[0] = g if needs[0] else None
    return grads


ops.HALF_DTYPES.add(np.dtype(np.float16))  # its float16 products accumulate in float32 (gpunn.ops._product)


_LINEAR = ops.linear.override(grads=(*ops.linear.grads[:2], _linear_grad_b),
                              into=(None, _linear_grad_w_into, _linear_grad_b_into))
_GENERIC_CHAIN = ops.linear_chain_primitive(_LINEAR, _ACTIVATIONS)  # _chain_forward/_backward's fallback


class NumpyBackend(Backend):
    name = "cpu"
    xp = xp
    views = True  # slices are writable views: optimizers may keep flat buffers (gpunn.optim.flat)
    chain_layers = True  # nn.Sequential runs consecutive Linear layers as one node (ops.linear_chain)

    def __init__(self):
        self.fast_paths = {
            "cross_entropy": ops.cross_entropy.override(forward=_cross_entropy_forward),
            "linear": _LINEAR,
            "linear_act": ops.linear_act_primitive(_LINEAR, _ACTIVATIONS),
            "linear_chain": _GENERIC_CHAIN.replace(forward=_chain_forward, backward=_chain_backward),
            **ops.scatter_fast_paths(_index_add, _scatter_sum),
        }

    def native_device(self, index):
        return "cpu"

    def device_count(self):
        return 1

    def to_host(self, array):
        return np.asarray(array)

    def from_host(self, host, native):
        return np.asarray(host)

    def synchronize(self, native):
        pass

    def shares_memory(self, a, b):
        return np.may_share_memory(a, b)  # bounds only: exact for a view against a fresh copy

    def describe(self, native):
        return "NumPy on the host CPU"


BACKEND = NumpyBackend()

