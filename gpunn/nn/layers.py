"""Layers: Linear, Sequential, activations, losses, and the lecture's MLP."""

import math
import operator
import sys
from collections import OrderedDict

from gpunn import functional as F, ops
from gpunn.autograd import no_grad
from gpunn.dtypes import as_dtype
from gpunn.errors import GpunnError, ShapeError
from gpunn.nn import init
from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor, apply, bind_faces, empty, ones, tensor, zeros


def _size(name, value, owner):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: {name} must be a non-negative int, got {value!r}")
    return value


def _floating(dtype, owner):
    """A layer's parameter dtype, checked to be floating point."""
    if not as_dtype(dtype).is_floating_point:
        raise TypeError(f"{owner}: dtype must be floating point, not {dtype}")
    return dtype


class Linear(Module):
    """y = x @ weight.T + bias, with weight (out_features, in_features) as in PyTorch.

    Initialised like torch.nn.Linear: weight and bias from U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.in_features = _size("in_features", in_features, "Linear")
        self.out_features = _size("out_features", out_features, "Linear")
        self.weight = Parameter(empty(out_features, in_features, dtype=_floating(dtype, "Linear"), device=device))
        if bias:
            self.bias = Parameter(empty(out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)  # one fused node

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalizes over the trailing normalized_shape axes; weight (ones) and bias (zeros) are learned
    per element when elementwise_affine, as in torch.nn.LayerNorm."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype="float32"):
        super().__init__()
        self.normalized_shape = F._shape_tuple(normalized_shape)
        for n in self.normalized_shape:
            _size("normalized_shape entries", n, "LayerNorm")
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(*self.normalized_shape, dtype=dtype, device=device))
            if bias:
                self.bias = Parameter(zeros(*self.normalized_shape, dtype=dtype, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: row i of weight (num_embeddings, embedding_dim) for each integer index i.

    Initialised like torch.nn.Embedding: weight from N(0, 1), drawn from gpunn's host generator.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype="float32"):
        super().__init__()
        self.num_embeddings = _size("num_embeddings", num_embeddings, "Embedding")
        self.embedding_dim = _size("embedding_dim", embedding_dim, "Embedding")
        _floating(dtype, "Embedding")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) or not (
                    -num_embeddings <= padding_idx < num_embeddings):
                raise ValueError(f"Embedding: padding_idx must be an int in [{-num_embeddings}, {num_embeddings}), "
                                 f"got {padding_idx!r}")
            padding_idx %= num_embeddings  # PyTorch keeps it non-negative too
        self.padding_idx = padding_idx
        self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self):
        """N(0, 1), with the padding row (if any) zero, as PyTorch."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{extra}"


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... (or by an OrderedDict's keys)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def add_module(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: entry {name!r} is a {type(module).__name__}, not a Module; "
                            "pass layers such as Linear(2, 3) or ReLU() (instances, not classes)")
        super().add_module(name, module)

    def forward(self, x):
        """Each module in turn, where consecutive Linear layers (each maybe followed by ReLU, Tanh or
        Sigmoid) run fused: one node per Linear and activation (F.linear_act), or, on backends that
        want it, one node for the whole run (F.linear_chain). The same numbers, fewer dispatches.
        Modules with hooks are never fused: hooks must see their module's own output."""
        run = []  # [Linear, activation name or None] pairs waiting to run as one
        for module in self._modules.values():
            kind = type(module)  # exact types: subclasses may differ
            if kind is Linear and module._hooks is None:
                run.append([module, None])
                continue
            if run and run[-1][1] is None and kind in _FUSABLE and module._hooks is None:
                run[-1][1] = _FUSABLE[kind]
                continue
            if run:
                x, run = _run_layers(x, run), []
            x = module(x)
        return _run_layers(x, run) if run else x

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        """Append each of `modules` (any iterable); nothing is added if one of them is not a Module."""
        modules = list(modules)
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"{type(self).__name__}.extend: entry {i} is a {type(module).__name__}, not a Module")
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        """Put `module` before position `index` (-len <= index <= len); entries are renumbered from "0"."""
        n = len(self._modules)
        index = operator.index(index)
        if not -n <= index <= n:
            raise IndexError(f"insert: index {index} is out of range for {type(self).__name__} of length {n} "
                             f"(expected one in [{-n}, {n}])")
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.insert: expected a Module, got {type(module).__name__}")
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)
        return self

    def pop(self, index):
        """Remove and return the entry at `index` (a slice: a container of those entries)."""
        popped = self[index]
        del self[index]
        return popped

    def __setitem__(self, index, module):
        """Replace the entry at an int `index`; it keeps its name, as in torch (slices are refused)."""
        self.add_module(list(self._modules)[self._position(index)], module)

    def __delitem__(self, index):
        """Remove the entry at an int index or a slice's entries; the rest are renumbered "0", "1", ...
        as torch does (so state_dict keys match a model built without them)."""
        modules = list(self._modules.values())
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[self._position(index)]
        self._renumber(modules)

    def _position(self, index):
        """`index` (negative counts from the end) as a position, or IndexError."""
        n = len(self._modules)
        index = operator.index(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {n}")
        return index % n

    def _renumber(self, modules):
        self._modules.clear()
        for i, module in enumerate(modules):
            self._modules[str(i)] = module

    def __add__(self, other):
        """A new Sequential of this one's modules then `other`'s (the same objects), numbered from "0"."""
        if not _is_sequential(other):
            raise ValueError(f"Sequential + {type(other).__name__}: the add operator supports only Sequential")
        return Sequential(*self, *other)

    def __iadd__(self, other):
        if not _is_sequential(other):
            raise ValueError(f"Sequential += {type(other).__name__}: the add operator supports only Sequential")
        return self.extend(other)

    def __mul__(self, times):
        """A new Sequential repeating these modules `times` times (the same objects, so shared weights)."""
        return Sequential(*(list(self) * _repeats(times)))

    __rmul__ = __mul__

    def __imul__(self, times):
        return self.extend(list(self) * (_repeats(times) - 1))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        return items[self._position(index)][1]


def _is_sequential(value):
    return isinstance(value, Sequential) and not isinstance(value, ModuleList)  # torch's lists are no Sequential


def _repeats(times):
    if isinstance(times, bool) or not isinstance(times, int):
        raise TypeError(f"Sequential * {type(times).__name__}: multiply by a positive int")
    if times <= 0:
        raise ValueError(f"Sequential * {times}: the factor must be positive")
    return times


class ModuleList(Sequential):
    """A list of modules whose parameters are registered, for a forward you write yourself.

    Edits follow torch.nn.ModuleList: `m[i] = layer`, `del m[i]` / `del m[a:b]` (renumbered from
    "0"), insert, pop, append, extend, `+=` and `+` with any iterable of modules. Unlike torch,
    insert checks its index as Sequential's does (torch's ModuleList.insert leaves a gap in the
    names for an index past the end and fails half-way for a negative one)."""

    def __init__(self, modules=()):
        super().__init__(*modules)

    def __getitem__(self, index):
        """A slice is a new ModuleList numbered from "0", as torch's (a Sequential's slice keeps its names)."""
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return super().__getitem__(index)

    def insert(self, index, module):
        super().insert(index, module)  # returns None, as list.insert and torch's ModuleList.insert

    def __add__(self, other):
        """A new ModuleList of this one's modules then those of the iterable `other`."""
        return ModuleList([*self, *other])

    def __iadd__(self, other):
        return self.extend(other)

    def __mul__(self, times):  # torch's ModuleList cannot be multiplied
        return NotImplemented

    __rmul__ = __imul__ = __mul__

    def forward(self, *args):
        raise TypeError("ModuleList has no forward of its own: iterate over it in your module's forward")


class ModuleDict(Module):
    """Modules by name, in insertion order, as torch.nn.ModuleDict: `d["encoder"]`, keys, items,
    update; state_dict keys are "name.weight", ...."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: entry {key!r} is a {type(module).__name__}, not a Module")
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key):
        return self._modules.pop(key)

    def clear(self):
        self._modules.clear()

    def update(self, modules):
        """Add or replace entries from a mapping or from (name, module) pairs, in their order."""
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module

    def forward(self, *args):
        raise TypeError("ModuleDict has no forward of its own: look its modules up by name in your module's forward")


class ParameterList(Module):
    """Parameters in a list, registered as "0", "1", ... (as torch.nn.ParameterList); a plain
    tensor added to it becomes a Parameter sharing its data."""

    def __init__(self, values=None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def __getitem__(self, index):
        values = list(self._parameters.values())
        return ParameterList(values[index]) if isinstance(index, slice) else values[index]

    def __setitem__(self, index, value):
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for ParameterList of length {len(self)}")
        self.register_parameter(str(index % len(self)), _as_parameter(value))

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter(value))
        return self

    def extend(self, values):
        for value in values:
            self.append(value)
        return self

    def __iadd__(self, values):
        return self.extend(values)

    def forward(self, *args):
        raise TypeError("ParameterList has no forward of its own: use its parameters in your module's forward")

    def extra_repr(self):
        return "\n".join(f"  ({name}): Parameter containing: [{p.dtype!r} of size {'x'.join(map(str, p.shape))}]"
                         for name, p in self._parameters.items())  # indented twice, as PyTorch prints it


def _as_parameter(value):
    return value if isinstance(value, Parameter) else Parameter(value)


# ReLU, LeakyReLU and Dropout take PyTorch's `inplace=`: the result is written into the input.
# (ReLU, Tanh and Sigmoid are made from the table by _module_face, at the end of this file.)


class _Activation(Module):
    """The module face of a unary entry of the table (ReLU, Tanh, Sigmoid): applies its primitive."""

    primitive = None

    def forward(self, input):
        return apply(self.primitive, input)


class _InPlaceActivation(_Activation):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        out = apply(self.primitive, input)
        return input._inplace(out) if self.inplace else out

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


def _module_face(primitive, faces, name):
    """nn.<name> of a unary entry of the table: a module class applying the entry's primitive
    (with PyTorch's inplace=False where the entry says `inplace`)."""
    if faces.make != "unary":
        raise ValueError(f"gpunn.ops: {name} would be the module of a {faces.make} op; only unary entries make modules")
    base = _InPlaceActivation if faces.inplace else _Activation
    return type(name, (base,), {"primitive": primitive, "__module__": __name__})


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', not {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """Zeroes entries with probability p while training (scaling the rest by 1/(1-p)); identity in eval().
    `inplace=True` writes the result into the input, as PyTorch's."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: p is the probability of zeroing an entry and must lie in [0, 1], got {p!r}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Identity(Module):
    def __init__(self, *args, **kwargs):  # accepts and ignores arguments, like PyTorch
        super().__init__()

    def forward(self, x):
        return x


class _TensorMethod(Module):
    """A module calling one Tensor method with its `_options`, kept as attributes of the same names."""

    _method = None
    _options = ()

    def forward(self, x):
        return getattr(x, self._method)(*(getattr(self, name) for name in self._options))

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)}" for name in self._options)


class Flatten(_TensorMethod):
    """Flatten dimensions start_dim..end_dim (default: all but the batch axis)."""

    _method, _options = "flatten", ("start_dim", "end_dim")

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim


class Unflatten(_TensorMethod):
    """Split axis `dim` into `unflattened_size` (one entry may be -1): the inverse of Flatten, as
    torch.nn.Unflatten (e.g. Unflatten(1, (1, 28, 28)) turns (N, 784) into images)."""

    _method, _options = "unflatten", ("dim", "unflattened_size")

    def __init__(self, dim, unflattened_size):
        super().__init__()
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError("Unflatten: unflattened_size must be a tuple of ints, got "
                            f"{type(unflattened_size).__name__} {unflattened_size!r}")
        for i, n in enumerate(unflattened_size):
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"Unflatten: unflattened_size must be a tuple of ints, but entry {i} is "
                                f"{type(n).__name__} {n!r}")
        self.dim, self.unflattened_size = dim, unflattened_size


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, axis=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, axis=self.dim)


class _Loss(Module):
    """A loss module: by default F.<_function>(input, target) with its reduction and its keyword
    `_options`, kept as attributes of the same names (SmoothL1Loss's beta)."""

    _function = None
    _options = ()

    def __init__(self, reduction="mean", **options):
        super().__init__()
        self.reduction = reduction
        for name, value in options.items():
            setattr(self, name, value)

    def forward(self, input, target):
        options = {name: getattr(self, name) for name in self._options}
        return getattr(F, self._function)(input, target, reduction=self.reduction, **options)

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    """A loss with optional class weights, kept as a buffer "weight" (as in PyTorch)."""

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        if isinstance(weight, str):
            raise TypeError(f"{type(self).__name__}: the first positional argument is the class weight (as in "
                            f"PyTorch); pass reduction={weight!r} by keyword")
        if weight is not None and not isinstance(weight, Tensor):
            weight = tensor(weight, dtype="float32")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index


class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index=ignore_index, reduction=reduction)
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    def forward(self, log_probs, target):
        return F.nll_loss(log_probs, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(_Loss):
    _function = "mse_loss"


class BCEWithLogitsLoss(_Loss):
    """PyTorch's BCEWithLogitsLoss: weight and pos_weight are kept as buffers (moved with .to())."""

    def __init__(self, weight=None, *, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        if isinstance(weight, str):
            raise TypeError(f"BCEWithLogitsLoss: the first positional argument is the weight (as in PyTorch); "
                            f"pass reduction={weight!r} by keyword")
        self.register_buffer("weight", _float_tensor_or_none(weight))
        self.register_buffer("pos_weight", _float_tensor_or_none(pos_weight))

    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


def _float_tensor_or_none(value):
    return value if value is None or isinstance(value, Tensor) else tensor(value, dtype="float32")


# --- issue 17: more losses and BatchNorm1d ------------------------------------------------------

class BCELoss(_Loss):
    """PyTorch's BCELoss on probabilities (see F.binary_cross_entropy); weight is kept as a buffer."""

    def __init__(self, weight=None, *, reduction="mean"):
        super().__init__(reduction)
        if isinstance(weight, str):
            raise TypeError(f"BCELoss: the first positional argument is the weight (as in PyTorch); "
                            f"pass reduction={weight!r} by keyword")
        self.register_buffer("weight", _float_tensor_or_none(weight))

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class L1Loss(_Loss):
    _function = "l1_loss"


class SmoothL1Loss(_Loss):
    _function, _options = "smooth_l1_loss", ("beta",)

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction, beta=beta)


class HuberLoss(_Loss):
    _function, _options = "huber_loss", ("delta",)

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction, delta=delta)


class CosineSimilarity(Module):
    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return F.cosine_similarity(x1, x2, self.dim, self.eps)


class BatchNorm1d(Module):
    """Batch normalization of (N, C) or (N, C, L) input per channel, as torch.nn.BatchNorm1d.

    Training normalizes by the batch's mean and biased variance and moves running_mean and
    running_var (the unbiased variance) toward them by `momentum`, or by their cumulative
    average when momentum is None; eval uses the running statistics. The running buffers and
    num_batches_tracked (int64) are saved in state_dict. track_running_stats=False keeps none
    and always uses the batch's statistics; affine=False learns no weight and bias.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype="float32"):
        super().__init__()
        self.num_features = _size("num_features", num_features, "BatchNorm1d")
        _floating(dtype, "BatchNorm1d")
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(ones(num_features, dtype=dtype, device=device))
            self.bias = Parameter(zeros(num_features, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked", zeros((), dtype="int64", device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1.0)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        if input.ndim not in (2, 3):
            raise ShapeError(f"BatchNorm1d: expected 2D or 3D input (N, C) or (N, C, L), got {input.ndim}D input of "
                             f"shape {input.shape}")
        if input.shape[1] != self.num_features:
            raise ShapeError(f"BatchNorm1d: input has {input.shape[1]} channels (axis 1) but the layer was built for "
                             f"num_features={self.num_features}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average: reads the count (one host sync)
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep else None, self.running_var if keep else None,
                            self.weight, self.bias, use_batch, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


MODULE_FACES = bind_faces("module", sys.modules[__name__], _module_face)  # the ops' modules (gpunn.nn exports them)
_ACTIVATIONS = {name: globals()[p.faces.module] for name, p in ops.ACTIVATIONS.items()}  # MLP's, from the table
_FUSABLE = {module: name for name, module in _ACTIVATIONS.items()}  # exact types: subclasses may differ


def _run_layers(x, run):
    """Sequential's run of [Linear, activation or None] pairs: one node on backends that chain
    layers, else a node per pair. A run whose fused node fails (say, a width mismatch) runs again
    layer by layer, so the error names the layer the way PyTorch's would."""
    if len(run) > 1 and isinstance(x, Tensor) and getattr(x.device.backend, "chain_layers", False):
        try:
            return F.linear_chain(x, [(m._parameters["weight"], m._parameters["bias"], act) for m, act in run])
        except GpunnError:
            pass
    for module, act in run:
        x = module(x) if act is None else F.linear_act(x, module.weight, module.bias, act)
    return x


class MLP(Sequential):
    """The lecture's network: affine + nonlinearity per hidden layer, then an affine output.

    `MLP([64, 128, 64, 10])` is Sequential(Linear(64, 128), ReLU(), Linear(128, 64), ReLU(),
    Linear(64, 10)), so state_dict keys are "0.weight", "0.bias", "2.weight", ... as in PyTorch.
    Weights use the init suited to the activation (He/kaiming for relu, Glorot/xavier with the
    activation's gain for tanh and sigmoid) on every layer, since each layer after the first
    reads the activation's output; biases start at zero.
    """

    def __init__(self, sizes, activation="relu", device=None, dtype="float32"):
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes needs at least [inputs, outputs], got {sizes}")
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"MLP: sizes[{i}] = {n!r} must be a positive int")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, device=device, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.sizes, self.activation = sizes, activation
        self.reset_parameters()

    def reset_parameters(self):
        for layer in self:
            if isinstance(layer, Linear):
                if self.activation == "relu":
                    init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                else:
                    init.xavier_uniform_(layer.weight, gain=_gain(self.activation))
                init.zeros_(layer.bias)


def _gain(activation):
    """init.calculate_gain's factor, or 1 for an activation PyTorch's table lacks (the table's newer entries)."""
    try:
        return init.calculate_gain(activation)
    except ValueError:
        return 1.0
