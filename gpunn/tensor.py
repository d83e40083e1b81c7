"""Tensor: one backend array, its gradient, and the node that made it.

Operators and methods call `apply(primitive, ...)`, which takes the namespace and the device from
the inputs, runs the primitive's forward and, when a gradient is needed, records a node.
"""

import collections
import math
import weakref

import numpy as np

from gpunn import backends, ops
from gpunn import mixed_precision as _amp
from gpunn.autograd import Node, Version, grad_targets, mode, no_higher_order, run_backward
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
    if primitive.autocast is not None and _amp.state.enabled:  # mixed precision: gpunn.mixed_precision
        args = _amp.cast_inputs(primitive, args)
    dev = None
    arrays, parents = [], []  # parents[i]: where input i's gradient goes (its node, the leaf, or None)
    needs_grad = False
    for a in args:
        if isinstance(a, Tensor):
            if dev is None:
                dev = a.device
            elif a.device is not dev:
                _mismatch(primitive.title(attrs), args)
            arrays.append(a._array)
            if a.requires_grad:
                needs_grad = True
                parents.append(a if a._node is None else a._node)
            else:
                parents.append(None)
        else:
            arrays.append(a)
            parents.append(None)
    if dev is None:
        raise TypeError(f"{primitive.title(attrs)}: at least one input must be a gpunn.Tensor")
    if primitive.floats:
        _check_floats(primitive, args, arrays, attrs)
    primitive = dev.fast_paths.get(primitive.name, primitive)
    try:
        if dev.ctx is None:  # not `with dev.scope:`, which costs every op 0.6 us more on the cpu
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
    if primitive.view:
        _share_storage(result, args[0], dev)
    if needs_grad and mode.grad_enabled and _is_floating(out.dtype):  # integer results carry no gradient
        result.requires_grad = True
        result._node = _record(primitive, args, arrays, parents, saved, attrs, dev, result)
    return result


def _check_floats(primitive, args, arrays, attrs):
    """The inputs named in primitive.floats are floating point, all of one dtype (PyTorch's rule)."""
    first = None
    for i in range(len(args)) if primitive.floats is True else primitive.floats:
        if i < len(args) and isinstance(args[i], Tensor):
            dtype = arrays[i].dtype
            if first is None:
                if not _is_floating(dtype):
                    raise DTypeError(
                        f"{primitive.title(attrs)} needs floating-point tensors, but input {i} is {args[i].dtype} "
                        f"with shape {tuple(args[i].shape)}; convert it with .float() or .to('float32')")
                first = dtype
            elif dtype is not first and dtype != first:
                if not _is_floating(dtype):
                    raise DTypeError(
                        f"{primitive.title(attrs)} needs floating-point tensors, but input {i} is {args[i].dtype} "
                        f"with shape {tuple(args[i].shape)}; convert it with .float() or .to('float32')")
                raise DTypeError(f"{primitive.title(attrs)}: inputs have different dtypes ({as_dtype(first).name} and "
                                 f"{args[i].dtype.name}); {_cast_hint(args[i].dtype.name)} (PyTorch refuses this too)")


def _record(primitive, args, arrays, parents, saved, attrs, dev, result):
    """The node for `result`, with the versions of what its rules read."""
    versions = []
    for i in range(len(args)) if primitive.reads is None else primitive.reads:
        a = args[i]
        if isinstance(a, Tensor):
            counter = a._counter
            if counter is None:  # (_counter_of, inline: this runs for every input of every op)
                counter = a._counter = Version()
            versions.append((counter, counter.n, i))
    if primitive.reads_out:
        versions.append((_counter_of(result), result._counter.n, -1))
    return Node(primitive, parents, arrays, saved, attrs, dev, versions or None)


def _share_storage(view, base, dev):
    """A view primitive's result shares its input's storage and version where the backend made a
    view (reshape copies what it cannot view, as PyTorch's does)."""
    if dev.backend.shares_memory(view._array, base._array):
        view._counter = _counter_of(base)
        root = getattr(base, "_base", None)  # not `or`: a Tensor's truth value is its values'
        view._base = base if root is None else root


class _HookHandle:
    """What register_hook returns: remove() unregisters the hook (PyTorch's RemovableHandle)."""
    _next = 0

    def __init__(self, hooks, hook):
        self.hooks, self.id = hooks, _HookHandle._next
        _HookHandle._next += 1
        hooks[self.id] = hook

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _keep_old_values(node, target):
    """Before `target` is overwritten in place: the arrays of `node` that are target's storage and
    that its rules read become private copies (PyTorch saves the original self for x.mul_(w))."""
    counter = target._counter
    if counter is None or node.saved is None:
        return
    kept, arrays = [], list(node.arrays)
    for entry in node.saved:
        if entry[0] is counter and entry[2] >= 0:
            with node.device.scope:
                arrays[entry[2]] = node.device.xp.asarray(arrays[entry[2]], copy=True)
        else:
            kept.append(entry)
    node.arrays, node.saved = tuple(arrays), tuple(kept) or None


def _counter_of(t):
    """t's version counter, made on first need (most tensors are never written in place)."""
    counter = t._counter
    if counter is None:
        counter = t._counter = Version()
    return counter


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
    # _counter: the Version shared with views and aliases (None until something needs one)
    # _base: for a view, the tensor whose storage it shares
    # _hooks: register_hook's functions of a leaf (a non-leaf keeps them on its node)
    __slots__ = ("_array", "grad", "requires_grad", "device", "_node", "_grad_slot", "_counter", "_base", "_hooks",
                 "__weakref__")
    __array_ufunc__ = None  # NumPy defers to our reflected operators: np_array * tensor -> Tensor

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        made = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self._array, self.grad, self.device = made._array, None, made.device
        self.requires_grad, self._node, self._counter = made.requires_grad, None, None
        self._grad_slot = self._base = self._hooks = None

    @classmethod
    def _wrap(cls, array, device):
        """A tensor around an array already on `device`: the internal constructor, no copy."""
        t = object.__new__(cls)
        t._array, t.grad, t.requires_grad, t.device, t._node, t._counter = array, None, False, device, None, None
        t._grad_slot = t._base = t._hooks = None  # set, so hot paths read them without a failed lookup
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

    @property
    def data(self):
        """The same storage as a tensor outside the graph (PyTorch's .data): writing into it changes
        this tensor, without autograd seeing it (prefer `with gpunn.no_grad():` or detach())."""
        return self._alias()

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"assigning to .data needs a gpunn.Tensor, got {type(value).__name__}; "
                            "wrap it with gpunn.tensor(...) on this tensor's device first")
        if value.shape != self.shape or value.dtype != self.dtype or value.device is not self.device:
            raise ShapeError(
                f"assigning to .data: the new value is {value.shape} {value.dtype} on {value.device}, but this "
                f"tensor is {self.shape} {self.dtype} on {self.device}; they must match (use .to(...) / "
                "reshape first, or write the values with copy_())")
        self._array = value._array
        self._bump()

    def _alias(self):
        """A tensor without node or gradient sharing this one's storage and version."""
        alias = Tensor._wrap(self._array, self.device)
        alias._counter = _counter_of(self)
        return alias

    def _bump(self):
        """Count an in-place write: nodes that saved this storage's old values will refuse to use them."""
        counter = self._counter
        if counter is None:
            self._counter = Version(1)
        else:
            counter.n += 1

    @property
    def _version(self):
        """How many in-place writes this storage has seen (PyTorch's Tensor._version)."""
        return 0 if self._counter is None else self._counter.n

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
        """The values as a NumPy array: on the cpu the tensor's own memory (as torch's numpy(), so
        writes show on both sides), from other devices a copy. A tensor that requires grad gives a
        copy (PyTorch refuses: write t.detach().numpy() for the shared array)."""
        if self.device.type == "cpu":
            return np.array(self._array, copy=True) if self.requires_grad else self._array
        return self.device.backend.to_host(self._array)

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.device.backend.to_host(self._array).reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def clone(self):
        """A copy with its own memory that stays in the graph (the gradient flows through)."""
        return apply(ops.copy, self)

    def is_floating_point(self):
        return self.dtype.is_floating_point

    def detach(self):
        """The same storage, cut from the graph: in-place writes show on both (and bump one version)."""
        return self._alias()

    def retain_grad(self):
        """Keep this intermediate tensor's gradient in `.grad` after backward (leaves always do)."""
        if self._node is not None:
            self._node.retained = weakref.ref(self)
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
                    result._node = Node(_TRANSFER, (self._node or self,), (self._array,), None,
                                        {"source": self.device}, dev)
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

    def backward(self, grad=None, retain_graph=None, create_graph=False, inputs=None, *, gradient=None):
        """Accumulate the gradient of this tensor into every leaf that requires one, or only into
        `inputs` (tensors, leaves or not) when given. `gradient=` is PyTorch's name for `grad`."""
        if create_graph:
            no_higher_order(create_graph)
        seed = self._seed(gradient if grad is None else grad, "backward()", unit_ok=inputs is None)
        if inputs is None:
            run_backward([self], [seed], bool(retain_graph))
            return
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        for t, g in zip(inputs, run_backward([self], [seed], bool(retain_graph), capture=grad_targets(inputs))):
            if g is not None:
                t.grad = Tensor._wrap(g, t.device) if t.grad is None else t.grad + Tensor._wrap(g, t.device)

    def _seed(self, grad, what, unit_ok=True):
        """The gradient that starts a backward pass from this tensor, as an array."""
        if not self.requires_grad:
            raise GraphError(
                f"{what} on a tensor that does not require grad: no input of the computation had "
                "requires_grad=True (or it ran under gpunn.no_grad())")
        if grad is None:
            if math.prod(self._array.shape) != 1:
                raise GraphError(f"{what} without a gradient needs a scalar, this tensor has shape {self.shape}; "
                                 "pass grad= of the same shape, or reduce with .sum() first")
            node = self._node
            if (unit_ok and node is not None and node.primitive.unit_seeded and node.retained is None
                    and node.hooks is None and not mode.anomaly):
                return ops.UNIT  # its rule never reads it: no ones array to fill
            with self.device.scope:
                return self.device.xp.ones_like(self._array)
        grad = grad if isinstance(grad, Tensor) else tensor(grad, dtype=self.dtype, device=self.device)
        if grad.device is not self.device:
            _mismatch("backward", (self, grad))
        if tuple(grad._array.shape) != self.shape:
            raise ShapeError(f"{what}: the gradient has shape {tuple(grad._array.shape)} for a tensor of shape "
                             f"{self.shape}")
        return grad._array

    def register_hook(self, hook):
        """Call `hook(grad)` whenever the gradient with respect to this tensor is computed; a
        returned tensor replaces the gradient. Returns a handle whose remove() unregisters it."""
        if not self.requires_grad:
            raise GraphError("register_hook on a tensor that does not require grad: nothing will reach it")
        if self._node is not None:
            if self._node.hooks is None:
                self._node.hooks = {}
            hooks = self._node.hooks
        else:
            hooks = getattr(self, "_hooks", None)
            if hooks is None:
                hooks = self._hooks = {}
        return _HookHandle(hooks, hook)

    # --- in-place edits: written into the storage, recorded where the graph needs them -----------

    def _write(self, values):
        """Write `values` (an array of this device, shape and dtype, or a number) into this tensor's
        storage, so every view and alias sees them, and count the write."""
        if hasattr(values, "shape"):
            if tuple(values.shape) != self.shape:
                raise ShapeError(f"in-place update would change the shape {self.shape} to {tuple(values.shape)}")
            if values.dtype != self._array.dtype:
                raise DTypeError(f"in-place update would change the dtype {self.dtype} to {as_dtype(values.dtype)} "
                                 "(PyTorch refuses this too); write x = x + y for a new tensor")
        with self.device.scope:
            self._array[...] = values
        self._bump()
        return self

    def _inplace(self, result):
        """Make `result`, computed out of place from this tensor, its new value, in its own storage.
        Where the graph recorded `result`, this tensor takes over its node (PyTorch's rebase): graphs
        built before keep pointing at the old node, and rules that read the old values keep a copy."""
        node = result._node
        if node is not None:
            self._check_inplace()
            _keep_old_values(node, self)
        self._write(result._array)
        if node is not None:
            if node.primitive.reads_out:  # the rules read the output: this storage, at this version
                node.out = self._array
                node.saved = tuple(s for s in node.saved if s[2] >= 0) + ((_counter_of(self), self._counter.n, -1),)
            if self._node is not None and self._node.retained is not None:
                node.retained = self._node.retained
            self._node, self.requires_grad = node, True
        return self

    def _check_inplace(self):
        """PyTorch's refusals: in-place on a leaf that requires grad (its .grad would describe values
        that are gone), or on a view of a tensor that requires grad."""
        if self._node is None and self.requires_grad:
            raise GraphError(
                "a leaf tensor that requires grad is being used in an in-place operation; do the update "
                "under `with gpunn.no_grad():` (as optimizers do), or change a clone() of it")
        base = getattr(self, "_base", None)
        if base is not None and base.requires_grad:
            kind = "a leaf tensor" if base._node is None else "a tensor in the graph"
            raise GraphError(
                f"a view of {kind} that requires grad is being changed in place, which gpunn cannot record; "
                "do it under `with gpunn.no_grad():`, or build the new tensor out of place (gpunn.where, "
                "gpunn.cat) or change a clone()")

    def __iadd__(self, other):
        return self._inplace(self + other)

    def __isub__(self, other):
        return self._inplace(self - other)

    def __imul__(self, other):
        return self._inplace(self * other)

    def __itruediv__(self, other):
        return self._inplace(self / other)

    # PyTorch's spelling of the same edits: x.add_(y, alpha=a) is x += a * y
    def add_(self, other, *, alpha=1):
        return self._inplace(self + self._scaled(other, alpha))

    def sub_(self, other, *, alpha=1):
        return self._inplace(self - self._scaled(other, alpha))

    def mul_(self, other):
        return self._inplace(self * other)

    def div_(self, other):
        return self._inplace(self / other)

    def clamp_(self, min=None, max=None):
        return self._inplace(self.clip(min, max))

    clip_ = clamp_

    def masked_fill_(self, mask, value):
        """Set the elements where `mask` (a bool tensor broadcasting to this shape) is True."""
        return self._inplace(apply(ops.where, mask, _operand(value, self), self))

    def _scaled(self, other, alpha):
        return other if alpha == 1 else _operand(other, self) * alpha

    def __setitem__(self, index, value):
        value = _operand(value, self)
        if isinstance(value, Tensor) and value.device is not self.device:
            _mismatch("setitem", (self, value))
        index = _full_index(_index(index, self.device), self.ndim)
        if mode.grad_enabled and (self.requires_grad or getattr(value, "requires_grad", False)):
            self._inplace(apply(ops.index_put, self, value, index=index))
            return
        with self.device.scope:
            self._array[index] = value._array if isinstance(value, Tensor) else value
        self._bump()

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        self[...] = value
        return self

    def copy_(self, other):
        """Overwrite the values with `other`'s, broadcast, moved and cast to this tensor's device and
        dtype; differentiable, as PyTorch's (the gradient flows to `other`)."""
        other = other if isinstance(other, Tensor) else tensor(other, device=self.device)
        if other.device is not self.device:
            other = other.to(self.device)
        if other.dtype != self.dtype:
            other = other.to(dtype=self.dtype)
        try:
            fits = np.broadcast_shapes(other.shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"copy_: values of shape {other.shape} do not broadcast to {self.shape}")
        self[...] = other
        return self

    def normal_(self, mean=0.0, std=1.0):
        """Values from N(mean, std^2), drawn by gpunn's seeded host generator (same on every device)."""
        from gpunn.random import generator
        return self._random_fill(mean + std * generator().standard_normal(size=self.shape))

    def uniform_(self, a=0.0, b=1.0):
        """Values from U(a, b), drawn by gpunn's seeded host generator."""
        from gpunn.random import generator
        return self._random_fill(generator().uniform(a, b, size=self.shape))

    def _random_fill(self, host):
        if mode.grad_enabled and self.requires_grad:
            self._check_inplace()
        if not self.dtype.is_floating_point:
            raise DTypeError(f"random values need a floating-point tensor, not {self.dtype}")
        return self._write(self.device.put(np.ascontiguousarray(np.asarray(host).astype(self.dtype.name))))

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

    # --- the PyTorch surface of issue 17: thin faces of gpunn.ops_api's functions -----------------

    _TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
                   "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor", "int8": "CharTensor",
                   "uint8": "ByteTensor", "bool": "BoolTensor"}  # what x.type() answers, as PyTorch

    def sort(self, dim=-1, descending=False, stable=False):
        from gpunn import ops_api
        return ops_api.sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False):
        from gpunn import ops_api
        return ops_api.argsort(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        from gpunn import ops_api
        return ops_api.topk(self, k, dim, largest, sorted)

    def gather(self, dim, index, *, sparse_grad=False):
        from gpunn import ops_api
        return ops_api.gather(self, dim, index)

    def scatter_add(self, dim, index, src):
        from gpunn import ops_api
        return ops_api.scatter_add(self, dim, index, src)

    def bincount(self, weights=None, minlength=0):
        from gpunn import ops_api
        return ops_api.bincount(self, weights, minlength)

    def cumsum(self, dim, *, dtype=None):
        from gpunn import ops_api
        return ops_api.cumsum(self, dim, dtype=dtype)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        from gpunn import ops_api
        return ops_api.prod(self, dim, keepdim, dtype=dtype)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        from gpunn import ops_api
        return ops_api.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        from gpunn import ops_api
        return ops_api.std(self, dim, unbiased, keepdim, correction=correction)

    def bmm(self, mat2):
        from gpunn import ops_api
        return ops_api.bmm(self, mat2)

    def expand(self, *sizes):
        from gpunn import ops_api
        return ops_api.expand(self, *sizes)

    def expand_as(self, other):
        return self.expand(other.shape)

    def repeat(self, *repeats):
        from gpunn import ops_api
        return ops_api.repeat(self, *repeats)

    def split(self, split_size, dim=0):
        from gpunn import ops_api
        return ops_api.split(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        from gpunn import ops_api
        return ops_api.chunk(self, chunks, dim)

    def masked_fill(self, mask, value):
        from gpunn import ops_api
        return ops_api.masked_fill(self, mask, value)

    def contiguous(self, memory_format=None):
        """Itself: gpunn's ops accept any memory layout, so there is nothing to reorder."""
        return self

    def type(self, dtype=None, non_blocking=False):
        """With no argument, PyTorch's type string ('torch.FloatTensor'; 'torch.cuda.FloatTensor' on
        CUDA) so ported comparisons hold; with a dtype (or such a string), a cast as .to(dtype)."""
        if dtype is None:
            name = self._TYPE_NAMES.get(self.dtype.name, self.dtype.name)
            return f"torch.{'cuda.' if self.device.type == 'cuda' else ''}{name}"
        names = {v: k for k, v in self._TYPE_NAMES.items()}  # x.type('torch.DoubleTensor') casts
        if isinstance(dtype, str) and dtype.split(".")[-1] in names:
            dtype = names[dtype.split(".")[-1]]
        return self.to(dtype=dtype)

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

    # (exp, log, sqrt, abs, relu, tanh, sigmoid, maximum, minimum: made from the table, below the class)

    def softmax(self, axis=-1, *, dim=None):
        return apply(ops.softmax, self, axis=_pick(axis, dim, -1))

    def log_softmax(self, axis=-1, *, dim=None):
        return apply(ops.log_softmax, self, axis=_pick(axis, dim, -1))

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

    def amax(self, dim=None, keepdim=False):
        """The largest values over `dim` (all axes by default); ties share the gradient evenly,
        where max(dim) gives it all to the index it returns (PyTorch's two rules)."""
        return apply(ops.max, self, **_reduction(None, dim, False, keepdim))

    def amin(self, dim=None, keepdim=False):
        """As amax, for the smallest values."""
        return apply(ops.min, self, **_reduction(None, dim, False, keepdim))

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


def bind_faces(kind, namespace, make):
    """Put the table's faces of one kind ("function", "method", "functional" or "module") into
    `namespace` (a module or a class), and return their names. Entries that say how (Faces.make)
    get faces made by `make(primitive, faces, name)`; the others are written by hand and must be
    in `namespace` already: those without a docstring take the entry's."""
    names = []
    for primitive, faces in ops.entries().values():
        for name in faces.names(kind):
            if faces.make is not None:
                face = make(primitive, faces, name)
                face.__name__, face.__qualname__ = name, f"{namespace.__name__}.{name}" if kind == "method" else name
                face.__doc__ = faces.doc
                setattr(namespace, name, face)
            else:
                face = getattr(namespace, name, None)
                if face is None:
                    raise AttributeError(f"gpunn.ops declares the {kind} face {name!r}, but {namespace.__name__} has "
                                         f"no {name!r}: write it there, or let the entry make it (Faces.make)")
                if not face.__doc__:
                    face.__doc__ = faces.doc
            names.append(name)
    return names


def _method(primitive, faces, name):
    """Tensor.<name> of a unary or binary elementwise entry; a name ending in "_" writes in place."""
    inplace = name.endswith("_")
    if faces.make == "unary":
        def method(self):
            out = apply(primitive, self)
            return self._inplace(out) if inplace else out
    else:
        def method(self, other):
            out = apply(primitive, self, _operand(other, self))
            return self._inplace(out) if inplace else out
    return method


def _power_at_zero_flat(a, p):
    """a ** p for a >= 0 whose gradient is 0 where a == 0 (PyTorch's choice for norms): there the
    true slope is 0 * inf or inf, which would spread NaN, so the power is taken at 1 instead and
    its result replaced by 0 ** p (0, or inf for negative p)."""
    zero = a == 0
    safe = apply(ops.where, zero, 1.0, a)
    return apply(ops.where, zero, 0.0 if p > 0 else math.inf, safe.sqrt() if p == 0.5 else safe ** p)


_TRANSFER = ops.Primitive("to_device", None, lambda xp, g, out, x, source: source.put(g), reads=(), reads_out=False)


def _integral(v):
    return isinstance(v, int) or (isinstance(v, Tensor) and not _is_floating(v._array.dtype))


def _promoted(a, b, true_division=False):
    """PyTorch's promotion where NumPy's differs: an integer tensor meeting a float (a Python number
    or a float tensor) takes that float's dtype (float32 for Python floats), and integer / integer
    gives float32. NumPy would give float64; array-api-strict would refuse. A 0-d tensor meeting
    a tensor with axes of the same kind (both floating, or both integer) takes the other's dtype:
    float32 x times a float64 0-d tensor stays float32, as in PyTorch (NumPy would widen it)."""
    if _same_float(a, b) or _same_float(b, a):  # the common case, with nothing to promote
        return a, b
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


def _same_float(a, b):
    """a is a floating tensor and b a Python number or a tensor of a's very dtype and device (tensors
    on two devices are left to apply(), which refuses them by name)."""
    if not isinstance(a, Tensor) or not _is_floating(a._array.dtype):
        return False
    return type(b) in (float, int, bool) or (isinstance(b, Tensor) and b.device is a.device
                                             and b._array.dtype == a._array.dtype)


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
    indices = x._untracked("argmax" if primitive.name == "max" else "argmin", axis=dim, keepdims=True)
    dev, axis = x.device, dim % max(x.ndim, 1)
    with dev.scope:  # the returned index's position along dim, as a mask: all of the gradient goes there
        positions = dev.xp.arange(x.shape[axis], device=dev.native) if x.ndim else dev.xp.asarray(0)
        at = Tensor._wrap(dev.xp.reshape(positions, tuple(-1 if i == axis else 1 for i in range(x.ndim)))
                          == indices._array, dev)
    values = apply(ops.sum, apply(ops.where, at, x, 0), axis=axis if x.ndim else None, keepdims=bool(keepdim))
    if not keepdim:
        indices = indices.reshape(values.shape)
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
    if any(p is Ellipsis or hasattr(p, "shape") for p in parts):
        return index
    return parts + (Ellipsis,)  # also when every axis is named: NumPy's x[0, 0] is a scalar copy, x[0, 0, ...] a 0-d view


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


bind_faces("method", Tensor, _method)
