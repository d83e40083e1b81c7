"""Gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_), on the device, no host syncs;
parameters as one vector and back (parameters_to_vector / vector_to_parameters)."""

import math

from gpunn import ops
from gpunn.autograd import no_grad
from gpunn.errors import AnomalyError, ShapeError
from gpunn.optim.flat import covering
from gpunn.tensor import Tensor, apply, tensor


class NonFiniteGradientError(AnomalyError):
    """clip_grad_norm_(..., error_if_nonfinite=True) met an inf or NaN gradient norm."""


def _grads(parameters):
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"expected gpunn Tensors (e.g. model.parameters()), item {i} is a {type(p).__name__}")
    return params, [p.grad for p in params if p.grad is not None]



def _by_device(grads):
    """{device: [arrays]} of the non-empty gradients; float16 is widened (its sums overflow at 65504)."""
    groups = {}
    for g in grads:
        if g.numel():
            a = g._array
            if g.dtype.name == "float16":
                a = g.device.xp.astype(a, g.device.dtype("float32"))
            groups.setdefault(g.device, []).append(a)
    return groups


def _total_norm(grads, norm_type):
    """The norm of all gradients as one vector, as a 0-d array on the first gradient's device.

    Each gradient is divided by the largest magnitude before it is raised to the power, so
    float32 gradients of 1e22 (whose squares overflow) still give their finite norm. A NaN
    anywhere gives NaN, an inf (and no NaN) gives inf. Gradients on several devices are reduced
    where they live; only 0-d partial results move.
    """
    dev, xp = grads[0].device, grads[0].device.xp
    groups = _by_device(grads)
    if not groups:
        with dev.scope:
            return xp.zeros((), dtype=grads[0]._array.dtype)
    scale = None
    for d, arrays in groups.items():
        with d.scope:
            for a in arrays:
                peak = dev.put(d.xp.maximum(d.xp.max(a), -d.xp.min(a)))
                with dev.scope:
                    scale = peak if scale is None else xp.maximum(scale, peak)
    if norm_type == math.inf:
        return scale
    with dev.scope:
        usable = xp.isfinite(scale) & (scale > 0)  # else divide by 1: all zero, or inf/NaN decided below
        divisor = xp.where(usable, scale, xp.ones_like(scale))
    total = None
    for d, arrays in groups.items():
        with d.scope:
            local = d.put(divisor)
            for a in arrays:
                r = a / local
                part = dev.put(d.xp.sum(r * r) if norm_type == 2.0 else d.xp.sum(d.xp.abs(r) ** norm_type))
                with dev.scope:
                    total = part if total is None else total + part
    with dev.scope:
        return xp.where(xp.isfinite(scale), scale * total ** (1.0 / norm_type), scale)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients together so that their total norm is at most `max_norm`.

    Returns the total norm before clipping as a 0-d tensor. The clip coefficient
    max_norm / (norm + 1e-6), capped at 1, multiplies every gradient (a factor of exactly 1
    leaves them unchanged), so there is no host sync unless `error_if_nonfinite` asks for one:
    then an inf or NaN norm raises NonFiniteGradientError and nothing is changed.
    """
    params, grads = _grads(parameters)
    flat = covering(params)
    if flat is not None:  # one fused optimizer's buffer holds every gradient: one reduction, one scale
        grads = [Tensor._wrap(flat.grad, flat.device)]
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive (2.0, 1.0 or inf), got {norm_type}")
    if not grads:
        return tensor(0.0, device=params[0].device if params else None)
    dev = grads[0].device
    total = Tensor._wrap(_total_norm(grads, norm_type), dev)
    if error_if_nonfinite:
        value = total.item()
        if not math.isfinite(value):
            raise NonFiniteGradientError(
                f"clip_grad_norm_: the total norm of the gradients is {value} (an inf or NaN gradient); "
                "gradients were left as they are. Find the source with gpunn.detect_anomaly(), lower the "
                "learning rate, or pass error_if_nonfinite=False to clip anyway")
    with dev.scope:
        coef = dev.xp.minimum(max_norm / (total._array + 1e-6), 1.0)  # not xp.clip: see ops._clip
    if flat is not None:
        with dev.scope:
            flat.grad *= dev.xp.astype(coef, flat.grad.dtype)  # in place: the gradients are views of it
        return total
    in_slots = {id(p.grad) for p in params
                if p.grad is not None and p.grad._array is getattr(getattr(p, "_grad_slot", None), "array", None)}
    for g in grads:
        with g.device.scope:
            c = g.device.put(coef)
            if c.dtype != g._array.dtype:
                c = g.device.xp.astype(c, g._array.dtype)
            if id(g) in in_slots:
                g._array *= c  # in its fused optimizer's buffer, which only this gradient uses
            else:
                g._array = g._array * c  # rebinds: the old array may be shared with another gradient
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient entry into [-clip_value, clip_value]."""
    _, grads = _grads(parameters)
    clip_value = float(clip_value)
    if clip_value < 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for g in grads:
        with g.device.scope:
            g._array = g.device.xp.minimum(g.device.xp.maximum(g._array, -clip_value), clip_value)


def parameters_to_vector(parameters):
    """Every parameter flattened and concatenated, in order, into one 1-D tensor (differentiable)."""
    params = _tensors("parameters_to_vector", parameters)
    return apply(ops.concat, *(p.reshape(-1) for p in params), axis=0)


def vector_to_parameters(vec, parameters):
    """Copy consecutive pieces of the 1-D `vec` into the parameters (no gradient): the inverse of
    parameters_to_vector. The lengths must add up exactly."""
    params = _tensors("vector_to_parameters", parameters)
    if not isinstance(vec, Tensor) or vec.ndim != 1:
        raise TypeError(f"vector_to_parameters: expected a 1-D gpunn Tensor, got "
                        f"{vec.shape if isinstance(vec, Tensor) else type(vec).__name__}")
    needed = sum(p.numel() for p in params)
    if vec.numel() != needed:
        raise ShapeError(f"vector_to_parameters: the vector has {vec.numel()} entries, the parameters {needed}")
    offset = 0
    with no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset:offset + n].reshape(p.shape))
            offset += n


def _tensors(owner, parameters):
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{owner}: expected gpunn Tensors (e.g. model.parameters()), item {i} is a "
                            f"{type(p).__name__}")
    if not params:
        raise ValueError(f"{owner}: no parameters given (was the generator already consumed?)")
    return params
