"""Tensor: one backend array, its gradient, and the node that made it.

Operators and methods call `apply(primitive, ...)`, which takes the namespace and the device from
the inputs, runs the primitive's forward and, when a gradient is needed, records a node.
"""

import collections
import math

import numpy as np

from gpunn import backends, ops
from gpunn.autograd import Node, backward, mode
from gpunn.device import Device, cuda_device, device as as_device, of as device_of
from gpunn.dtypes import as_dtype
from gpunn.errors import (DeviceError, DTypeError, GpunnError, GraphError, IndexOutOfRangeError, OutOfMemoryError,
                          ShapeError, is_out_of_memory)

_floating = {}  # (type, backend dtype) -> is it floating? (a dict lookup instead of a name parse per op)


def _is_floating(dt):
    # keyed with the type too: NumPy's and array-api-strict's float64 hash alike, and comparing
    # them (on a hash collision) makes array-api-strict warn on every op
    key = (type(dt), dt)
    found = _floating.get(key)
    if found is None:
        found = _floating[key] = as_dtype(dt).is_floating_point
    return found


def apply(primitive, *args, **attrs):
    """Run `primitive` on tensors (and constants) and record how the result was made."""
    dev = None
    arrays = []
    needs_grad = False
    for a in args:
        if isinstance(a, Tensor):
            if dev is None:
                dev = a.device
            elif a.device is not dev:
                _mismatch(primitive.title(attrs), args)
            arrays.append(a._array)
            needs_grad = needs_grad or a.requires_grad
        else:
            arrays.append(a)
    if dev is None:
        raise TypeError(f"{primitive.title(attrs)}: at least one input must be a gpunn.Tensor")
    first = None
    for i in primitive.floats:
        if i < len(args) and isinstance(args[i], Tensor):
            if not _is_floating(arrays[i].dtype):
                raise DTypeError(
                    f"{primitive.title(attrs)} needs floating-point tensors, but input {i} is {args[i].dtype} "
                    f"with shape {tuple(args[i].shape)}; convert it with .float() or .to('float32')")
            if first is None:
                first = arrays[i].dtype
            elif arrays[i].dtype != first:
                raise DTypeError(f"{primitive.title(attrs)}: inputs have different dtypes ({as_dtype(first).name} and "
                                 f"{args[i].dtype.name}); {_cast_hint(args[i].dtype.name)} (PyTorch refuses this too)")
    primitive = dev.fast_paths.get(primitive.name, primitive)
    try:
        if dev.ctx is None:
            out = primitive.forward(dev.xp, *arrays, **attrs)
        else:
            with dev.ctx:
                out = primitive.forward(dev.xp, *arrays, **attrs)
    except GpunnError:
        raise
    except Exception as exc:
        raise _explain(primitive, args, attrs, exc) from exc
    saved = out
    if primitive.saves:
        out, saved = out
    if isinstance(out, np.generic):  # NumPy reduces to scalars; a tensor always holds an array
        out = np.asarray(out)
    result = Tensor._wrap(out, dev)
    if needs_grad and mode.grad_enabled and _is_floating(out.dtype):  # integer results carry no gradient
        result.requires_grad = True
        result._node = Node(primitive, args, arrays, saved, attrs, dev)
    return result


def _mismatch(name, args):
    devices = []
    for a in args:
        if isinstance(a, Tensor) and a.device not in devices:
            devices.append(a.device)
    raise DeviceError(
        f"{name}: inputs are on different devices ({' and '.join(map(str, devices))}); "
        f"nothing moves implicitly: move one with .to('{devices[0]}')")


def _cast_hint(target):
    """How to bring the first input to `target`: usually a float64 batch meeting float32 weights."""
    method = {"float32": "x.float()", "float64": "x.double()"}.get(target, f"x.to('{target}')")
    hint = f"convert the first to match, e.g. {method}"
    if target == "float32":
        hint += ", or load the data as float32: DataLoader(..., dtype='float32')"
    return hint


def _describe(args):
    return ", ".join(f"{tuple(a.shape)} {a.dtype.name}" if isinstance(a, Tensor) else repr(a) for a in args)


def _explain(primitive, args, attrs, exc):
    """Turn a backend's error into one that names the op, the shapes and the fix."""
    name, title = primitive.name, primitive.title(attrs)
    if is_out_of_memory(exc):
        return OutOfMemoryError(
            f"{title}: the device ran out of memory ({exc}) for inputs {_describe(args)}; "
            "use a smaller batch or model, or free tensors you no longer need")
    shapes = [tuple(a.shape) for a in args if isinstance(a, Tensor)]
    if isinstance(exc, IndexError):
        return IndexOutOfRangeError(f"{title}: {exc} (tensor of shape {shapes[0]})")
    if name == "pow" and "negative integer powers" in str(exc):  # NumPy's refusal, not a shape problem
        return DTypeError(f"{title}: integers raised to negative integer powers ({_describe(args)}); "
                          "convert the base with .float() (PyTorch rounds such powers to integers: 2 ** -1 == 0)")
    if isinstance(exc, ValueError) or "shape" in str(exc) or "broadcast" in str(exc):
        if name == "matmul" and len(shapes) == 2:
            hint = "the last axis of the first must equal the second-to-last axis of the second"
        elif name in ("linear", "linear_act") and len(shapes) >= 2:
            hint = f"the input's last axis must be in_features = {shapes[1][-1]}"
        elif name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "where"):
            hint = "broadcasting needs each pair of trailing axes to be equal or 1"
        else:
            hint = str(exc)
        return ShapeError(f"{title}: shapes {', '.join(map(str, shapes))} do not fit: {hint}")
    if isinstance(exc, TypeError):
        return DTypeError(f"{title}: cannot combine inputs ({_describe(args)}): {exc}; "
                          "convert with .to(dtype) so the dtypes match")
    return exc


class Tensor:
    """A multidimensional array on one device, with automatic differentiation."""

    # _grad_slot: where backward writes this leaf's gradient (a view of a flat buffer), if anywhere
    __slots__ = ("_array", "grad", "requires_grad", "device", "_node", "_grad_slot", "__weakref__")
    __array_ufunc__ = None  # NumPy defers to our reflected operators: np_array * tensor -> Tensor

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        made = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self._array, self.grad, self.device = made._array, None, made.device
        self.requires_grad, self._node = made.requires_grad, None

    @classmethod
    def _wrap(cls, array, device):
        """A tensor around an array already on `device`: the internal constructor, no copy."""
        t = object.__new__(cls)
        t._array, t.grad, t.requires_grad, t.device, t._node = array, None, False, device, None
        return t

    # --- facts ---------------------------------------------------------------------------------

    @property
    def shape(self):
        return tuple(self._array.shape)

    @property
    def dtype(self):
        return as_dtype(self._array.dtype)

    @property
    def ndim(self):
        return self._array.ndim

    def dim(self):
        return self._array.ndim

    def numel(self):
        return math.prod(self._array.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def __iter__(self):
        """Rows along the first axis, as PyTorch iterates (each row keeps the graph)."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._array.shape[0]))

    def __array__(self, dtype=None, copy=None):
        """np.asarray(tensor): a host copy from any device."""
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    def __array_function__(self, func, types, args, kwargs):
        """A NumPy function given tensors (np.mean(t), np.allclose(t, a)) works on their values as
        it would on np.asarray(t): a NumPy result, a host copy for device tensors. (NumPy would
        otherwise call t.mean(axis=..., out=...) and fail; PyTorch's tensors fail there.)"""
        if isinstance(kwargs.get("out"), Tensor):
            raise TypeError(f"np.{func.__name__}(..., out=tensor): NumPy cannot write into a gpunn Tensor; "
                            "use the Tensor's own method, or out= a NumPy array")
        return func(*_as_host(args), **_as_host(kwargs))

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._array.shape[0]

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def grad_fn(self):
        return self._node.primitive.name if self._node is not None else None

    def __repr__(self):
        text = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extras = [f"device='{self.device}'"] if self.device.type != "cpu" else []
        if self.dtype.name not in ("float32", "int64", "bool"):
            extras.append(f"dtype={self.dtype}")
        if self.requires_grad:
            extras.append(f"grad_fn=<{self.grad_fn}>" if self._node is not None else "requires_grad=True")
        return f"tensor({', '.join([text] + extras)})"

    def __format__(self, spec):
        """f"{loss:.4f}" formats a one-element tensor as its number."""
        if self.numel() == 1:
            return format(self.item(), spec)
        return format(str(self), spec)

    def __bool__(self):
        if self.numel() != 1:
            raise ValueError(f"the truth value of a tensor with {self.numel()} elements is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.item())

    # --- leaving the graph or the device ---------------------------------------------------------

    def numpy(self):
        """A NumPy copy of the values, from any device."""
        if self.device.type == "cpu":
            return np.array(self._array, copy=True)
        return self.device.backend.to_host(self._array)

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def clone(self):
        """A copy with its own memory that stays in the graph (the gradient flows through)."""
        return apply(ops.copy, self)

    def is_floating_point(self):
        return self.dtype.is_floating_point

    def detach(self):
        """The same values, cut from the graph (shares memory)."""
        return Tensor._wrap(self._array, self.device)

    def retain_grad(self):
        """Keep this intermediate tensor's gradient in `.grad` after backward (leaves always do)."""
        if self._node is not None:
            self._node.retains_grad = True
        elif not self.requires_grad:
            raise GraphError("retain_grad() on a tensor that does not require grad")
        return self

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not self.dtype.is_floating_point:
            raise DTypeError(f"only floating-point tensors can require gradients, not {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, target=None, dtype=None, *, device=None, non_blocking=False):
        """Move to a device and/or cast to a dtype: `x.to('cuda')`, `x.to('float64')`.

        A move is differentiable: the gradient flows back to the source device. `non_blocking`
        is accepted for PyTorch code; a move is ordered like any other op, so it needs no hint.
        """
        if target is not None:
            if _looks_like_dtype(target):
                dtype = target
            else:
                device = target
        result = self
        if device is not None:
            dev = as_device(device)
            if dev is not self.device:
                result = Tensor._wrap(dev.put(self._array), dev)
                if self.requires_grad and mode.grad_enabled:
                    result.requires_grad = True
                    result._node = Node(_TRANSFER, (self,), (), None, {"source": self.device}, dev)
        if dtype is not None and result.dtype != as_dtype(dtype):
            result = apply(ops.astype, result, dtype=result.device.dtype(as_dtype(dtype)))
        return result

    def astype(self, dtype):
        return self.to(dtype=dtype)

    def float(self):
        return self.to(dtype="float32")

    def double(self):
        return self.to(dtype="float64")

    def long(self):
        return self.to(dtype="int64")

    def int(self):
        """int32, as torch.Tensor.int (use .long() for int64, gpunn's default integer type)."""
        return self.to(dtype="int32")

    def half(self):
        """float16: NumPy and CuPy have it; array-api-strict (the standard) does not."""
        return self.to(dtype="float16")

    def cpu(self):
        """This tensor on the cpu (itself when already there), as `x.cpu().numpy()` expects."""
        return self.to("cpu")

    def cuda(self, device=None, non_blocking=False):
        """This tensor on a CUDA device: an index, "cuda:N" or a Device; None means cuda:0."""
        return self.to(cuda_device(device))

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    def backward(self, grad=None, retain_graph=False, *, gradient=None):
        """Accumulate the gradient of this tensor into every leaf that requires one.

        `gradient=` is PyTorch's name for `grad`."""
        grad = gradient if grad is None else grad
        if not self.requires_grad:
            raise GraphError(
                "backward() on a tensor that does not require grad: no input of the computation had "
                "requires_grad=True (or it ran under gpunn.no_grad())")
        if grad is None:
            if self.numel() != 1:
                raise GraphError(f"backward() without a gradient needs a scalar, this tensor has shape {self.shape}; "
                                 "pass grad= of the same shape, or reduce with .sum() first")
            node = self._node
            if node is not None and node.primitive.unit_seeded and not node.retains_grad and not mode.anomaly:
                seed = ops.UNIT  # its rule never reads it: no ones array to fill
            else:
                with self.device.scope:
                    seed = self.device.xp.ones_like(self._array)
        else:
            grad = grad if isinstance(grad, Tensor) else tensor(grad, dtype=self.dtype, device=self.device)
            if grad.device is not self.device:
                _mismatch("backward", (self, grad))
            seed = grad._array
            if tuple(seed.shape) != self.shape:
                raise ShapeError(f"backward(grad=...) got shape {tuple(seed.shape)} for a tensor of shape {self.shape}")
        backward(self, seed, retain_graph=retain_graph)

    # --- in-place edits: correct or refused -------------------------------------------------------

    def _assign(self, array):
        if tuple(array.shape) != self.shape:
            raise ShapeError(f"in-place update would change the shape {self.shape} to {tuple(array.shape)}")
        if array.dtype != self._array.dtype:
            raise DTypeError(f"in-place update would change the dtype {self.dtype} to {as_dtype(array.dtype)}")
        self._array = array  # a new array: graphs that saved the old one stay correct
        return self

    def _inplace(self, primitive, *others):
        if mode.grad_enabled and (self.requires_grad or any(getattr(o, "requires_grad", False) for o in others)):
            raise GraphError(
                f"in-place {primitive.name} on a tensor that requires grad would corrupt the graph; "
                "write x = x + y, or do the update under gpunn.no_grad()")
        return self._assign(apply(primitive, self, *(_operand(o, self) for o in others))._array)

    def __iadd__(self, other):
        return self._inplace(ops.add, other)

    def __isub__(self, other):
        return self._inplace(ops.sub, other)

    def __imul__(self, other):
        return self._inplace(ops.mul, other)

    def __itruediv__(self, other):
        return self._inplace(ops.div, other)

    # PyTorch's spelling of the same edits: x.add_(y, alpha=a) is x += a * y
    def add_(self, other, *, alpha=1):
        return self._inplace(ops.add, self._scaled(other, alpha))

    def sub_(self, other, *, alpha=1):
        return self._inplace(ops.sub, self._scaled(other, alpha))

    def mul_(self, other):
        return self._inplace(ops.mul, other)

    def div_(self, other):
        return self._inplace(ops.div, other)

    def exp_(self):
        return self._inplace(ops.exp)

    def _scaled(self, other, alpha):
        return other if alpha == 1 else _operand(other, self) * alpha

    def __setitem__(self, index, value):
        if mode.grad_enabled and (self.requires_grad or getattr(value, "requires_grad", False)):
            raise GraphError("item assignment is not differentiable: do it under gpunn.no_grad(), or build the "
                             "tensor with gpunn.where / gpunn.concat so the gradient can flow")
        value = _operand(value, self)
        if isinstance(value, Tensor) and value.device is not self.device:
            _mismatch("setitem", (self, value))
        with self.device.scope:
            updated = self.device.xp.asarray(self._array, copy=True)
            updated[_full_index(_index(index, self.device), self.ndim)] = (
                value._array if isinstance(value, Tensor) else value)
        self._assign(updated)

    def zero_(self):
        with self.device.scope:
            return self._assign(self.device.xp.zeros_like(self._array))

    def fill_(self, value):
        with self.device.scope:
            return self._assign(self.device.xp.full_like(self._array, value))

    def copy_(self, other):
        """Overwrite the values with `other`'s (moved and cast to this tensor's device and dtype)."""
        other = other if isinstance(other, Tensor) else tensor(other, device=self.device)
        if mode.grad_enabled and (self.requires_grad or other.requires_grad):
            raise GraphError("copy_ is not differentiable: do it under gpunn.no_grad()")
        array = self.device.put(other._array)
        xp = self.device.xp
        with self.device.scope:
            if array.dtype != self._array.dtype:
                array = xp.astype(array, self._array.dtype)
            try:
                array = xp.broadcast_to(array, self._array.shape)
            except ValueError:
                raise ShapeError(f"copy_: values of shape {other.shape} do not broadcast to {self.shape}") from None
            return self._assign(xp.asarray(array, copy=True))

    # --- arithmetic ------------------------------------------------------------------------------

    def __add__(self, other):
        return apply(ops.add, *_promoted(self, _operand(other, self)))

    def __radd__(self, other):
        return apply(ops.add, *_promoted(_operand(other, self), self))

    def __sub__(self, other):
        return apply(ops.sub, *_promoted(self, _operand(other, self)))

    def __rsub__(self, other):
        return apply(ops.sub, *_promoted(_operand(other, self), self))

    def __mul__(self, other):
        return apply(ops.mul, *_promoted(self, _operand(other, self)))

    def __rmul__(self, other):
        return apply(ops.mul, *_promoted(_operand(other, self), self))

    def __truediv__(self, other):
        return apply(ops.div, *_promoted(self, _operand(other, self), true_division=True))

    def __rtruediv__(self, other):
        return apply(ops.div, *_promoted(_operand(other, self), self, true_division=True))

    def __pow__(self, other):
        return apply(ops.pow, *_promoted(self, _operand(other, self)))

    def __rpow__(self, other):
        return apply(ops.pow, *_promoted(_operand(other, self), self))

    def __matmul__(self, other):
        return apply(ops.matmul, self, _operand(other, self, scalars=False))

    def pow(self, exponent):
        return self ** exponent

    def matmul(self, other):
        return self @ other

    def mm(self, other):
        """The product of two matrices (2-D only, as torch.mm; `@` also takes vectors and batches)."""
        shapes = (self.shape, getattr(other, "shape", None))
        if self.ndim != 2 or getattr(other, "ndim", None) != 2:
            raise ShapeError(f"mm multiplies two matrices (2-D), got shapes {shapes[0]} and {shapes[1]}; "
                             "use x @ y (matmul) for vectors and batches")
        return self @ other

    def __floordiv__(self, other):
        a, b = _promoted(self, _operand(other, self))
        return a._untracked_binary("floor_divide", b, lambda x, y: x // y)

    def __rfloordiv__(self, other):
        a, b = _promoted(_operand(other, self), self)
        return b._untracked_binary("floor_divide", a, lambda y, x: x // y)

    def __rmatmul__(self, other):
        return apply(ops.matmul, _operand(other, self, scalars=False), self)

    def __neg__(self):
        return apply(ops.neg, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return apply(ops.abs, self)

    # comparisons (and floor division) give tensors without gradient
    def _untracked_binary(self, name, other, fn):
        """fn(self's array, other's array or number) on this tensor's device, outside the graph."""
        other = _operand(other, self)
        if isinstance(other, Tensor) and other.device is not self.device:
            _mismatch(name, (self, other))
        with self.device.scope:
            return Tensor._wrap(fn(self._array, other._array if isinstance(other, Tensor) else other), self.device)

    def _compare(self, other, fn):
        return self._untracked_binary("comparison", other, fn)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def __eq__(self, other):
        if other is None:  # PyTorch: `t == None` is False (and `t != None` True), one Python bool
            return False
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        if other is None:
            return True
        return self._compare(other, lambda a, b: a != b)

    __hash__ = object.__hash__

    # --- functions as methods ---------------------------------------------------------------------

    def exp(self):
        return apply(ops.exp, self)

    def log(self):
        return apply(ops.log, self)

    def sqrt(self):
        return apply(ops.sqrt, self)

    def abs(self):
        return apply(ops.abs, self)

    def tanh(self):
        return apply(ops.tanh, self)

    def sigmoid(self):
        return apply(ops.sigmoid, self)

    def relu(self):
        return apply(ops.relu, self)

    def softmax(self, axis=-1, *, dim=None):
        return apply(ops.softmax, self, axis=_pick(axis, dim, -1))

    def log_softmax(self, axis=-1, *, dim=None):
        return apply(ops.log_softmax, self, axis=_pick(axis, dim, -1))

    def maximum(self, other):
        return apply(ops.maximum, self, _operand(other, self))

    def minimum(self, other):
        return apply(ops.minimum, self, _operand(other, self))

    def clip(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clip needs min, max or both")
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            return self._clip_to_tensors(min, max)
        return apply(ops.clip, self, lo=min, hi=max)

    def _clip_to_tensors(self, lo, hi):
        """clip with tensor bounds (broadcast elementwise, as PyTorch allows), made of where: the
        gradient goes to the input inside [lo, hi] and to the bound it was clipped to."""
        out = self
        if lo is not None:
            out = apply(ops.where, out < lo, _operand(lo, self), out)
        if hi is not None:
            out = apply(ops.where, out > hi, _operand(hi, self), out)
        return out

    clamp = clip

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return apply(ops.sum, self, **_reduction(axis, dim, keepdims, keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return apply(ops.mean, self, **_reduction(axis, dim, keepdims, keepdim))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=False):
        """`x.max(axis=1)` (array API): the values. `x.max(1)` / `x.max(dim=1)` (PyTorch): the
        named pair (values, indices)."""
        return extremum(ops.max, self, dim, keepdim, axis, keepdims)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=False):
        """As `max`: values for axis=, (values, indices) for dim."""
        return extremum(ops.min, self, dim, keepdim, axis, keepdims)

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return apply(ops.logsumexp, self, **_reduction(axis, dim, keepdims, keepdim))

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        kw = _reduction(axis, dim, keepdims, keepdim)
        _check_not_empty("argmax", self.shape, kw["axis"])
        return self._untracked("argmax", **kw)

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        kw = _reduction(axis, dim, keepdims, keepdim)
        _check_not_empty("argmin", self.shape, kw["axis"])
        return self._untracked("argmin", **kw)

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """The vector p-norm over `dim` (every entry when None), as torch.Tensor.norm: "fro" and 2
        give the Euclidean norm, 1 the sum of magnitudes, inf / -inf the largest / smallest
        magnitude, 0 the number of non-zeros (no gradient), other p (sum |x|**p) ** (1/p).

        A composite of primitives, so it is differentiable; where a norm is 0 its gradient is 0
        (PyTorch's choice) rather than the NaN a plain sqrt would give.
        """
        x = self if dtype is None else self.to(dtype=dtype)
        if not x.dtype.is_floating_point:
            raise DTypeError(f"norm needs a floating-point tensor, got {x.dtype}; convert it with .float()")
        if p == "fro":
            p = 2
        elif isinstance(p, str) or isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"norm: p={p!r} is not supported; give a number, inf, -inf or 'fro' "
                             "(the nuclear norm 'nuc' needs singular values, which gpunn does not have)")
        over = _reduction(None, dim, False, keepdim)
        if p == math.inf:
            return apply(ops.max, x.abs(), **over)
        if p == -math.inf:
            return apply(ops.min, x.abs(), **over)
        if p == 0:
            return (x != 0).to(dtype=x.dtype).sum(**over)
        if p == 1:
            return x.abs().sum(**over)
        total = (x * x if p == 2 else _power_at_zero_flat(x.abs(), p)).sum(**over)
        return _power_at_zero_flat(total, 0.5 if p == 2 else 1.0 / p)

    def isnan(self):
        return self._untracked("isnan")

    def isinf(self):
        return self._untracked("isinf")

    def isfinite(self):
        return self._untracked("isfinite")

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """Elementwise |self - other| <= atol + rtol * |other| (a bool tensor, no gradient), as
        torch.isclose: infinities are close only to themselves, NaN only with equal_nan=True.
        Integer tensors are compared in float64."""
        if not isinstance(other, Tensor):
            if not self.dtype.is_floating_point:  # a number against integers: 0.5 must not become 0
                return self.double().isclose(tensor(other, dtype="float64", device=self.device), rtol, atol, equal_nan)
            other = tensor(other, dtype=self.dtype, device=self.device)
        if other.device is not self.device:
            _mismatch("isclose", (self, other))
        if other.dtype != self.dtype:
            raise DTypeError(f"isclose: the tensors have different dtypes ({self.dtype.name} and {other.dtype.name}); "
                             f"convert one, e.g. other.to('{self.dtype.name}') (PyTorch refuses this too)")
        xp = self.device.xp
        with self.device.scope:
            a, b = self._array, other._array
            if not self.dtype.is_floating_point:
                wide = self.device.dtype(as_dtype("float64"))
                a, b = xp.astype(a, wide), xp.astype(b, wide)
            finite = xp.isfinite(a) & xp.isfinite(b)
            a0, b0 = xp.where(finite, a, 0.0), xp.where(finite, b, 0.0)  # no inf - inf: no warnings
            close = (a == b) | (finite & (xp.abs(a0 - b0) <= atol + rtol * xp.abs(b0)))
            if equal_nan:
                close = close | (xp.isnan(a) & xp.isnan(b))
            return Tensor._wrap(close, self.device)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """Whether every entry isclose (a Python bool: one host sync)."""
        return bool(self.isclose(other, rtol, atol, equal_nan).all())

    def equal(self, other):
        """Whether `other` has the same shape and the same values (a Python bool), as torch.equal."""
        other = other if isinstance(other, Tensor) else tensor(other, device=self.device)
        if other.shape != self.shape:
            return False
        a, b = _promoted(self, other)
        return bool((a == b).all())

    def any(self):
        return self._untracked("any")

    def all(self):
        return self._untracked("all")

    def _untracked(self, name, **kw):
        """xp.<name>(self._array): a result without gradient, computed on this tensor's device."""
        with self.device.scope:
            return Tensor._wrap(getattr(self.device.xp, name)(self._array, **kw), self.device)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if shape == self.shape:
            return self
        try:
            return apply(ops.reshape, self, shape=shape)
        except ShapeError:
            raise ShapeError(f"reshape: cannot reshape {self.shape} ({self.numel()} elements) to {shape}") from None

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        rank = max(len(shape), 1)  # a 0-d tensor takes dims -1 and 0, as in PyTorch
        for dim in (start_dim, end_dim):
            if not -rank <= dim < rank:
                raise IndexOutOfRangeError(f"flatten: dim {dim} is out of range for a {len(shape)}-d tensor "
                                           f"(expected one in [{-rank}, {rank - 1}])")
        if not shape:
            return self.reshape(1)
        start, end = start_dim % len(shape), end_dim % len(shape)
        if start > end:
            raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for a {len(shape)}-d "
                             "tensor; swap them")
        return self.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def unflatten(self, dim, sizes):
        """Split axis `dim` into `sizes` (one entry may be -1), the inverse of flatten (torch.Tensor.unflatten)."""
        shape = self.shape
        if not isinstance(sizes, (tuple, list)):
            raise TypeError(f"unflatten: sizes must be a tuple of ints, got {type(sizes).__name__} {sizes!r}")
        if not sizes:
            raise ShapeError("unflatten: sizes must be non-empty, e.g. (2, 3) to split an axis of 6")
        if not shape:
            raise IndexOutOfRangeError("unflatten: a 0-d tensor has no axis to split; reshape it instead")
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, int) or n < -1:
                raise TypeError(f"unflatten: sizes[{i}] = {n!r} must be an int >= 0 (or -1, once, to infer it)")
        if not -len(shape) <= dim < len(shape):
            raise IndexOutOfRangeError(f"unflatten: dim {dim} is out of range for a {len(shape)}-d tensor "
                                       f"(expected one in [{-len(shape)}, {len(shape) - 1}])")
        dim %= len(shape)
        known = math.prod(n for n in sizes if n != -1)
        if list(sizes).count(-1) > 1 or (-1 in sizes and known == 0):
            raise ShapeError(f"unflatten: sizes {tuple(sizes)} leave the size to infer ambiguous; give at most "
                             "one -1, and no -1 beside a 0")
        if -1 in sizes and shape[dim] % known == 0:
            sizes = tuple(shape[dim] // known if n == -1 else n for n in sizes)
        if -1 in sizes or math.prod(sizes) != shape[dim]:
            raise ShapeError(f"unflatten: sizes {tuple(sizes)} don't multiply up to the size of dim {dim} "
                             f"({shape[dim]}) of the tensor of shape {shape}")
        return self.reshape(shape[:dim] + tuple(sizes) + shape[dim + 1:])

    def unsqueeze(self, dim):
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        """Drop axes of length 1: all of them, or those of `dim` (an int or, as in PyTorch 2, a tuple)."""
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dims = {d % (self.ndim or 1) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if i not in dims or n != 1))

    def permute(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return apply(ops.permute, self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, dim0=-2, dim1=-1):
        """Swap two axes (PyTorch's meaning; the default swaps the last two)."""
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return apply(ops.permute, self, axes=tuple(axes))

    def t(self):
        """The transpose of a matrix; vectors and scalars as they are (torch.Tensor.t)."""
        if self.ndim > 2:
            raise ShapeError(f"t() transposes tensors of at most 2 dimensions, this one has shape {self.shape}; "
                             "use .transpose(dim0, dim1) or .mT for the last two axes")
        return self.T

    @property
    def T(self):
        return apply(ops.permute, self, axes=tuple(range(self.ndim))[::-1]) if self.ndim > 1 else self

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def __getitem__(self, index):
        return apply(ops.getitem, self, index=_full_index(_index(index, self.device), self.ndim))


def _power_at_zero_flat(a, p):
    """a ** p for a >= 0 whose gradient is 0 where a == 0 (PyTorch's choice for norms): there the
    true slope is 0 * inf or inf, which would spread NaN, so the power is taken at 1 instead and
    its result replaced by 0 ** p (0, or inf for negative p)."""
    zero = a == 0
    safe = apply(ops.where, zero, 1.0, a)
    return apply(ops.where, zero, 0.0 if p > 0 else math.inf, safe.sqrt() if p == 0.5 else safe ** p)


_TRANSFER = ops.Primitive("to_device", None, lambda xp, g, out, source: source.put(g))


def _integral(v):
    return isinstance(v, int) or (isinstance(v, Tensor) and not _is_floating(v._array.dtype))


def _promoted(a, b, true_division=False):
    """PyTorch's promotion where NumPy's differs: an integer tensor meeting a float (a Python number
    or a float tensor) takes that float's dtype (float32 for Python floats), and integer / integer
    gives float32. NumPy would give float64; array-api-strict would refuse. A 0-d tensor meeting
    a tensor with axes of the same kind (both floating, or both integer) takes the other's dtype:
    float32 x times a float64 0-d tensor stays float32, as in PyTorch (NumPy would widen it)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor) and (a.ndim == 0) != (b.ndim == 0) and a.dtype != b.dtype:
        if _is_floating(a._array.dtype) == _is_floating(b._array.dtype) and "bool" not in (a.dtype.name, b.dtype.name):
            if a.ndim == 0:
                a = a.to(dtype=b.dtype)
            else:
                b = b.to(dtype=a.dtype)
    ia, ib = _integral(a), _integral(b)
    if ia and ib:
        if not true_division:
            return a, b
        a = a.float() if isinstance(a, Tensor) else float(a)
        return a, (b.float() if isinstance(b, Tensor) else float(b))
    if ia and isinstance(a, Tensor):
        a = a.to(dtype=b.dtype if isinstance(b, Tensor) else "float32")
    elif ib and isinstance(b, Tensor):
        b = b.to(dtype=a.dtype if isinstance(a, Tensor) else "float32")
    return a, b


def _looks_like_dtype(value):
    if isinstance(value, (Device,)):
        return False
    if isinstance(value, str):
        try:
            as_dtype(value)
            return True
        except ValueError:
            return False
    try:
        as_dtype(value)
        return True
    except (TypeError, ValueError):
        return False


def _pick(value, alias, default):
    return alias if alias is not None and value == default else value


ValuesIndices = collections.namedtuple("ValuesIndices", ["values", "indices"])
"""What x.max(dim) and x.min(dim) return, like torch.return_types.max."""


def extremum(primitive, x, dim, keepdim, axis, keepdims):
    """max/min: array-API spelling gives values, PyTorch's `dim` gives (values, indices)."""
    if isinstance(dim, Tensor):  # torch.max(a, b): elementwise
        return apply(ops.maximum if primitive.name == "max" else ops.minimum, x, dim)
    if dim is None:
        return apply(primitive, x, **_reduction(axis, None, keepdims, False))
    if axis is not None or not isinstance(dim, int):
        raise TypeError(f"{primitive.name}: pass one int dim= (PyTorch: returns values and indices) "
                        "or axis= (array API: values, any axes), not both")
    values = apply(primitive, x, axis=dim, keepdims=bool(keepdim))
    indices = x._untracked("argmax" if primitive.name == "max" else "argmin", axis=dim, keepdims=bool(keepdim))
    return ValuesIndices(values, indices)


def _reduction(axis, dim, keepdims, keepdim):
    """Array-API `axis`/`keepdims`, with PyTorch's `dim`/`keepdim` accepted too."""
    axis = dim if axis is None else axis
    if isinstance(axis, list):
        axis = tuple(axis)
    return {"axis": axis, "keepdims": bool(keepdims or keepdim)}


def _operand(value, like, scalars=True):
    """The other side of a binary op: Tensors as they are, Python numbers as constants, the rest
    (lists, NumPy arrays) as constant tensors on `like`'s device."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic):  # np.float64(2.0) acts as 2.0, as in PyTorch (no promotion)
        value = value.item()
    if scalars and isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (int, float, bool)):
        return tensor(value, dtype=like.dtype, device=like.device)
    return tensor(value, device=like.device)


def _index(index, dev):
    """Indices with Tensors, lists and NumPy arrays turned into arrays on `dev`."""
    if isinstance(index, tuple):
        return tuple(_index(i, dev) for i in index)
    if isinstance(index, Tensor):
        if index.device is not dev:
            raise DeviceError(f"getitem: index on {index.device} for a tensor on {dev}; move the index with .to('{dev}')")
        return index._array
    if isinstance(index, (list, np.ndarray)):
        return dev.put(np.asarray(index))
    if isinstance(index, np.generic):  # np.int64(1) from NumPy loops and argmax: a plain int
        return index.item()
    return index


def _full_index(index, ndim):
    """The standard wants every axis named: x[0] on a matrix is spelled x[0, ...] (same meaning)."""
    parts = index if isinstance(index, tuple) else (index,)
    if len(parts) == 1 and hasattr(parts[0], "shape"):  # x[(rows,)] is x[rows]: the standard's take
        return parts[0]
    if any(p is Ellipsis or hasattr(p, "shape") for p in parts) or sum(p is not None for p in parts) >= ndim:
        return index
    return parts + (Ellipsis,)


# --- creation ------------------------------------------------------------------------------------


def _host_array(data, dtype):
    """A NumPy array from Python data, with PyTorch's default dtypes: Python floats become float32,
    NumPy arrays keep their dtype, integers become int64."""
    try:
        host = np.asarray(data)
    except ValueError:
        raise ShapeError("cannot make a tensor from nested lists whose rows have different lengths; "
                         "pad them to one length first") from None
    if dtype is not None:
        return host.astype(as_dtype(dtype).name, copy=False)
    if host.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        return host.astype(np.float32)
    if host.dtype.kind in "iu" and not isinstance(data, (np.ndarray, np.generic)):
        return host.astype(np.int64)
    if host.dtype.kind not in "biuf":
        raise DTypeError(f"cannot make a tensor from {type(data).__name__} of dtype {host.dtype}")
    return host


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor (always a copy) from Python scalars and lists, NumPy arrays, backend arrays or
    tensors. Python floats give float32; NumPy arrays and backend arrays keep their dtype."""
    if isinstance(data, Tensor):
        source, array = data.device, data._array
    elif backends.owner(data) not in (None, "cpu"):
        source, array = device_of(data), data
    else:
        source, array = None, None
    dev = as_device(device) if device is not None else (source or as_device("cpu"))
    if array is None:
        host = _host_array(data, dtype)
        if dev.type == "cpu":
            array = np.array(host, copy=True)
        else:
            array = dev.put(np.asarray(host, order="C"))  # keeps 0-d arrays 0-d
    else:
        array = dev.put(array)
        if array is data or (isinstance(data, Tensor) and array is data._array):
            array = dev.xp.asarray(array, copy=True)
        if dtype is not None and as_dtype(array.dtype) != as_dtype(dtype):
            array = dev.xp.astype(array, dev.dtype(as_dtype(dtype)))
    result = Tensor._wrap(array, dev)
    if requires_grad:
        result.requires_grad_(True)
    return result


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _create(fn, shape, dtype, device, requires_grad, **kw):
    dev = as_device(device or "cpu")
    kw["dtype"] = dev.dtype(as_dtype(dtype))
    try:
        if dev.ctx is None:
            array = getattr(dev.xp, fn)(shape, device=dev.native, **kw)
        else:
            with dev.ctx:
                array = getattr(dev.xp, fn)(shape, **kw)
    except Exception as exc:
        if is_out_of_memory(exc):
            size = math.prod(shape) * as_dtype(dtype).itemsize
            raise OutOfMemoryError(
                f"{fn}: {dev} ran out of memory allocating {size / 2**20:.1f} MiB for shape {shape} ({exc}); "
                "use a smaller batch or model, or free tensors you no longer need") from exc
        raise
    result = Tensor._wrap(array, dev)
    return result.requires_grad_(True) if requires_grad else result


def zeros(*shape, dtype="float32", device=None, requires_grad=False):
    return _create("zeros", _shape(shape), dtype, device, requires_grad)


def ones(*shape, dtype="float32", device=None, requires_grad=False):
    return _create("ones", _shape(shape), dtype, device, requires_grad)


def empty(*shape, dtype="float32", device=None, requires_grad=False):
    return _create("empty", _shape(shape), dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = "bool" if isinstance(fill_value, bool) else "int64" if isinstance(fill_value, int) else "float32"
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return _create("full", shape, dtype, device, requires_grad, fill_value=fill_value)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """`steps` evenly spaced values from start to end, both included (float32 unless `dtype`).

    Computed on the host in float64, then cast (integer dtypes truncate), like arange."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"linspace: steps must be a non-negative int, got {steps!r}")
    values = np.linspace(float(start), float(end), int(steps))
    return tensor(values.astype(as_dtype(dtype or "float32").name), device=device, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = "int64" if all(isinstance(v, int) for v in (start, stop, step)) else "float32"
    return tensor(np.arange(start, stop, step, dtype=as_dtype(dtype).name), device=device, requires_grad=requires_grad)


def eye(n, m=None, dtype="float32", device=None, requires_grad=False):
    return tensor(np.eye(n, m, dtype=as_dtype(dtype).name), device=device, requires_grad=requires_grad)


def _like(fn, t, dtype, device, requires_grad, **kw):
    return fn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad, **kw)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype, device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def from_numpy(array):
    """A cpu tensor sharing memory with a NumPy array (no copy), as torch.from_numpy."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a NumPy array, got {type(array).__name__}")
    return Tensor._wrap(array, as_device("cpu"))


def from_dlpack(obj):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, ...)."""
    kind, index = obj.__dlpack_device__()
    if int(kind) == 1:  # kDLCPU
        return Tensor._wrap(np.from_dlpack(obj), as_device("cpu"))
    if int(kind) == 2:  # kDLCUDA
        dev = as_device(f"cuda:{index}")
        with dev.ctx:
            return Tensor._wrap(dev.backend.from_dlpack(obj), dev)
    raise DeviceError(f"from_dlpack: DLPack device type {kind} is not supported (only CPU and CUDA)")


def _check_not_empty(name, shape, axis):
    """PyTorch's IndexError for argmax/argmin over nothing: an empty tensor without dim, or dim of
    size 0 (NumPy's message is "attempt to get argmax of an empty sequence")."""
    if axis is None and math.prod(shape) == 0:
        raise IndexOutOfRangeError(f"{name}: the tensor is empty (shape {shape}), so it has no largest or smallest "
                                   "entry; pass dim= over a non-empty axis, or check the tensor's size first")
    if axis is not None and shape and shape[axis] == 0:
        raise IndexOutOfRangeError(f"{name}: dim {axis} has size 0 (shape {shape}), so it has no largest or "
                                   "smallest entry; reduce over a non-empty dim")


def _as_host(value):
    """`value` with every Tensor in it (tuples, lists and dicts too) a NumPy array."""
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_as_host(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_host(v) for k, v in value.items()}
    return value
