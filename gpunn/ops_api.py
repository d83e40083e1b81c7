"""The ops as functions: gpunn.exp(x), gpunn.where(c, x, y), gpunn.concat([...]), and the rest of
torch's everyday top level (argmax, allclose, isnan, norm, amax, ...)."""

from gpunn import ops
from gpunn.errors import ShapeError
from gpunn.functional import log_softmax, relu, sigmoid, softmax, tanh  # noqa: F401 (re-exported)
from gpunn.tensor import Tensor, _operand, _reduction, apply, extremum, tensor


def _t(x):
    return x if isinstance(x, Tensor) else tensor(x)


def exp(x):
    return apply(ops.exp, _t(x))


def log(x):
    return apply(ops.log, _t(x))


def sqrt(x):
    return apply(ops.sqrt, _t(x))


def abs(x):
    return apply(ops.abs, _t(x))


def matmul(x, y):
    return _t(x) @ y


def maximum(x, y):
    x = _t(x)
    return apply(ops.maximum, x, _operand(y, x))


def minimum(x, y):
    x = _t(x)
    return apply(ops.minimum, x, _operand(y, x))


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


def argmax(input, dim=None, keepdim=False):
    """Index of the largest entry, over everything (dim=None) or along dim (no gradient)."""
    return _t(input).argmax(dim=dim, keepdim=keepdim)


def argmin(input, dim=None, keepdim=False):
    return _t(input).argmin(dim=dim, keepdim=keepdim)


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
