"""Functions on tensors, as in torch.nn.functional: activations, softmax and the losses.

Composites are built from primitives; softmax-cross-entropy and BCE-with-logits have fused rules
because they are cheaper and stay finite where log and exp taken apart would not.
"""

import math
import sys
import warnings

import numpy as np

from gpunn import mixed_precision, ops
from gpunn.autograd import no_grad
from gpunn.dtypes import as_dtype
from gpunn.errors import DeviceError, DTypeError, ShapeError
from gpunn.random import generator
from gpunn.tensor import Tensor, _operand, apply, bind_faces, ones_like, tensor

_REDUCTIONS = ("mean", "sum", "none")


def _in_place(x, result, inplace):
    """`inplace=True` (PyTorch's flag): the result is written into x's storage and x takes its node."""
    return x._inplace(result) if inplace else result


def _function_face(primitive, faces, name):
    """gpunn.<name> or F.<name> of a unary or binary elementwise entry of the table, with torch's
    argument names; tensors or what gpunn.tensor takes (lists, numbers), as gpunn.exp([1.0])."""
    if faces.make == "binary":
        def function(input, other):
            input = _as_tensor(input)
            return apply(primitive, input, _operand(other, input))
    elif faces.inplace:
        def function(input, inplace=False):
            input = _as_tensor(input)
            return _in_place(input, apply(primitive, input), inplace)
    else:
        def function(input):
            return apply(primitive, _as_tensor(input))
    return function


def _as_tensor(x):
    return x if isinstance(x, Tensor) else tensor(x)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    return _in_place(x, apply(ops.leaky_relu, x, negative_slope=float(negative_slope)), inplace)


def gelu(x, approximate="none"):
    """x * Phi(x) (Phi: the standard normal CDF); approximate="tanh" is the tanh formula."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return apply(ops.gelu, x, approximate=approximate)


def softmax(x, axis=-1, *, dim=None):
    return apply(ops.softmax, x, axis=axis if dim is None else dim)


def log_softmax(x, axis=-1, *, dim=None):
    return apply(ops.log_softmax, x, axis=axis if dim is None else dim)


def dropout(x, p=0.5, training=True, inplace=False):
    """Zero each entry with probability p and scale the rest by 1/(1-p), keeping the expectation.
    With inplace=True the result is written into x, as relu's.

    The mask is drawn on the host from gpunn's seeded generator (float64 uniforms compared with p)
    and enters as a constant factor, so one seed gives the same mask on every device and the
    gradient is the same mask. Identity when not training or p == 0; zeros when p == 1.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p is the probability of zeroing an entry and must lie in [0, 1], got {p!r}")
    if not x.dtype.is_floating_point:
        raise DTypeError(f"dropout needs a floating-point tensor, got {x.dtype}; convert it with .float()")
    if not training or p == 0:
        return x
    keep = generator().random(x.shape) >= p
    scale = keep * (1 / (1 - p)) if p < 1 else keep * 0.0
    mask = Tensor._wrap(x.device.put(scale.astype(x.dtype.name)), x.device)
    return _in_place(x, x * mask, inplace)


def _shape_tuple(shape):
    return (shape,) if isinstance(shape, int) else tuple(shape)


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the last len(normalized_shape) axes (biased variance, as PyTorch), then
    scale by weight and shift by bias; a composite of primitives, so gradients need no new rule."""
    shape = _shape_tuple(normalized_shape)
    if len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ShapeError(f"layer_norm: input of shape {x.shape} does not end in normalized_shape {shape}; "
                         "pass the trailing dimensions to normalize over")
    axes = tuple(range(-len(shape), 0))
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def embedding(input, weight, padding_idx=None):
    """Rows of the (num_embeddings, dim) weight picked by integer indices of any shape: the result
    has shape input.shape + (dim,). One gather of the flattened indices, so the gradient of a
    repeated index accumulates (getitem's rule). Positions holding padding_idx get that row's
    values but pass no gradient to it, as in PyTorch."""
    if not isinstance(input, Tensor):
        input = tensor(input, device=weight.device)
    if input.dtype.is_floating_point or input.dtype.name == "bool":
        raise DTypeError(f"embedding: indices must be an integer tensor, got {input.dtype}; use .long()")
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be (num_embeddings, embedding_dim), got shape {weight.shape}")
    if input.device is not weight.device:
        raise DeviceError(f"embedding: indices are on {input.device} but the weight is on {weight.device}; "
                          f"move the indices with .to({str(weight.device)!r})")
    n = weight.shape[0]
    if input.device.type == "cpu" and input.numel():  # a host check is free here; on a GPU it would sync
        lo, hi = int(input._array.min()), int(input._array.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"embedding: index {lo if lo < 0 else hi} is out of range for {n} embeddings; "
                             f"indices must lie in [0, {n})")
    flat = input.device.xp.reshape(input._array, (-1,))
    rows = apply(ops.getitem, weight, index=flat)
    if padding_idx is not None:
        padding = Tensor._wrap(input.device.xp.reshape(flat == padding_idx % n, (-1, 1)), input.device)
        rows = apply(ops.where, padding, rows.detach(), rows)
    return rows.reshape(*input.shape, weight.shape[1])


def linear(x, weight, bias=None):
    """x @ weight.T + bias, one node: weight has PyTorch's (out_features, in_features) layout."""
    return apply(ops.linear, x, weight, bias)


def linear_act(x, weight, bias, activation):
    """activation(x @ weight.T + bias) as one node, for a fusable activation of the table
    (gpunn.ops.ACTIVATIONS: relu, tanh, sigmoid): what nn.Sequential runs for a Linear followed by
    that activation's module (fewer nodes and kernels).
    A model written by hand, e.g. F.relu(self.fc(x)), calls it directly to get the same."""
    if activation not in ops.ACTIVATIONS:
        raise ValueError(f"linear_act: activation must be one of {', '.join(ops.ACTIVATIONS)}, not {activation!r}")
    return apply(ops.linear_act, x, weight, bias, activation=activation)


def linear_chain(x, layers):
    """Layers [(weight, bias, activation or None), ...] applied in turn, as one node: what
    nn.Sequential runs for consecutive Linear layers on backends that chain them (the cpu). The
    same numbers as F.linear_act layer by layer, one dispatch forward and one backward."""
    weights, biases, activations = zip(*layers)
    for activation in activations:
        if activation is not None and activation not in ops.ACTIVATIONS:
            raise ValueError(f"linear_chain: activation must be None or one of {', '.join(ops.ACTIVATIONS)}, "
                             f"not {activation!r}")
    params = [t for pair in zip(weights, biases) for t in pair]
    return apply(ops.linear_chain, x, *params, activations=activations)


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, not {reduction!r}")


def _rows_of_classes(name, logits, target, probabilities_allowed):
    """PyTorch's layouts, (C,), (N, C) and (N, C, d1, ...) logits, as (rows, C) logits with targets
    per row, and the shape a "none" reduction gives back (logits.shape without the class axis).

    A target of the logits' own shape holds class probabilities (where allowed); any other target
    holds integer classes, one per position of logits.shape without the class axis. Moving the
    class axis last and flattening keeps PyTorch's means: over every position kept, as one batch.
    """
    if not isinstance(target, Tensor):
        target = tensor(target, device=logits.device)
    shape, ndim = logits.shape, logits.ndim  # (once: this runs every step)
    if ndim == 0:
        raise ShapeError(f"{name}: logits must have a class axis, got a scalar; pass shape (C,), (N, C) or "
                         "(N, C, d1, ...)")
    target_shape = target.shape
    probabilities = probabilities_allowed and target_shape == shape
    class_axis = 0 if ndim == 1 else 1
    out_shape = shape[:class_axis] + shape[class_axis + 1:]
    if probabilities:
        if not target.dtype.is_floating_point:
            raise DTypeError(f"{name}: a target of the logits' shape {logits.shape} holds class probabilities and "
                             f"must be floating point, got {target.dtype}; use .float(), or pass integer classes "
                             f"of shape {out_shape}")
    elif target_shape != out_shape:
        soft = f", or class probabilities of the logits' shape {logits.shape}" if probabilities_allowed else ""
        raise ShapeError(f"{name}: targets of shape {target.shape} do not match logits of shape {logits.shape}; "
                         f"pass one integer class per position, shape {out_shape} (the logits without their "
                         f"class axis {class_axis}){soft}")
    if ndim > 2:  # (N, C, d1, ...) -> (N * d1 * ..., C): the class axis last, then one row per position
        classes_last = (0, *range(2, ndim), 1)
        logits = logits.permute(classes_last).reshape(-1, shape[1])
        target = target.permute(classes_last) if probabilities else target
    if ndim == 1:
        logits = logits.reshape(1, -1)
    if probabilities:
        target = target.reshape(-1, shape[class_axis])
    elif len(target_shape) != 1:  # (a 1-D target is used as is: a reshape is an op, and this runs every step)
        target = target.reshape(-1)
    if logits.shape[0] == 0:
        raise ShapeError(f"{name}: empty batch (0 rows); check the data loader and the batch size")
    return logits, target, probabilities, out_shape


def _check_class_range(name, logits, target, ignore_index=-100):
    """Checked integer targets of (rows, C) logits, and whether any equals ignore_index (known on
    the cpu only: elsewhere the check would cost a sync, so False there)."""
    dtype = target.dtype
    if dtype.is_floating_point or dtype.name == "bool":
        raise DTypeError(f"{name}: targets must be integer class indices, got {dtype}; use .long()")
    ignored = False
    if target.device.type == "cpu":  # a host check is free here; on a GPU it would cost a sync
        data, classes = target._array, logits._array.shape[1]
        if data.size and not 0 <= ignore_index < classes and 0 <= data.min() and data.max() < classes:
            return False  # the common case in two reductions: every label valid, none can be ignore_index
        kept = data[data != ignore_index]
        ignored = kept.size < data.size
        if kept.size:
            lo, hi = int(kept.min()), int(kept.max())
            if lo < 0 or hi >= logits.shape[1]:
                raise ValueError(f"{name}: class labels must lie in [0, {logits.shape[1]}) or equal ignore_index "
                                 f"({ignore_index}), found {lo if lo < 0 else hi}; check the labels or the number "
                                 "of output units")
    return ignored


def _class_weights(name, weight, log_probs):
    if weight is None:
        return None
    if isinstance(weight, str):
        raise TypeError(f"{name}: the third positional argument is the class weight (as in PyTorch); "
                        f"pass reduction={weight!r} by keyword")
    if not isinstance(weight, Tensor):
        weight = tensor(weight, dtype=log_probs.dtype, device=log_probs.device)
    if weight.shape != (log_probs.shape[1],):
        raise ShapeError(f"{name}: weight must hold one value per class, shape ({log_probs.shape[1]},), "
                         f"got {weight.shape}")
    return weight


def _weighted_nll(log_probs, target, weight, ignore_index, reduction, label_smoothing):
    """PyTorch's loss with class weights, ignored targets and label smoothing, as a composite:

    per row i (0 where target i is ignored), with w = weight (ones if None) and e = label_smoothing,
        loss_i = -(1 - e) w[y_i] log p[i, y_i] - (e / C) sum_c w[c] log p[i, c]
    and "mean" divides the sum by the sum of w[y_i] over the targets kept.
    """
    dev, classes = log_probs.device, log_probs.shape[1]
    xp, dtype = dev.xp, log_probs._array.dtype
    kept = target._array != ignore_index
    picked = (target._array[:, None] == _arange(dev, classes)[None, :]) & kept[:, None]
    target_weight = Tensor._wrap(xp.astype(picked, dtype), dev)
    if weight is not None:
        target_weight = target_weight * weight
    coef = target_weight * (1 - label_smoothing) if label_smoothing else target_weight
    if label_smoothing:
        spread = Tensor._wrap(xp.astype(kept, dtype)[:, None], dev) * (label_smoothing / classes)
        coef = coef + (spread * weight if weight is not None else spread)
    per_row = -(log_probs * coef).sum(axis=1)
    if reduction == "none":
        return per_row
    total = per_row.sum()
    if reduction == "sum":
        return total
    weight_sum = target_weight.sum()
    nothing_kept = weight_sum == 0  # every target ignored: the loss is nan, but the gradient 0 (as in PyTorch)
    mean = total / apply(ops.where, nothing_kept, 1.0, weight_sum)
    return apply(ops.where, nothing_kept, math.nan, mean)


def _soft_cross_entropy(log_probs, probs, weight, reduction, label_smoothing):
    """Cross-entropy against class probabilities, as in PyTorch: per row
        loss_i = -sum_c w[c] q[i, c] log p[i, c],  q = (1 - e) probs + e / C,
    and "mean" divides by the number of rows (the class weights do not enter the divisor, unlike
    with integer classes). A composite, so the probabilities get a gradient too."""
    if label_smoothing:
        probs = probs * (1 - label_smoothing) + label_smoothing / log_probs.shape[1]
    coef = probs * weight if weight is not None else probs
    per_row = -(log_probs * coef).sum(axis=1)
    return per_row if reduction == "none" else per_row.mean() if reduction == "mean" else per_row.sum()


def cross_entropy(logits, target, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy, with PyTorch's layouts and options.

    logits are (N, C), (C,) or (N, C, d1, ...) (classes on axis 1); target is either integer
    classes of the logits' shape without the class axis, or class probabilities of the logits'
    own shape (floating point). weight (C,) scales each class; ignore_index (integer classes only)
    drops positions; label_smoothing mixes the target with the uniform distribution.

    Integer classes without weight or label smoothing take one fused primitive (which has a CUDA
    kernel), skipping targets equal to ignore_index on every device (on the cpu, where labels are
    checked on the host anyway, such targets take the composite path instead). Everything else is
    a composite of log_softmax and differentiable ops.
    """
    _check_reduction("cross_entropy", reduction)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    rows, target, probabilities, out_shape = _rows_of_classes("cross_entropy", logits, target, True)
    weight = _class_weights("cross_entropy", weight, rows)
    if probabilities:
        if ignore_index != -100:
            raise ValueError("cross_entropy: ignore_index applies to integer class targets only; with class "
                             "probabilities give an ignored position a zero target row instead")
        loss = _soft_cross_entropy(log_softmax(rows, axis=1), target, weight, reduction, label_smoothing)
    elif _check_class_range("cross_entropy", rows, target, ignore_index) or weight is not None or label_smoothing:
        loss = _weighted_nll(log_softmax(rows, axis=1), target, weight, ignore_index, reduction, label_smoothing)
    else:
        loss = apply(ops.cross_entropy, rows, target, reduction=reduction, ignore_index=ignore_index)
    return loss.reshape(out_shape) if reduction == "none" else loss


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def nll_loss(log_probs, target, weight=None, *, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities (e.g. from log_softmax) at the target classes,
    with PyTorch's layouts ((N, C), (C,) or (N, C, d1, ...), classes on axis 1), weight and
    ignore_index."""
    _check_reduction("nll_loss", reduction)
    rows, target, _, out_shape = _rows_of_classes("nll_loss", log_probs, target, False)
    ignored = _check_class_range("nll_loss", rows, target, ignore_index)
    weight = _class_weights("nll_loss", weight, rows)
    if weight is not None or ignored or ignore_index != -100 or rows.device.type != "cpu":
        # off the cpu nobody looked for ignored targets: the composite path masks them on the device
        loss = _weighted_nll(rows, target, weight, ignore_index, reduction, 0.0)
    else:
        loss = -apply(ops.getitem, rows, index=(_arange(rows.device, rows.shape[0]), target._array))
        loss = loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()
    return loss.reshape(out_shape) if reduction == "none" else loss


def _arange(device, n):
    with device.scope:  # (CuPy's arange may ignore device=: it makes arrays on the current device)
        return device.xp.arange(n, device=device.native)


def _broadcast_shape(a, b):
    """The shape a and b broadcast to, or None where they do not (shapes only: host tuples)."""
    try:
        return np.broadcast_shapes(tuple(a), tuple(b))
    except ValueError:
        return None


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def mse_loss(input, target, reduction="mean"):
    """Mean squared error: the square loss of least squares and ridge regression.

    Shapes that differ but broadcast are broadcast, with a UserWarning, as in PyTorch: (N, 1)
    predictions against (N,) targets give an (N, N) loss, which is rarely what was meant."""
    _check_reduction("mse_loss", reduction)
    target = _regression_pair("mse_loss", input, target)
    d = input - target
    loss = d * d
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


def _broadcasts_onto(name, what, value, logits):
    """value as a tensor on the logits' device, checked to broadcast onto the logits' shape
    without enlarging it (the loss keeps the logits' shape, as in PyTorch)."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        value = tensor(value, dtype=logits.dtype, device=logits.device)
    if _broadcast_shape(value.shape, logits.shape) != logits.shape:
        raise ShapeError(f"{name}: {what} of shape {value.shape} does not broadcast to the logits' shape "
                         f"{logits.shape}; give it the logits' shape or a shape that broadcasts to it "
                         f"(e.g. ({logits.shape[-1] if logits.ndim else 1},) for one value per class)")
    return value


def _binary_target(name, what, input, target, weight, reduction):
    """The arguments of the binary cross-entropies checked; target as a tensor of input's shape."""
    if isinstance(weight, str):
        raise TypeError(f"{name}: the third positional argument is the weight (as in PyTorch); "
                        f"pass reduction={weight!r} by keyword")
    _check_reduction(name, reduction)
    if not isinstance(target, Tensor):
        target = tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        possessive = what + ("'" if what.endswith("s") else "'s")
        raise ShapeError(f"{name}: {what} {input.shape} and target {target.shape} differ; give the target "
                         f"the {possessive} shape (one 0/1 or probability per entry)")
    return target


def binary_cross_entropy_with_logits(logits, target, weight=None, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one stable formula: finite for any logit. As in PyTorch,
    per element
        loss = -weight * (pos_weight * t * log sigmoid(x) + (1 - t) * log(1 - sigmoid(x))),
    where weight and pos_weight (e.g. one value per class, on the last axis) broadcast onto the
    logits' shape. Without them this is one fused primitive; with them a composite of it:
    softplus(-x) = -log sigmoid(x) is the primitive's loss at target 1, so the pos_weight term is
    the plain loss plus (pos_weight - 1) * t * softplus(-x)."""
    name = "binary_cross_entropy_with_logits"
    target = _binary_target(name, "logits", logits, target, weight, reduction)
    weight = _broadcasts_onto(name, "weight", weight, logits)
    pos_weight = _broadcasts_onto(name, "pos_weight", pos_weight, logits)
    if weight is None and pos_weight is None:
        return apply(ops.bce_with_logits, logits, target, reduction=reduction)
    loss = apply(ops.bce_with_logits, logits, target, reduction="none")
    if pos_weight is not None:
        softplus_neg = apply(ops.bce_with_logits, logits, ones_like(logits), reduction="none")
        loss = loss + (pos_weight - 1) * target * softplus_neg
    if weight is not None:
        loss = loss * weight
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


# --- issue 17: the losses and helpers ported scripts reach for -----------------------------------

def _reduced(name, loss, reduction):
    _check_reduction(name, reduction)
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


def _regression_pair(name, input, target):
    """target as a tensor like input's; shapes that differ but broadcast give PyTorch's warning."""
    if not isinstance(target, Tensor):
        target = tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        shape = _broadcast_shape(input.shape, target.shape)
        if shape is None:
            raise ShapeError(f"{name}: input {input.shape} and target {target.shape} differ and do not broadcast; "
                             "reshape one (e.g. target.reshape(-1, 1)) so they match")
        warnings.warn(f"{name}: target shape {target.shape} differs from input shape {input.shape}; they broadcast "
                      f"to {shape}, which is rarely intended: reshape one so the shapes match", UserWarning,
                      stacklevel=3)
    if input.numel() == 0:
        raise ShapeError(f"{name}: empty batch")
    return target


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def l1_loss(input, target, reduction="mean"):
    """Mean absolute error |input - target|, as torch's l1_loss."""
    _check_reduction("l1_loss", reduction)
    target = _regression_pair("l1_loss", input, target)
    return _reduced("l1_loss", (input - target).abs(), reduction)


def _piecewise_quadratic(name, input, target, reduction, width, scale_linear):
    """0.5 d**2 / q where |d| < width, else |d| - 0.5 width, times width if scale_linear (Huber)
    with q = width if not scale_linear (smooth L1) else 1."""
    _check_reduction(name, reduction)
    target = _regression_pair(name, input, target)
    d = input - target
    a = d.abs()
    quadratic = d * d * (0.5 if scale_linear else 0.5 / width)
    linear = (a - 0.5 * width) * width if scale_linear else a - 0.5 * width
    return _reduced(name, apply(ops.where, a < width, quadratic, linear), reduction)


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d**2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target), as torch's
    smooth_l1_loss; beta=0 is l1_loss."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    if beta == 0:
        return l1_loss(input, target, reduction)
    return _piecewise_quadratic("smooth_l1_loss", input, target, reduction, float(beta), False)


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d**2 where |d| < delta, else delta (|d| - 0.5 delta), as torch's huber_loss
    (smooth_l1_loss times delta)."""
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")
    return _piecewise_quadratic("huber_loss", input, target, reduction, float(delta), True)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-(t log p + (1 - t) log(1 - p)) of probabilities p (e.g. after a sigmoid), as torch's
    binary_cross_entropy: logs are clamped at -100 and the gradient is PyTorch's
    (p - t) / max(p (1 - p), 1e-12), so a saturated sigmoid gives finite numbers. Prefer
    binary_cross_entropy_with_logits, which is stable for any logit."""
    name = "binary_cross_entropy"
    target = _binary_target(name, "input", input, target, weight, reduction)
    if input.device.type == "cpu" and input.numel():  # a host check is free here; on a GPU it would sync
        host = input._array
        if not ((host >= 0) & (host <= 1)).all():
            raise ValueError(f"{name}: input must hold probabilities in [0, 1], found {float(host.min())} .. "
                             f"{float(host.max())}; apply a sigmoid first, or use binary_cross_entropy_with_logits "
                             "on the raw scores")
    loss = apply(ops.binary_cross_entropy, input, target)
    weight = _broadcasts_onto(name, "weight", weight, input)
    if weight is not None:
        loss = loss * weight
    return _reduced(name, loss, reduction)


def one_hot(tensor, num_classes=-1):
    """int64 indicators of shape tensor.shape + (num_classes,), as torch.nn.functional.one_hot;
    num_classes=-1 takes max + 1, read from the device (one sync)."""
    t = tensor
    if not isinstance(t, Tensor) or t.dtype.is_floating_point or t.dtype.name == "bool":
        raise DTypeError(f"one_hot: needs an integer tensor of class indices, got "
                         f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}; use .long()")
    if t.numel() and (t.device.type == "cpu" or num_classes == -1):
        lo, hi = int(t.min().item()), int(t.max().item())
        if lo < 0:
            raise ValueError(f"one_hot: class values must be non-negative, found {lo}")
        if num_classes == -1:
            num_classes = hi + 1
        elif hi >= num_classes:
            raise ValueError(f"one_hot: class values must be smaller than num_classes={num_classes}, found {hi}")
    if num_classes == -1:
        raise ValueError("one_hot: cannot infer the number of classes from an empty tensor; pass num_classes")
    xp, dev = t.device.xp, t.device
    with dev.scope:
        hits = xp.expand_dims(t._array, axis=-1) == _arange(dev, num_classes)
        return Tensor._wrap(xp.astype(hits, dev.dtype(as_dtype("int64"))), dev)


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def normalize(input, p=2.0, dim=1, eps=1e-12):
    """input / max(||input||_p over dim, eps), as torch.nn.functional.normalize."""
    return input / input.norm(p, dim, keepdim=True).clip(min=eps)


@mixed_precision.runs_in_float32  # on PyTorch's autocast list
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 / ||x1|| * x2 / ||x2||) over dim (x1 and x2 broadcast), with each norm at least eps,
    as torch's: the clamp applies to the values only, the gradient passes as if unclamped."""
    norms = []
    for x in (x1, x2):
        n = x.norm(2, dim, keepdim=True)
        norms.append(n + (n.clip(min=eps) - n).detach())
    return ((x1 / norms[0]) * (x2 / norms[1])).sum(dim=dim)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalize each channel (axis 1) of (N, C) or (N, C, L, ...) input by its batch statistics
    (training) or by running_mean / running_var (eval), then scale by weight and shift by bias, as
    torch's batch_norm. In training the running buffers, when given, move toward the batch's
    mean and unbiased variance by `momentum` (written in place, outside the graph)."""
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: input must be (N, C) or (N, C, L, ...), got shape {input.shape}")
    channels = input.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ShapeError(f"batch_norm: {what} has shape {t.shape} but the input has {channels} channels (axis 1); "
                             f"give it shape ({channels},)")
    axes = (0, *range(2, input.ndim))
    per_channel = (1, channels) + (1,) * (input.ndim - 2)
    if training:
        count = input.numel() // channels if channels else 0
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of shape "
                             f"{input.shape}; use a batch of at least 2 (or call model.eval())")
        mean = input.mean(axis=axes, keepdims=True)
        centered = input - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                if running_mean is not None:
                    running_mean.copy_(running_mean * (1 - momentum) + mean.reshape(channels) * momentum)
                if running_var is not None:
                    unbiased = var.reshape(channels) * (count / (count - 1))
                    running_var.copy_(running_var * (1 - momentum) + unbiased * momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: eval mode needs running_mean and running_var; pass training=True to "
                             "use the batch's statistics")
        centered = input - running_mean.reshape(per_channel)
        var = running_var.reshape(per_channel)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight.reshape(per_channel)
    if bias is not None:
        y = y + bias.reshape(per_channel)
    return y


__all__ = bind_faces("functional", sys.modules[__name__], _function_face)  # relu, tanh, sigmoid are made here
