"""Optimizer updates on raw arrays, written once against an array namespace `xp`.

Array-level code, like the primitive table of gpunn.ops: it imports nothing of gpunn, so a
backend can override an update by name in its `fast_paths` (CUDA does each in one kernel) without
loading the optimizers or Tensor. The optimizers call these per parameter (the reference path) or
once per flat buffer. They update in place with in-place operators, so a step allocates little
and never asks the host for a value.
"""


def sgd_update(xp, p, g, buf, first, lr, momentum, dampening, nesterov, weight_decay, maximize):
    """One SGD update of array `p` (in place) from gradient `g`, with momentum buffer `buf` (None
    without momentum; `first`: fill it from this gradient, as PyTorch does). Any shape: one
    parameter or a flat buffer of many. Never writes `g`. Branches on `buf`, not on `momentum`,
    so lr and momentum may be 0-d arrays (compile_step uploads them before each replay)."""
    if maximize:
        g = -g
    if weight_decay:
        g = g + weight_decay * p
    if buf is not None:
        if first:
            buf[...] = g
        else:
            buf *= momentum
            buf += g if dampening == 0 else (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    p -= lr * g


def adam_update(xp, p, g, m, v, v_max=None, *, beta1, beta2, eps, step_size, bias_correction2_sqrt,
                weight_decay, decay, maximize, one_minus_beta1=None):
    """One Adam(W) update of array `p` in place, with moment buffers m, v (and v_max for amsgrad).
    Any shape: one parameter or a flat buffer of many. `decay` is AdamW's 1 - lr * weight_decay,
    `weight_decay` Adam's coupled one. `one_minus_beta1`, when given, is 1 - beta1 computed on the
    host in double precision (beta1 may then be a 0-d array). Never writes `g`."""
    if maximize:
        g = -g
    if decay != 1:
        p *= decay
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1 if one_minus_beta1 is None else one_minus_beta1) * g
    square = g * g
    square *= 1 - beta2
    v *= beta2
    v += square
    if v_max is not None:
        v_max[...] = xp.maximum(v_max, v)
        v = v_max
    denom = xp.sqrt(v)
    denom /= bias_correction2_sqrt
    denom += eps
    update = m / denom
    update *= step_size
    p -= update
