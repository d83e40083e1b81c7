"""Module: the container of parameters, buffers and sub-modules, with PyTorch's names.

Attributes assigned a Parameter or a Module are registered in order, which fixes the dotted names
of `named_parameters()` and `state_dict()` ("0.weight", "encoder.fc.bias", ...) exactly as
PyTorch would name them, so checkpoints and code move between the two.
"""

import itertools
from collections import OrderedDict, namedtuple

from gpunn import backends
from gpunn.device import Device, cuda_device, device as as_device
from gpunn.dtypes import as_dtype
from gpunn.errors import DTypeError, GpunnError, ShapeError
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor, _looks_like_dtype, tensor


class StateDictError(GpunnError, ValueError):
    """A state dict whose keys do not match the module: missing or unexpected entries."""


class StateDictShapeError(ShapeError, StateDictError):
    """A state dict with entries of the wrong shape (the message also lists key mismatches)."""


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


_hook_edits = [0]  # forward hooks added or removed anywhere, ever: compile_step's graphs record it
_structure_edits = [0]  # parameters, buffers or sub-modules set or removed anywhere, ever: likewise


def hook_edits():
    """How many forward hooks have been added or removed so far (a recorded step goes stale)."""
    return _hook_edits[0]


def structure_edits():
    """How many times any module's parameters, buffers or sub-modules were set or removed so far:
    a step recorded before such an edit (a layer replaced, a parameter reassigned) goes stale."""
    return _structure_edits[0]


class _Registry(OrderedDict):
    """A module's parameters, buffers or sub-modules, counting every change (structure_edits)."""

    __slots__ = ()

    def __setitem__(self, key, value):
        _structure_edits[0] += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        _structure_edits[0] += 1
        super().__delitem__(key)

    def pop(self, *args):
        _structure_edits[0] += 1
        return super().pop(*args)

    def popitem(self, last=True):
        _structure_edits[0] += 1
        return super().popitem(last)

    def clear(self):
        _structure_edits[0] += 1
        super().clear()

    def setdefault(self, key, default=None):
        if key not in self:
            _structure_edits[0] += 1
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        _structure_edits[0] += 1
        super().update(*args, **kwargs)


class Module:
    """Base class of every layer and model: subclass it, assign layers in __init__, write forward."""

    _hooks = None  # (pre-hooks, hooks) once a forward hook is registered: all that __call__ checks

    def __init__(self, *args, **kwargs):
        if args or kwargs:  # a layer without an __init__ of its own was given arguments: name the layer
            what = f"keyword argument {next(iter(kwargs))!r}" if kwargs else f"{len(args)} positional argument(s)"
            raise TypeError(f"{type(self).__name__}() got an unexpected {what}")
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", _Registry())
        object.__setattr__(self, "_buffers", _Registry())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", _Registry())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define forward(self, x) in the subclass")

    def __call__(self, *args, **kwargs):
        if self._hooks is None:
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    # --- forward hooks ----------------------------------------------------------------------------

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call `hook(module, args)` before each forward; a non-None result replaces the positional
        arguments (a tuple, or one value). With with_kwargs=True: `hook(module, args, kwargs)`,
        returning None or (args, kwargs). Returns a handle whose .remove() unregisters the hook."""
        return self._add_hook(0, hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call `hook(module, args, output)` after each forward (args: the positional arguments);
        a non-None result replaces the output. With with_kwargs=True: `hook(module, args, kwargs,
        output)`. Returns a handle whose .remove() unregisters the hook.

        nn.Sequential does not fuse a Linear or an activation that has hooks, so they always run."""
        return self._add_hook(1, hook, prepend, with_kwargs)

    def _add_hook(self, kind, hook, prepend, with_kwargs):
        if not callable(hook):
            raise TypeError(f"a forward hook must be callable, got {type(hook).__name__}")
        if self._hooks is None:
            object.__setattr__(self, "_hooks", (OrderedDict(), OrderedDict()))
        handle = RemovableHandle(self, kind)
        _hook_edits[0] += 1
        table = self._hooks[kind]
        table[handle.id] = (hook, with_kwargs)
        if prepend:
            table.move_to_end(handle.id, last=False)
        return handle

    def _call_with_hooks(self, args, kwargs):
        pre, post = self._hooks
        for hook, with_kwargs in list(pre.values()):
            if with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise TypeError("a forward pre-hook registered with with_kwargs=True must return None or "
                                        f"(args, kwargs), got {type(result).__name__}")
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(post.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:
                output = result
        return output

    # --- registration ---------------------------------------------------------------------------

    def _registries(self, name):
        registries = self.__dict__.get("_parameters")
        if registries is None:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() ran; "
                                 f"call super().__init__() first in {type(self).__name__}.__init__")
        return self._parameters, self._buffers, self._modules

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):  # registered as such (in place, keeping its order), nowhere else
            registries = self._registries(name)
            target = registries[0] if isinstance(value, Parameter) else registries[2]
            self.__dict__.pop(name, None)
            for registry in registries:
                if registry is not target:
                    registry.pop(name, None)
            target[name] = value
        elif name in self.__dict__.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r}: "
                                "assign a gpunn.nn.Parameter (e.g. Parameter(t)) or None")
            self._parameters[name] = None
        elif name in self.__dict__.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r}: assign a Tensor or None")
            self._buffers[name] = value
        elif name in self.__dict__.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r}: assign a Module or None")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only called when normal lookup fails
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            found = d.get(registry)
            if found is not None and name in found:
                return found[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._check_name(name)
        self._refuse_clash(name, self._registries(name)[0], "register_parameter")
        self._parameters[name] = param
        if param is not None:
            self.__dict__.pop(name, None)

    def register_buffer(self, name, value, persistent=True):
        """A tensor that is state but not a parameter (running statistics): saved, moved, never optimized."""
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(value).__name__}")
        self._check_name(name)
        self._refuse_clash(name, self._registries(name)[1], "register_buffer")
        self._buffers[name] = value
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module or None, got {type(module).__name__}")
        self._check_name(name)
        if name not in self._modules and (name in self.__dict__ or hasattr(type(self), name)
                                          or name in self._parameters or name in self._buffers):
            raise KeyError(f"add_module({name!r}): {type(self).__name__} already has an attribute {name!r}, which "
                           "the module would hide; choose another name")
        self._registries(name)[2][name] = module

    register_module = add_module

    def _refuse_clash(self, name, own, owner):
        """As PyTorch: a name already taken by another kind of member (a parameter, buffer, module or
        plain attribute) may not be registered again, else state_dict would hold it twice."""
        if name not in own and hasattr(self, name):
            raise KeyError(f"{owner}({name!r}): {type(self).__name__} already has an attribute {name!r}; choose "
                           f"another name, or delete the attribute first (del module.{name})")

    def _check_name(self, name):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"invalid name {name!r}: use a non-empty string without '.'")

    # --- traversal ------------------------------------------------------------------------------

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(name, module) for this module and all below it, depth first in registration order."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) in registration order; a shared parameter is listed once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def apply(self, fn):
        """Call fn on every sub-module, then on self (for custom initialisation)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # --- modes and gradients ------------------------------------------------------------------

    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode) expects a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: None (PyTorch's default), or zeros with set_to_none=False."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    # --- state ----------------------------------------------------------------------------------

    def _state_items(self, prefix=""):
        """(name, tensor) for everything in the state dict, the live Parameter/buffer objects."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                yield prefix + name, b
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_items(prefix + name + ".")

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """OrderedDict name -> tensor (detached, sharing data) with PyTorch's keys and order."""
        out = OrderedDict() if destination is None else destination
        for name, value in self._state_items(prefix):
            out[name] = value if keep_vars else value.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values onto each parameter's own device and dtype, after checking every key.

        Every problem is reported in one error: missing and unexpected keys (only with
        strict=True) and wrong shapes (always). Nothing is copied unless everything fits.
        Values may be Tensors, NumPy arrays or any backend's arrays.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict expects a mapping name -> tensor, got {type(state_dict).__name__}")
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        wrong_shape = []
        for name, target in own.items():
            if name in state_dict:
                shape = _shape_of(state_dict[name])
                if shape != target.shape:
                    wrong_shape.append(f"{name!r}: checkpoint {shape} vs model {target.shape}")
        if wrong_shape or (strict and (missing or unexpected)):
            raise _mismatch_error(type(self).__name__, missing, unexpected, wrong_shape, strict)
        for name, target in own.items():
            if name in state_dict:
                _copy_into(target, state_dict[name])
        return IncompatibleKeys(missing, unexpected)

    # --- devices and dtypes ---------------------------------------------------------------------

    def to(self, target=None, dtype=None, *, device=None):
        """Move (and/or cast) every parameter, gradient and buffer in place; returns self.

        The Parameter objects stay the same, so an optimizer built before the move still holds
        them; its state moves only when loaded or created, so build optimizers after moving.
        """
        if target is not None:
            if isinstance(target, Device) or not _looks_like_dtype(target):
                device = target
            else:
                dtype = target
        dev = as_device(device) if device is not None else None
        dt = as_dtype(dtype) if dtype is not None else None
        if dt is not None and not dt.is_floating_point:
            raise TypeError(f"Module.to() only casts to floating-point dtypes, not {dt}")
        for t in list(self.parameters()) + list(self.buffers()):
            _move(t, dev, dt)
            if t.grad is not None:
                _move(t.grad, dev, dt)
        return self

    def float(self):
        return self.to(dtype="float32")

    def double(self):
        return self.to(dtype="float64")

    def half(self):
        """float16 parameters and buffers where the backend has float16 (NumPy, CuPy); on strict
        (the array API standard, which has no float16) a DTypeError says so, and nothing is cast."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            if getattr(t.device.xp, "float16", None) is None:
                raise DTypeError(f"half(): float16 is not available on device {t.device} (the array API standard "
                                 "has no float16); keep float32 there, or move the model to 'cpu' or 'cuda' first")
        return self.to(dtype="float16")

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        """Move to a CUDA device: an index, "cuda:N" or a Device; None means cuda:0."""
        return self.to(cuda_device(device))

    # --- printing -------------------------------------------------------------------------------

    def extra_repr(self):
        """The text inside the parentheses of this module's repr line; override in layers."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self._modules.items():
            text = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {text}")
        name = type(self).__name__
        if not self._modules and "\n" not in extra:
            return f"{name}({extra})"
        return name + "(\n  " + "\n  ".join(lines) + "\n)"


class RemovableHandle:
    """What register_forward_hook returns: .remove() unregisters the hook (so does leaving a
    `with handle:` block); removing twice is harmless."""

    _ids = itertools.count()

    def __init__(self, module, kind):
        self.id = next(RemovableHandle._ids)
        self._module, self._kind = module, kind

    def remove(self):
        module = self._module
        hooks = module.__dict__.get("_hooks")
        if hooks is None:
            return
        if hooks[self._kind].pop(self.id, None) is not None:
            _hook_edits[0] += 1
        if not hooks[0] and not hooks[1]:
            object.__setattr__(module, "_hooks", None)  # back to the one-check fast path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _shape_of(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = tensor(value).shape
    return tuple(shape)


def _mismatch_error(owner, missing, unexpected, wrong_shape, strict):
    parts = []
    if missing and strict:
        parts.append(f"missing keys {missing}")
    if unexpected and strict:
        parts.append(f"unexpected keys {unexpected}")
    if wrong_shape:
        parts.append("wrong shapes: " + "; ".join(wrong_shape))
    message = (f"load_state_dict for {owner}: the checkpoint does not fit this model ({'; '.join(parts)}). "
               "It was probably saved from a different architecture: build the model with the sizes the "
               "checkpoint was trained with")
    if missing or unexpected:
        message += ", or pass strict=False to load only the matching keys"
    return (StateDictShapeError if wrong_shape else StateDictError)(message)


def _copy_into(target, value):
    """Write `value`, moved and cast to target's device and dtype, into target's storage (views and
    aliases see it; graphs that saved the old values refuse them)."""
    dev = target.device
    if isinstance(value, Tensor):
        array = value._array
    elif backends.owner(value) is not None:
        array = value
    else:
        array = tensor(value)._array
    with dev.scope:
        moved = dev.put(array)
        if moved.dtype != target._array.dtype:
            moved = dev.xp.astype(moved, target._array.dtype)
    target._write(moved)


def _move(t, dev, dt):
    """Module.to's move, as PyTorch's (param.data = fn(param.data)): new storage, a new version."""
    t._bump()
    if dev is not None and t.device is not dev:
        t._array = dev.put(t._array)
        t.device = dev
        t._grad_slot = None  # its fused optimizer's gradient buffer is on the old device
    if dt is not None and t.dtype.is_floating_point and t.dtype != dt:
        with t.device.scope:
            t._array = t.device.xp.astype(t._array, t.device.dtype(dt))
        t._grad_slot = None  # ... or of the old dtype: backward must not write there


