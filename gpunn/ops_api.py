"""The ops as functions: gpunn.exp(x), gpunn.where(c, x, y), gpunn.concat([...]), and the rest of
torch's everyday top level (argmax, allclose, isnan, norm, amax, ...)."""

import builtins
import math
import sys
import warnings

import numpy as np

from gpunn import ops
from gpunn.autograd import no_grad
from gpunn.errors import DTypeError, IndexOutOfRangeError, ShapeError
from gpunn import functional as F
from gpunn.tensor import (Tensor, ValuesIndices, _operand, _power_at_zero_flat, _reduction, apply, bind_faces, extremum,
                          ones_like, tensor, zeros, zeros_like)

_t = F._as_tensor  # a tensor, or what gpunn.tensor takes (lists, numbers): as torch's top level takes them


def softmax(x, axis=-1, *, dim=None):
    return F.softmax(_t(x), axis, dim=dim)


def log_softmax(x, axis=-1, *, dim=None):
    return F.log_softmax(_t(x), axis, dim=dim)


def matmul(input, other):
    return _t(input) @ other


def where(condition, x, y):
    """Elementwise choice; the gradient flows to x where condition holds and to y elsewhere."""
    like = x if isinstance(x, Tensor) else y if isinstance(y, Tensor) else _t(x)
    cond = condition if isinstance(condition, Tensor) else _operand(condition, like)  # a Tensor: apply checks its device
    return apply(ops.where, cond, _operand(x, like), _operand(y, like))


def clip(x, min=None, max=None):
    return _t(x).clip(min, max)


clamp = clip


def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=False):
    return apply(ops.sum, _t(x), **_reduction(axis, dim, keepdims, keepdim))


def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=False):
    return apply(ops.mean, _t(x), **_reduction(axis, dim, keepdims, keepdim))


def max(x, dim=None, keepdim=False, *, axis=None, keepdims=False):
    """Values over axis= (array API), or (values, indices) along dim (PyTorch), as Tensor.max."""
    return extremum(ops.max, _t(x), dim, keepdim, axis, keepdims)


def min(x, dim=None, keepdim=False, *, axis=None, keepdims=False):
    return extremum(ops.min, _t(x), dim, keepdim, axis, keepdims)


def amax(x, dim=None, keepdim=False):
    return _t(x).amax(dim, keepdim)


def amin(x, dim=None, keepdim=False):
    return _t(x).amin(dim, keepdim)


def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=False):
    return apply(ops.logsumexp, _t(x), **_reduction(axis, dim, keepdims, keepdim))


def reshape(x, shape):
    return _t(x).reshape(shape)


def permute(x, axes):
    return _t(x).permute(axes)


def transpose(x, dim0=-2, dim1=-1):
    return _t(x).transpose(dim0, dim1)


def _tensor_list(name, tensors):
    if not tensors:
        raise ShapeError(f"{name}: needs at least one tensor")
    return [_t(t) for t in tensors]


def concat(tensors, axis=0, *, dim=None):
    tensors = _tensor_list("concat", tensors)
    return apply(ops.concat, *tensors, axis=axis if dim is None else dim)


cat = concat


def stack(tensors, axis=0, *, dim=None):
    tensors = _tensor_list("stack", tensors)
    return apply(ops.stack, *tensors, axis=axis if dim is None else dim)


def argmax(input, axis=None, keepdims=False, *, dim=None, keepdim=False):
    """Index of the largest entry, over everything (dim=None) or along dim (no gradient)."""
    return _t(input).argmax(axis, keepdims, dim=dim, keepdim=keepdim)


def argmin(input, axis=None, keepdims=False, *, dim=None, keepdim=False):
    return _t(input).argmin(axis, keepdims, dim=dim, keepdim=keepdim)


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """The vector p-norm, differentiable: see Tensor.norm."""
    return _t(input).norm(p, dim, keepdim, dtype)


def isnan(input):
    return _t(input).isnan()


def isinf(input):
    return _t(input).isinf()


def isfinite(input):
    return _t(input).isfinite()


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Elementwise closeness as a bool tensor: see Tensor.isclose."""
    return _t(input).isclose(other, rtol, atol, equal_nan)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether every entry of input is close to other's (a Python bool)."""
    return _t(input).allclose(other, rtol, atol, equal_nan)


def equal(input, other):
    """Whether the two have the same shape and values (a Python bool)."""
    return _t(input).equal(other)


# --- the PyTorch surface ported scripts reach for (issue 17) -------------------------------------

def is_tensor(obj):
    """Whether obj is a gpunn Tensor (torch.is_tensor)."""
    return isinstance(obj, Tensor)


def _dim(name, dim, ndim):
    """dim as a non-negative axis of an ndim-d tensor (a 0-d tensor takes dims -1 and 0, as in PyTorch)."""
    rank = builtins.max(ndim, 1)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank:
        raise IndexOutOfRangeError(f"{name}: dim {dim!r} is out of range for a {ndim}-d tensor "
                                   f"(expected an int in [{-rank}, {rank - 1}])")
    return dim % rank


def _integer_index(name, index, input):
    """index as an integer tensor on input's device, of input's rank."""
    index = index if isinstance(index, Tensor) else tensor(index, device=input.device)
    if index.dtype.is_floating_point or index.dtype.name == "bool":
        raise DTypeError(f"{name}: index must be an integer tensor, got {index.dtype}; use .long()")
    if index.ndim != input.ndim:
        raise ShapeError(f"{name}: index has {index.ndim} dimensions but the tensor has {input.ndim}; "
                         "give the index the tensor's number of dimensions")
    return index


def _check_range(name, index, n):
    """Indices within [0, n): checked on the cpu only (free there; on a GPU it would cost a sync)."""
    if index.device.type == "cpu" and index.numel():
        lo, hi = int(index._array.min()), int(index._array.max())
        if lo < 0 or hi >= n:
            raise IndexOutOfRangeError(f"{name}: index {lo if lo < 0 else hi} is out of range for a dimension of "
                                       f"size {n}; indices must lie in [0, {n})")


def _leading(x, shape, axis):
    """x cut to `shape` on every axis but `axis` (PyTorch lets gather and scatter read a corner)."""
    if builtins.all(x.shape[d] == n for d, n in enumerate(shape) if d != axis):
        return x
    return x[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(shape))]


def _fits(name, index, shape, axis, what):
    if builtins.any(n > shape[d] for d, n in enumerate(index.shape) if d != axis):
        raise ShapeError(f"{name}: index of shape {index.shape} is larger than {what} of shape {shape} outside "
                         f"dim {axis}; index.size(d) must be <= {what}.size(d) for d != dim")


def gather(input, dim, index, *, sparse_grad=False):
    """out[i][j] = input[index[i][j]][j] for dim 0 (and so on), as torch.gather; the gradient adds
    up where an index repeats."""
    input = _t(input)
    dim = _dim("gather", dim, input.ndim)
    index = _integer_index("gather", index, input)
    _fits("gather", index, input.shape, dim, "input")
    if input.ndim == 0:
        return input.reshape(1).gather(0, index.reshape(1)).reshape(())
    _check_range("gather", index, input.shape[dim])
    return apply(ops.gather, _leading(input, index.shape, dim), index, axis=dim)


def scatter_add(input, dim, index, src):
    """A copy of input with src[i][j] added at row index[i][j] (dim 0; and so on), as
    torch.scatter_add: repeated indices add up. Differentiable in input and src."""
    input = _t(input)
    dim = _dim("scatter_add", dim, input.ndim)
    index = _integer_index("scatter_add", index, input)
    src = src if isinstance(src, Tensor) else tensor(src, dtype=input.dtype, device=input.device)
    _fits("scatter_add", index, input.shape, dim, "input")
    _fits("scatter_add", index, src.shape, -1, "src")
    if src.dtype != input.dtype:
        raise DTypeError(f"scatter_add: src is {src.dtype.name} but the tensor is {input.dtype.name}; convert src "
                         f"with .to('{input.dtype.name}') (PyTorch refuses this too)")
    if input.ndim == 0:
        return input.reshape(1).scatter_add(0, index.reshape(1), src.reshape(1)).reshape(())
    _check_range("scatter_add", index, input.shape[dim])
    return apply(ops.scatter_add, input, index, _leading(src, index.shape, -1), axis=dim)


SortResult = ValuesIndices  # torch.return_types.sort and .topk: (values, indices)


def argsort(input, dim=-1, descending=False, stable=False):
    """Indices that sort input along dim (ties keep their order: gpunn's sort is always stable)."""
    input = _t(input)
    if input.ndim == 0:
        return zeros_like(input, dtype="int64")
    return input._untracked("argsort", axis=_dim("argsort", dim, input.ndim), descending=bool(descending),
                            stable=True)


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) sorted along dim, as torch.sort; values take gather's gradient."""
    input = _t(input)
    indices = argsort(input, dim, descending)
    if input.ndim == 0:
        return SortResult(input.clone(), indices)
    return SortResult(apply(ops.gather, input, indices, axis=dim % input.ndim), indices)


def topk(input, k, dim=-1, largest=True, sorted=True):
    """The k largest (or smallest) entries along dim and their indices, as torch.topk (always
    sorted; among equal values the first one comes first)."""
    input = _t(input)
    axis = _dim("topk", dim, input.ndim)
    n = input.shape[axis] if input.ndim else 1
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise IndexOutOfRangeError(f"topk: k={k!r} is out of range for a dimension of size {n}; "
                                   f"k must be an int in [0, {n}]")
    order = argsort(input, axis, descending=largest)
    if input.ndim == 0:
        return SortResult(input.clone(), order)
    indices = order[tuple(slice(0, k) if d == axis else slice(None) for d in range(input.ndim))]
    return SortResult(apply(ops.gather, input, indices, axis=axis), indices)


def bincount(input, weights=None, minlength=0):
    """How often each value 0, 1, ... occurs in a 1-d integer tensor (summing `weights` instead of
    ones when given), as torch.bincount; the length max(input) + 1 is read from the device (one
    sync). No gradient, as in PyTorch."""
    input = _t(input)
    if input.ndim != 1 or input.dtype.is_floating_point or input.dtype.name == "bool":
        raise DTypeError(f"bincount: input must be a 1-d integer tensor, got {input.ndim}-d {input.dtype}")
    if isinstance(minlength, bool) or not isinstance(minlength, int) or minlength < 0:
        raise ValueError(f"bincount: minlength must be a non-negative int, got {minlength!r}")
    lowest = int(input.min().item()) if input.numel() else 0
    if lowest < 0:
        raise ValueError(f"bincount: input must hold non-negative integers only, found {lowest}; shift or filter "
                         "the values first")
    n = builtins.max(int(input.max().item()) + 1 if input.numel() else 0, minlength)
    if weights is None:
        src = ones_like(input)
    else:
        src = weights if isinstance(weights, Tensor) else tensor(weights, device=input.device)
        if src.shape != input.shape:
            raise ShapeError(f"bincount: weights of shape {src.shape} must have the input's shape {input.shape}")
        src = src.detach()
    with no_grad():
        return apply(ops.scatter_add, zeros(n, dtype=src.dtype, device=input.device), input, src, axis=0)


def cumsum(input, dim, *, dtype=None):
    """Running sums along dim (integers and booleans sum as int64, as in PyTorch)."""
    input = _t(input) if dtype is None else _t(input).to(dtype=dtype)
    if input.ndim == 0:
        return apply(ops.cumsum, input.reshape(1), axis=0).reshape(())
    return apply(ops.cumsum, input, axis=_dim("cumsum", dim, input.ndim))


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """The product of all entries, or along one dim (right gradients where entries are 0)."""
    input = _t(input) if dtype is None else _t(input).to(dtype=dtype)
    if dim is None:
        return apply(ops.prod, input)
    return apply(ops.prod, input, axis=_dim("prod", dim, input.ndim), keepdims=bool(keepdim))


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over dim (every entry when None): sum of squared deviations / (N - correction),
    correction=1 by default (Bessel's), as torch.var; unbiased=False is correction=0.
    A composite of mean and sums, so it is differentiable."""
    input = _t(input)
    if isinstance(dim, bool):  # torch.var(x, False): the old positional unbiased
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise ValueError("var: give correction= or unbiased=, not both (unbiased=False is correction=0)")
    correction = (1 if unbiased is None or unbiased else 0) if correction is None else correction
    if not input.dtype.is_floating_point:
        raise DTypeError(f"var and std need a floating-point tensor, got {input.dtype}; convert it with .float()")
    over = _reduction(None, dim, False, keepdim)
    axes = over["axis"]
    count = input.numel() if axes is None else math.prod(
        input.shape[a] for a in ((axes,) if isinstance(axes, int) else axes))
    centered = input - input.mean(axis=axes, keepdims=True)
    squares = (centered * centered).sum(**over)
    dof = count - correction
    if dof <= 0:
        warnings.warn(f"var/std: degrees of freedom {dof} <= 0 (N={count}, correction={correction}); "
                      "the result is inf or nan, as in PyTorch", UserWarning, stacklevel=3)
        return squares * where(squares.detach() > 0, math.inf, math.nan)  # x / 0 without NumPy's 0 * inf warning
    return squares / dof


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """The square root of var (same arguments); its gradient is 0 where the variance is 0 (constant
    entries), as PyTorch's, rather than the NaN of a plain square root."""
    return _power_at_zero_flat(var(input, dim, unbiased, keepdim, correction=correction), 0.5)


def bmm(input, mat2):
    """Batched matrix product of (b, n, m) and (b, m, p) tensors, as torch.bmm (3-d only)."""
    input, mat2 = _t(input), _t(mat2)
    if input.ndim != 3 or mat2.ndim != 3 or input.shape[0] != mat2.shape[0]:
        raise ShapeError(f"bmm: needs two 3-d tensors with the same batch size, got shapes {input.shape} and "
                         f"{mat2.shape}; use x @ y (matmul) for other shapes")
    return input @ mat2


def expand(input, *sizes):
    """input broadcast to sizes (-1 keeps an axis; new axes go in front), as torch.Tensor.expand;
    the gradient sums over the repeated axes."""
    input = _t(input)
    sizes = _sizes(sizes)
    extra = len(sizes) - input.ndim
    if extra < 0:
        raise ShapeError(f"expand: {len(sizes)} sizes {sizes} for a {input.ndim}-d tensor of shape {input.shape}; "
                         "give at least one size per dimension")
    shape = []
    for i, n in enumerate(sizes):
        old = input.shape[i - extra] if i >= extra else None
        if n == -1 and old is None:
            raise ShapeError(f"expand: -1 is not allowed for a new leading dimension (sizes {sizes})")
        n = old if n == -1 else n
        if old is not None and old != 1 and old != n:
            raise ShapeError(f"expand: dimension {i - extra} of size {old} cannot become {n} (shape {input.shape} "
                             f"to {sizes}); only dimensions of size 1 expand")
        shape.append(n)
    shape = tuple(shape)
    return input if shape == input.shape else apply(ops.broadcast_to, input, shape=shape)


def _sizes(sizes):
    return tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else tuple(sizes)


def repeat(input, *repeats):
    """input tiled `repeats` times along each dimension (extra repeats add leading dimensions), as
    torch.Tensor.repeat (numpy.tile's meaning): a reshape, a broadcast and a reshape."""
    input = _t(input)
    repeats = _sizes(repeats)
    if len(repeats) < input.ndim:
        raise ShapeError(f"repeat: {len(repeats)} repeats {repeats} for a {input.ndim}-d tensor; give at least one "
                         "per dimension")
    if builtins.any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in repeats):
        raise ValueError(f"repeat: repeats must be non-negative ints, got {repeats}")
    shape = (1,) * (len(repeats) - input.ndim) + input.shape
    spread = tuple(n for s in shape for n in (1, s))
    tiled = tuple(n for r, s in zip(repeats, shape) for n in (r, s))
    out = apply(ops.broadcast_to, input.reshape(spread), shape=tiled)
    return out.reshape(tuple(r * s for r, s in zip(repeats, shape)))


def split(tensor, split_size_or_sections, dim=0):
    """Pieces along dim: of split_size each (the last may be smaller), or of the listed sizes, as
    torch.split; each piece is a slice in the graph."""
    tensor = _t(tensor)
    axis = _dim("split", dim, tensor.ndim)
    n = tensor.shape[axis]
    if isinstance(split_size_or_sections, int) and not isinstance(split_size_or_sections, bool):
        size = split_size_or_sections
        if size <= 0 and not (size == 0 and n == 0):
            raise ValueError(f"split: split_size must be a positive int, got {size}")
        sizes = [builtins.min(size, n - start) for start in range(0, n, size)] if n else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != n or builtins.any(s < 0 for s in sizes):
            raise ShapeError(f"split: sections {sizes} must be non-negative and sum to the size of dim {axis} ({n})")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(tensor[tuple(slice(start, start + size) if d == axis else slice(None)
                                   for d in range(tensor.ndim))])
        start += size
    return tuple(pieces)


def chunk(input, chunks, dim=0):
    """At most `chunks` pieces of equal size ceil(n / chunks) along dim (the last may be smaller,
    and there may be fewer), as torch.chunk."""
    input = _t(input)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = input.shape[_dim("chunk", dim, input.ndim)]
    return split(input, builtins.max(-(-n // chunks), 1), dim)


def masked_fill(input, mask, value):
    """input with `value` where the boolean mask (broadcast to input's shape) is True, as
    torch.masked_fill; the gradient flows to input elsewhere (and to a 0-d tensor value)."""
    input = _t(input)
    mask = mask if isinstance(mask, Tensor) else tensor(mask, device=input.device)
    if mask.dtype.name != "bool":
        raise DTypeError(f"masked_fill: mask must be a bool tensor, got {mask.dtype}; use (mask != 0) or .bool()")
    if _broadcast(mask.shape, input.shape) != input.shape:
        raise ShapeError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the tensor's shape "
                         f"{input.shape}")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ShapeError(f"masked_fill: value must be a number or a 0-d tensor, got shape {value.shape}")
        value = value.to(dtype=input.dtype)
    elif input.dtype.name == "bool":
        value = bool(value)
    elif not input.dtype.is_floating_point:
        value = int(value)
    else:
        value = float(value)
    return apply(ops.where, mask, value, input)


def _broadcast(a, b):
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        return None


__all__ = bind_faces("function", sys.modules[__name__], F._function_face)  # exp, relu, maximum, ... are made here
