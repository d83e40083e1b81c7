"""The primitive table: each op's forward and one gradient rule per input, written against `xp`,
and the names under which the op shows in the public API (its faces).

A rule has the signature `(xp, g, out, *inputs, **attrs) -> gradient for that input`, where `g` is
the gradient of the loss with respect to `out`. Inputs are arrays, or plain Python numbers for
constant operands. Rules may return a gradient of a broadcast shape: the engine sums it back to the
input's shape. Nothing here imports NumPy or CuPy: the namespace comes from the inputs' device,
and a backend may replace an entry by a faster one with the same name (`Device.fast_paths`).
Nothing here imports Tensor either: faces are plain data, which the tensor, functional, ops_api and
nn layers read to make or check their functions, methods and modules (see README, "How to add an op").
"""

import dataclasses
import math
from collections.abc import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Faces:
    """Where an op shows in the public API, with PyTorch's names: `function` at gpunn's top level,
    `method` on Tensor (a name ending in "_" writes the result into the tensor), `functional` in
    gpunn.functional (which nn.functional re-exports) and `module`, a class of gpunn.nn. A str
    stands for one name, a tuple for several (aliases such as clip and clamp).

    `make` says where the faces come from. "unary" and "binary" (elementwise ops of one or two
    tensors, no attributes): each layer makes them from the primitive with one generic maker per
    kind of face, which takes `doc` as the docstring and torch's argument names (input, other);
    functions accept lists and numbers as gpunn.tensor does, and `inplace` gives the function and
    the module PyTorch's inplace=False flag. None: the faces are written by hand (softmax's dim,
    reductions, losses), take `doc` where they have no docstring of their own, and
    tests/core/test_op_faces.py holds them to one answer.
    """

    doc: str
    function: tuple | str = ()
    method: tuple | str = ()
    functional: tuple | str = ()
    module: str | None = None
    make: str | None = None
    inplace: bool = False

    def __post_init__(self):
        for kind in ("function", "method", "functional"):
            if isinstance(getattr(self, kind), str):
                object.__setattr__(self, kind, (getattr(self, kind),))
        if self.make not in (None, "unary", "binary"):
            raise ValueError(f"Faces: make must be None, 'unary' or 'binary', not {self.make!r}")

    def names(self, kind):
        """The names of the faces of one kind: "function", "method", "functional" or "module"."""
        if kind == "module":
            return () if self.module is None else (self.module,)
        return getattr(self, kind)


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class _Fields:
    name: str
    forward: Callable | None
    grads: tuple = ()
    variadic: bool = False
    floats: tuple = ()
    saves: bool = False
    into: tuple | None = None
    prepare: Callable | None = None
    prepare_into: tuple | None = None
    label: Callable | None = None
    unit_seeded: bool = False
    reads: tuple | None = None
    reads_out: bool = True
    view: bool = False
    autocast: str | None = None
    backward: Callable | None = None
    fusable: bool = False
    faces: Faces | None = None

    def __post_init__(self):
        if self.saves and self.reads_out:  # the rules get `saved`, not the output
            object.__setattr__(self, "reads_out", False)


class Primitive(_Fields):
    """An op as data: a name, a forward and a gradient rule per input (None: no gradient).
    Frozen: a changed copy is `replace(...)` (dataclasses.replace), which carries every field.

    `variadic` primitives (concat, stack) take any number of inputs and one rule that also gets
    the input's position as its first argument. `floats` names the inputs that must be floating
    (True: all of them).
    A primitive that `saves` returns `(out, saved)` from its forward, and its rules receive
    `saved` in place of `out`: values computed once in the forward pass and reused backward.

    A fused primitive may `prepare` the incoming gradient once for all its rules,
    `(xp, g, out, *inputs, **attrs) -> g'` (linear_act: the activation's backward), and a fast path
    may give `into` rules, `(xp, g, out, *inputs, dest, accumulate, **attrs) -> bool`: they write
    (or add) the gradient straight into `dest`, a leaf's slot in a fused optimizer's flat buffer,
    saving the copy, and return False where they cannot. A fast path may also fuse the two:
    `prepare_into = (i, rule)`, `rule(xp, g, out, *inputs, dest, accumulate, **attrs) -> g'`,
    prepares g and writes input i's gradient into its slot in the same pass (linear_act on CUDA:
    the activation's backward and the bias gradient in one kernel), or returns None where it
    cannot; then `prepare` and the into-rule run as usual.

    A primitive whose inputs' gradients come out of one pass has a joint `backward` rule instead of
    per-input rules: `(xp, g, out, *inputs, needs, **attrs) -> one gradient (or None) per input`,
    where `needs[i]` says whether input i wants one (PyTorch's `needs_input_grad`). linear_chain,
    a run of layers as one node, backpropagates through them once that way.

    `label(attrs) -> str`, if given, is what error messages call the op when its name is not
    what the user wrote (linear_act: "Linear (fused with ReLU)").

    A loss whose rules return their saved gradient as is when handed `UNIT` (below) is
    `unit_seeded`: loss.backward() on it hands them that marker instead of filling a ones array.

    What the rules read, so that backward can refuse values changed in place since the forward
    (version counters): `reads` names the inputs whose values they use (None: all of them) and
    `reads_out` says whether they use the output. Shapes and dtypes do not count: no in-place op
    changes them. Saying too much only makes backward refuse more; saying too little lets a rule
    read a changed value, so a test holds every entry against its rules. A `view` primitive's
    output may share its first input's memory (reshape, permute, basic indexing): where the backend
    made a view, the two share storage and version, as PyTorch's views do.

    `autocast` is the op's policy under gpunn.autocast (PyTorch's op lists): "lower" casts its
    floating inputs to the autocast dtype (matrix products), "fp32" to float32 (reductions,
    softmax, losses), "widest" to the widest floating input dtype (concat, stack); None leaves them.

    A `fusable` activation (one input, no attributes, a rule that reads only the output) may run
    inside linear_act after a linear layer: nn.Sequential, nn.MLP, `gpunn train --activation` and
    the backends' fused kernels take their list of activations from these entries (ACTIVATIONS).
    `faces` names the op's public functions, methods and modules (Faces).
    """

    __slots__ = ()

    def __init__(self, name, forward, *grads, **fields):
        # Primitive(name, forward, *rules, ...); dataclasses.replace passes the rules as grads=
        super().__init__(name, forward, fields.pop("grads", grads), **fields)

    def title(self, attrs):
        """The op's name for an error message about a call with `attrs`."""
        return self.label(attrs) if self.label is not None else self.name

    def rule(self, i):
        if self.variadic:
            rule = self.grads[0]
            return lambda xp, g, out, *args, **attrs: rule(i, xp, g, out, *args, **attrs)
        return self.grads[i]

    def replace(self, **changes):
        """A copy with some fields changed; every other field is carried over, whatever fields exist."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"Primitive has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def override(self, forward=None, grads=None, into=None):
        """A copy with a faster forward, rules and/or into-rules: how a backend's fast path is made."""
        return self.replace(forward=forward or self.forward, grads=tuple(grads or self.grads),
                            into=into or self.into)

    def __repr__(self):
        return f"<primitive {self.name}>"


def primitives():
    """Every primitive of the table, in the order of this file (wherever an entry was added)."""
    return [p for p in globals().values() if isinstance(p, Primitive)]


def entries():
    """{op name: (its primitive, or None for a composite, and its Faces)} for every op with public
    faces: the primitives that declare them, then COMPOSITES (at the end of this file)."""
    table = {p.name: (p, p.faces) for p in primitives() if p.faces is not None}
    table.update((name, (None, faces)) for name, faces in COMPOSITES.items())
    return table


def face_names(kind):
    """The public names of one kind of face ("function", "method", "functional", "module"), in table order."""
    return [name for _, faces in entries().values() for name in faces.names(kind)]


class _Fusable(Mapping):
    """{name: primitive} of the `fusable` activations in table order, read from the table when
    asked, so an entry counts wherever in this file it was added (the generic linear_act's)."""

    def __getitem__(self, name):
        found = globals().get(name) if isinstance(name, str) else None
        if isinstance(found, Primitive) and found.fusable and found.name == name:
            return found
        raise KeyError(name)

    def __iter__(self):
        return (p.name for p in primitives() if p.fusable)

    def __len__(self):
        return len(list(iter(self)))


_TABLE_ACTIVATIONS = _Fusable()


def __getattr__(name):
    """ops.ACTIVATIONS, the fusable activations as a plain dict (a fast lookup for linear_act's
    callers), made on first use: after this file has run, so that every entry counts."""
    if name != "ACTIVATIONS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = globals()["ACTIVATIONS"] = dict(_TABLE_ACTIVATIONS)
    return found


def _is_array(v):
    return hasattr(v, "shape")


def _expand(xp, g, shape, axis, keepdims):
    """Bring a reduced gradient back to `shape` (the input's) by reinserting the reduced axes."""
    if not keepdims and axis is not None:
        axes = (axis,) if isinstance(axis, int) else axis
        full = [1 if i in {a % len(shape) for a in axes} else n for i, n in enumerate(shape)]
        g = xp.reshape(g, tuple(full))
    return xp.broadcast_to(g, shape)


def _count(shape, axis):
    if axis is None:
        return math.prod(shape)
    axes = (axis,) if isinstance(axis, int) else axis
    return math.prod(shape[a] for a in axes)


# --- arithmetic -------------------------------------------------------------------------------

add = Primitive("add", lambda xp, x, y: x + y,
                lambda xp, g, out, x, y: g,
                lambda xp, g, out, x, y: g, reads=(), reads_out=False,
                faces=Faces("x + alpha * other written into x (the `+=` of PyTorch's x.add_(other, alpha=1)).",
                            method="add_"))

sub = Primitive("sub", lambda xp, x, y: x - y,
                lambda xp, g, out, x, y: g,
                lambda xp, g, out, x, y: -g, reads=(), reads_out=False,
                faces=Faces("x - alpha * other written into x (the `-=` of PyTorch's x.sub_(other, alpha=1)).",
                            method="sub_"))

mul = Primitive("mul", lambda xp, x, y: x * y,
                lambda xp, g, out, x, y: g * y,
                lambda xp, g, out, x, y: g * x, reads_out=False,
                faces=Faces("x * other written into x (`*=`).", method="mul_"))

div = Primitive("div", lambda xp, x, y: x / y,
                lambda xp, g, out, x, y: g / y,
                lambda xp, g, out, x, y: -g * out / y, reads=(1,),
                faces=Faces("x / other written into x (`/=`).", method="div_"))

neg = Primitive("neg", lambda xp, x: -x,
                lambda xp, g, out, x: -g, reads=(), reads_out=False)


def _pow_grad_base(xp, g, out, x, y):
    """y * x ** (y - 1), taken as 0 where y == 0 (x ** 0 is flat in x), as in PyTorch: at x == 0
    the formula would give 0 * inf = nan."""
    if not _is_array(y):
        return g * (y * x ** (y - 1)) if y != 0 else xp.zeros_like(g)
    return xp.where(y == 0, 0.0, g * y * x ** (y - 1))


def _pow_grad_exponent(xp, g, out, x, y):
    """out * log(x) for d(x**y)/dy, as in PyTorch: 0 at x == 0 for y >= 0 (x**y is flat or
    one-sided there), -inf for y < 0, nan for a negative constant base. y is an array here."""
    if _is_array(x):
        log_x = xp.log(xp.where(x == 0, 1.0, x))
        log_x = xp.where((x == 0) & (y < 0), -math.inf, log_x)
    elif x > 0:
        log_x = math.log(x)
    elif x == 0:
        log_x = xp.where(y < 0, -math.inf, xp.zeros_like(y))
    else:
        log_x = math.nan
    return g * out * log_x


pow = Primitive("pow", lambda xp, x, y: x ** y, _pow_grad_base, _pow_grad_exponent, autocast="fp32",
                faces=Faces("x ** exponent, elementwise (the ** operator).", method="pow"))


HALF_DTYPES = set()  # the backends' half-precision array dtypes, added by each backend as it loads


def _product(xp, a, b, bias=None):
    """a @ b (+ bias). Half-precision operands are multiplied (and the bias added) in float32 and
    the result rounded once, as tensor cores do (half inputs, float32 accumulation): products that
    accumulate in half precision lose digits with every addition (and NumPy's are slow)."""
    if a.dtype not in HALF_DTYPES:
        y = a @ b
        if bias is not None:
            y += bias
        return y
    wide = xp.float32
    y = xp.astype(a, wide) @ xp.astype(b, wide)
    if bias is not None:
        y += xp.astype(bias, wide)
    return xp.astype(y, a.dtype)


def _matmul_grad_x(xp, g, out, x, y):
    if y.ndim == 1:
        return g * y if x.ndim == 1 else g[..., None] * y
    if x.ndim == 1:
        return _product(xp, y, g[..., None])[..., 0]
    return _product(xp, g, y.mT)


def _matmul_grad_y(xp, g, out, x, y):
    if x.ndim == 1:
        return g * x if y.ndim == 1 else x[:, None] * g[..., None, :]
    if y.ndim == 1:
        return xp.sum(x * g[..., None], axis=-2)
    return _product(xp, x.mT, g)


matmul = Primitive("matmul", _product, _matmul_grad_x, _matmul_grad_y, floats=(0, 1),
                   reads_out=False, autocast="lower",
                   faces=Faces("The matrix product input @ other: vectors, matrices and broadcast batches, as "
                               "torch.matmul.", function="matmul", method="matmul"))


def _linear_forward(xp, x, w, b):
    return _product(xp, x, w.mT, b)


def _linear_grad_w(xp, g, out, x, w, b):
    if x.ndim == 1:
        return g[:, None] * x
    if x.ndim > 2:
        g, x = xp.reshape(g, (-1, g.shape[-1])), xp.reshape(x, (-1, x.shape[-1]))
    return _product(xp, g.mT, x)


def _linear_grad_b(xp, g, out, x, w, b):
    return xp.sum(g, axis=tuple(range(g.ndim - 1))) if g.ndim > 1 else g


linear = Primitive("linear", _linear_forward,
                   lambda xp, g, out, x, w, b: _product(xp, g, w),
                   _linear_grad_w, _linear_grad_b, floats=(0, 1, 2), reads=(0, 1), reads_out=False,
                   autocast="lower", faces=Faces("x @ weight.T + bias in one node.", functional="linear"))
"""The affine map x @ w.T + b in one node (PyTorch's F.linear layout: w is (out, in))."""

# --- elementwise functions --------------------------------------------------------------------

exp = Primitive("exp", lambda xp, x: xp.exp(x),
                lambda xp, g, out, x: g * out, floats=(0,), reads=(), autocast="fp32",
                faces=Faces("e ** input, elementwise.", function="exp", method=("exp", "exp_"), make="unary"))

log = Primitive("log", lambda xp, x: xp.log(x),
                lambda xp, g, out, x: g / x, floats=(0,), reads_out=False, autocast="fp32",
                faces=Faces("The natural logarithm of input, elementwise.", function="log", method="log", make="unary"))

sqrt = Primitive("sqrt", lambda xp, x: xp.sqrt(x),
                 lambda xp, g, out, x: g / (2 * out), floats=(0,), reads=(),
                 faces=Faces("The square root of input, elementwise.", function="sqrt", method="sqrt", make="unary"))

abs = Primitive("abs", lambda xp, x: xp.abs(x),
                lambda xp, g, out, x: g * xp.sign(x), reads_out=False,
                faces=Faces("|input|, elementwise (the gradient at 0 is 0, as in PyTorch).", function="abs",
                            method="abs", make="unary"))

relu = Primitive("relu", lambda xp, x: xp.maximum(x, 0),
                 # a multiply by the 0/1 mask: ~10x faster than where() on NumPy, and a NaN arriving
                 # at a dead unit stays NaN (loud) instead of being masked
                 lambda xp, g, out, x: g * xp.astype(out > 0, g.dtype), floats=(0,), reads=(), fusable=True,
                 faces=Faces("max(input, 0), elementwise; inplace=True (and relu_) writes it into input.",
                             function="relu", method=("relu", "relu_"), functional="relu", module="ReLU", make="unary",
                             inplace=True))

tanh = Primitive("tanh", lambda xp, x: xp.tanh(x),
                 lambda xp, g, out, x: g * (1 - out * out), floats=(0,), reads=(), fusable=True,
                 faces=Faces("The hyperbolic tangent of input, elementwise.", function="tanh", method="tanh",
                             functional="tanh", module="Tanh", make="unary"))


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))  # never overflows: the exponent is <= 0
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


sigmoid = Primitive("sigmoid", _sigmoid,
                    lambda xp, g, out, x: g * out * (1 - out), floats=(0,), reads=(), fusable=True,
                    faces=Faces("1 / (1 + e ** -input), elementwise (computed without overflow).", function="sigmoid",
                                method="sigmoid", functional="sigmoid", module="Sigmoid", make="unary"))


def linear_act_primitive(linear, activations, forward=None, prepare_into=None):
    """`act(x @ w.T + b)` as one node, built from a linear primitive and {name: activation
    primitive}: one node and one saved output instead of two. The activation's rule `prepare`s the
    incoming gradient once (the engine then hands the pre-activation gradient to every rule), and
    the linear primitive's rules and into-rules take it from there. Backends build their fast
    version from their fast parts; `forward(xp, x, w, b, activation) -> y` may replace the
    composed forward, and `prepare_into(xp, g, out, x, w, b, dest, accumulate, activation)` may
    prepare g and write the bias gradient at once (see Primitive)."""

    def composed(xp, x, w, b, activation):
        return activations[activation].forward(xp, linear.forward(xp, x, w, b))

    def pre_activation(xp, g, out, x, w, b, activation):
        return activations[activation].grads[0](xp, g, out, None)  # the activation rules read only out

    def rule(k):
        return lambda xp, g, out, x, w, b, activation: linear.grads[k](xp, g, out, x, w, b)

    def into_rule(k):
        return lambda xp, g, out, x, w, b, dest, accumulate, activation: linear.into[k](
            xp, g, out, x, w, b, dest, accumulate)

    into = linear.into and tuple(None if r is None else into_rule(k) for k, r in enumerate(linear.into))
    return Primitive("linear_act", forward or composed, rule(0), rule(1), rule(2), floats=(0, 1, 2), into=into,
                     prepare=pre_activation, prepare_into=prepare_into and (2, prepare_into), label=_fused_label,
                     reads=(0, 1), autocast="lower")


def _fused_label(attrs):
    """What the user wrote: nn.Sequential runs Linear followed by ReLU as linear_act."""
    return f"Linear (fused with {_module_of(attrs.get('activation'))})"


def _module_of(activation):
    """The nn class name of a fusable activation (what the user wrote), or the name as given."""
    found = _TABLE_ACTIVATIONS.get(activation)
    return found.faces.module if found is not None else activation


linear_act = linear_act_primitive(linear, _TABLE_ACTIVATIONS).replace(faces=Faces(
    "activation(x @ weight.T + bias) in one node, for a fusable activation (ops.ACTIVATIONS).",
    functional="linear_act"))
"""relu/tanh/sigmoid(x @ w.T + b) in one node: how nn.Sequential runs Linear followed by one of them."""

def linear_chain_primitive(linear, table):
    """A run of layers, `x -> act_n(... act_1(x @ w_1.T + b_1) ...)`, as one node: how
    nn.Sequential runs consecutive Linear layers (each optionally followed by an activation) on
    backends that want it. Inputs are x, w_1, b_1, w_2, b_2, ... (a bias may be None); the attr
    `activations` names each layer's activation (None: none). One dispatch forward and one joint
    backward pass through the layers, instead of a node per layer: the same products, in the same
    order, so the same numbers. Built, like linear_act, from a linear primitive and a `table`
    {name: activation primitive}, so a backend's fast parts make its fast version."""

    def forward(xp, x, *params, activations):
        inputs = [x]  # each layer's input, and last the output: what the backward reads
        for k, act in enumerate(activations):
            y = linear.forward(xp, inputs[-1], params[2 * k], params[2 * k + 1])
            inputs.append(y if act is None else table[act].forward(xp, y))
        return inputs[-1], inputs

    def backward(xp, g, inputs, x, *params, needs, activations):
        grads = [None] * len(needs)
        for k in range(len(activations) - 1, -1, -1):
            w, b, out, h = params[2 * k], params[2 * k + 1], inputs[k + 1], inputs[k]
            if activations[k] is not None:
                g = table[activations[k]].grads[0](xp, g, out, None)  # activation rules read only out
            if needs[2 * k + 1]:
                grads[2 * k + 1] = linear.grads[1](xp, g, out, h, w, b)
            if needs[2 * k + 2]:
                grads[2 * k + 2] = linear.grads[2](xp, g, out, h, w, b)
            if k or needs[0]:
                g = linear.grads[0](xp, g, out, h, w, b)
        grads[0] = g if needs[0] else None
        return grads

    return Primitive("linear_chain", forward, floats=True, saves=True,
                     backward=backward, label=_chain_label, autocast="lower")


def _chain_label(attrs):
    names = [_module_of(a) for a in attrs.get("activations", ()) if a is not None]
    return f"{len(attrs.get('activations', ()))} Linear layers (fused{' with ' + ', '.join(names) if names else ''})"


linear_chain = linear_chain_primitive(linear, _TABLE_ACTIVATIONS).replace(faces=Faces(
    "Layers [(weight, bias, activation or None), ...] applied in turn, as one node.", functional="linear_chain"))


leaky_relu = Primitive("leaky_relu",
                       lambda xp, x, negative_slope=0.01: xp.where(x > 0, x, x * negative_slope),
                       lambda xp, g, out, x, negative_slope=0.01: xp.where(x > 0, g, g * negative_slope),
                       floats=(0,), reads_out=False,
                       faces=Faces("input where input > 0, else negative_slope * input.", functional="leaky_relu",
                                   module="LeakyReLU"))
"""x where x > 0, else negative_slope * x (PyTorch's rule: the slope at 0 is negative_slope)."""


def _erfc(xp, z):
    """erfc(z) for z >= 0 (the array API has no erf): Numerical Recipes' Chebyshev fit
    (Press et al., "erfcc"), relative error below 1.2e-7 everywhere, so tails keep their digits."""
    t = 1 / (1 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    return t * xp.exp(poly - z * z)


def _normal_cdf(xp, x):
    """Phi(x) = erfc(-x / sqrt 2) / 2, from erfc of |x| so neither tail cancels."""
    half_tail = 0.5 * _erfc(xp, xp.abs(x) * (1 / math.sqrt(2)))
    return xp.where(x >= 0, 1 - half_tail, half_tail)


_GELU_TANH_SCALE = math.sqrt(2 / math.pi)


def _gelu(xp, x, approximate="none"):
    """Saves Phi(x) (exact) or the tanh (approximate) for the rule."""
    if approximate == "tanh":
        t = xp.tanh(_GELU_TANH_SCALE * (x + 0.044715 * (x * x * x)))
        return 0.5 * x * (1 + t), t
    cdf = _normal_cdf(xp, x)
    return x * cdf, cdf


def _gelu_grad(xp, g, saved, x, approximate="none"):
    if approximate == "tanh":
        t = saved
        slope = _GELU_TANH_SCALE * (1 + 3 * 0.044715 * (x * x))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * slope)
    pdf = xp.exp(-0.5 * (x * x)) * (1 / math.sqrt(2 * math.pi))
    return g * (saved + x * pdf)


gelu = Primitive("gelu", _gelu, _gelu_grad, floats=(0,), saves=True,
                 faces=Faces("input * Phi(input), Phi the standard normal CDF (approximate='tanh': the tanh formula).",
                             functional="gelu", module="GELU"))
"""x * Phi(x). Exact form: Phi from an erfc with relative error < 1.2e-7 (float32 rounding level;
in float64 it differs from PyTorch's by up to that relative amount); the rule uses the exact
normal density. approximate="tanh" is PyTorch's tanh formula, with its exact derivative."""

maximum = Primitive("maximum", lambda xp, x, y: xp.maximum(x, y),
                    lambda xp, g, out, x, y: xp.where(x >= y, g, 0.0),
                    lambda xp, g, out, x, y: xp.where(x >= y, 0.0, g), reads_out=False,
                    faces=Faces("The larger of input and other, elementwise (ties: the gradient goes to input).",
                                function="maximum", method="maximum", make="binary"))

minimum = Primitive("minimum", lambda xp, x, y: xp.minimum(x, y),
                    lambda xp, g, out, x, y: xp.where(x <= y, g, 0.0),
                    lambda xp, g, out, x, y: xp.where(x <= y, 0.0, g), reads_out=False,
                    faces=Faces("The smaller of input and other, elementwise (ties: the gradient goes to input).",
                                function="minimum", method="minimum", make="binary"))

where = Primitive("where", lambda xp, c, x, y: xp.where(c, x, y),
                  None,
                  lambda xp, g, out, c, x, y: xp.where(c, g, 0.0),
                  lambda xp, g, out, c, x, y: xp.where(c, 0.0, g), reads=(0,), reads_out=False,
                  faces=Faces("input where condition holds, else other.", function="where"))


def _inside(x, lo, hi):
    if lo is None:
        return x <= hi
    if hi is None:
        return x >= lo
    return (x >= lo) & (x <= hi)


def _clip(xp, x, lo=None, hi=None):
    """xp.clip as maximum then minimum (NaN stays NaN): array-api-compat's clip indexes with a
    boolean mask, which costs CuPy a device-to-host sync and cannot be recorded into a CUDA graph."""
    out = x
    if lo is not None:
        out = xp.maximum(out, lo)
    if hi is not None:
        out = xp.minimum(out, hi)
    if out is x:
        return xp.asarray(x, copy=True)
    return out if out.dtype == x.dtype else xp.astype(out, x.dtype)


clip = Primitive("clip", _clip,
                 lambda xp, g, out, x, lo=None, hi=None: xp.where(_inside(x, lo, hi), g, 0.0), reads_out=False,
                 faces=Faces("input limited to [min, max] (either may be None or a tensor).",
                             function=("clip", "clamp"), method=("clip", "clamp", "clip_", "clamp_")))

astype = Primitive("astype", lambda xp, x, dtype: xp.astype(x, dtype),
                   lambda xp, g, out, x, dtype: xp.astype(g, x.dtype), reads=(), reads_out=False)

# --- reductions -------------------------------------------------------------------------------

def _sum(xp, x, axis=None, keepdims=False):
    """Booleans are counted as int64, as in PyTorch's (pred == y).sum(); the standard sums numbers only."""
    if x.dtype == xp.bool:
        x = xp.astype(x, xp.int64)
    return xp.sum(x, axis=axis, keepdims=keepdims)


sum = Primitive("sum", _sum,
                lambda xp, g, out, x, axis=None, keepdims=False: _expand(xp, g, x.shape, axis, keepdims),
                reads=(), reads_out=False, autocast="fp32",
                faces=Faces("The sum over dim (all entries when None); booleans count as int64.", function="sum",
                            method="sum"))

mean = Primitive("mean", lambda xp, x, axis=None, keepdims=False: xp.mean(x, axis=axis, keepdims=keepdims),
                 lambda xp, g, out, x, axis=None, keepdims=False:
                 _expand(xp, g, x.shape, axis, keepdims) / _count(x.shape, axis), floats=(0,), reads=(),
                 reads_out=False, faces=Faces("The mean over dim (all entries when None).", function="mean",
                                              method="mean"))


def _extremum_grad(xp, g, out, x, axis=None, keepdims=False):
    """Ties share the gradient equally, so the rule is the derivative of a symmetric function."""
    hit = xp.astype(x == _expand(xp, out, x.shape, axis, keepdims), x.dtype)
    return hit * _expand(xp, g, x.shape, axis, keepdims) / xp.sum(hit, axis=axis, keepdims=True)


max = Primitive("max", lambda xp, x, axis=None, keepdims=False: xp.max(x, axis=axis, keepdims=keepdims),
                _extremum_grad, faces=Faces("The largest entry, or (values, indices) along dim, or the elementwise "
                                            "maximum of two tensors, as torch.max.", function="max", method="max"))

min = Primitive("min", lambda xp, x, axis=None, keepdims=False: xp.min(x, axis=axis, keepdims=keepdims),
                _extremum_grad, faces=Faces("The smallest entry, or (values, indices) along dim, or the elementwise "
                                            "minimum of two tensors, as torch.min.", function="min", method="min"))


def _logsumexp(xp, x, axis=None, keepdims=False):
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)  # all -inf rows stay -inf instead of nan
    s = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    if keepdims:
        return s
    return xp.reshape(s, ()) if axis is None else xp.squeeze(s, axis=axis)


logsumexp = Primitive("logsumexp", _logsumexp,
                      lambda xp, g, out, x, axis=None, keepdims=False:
                      _expand(xp, g, x.shape, axis, keepdims) * xp.exp(x - _expand(xp, out, x.shape, axis, keepdims)),
                      floats=(0,), autocast="fp32",
                      faces=Faces("log(sum(exp(input))) over dim, computed without overflow.", function="logsumexp",
                                  method="logsumexp"))


def _softmax(xp, x, axis=-1):
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


softmax = Primitive("softmax", _softmax,
                    lambda xp, g, out, x, axis=-1: out * (g - xp.sum(g * out, axis=axis, keepdims=True)),
                    floats=(0,), reads=(), autocast="fp32",
                    faces=Faces("exp(input) normalized to sum to 1 along dim.", function="softmax", method="softmax",
                                functional="softmax", module="Softmax"))


def _log_softmax(xp, x, axis=-1):
    """(x - max) - log(sum(exp(x - max))): x - logsumexp(x) would lose float32 digits at large
    logits, because logsumexp is rounded at the logits' magnitude before the subtraction."""
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


log_softmax = Primitive("log_softmax", _log_softmax,
                        lambda xp, g, out, x, axis=-1: g - xp.exp(out) * xp.sum(g, axis=axis, keepdims=True),
                        floats=(0,), reads=(), autocast="fp32",
                        faces=Faces("log(softmax(input)) along dim, computed without losing digits.",
                                    function="log_softmax", method="log_softmax", functional="log_softmax",
                                    module="LogSoftmax"))

# --- shape and indexing -----------------------------------------------------------------------

copy = Primitive("copy", lambda xp, x: xp.asarray(x, copy=True), lambda xp, g, out, x: g, reads=(),
                 reads_out=False, faces=Faces("A copy with its own memory that stays in the graph.", method="clone"))

reshape = Primitive("reshape", lambda xp, x, shape: xp.reshape(x, shape),
                    lambda xp, g, out, x, shape: xp.reshape(g, x.shape), reads=(), reads_out=False, view=True,
                    faces=Faces("The same entries in another shape (a view where the layout allows).",
                                function="reshape", method=("reshape", "view")))


def _inverse(axes):
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return tuple(inv)


permute = Primitive("permute", lambda xp, x, axes: xp.permute_dims(x, axes),
                    lambda xp, g, out, x, axes: xp.permute_dims(g, _inverse(axes)), reads=(), reads_out=False,
                    view=True, faces=Faces("The axes in another order (a view).", function="permute", method="permute"))


def has_array_index(index):
    return any(_is_array(i) for i in (index if isinstance(index, tuple) else (index,)))


def _get(xp, x, index):
    """x[index]; rows picked by one integer array are spelled take(x, i, axis=0) in the standard."""
    if _is_array(index) and x.ndim > 1 and index.ndim == 1 and xp.isdtype(index.dtype, "integral"):
        return xp.take(x, index, axis=0)
    return x[index]


def _getitem_grad(xp, g, out, x, index):
    """Scatter g back into zeros; repeated integer indices accumulate.

    Basic indexing writes with setitem. Integer arrays go through the same index applied to the
    positions 0..n-1, then a one-hot product sums the gradient per position: standard-only and
    memory-hungry, which is why backends override it (NumPy: bincount; CuPy: scatter_add).
    """
    if not has_array_index(index):
        gx = xp.zeros(x.shape, dtype=g.dtype, device=g.device)
        if isinstance(index, tuple) and None in index:  # the standard's setitem takes no new axes
            index = tuple(i for i in index if i is not None)
            g = xp.reshape(g, gx[index].shape)
        gx[index] = g
        return gx
    n = math.prod(x.shape)
    positions = xp.reshape(_get(xp, xp.reshape(xp.arange(n, device=g.device), x.shape), index), (-1,))
    onehot = xp.astype(positions[:, None] == xp.arange(n, device=g.device)[None, :], g.dtype)
    flat = xp.reshape(xp.broadcast_to(g, out.shape), (1, -1)) @ onehot
    return xp.reshape(flat, x.shape)


getitem = Primitive("getitem", _get, _getitem_grad, reads=(), reads_out=False, view=True)

def _index_put(xp, x, v, index):
    out = xp.asarray(x, copy=True)
    out[index] = v
    return out


def _index_put_grad_x(xp, g, out, x, v, index):
    gx = xp.asarray(g, copy=True)
    gx[index] = 0
    return gx


index_put = Primitive("index_put", _index_put, _index_put_grad_x,
                      lambda xp, g, out, x, v, index: _get(xp, g, index), reads=(), reads_out=False,
                      autocast="widest")
"""x with x[index] = v, out of place: what `x[index] = v` records on a tensor in the graph (the
gradient reaches v from the positions written, and x from the others)."""


def _offsets(xs, axis):
    starts = [0]
    for x in xs:
        starts.append(starts[-1] + x.shape[axis])
    return starts


def _concat_grad(i, xp, g, out, *xs, axis=0):
    starts = _offsets(xs, axis)
    index = [slice(None)] * g.ndim
    index[axis] = slice(starts[i], starts[i + 1])
    return g[tuple(index)]


concat = Primitive("concat", lambda xp, *xs, axis=0: xp.concat(xs, axis=axis), _concat_grad, variadic=True,
                   reads=(), reads_out=False, autocast="widest",
                   faces=Faces("Tensors joined along an existing dim.", function=("concat", "cat")))


def _stack_grad(i, xp, g, out, *xs, axis=0):
    index = [slice(None)] * g.ndim
    index[axis] = i
    return g[tuple(index)]


stack = Primitive("stack", lambda xp, *xs, axis=0: xp.stack(xs, axis=axis), _stack_grad, variadic=True,
                  reads=(), reads_out=False, autocast="widest",
                  faces=Faces("Tensors of one shape joined along a new dim.", function="stack"))

# --- fused losses -----------------------------------------------------------------------------

class _Unit:
    """loss.backward()'s seed of ones when the root's primitive is unit_seeded and nothing else
    reads the seed (Tensor.backward decides): its rule returns the saved gradient as is, so no ones
    array is filled and nothing is multiplied by it (on a GPU, two of a small step's ~20 launches)."""

    def __repr__(self):
        return "<the implicit ones seed of loss.backward()>"


UNIT = _Unit()


def _onehot(xp, target, classes, dtype):
    return xp.astype(target[:, None] == xp.arange(classes, device=target.device)[None, :], dtype)


def _reduce(xp, per_sample, reduction):
    if reduction == "mean":  # over every element: BCE's per-element losses may be (n, k)
        return xp.sum(per_sample) / math.prod(per_sample.shape)
    if reduction == "sum":
        return xp.sum(per_sample)
    return per_sample


def _cross_entropy(xp, logits, target, reduction="mean", ignore_index=-100):
    """Per row: logsumexp(logits) - logits[target]; rows whose target is ignore_index count for
    nothing, as in PyTorch (the mean is over the rows kept). Saves the gradient per unit of
    incoming gradient: (softmax(logits) - onehot), weighted as the reduction weighs each row."""
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(shifted)
    total = xp.sum(e, axis=1, keepdims=True)
    onehot = _onehot(xp, target, logits.shape[1], logits.dtype)
    kept = xp.astype(target != ignore_index, logits.dtype)
    picked = xp.sum(xp.where(onehot != 0, shifted, 0.0), axis=1)  # not shifted * onehot: -inf * 0 is NaN
    per_row = (xp.log(total[:, 0]) - picked) * kept
    if reduction == "mean":  # every row ignored: the loss is 0/0 = nan and the gradient 0, as in PyTorch
        count = xp.sum(kept)
        share = kept / xp.where(count == 0, 1.0, count)
        return xp.sum(per_row) / count, (e / total - onehot) * share[:, None]
    residual = (e / total - onehot) * kept[:, None]
    return (xp.sum(per_row) if reduction == "sum" else per_row), residual


def _cross_entropy_grad(xp, g, residual, logits, target, reduction="mean", ignore_index=-100):
    """softmax(logits) - onehot(target): never formed through log and exp separately."""
    if g is UNIT:  # loss.backward(): the gradient is the residual itself (no kernel launch)
        return residual
    return residual * (g[:, None] if reduction == "none" else g)


cross_entropy = Primitive("cross_entropy", _cross_entropy, _cross_entropy_grad, None, floats=(0,), saves=True,
                          unit_seeded=True, reads=(), autocast="fp32",
                          faces=Faces("Softmax cross-entropy of logits against classes or class probabilities.",
                                      functional="cross_entropy", module="CrossEntropyLoss"))
"""Softmax cross-entropy of (n, C) logits against (n,) integer classes, fused and stable."""


def _bce_logits(xp, x, t, reduction="mean"):
    per = xp.maximum(x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
    return _reduce(xp, per, reduction)


def _scale_like(xp, g, x, reduction):
    if reduction == "mean":
        return g / math.prod(x.shape)
    return g


bce_with_logits = Primitive(
    "bce_with_logits", _bce_logits,
    lambda xp, g, out, x, t, reduction="mean": (_sigmoid(xp, x) - t) * _scale_like(xp, g, x, reduction),
    lambda xp, g, out, x, t, reduction="mean": -x * _scale_like(xp, g, x, reduction),
    floats=(0, 1), reads_out=False, autocast="fp32",
    faces=Faces("Sigmoid and binary cross-entropy in one stable formula.",
                functional="binary_cross_entropy_with_logits", module="BCEWithLogitsLoss"))

# --- gather, scatter, scans and products (issue 17: the PyTorch surface) ------------------------

def _scatter_sum(xp, index, src, axis, shape):
    """zeros(shape) with src[i] added at position index[i] along `axis` (repeats accumulate).

    Standard-only: a one-hot comparison of the indices with 0..n-1 on a new axis after `axis`,
    summed over `axis`. index and src share a shape, which may be smaller than `shape` on the
    other axes (PyTorch allows it): the sum is then written into the leading corner of zeros."""
    n = shape[axis]
    positions = xp.reshape(xp.arange(n, device=index.device), (n,) + (1,) * (index.ndim - axis - 1))
    hits = xp.expand_dims(index, axis=axis + 1) == positions
    summed = xp.sum(xp.where(hits, xp.expand_dims(src, axis=axis + 1), xp.zeros((), dtype=src.dtype,
                                                                                 device=src.device)), axis=axis)
    if tuple(summed.shape) == tuple(shape):
        return summed
    out = xp.zeros(shape, dtype=src.dtype, device=src.device)
    out[tuple(slice(0, k) for k in summed.shape)] = summed
    return out


gather = Primitive("gather", lambda xp, x, index, axis: xp.take_along_axis(x, index, axis=axis),
                   lambda xp, g, out, x, index, axis: _scatter_sum(xp, index, g, axis, x.shape),
                   None, reads=(1,), reads_out=False,
                   faces=Faces("Entries of input picked along dim by index, as torch.gather.", function="gather",
                               method="gather"))
"""x[..., index[i], ...] along `axis` (torch.gather, with index shaped like x but on `axis`);
the gradient scatters back and adds where an index repeats."""

scatter_add = Primitive("scatter_add",
                        lambda xp, x, index, src, axis: x + _scatter_sum(xp, index, src, axis, x.shape),
                        lambda xp, g, out, x, index, src, axis: g,
                        None,
                        lambda xp, g, out, x, index, src, axis: xp.take_along_axis(
                            g[tuple(slice(None) if d == axis else slice(0, k) for d, k in enumerate(index.shape))],
                            index, axis=axis), reads=(1,), reads_out=False, autocast="widest",
                        faces=Faces("A copy of input with src added at index along dim.", function="scatter_add",
                                    method="scatter_add"))
"""x with src added at index along `axis` (torch.scatter_add; index and src of one shape)."""


def scatter_fast_paths(index_add, scatter_sum):
    """{name: override} of getitem's and gather's rules and scatter_add's forward, for a backend
    with faster scatters than the generic one-hot products: `index_add(g, out, x, index)`, the
    gradient of x[index] for array indices (basic ones keep the generic rule, already direct), and
    `scatter_sum(index, src, axis, shape)`, the arithmetic of _scatter_sum."""

    def getitem_grad(xp, g, out, x, index):
        return index_add(g, out, x, index) if has_array_index(index) else _getitem_grad(xp, g, out, x, index)

    return {"getitem": getitem.override(grads=(getitem_grad,)),
            "gather": gather.override(grads=(
                lambda xp, g, out, x, index, axis: scatter_sum(index, g, axis, x.shape), None)),
            "scatter_add": scatter_add.override(
                forward=lambda xp, x, index, src, axis: x + scatter_sum(index, src, axis, x.shape))}

broadcast_to = Primitive("broadcast_to", lambda xp, x, shape: xp.broadcast_to(x, shape),
                         lambda xp, g, out, x, shape: g, reads=(), reads_out=False, view=True,
                         faces=Faces("input repeated along axes of size 1 to the given sizes (a view).",
                                     method="expand"))
"""x repeated along axes of length 1 (and new leading axes): the engine sums the gradient back."""


def _cumsum(xp, x, axis):
    if x.dtype == xp.bool or xp.isdtype(x.dtype, "integral"):  # PyTorch sums integers as int64
        x = xp.astype(x, xp.int64)
    return xp.cumulative_sum(x, axis=axis)


cumsum = Primitive("cumsum", _cumsum,
                   lambda xp, g, out, x, axis: xp.flip(xp.cumulative_sum(xp.flip(g, axis=axis), axis=axis), axis=axis),
                   reads=(), reads_out=False, autocast="fp32",
                   faces=Faces("Running sums along dim.", function="cumsum", method="cumsum"))
"""Running sums along `axis`; the gradient is the running sum of g taken from the other end."""


def _prod(xp, x, axis=None, keepdims=False):
    if x.dtype == xp.bool or xp.isdtype(x.dtype, "integral"):
        x = xp.astype(x, xp.int64)
    return xp.prod(x, axis=axis, keepdims=keepdims)


def _prod_grad(xp, g, out, x, axis=None, keepdims=False):
    """The product of the other entries, as exclusive running products from both ends: right
    where some entries are 0 (out / x would divide by zero there)."""
    g = _expand(xp, g, x.shape, axis, keepdims)
    if axis is None:
        flat = xp.reshape(x, (-1,))
        return g * xp.reshape(_others_product(xp, flat, 0), x.shape)
    return g * _others_product(xp, x, axis)


def _others_product(xp, x, axis):
    n = x.shape[axis]
    before = [slice(None)] * x.ndim
    before[axis] = slice(0, n)
    left = xp.cumulative_prod(x, axis=axis, include_initial=True)[tuple(before)]
    right = xp.flip(xp.cumulative_prod(xp.flip(x, axis=axis), axis=axis, include_initial=True)[tuple(before)],
                    axis=axis)
    return left * right


prod = Primitive("prod", _prod, _prod_grad, reads_out=False, autocast="fp32",
                 faces=Faces("The product of all entries, or along dim.", function="prod", method="prod"))
"""The product over `axis` (all entries when None); integers multiply as int64, as in PyTorch."""


def _log_at_least_minus_100(xp, x):
    """log(x) clamped below at -100, as PyTorch's binary_cross_entropy takes it (log(0) = -100,
    computed without a log of 0, so NumPy does not warn)."""
    positive = x > 0
    return xp.where(positive, xp.maximum(xp.log(xp.where(positive, x, 1.0)), -100.0), -100.0)


def _bce_forward(xp, p, t):
    return -(t * _log_at_least_minus_100(xp, p) + (1 - t) * _log_at_least_minus_100(xp, 1 - p))


binary_cross_entropy = Primitive(
    "binary_cross_entropy", _bce_forward,
    # PyTorch's rule: (p - t) / max(p (1 - p), 1e-12), finite where a sigmoid saturated to 0 or 1
    lambda xp, g, out, p, t: g * (p - t) / xp.maximum((1 - p) * p, 1e-12),
    lambda xp, g, out, p, t: g * (_log_at_least_minus_100(xp, 1 - p) - _log_at_least_minus_100(xp, p)),
    floats=(0, 1), reads_out=False, autocast="fp32",
    faces=Faces("Binary cross-entropy of probabilities against targets.", functional="binary_cross_entropy",
                module="BCELoss"))
"""Per-element binary cross-entropy of probabilities p against targets t (no reduction)."""


# --- composites: ops made of the primitives above, with faces written by hand ----------------------

COMPOSITES = {
    "mm": Faces("The product of two matrices (2-D only).", method="mm"),
    "bmm": Faces("Batched matrix product of (b, n, m) and (b, m, p) tensors.", function="bmm", method="bmm"),
    "amax": Faces("The largest values over dim; ties share the gradient.", function="amax", method="amax"),
    "amin": Faces("The smallest values over dim; ties share the gradient.", function="amin", method="amin"),
    "argmax": Faces("The index of the largest entry, overall or along dim.", function="argmax", method="argmax"),
    "argmin": Faces("The index of the smallest entry, overall or along dim.", function="argmin", method="argmin"),
    "norm": Faces("The vector p-norm over dim.", function="norm", method="norm"),
    "var": Faces("The variance over dim (Bessel's correction by default).", function="var", method="var"),
    "std": Faces("The standard deviation over dim (Bessel's correction by default).", function="std", method="std"),
    "isnan": Faces("Where input is NaN (a bool tensor).", function="isnan", method="isnan"),
    "isinf": Faces("Where input is infinite (a bool tensor).", function="isinf", method="isinf"),
    "isfinite": Faces("Where input is finite (a bool tensor).", function="isfinite", method="isfinite"),
    "isclose": Faces("Where input is close to other (a bool tensor).", function="isclose", method="isclose"),
    "allclose": Faces("Whether every entry of input is close to other's.", function="allclose", method="allclose"),
    "equal": Faces("Whether input and other have the same shape and values.", function="equal", method="equal"),
    "any": Faces("Whether any entry is true.", method="any"),
    "all": Faces("Whether every entry is true.", method="all"),
    "transpose": Faces("Two axes swapped (a view).", function="transpose", method="transpose"),
    "t": Faces("The transpose of a matrix (vectors and scalars as they are).", method="t"),
    "flatten": Faces("Axes start_dim..end_dim merged into one.", method="flatten", module="Flatten"),
    "unflatten": Faces("Axis dim split into sizes.", method="unflatten"),
    "unsqueeze": Faces("A new axis of size 1 at dim.", method="unsqueeze"),
    "squeeze": Faces("Axes of size 1 dropped (all, or those of dim).", method="squeeze"),
    "expand_as": Faces("input expanded to other's shape.", method="expand_as"),
    "repeat": Faces("input tiled along each dimension.", method="repeat"),
    "split": Faces("Pieces along dim of one size, or of the sizes listed.", function="split", method="split"),
    "chunk": Faces("At most `chunks` pieces of equal size along dim.", function="chunk", method="chunk"),
    "masked_fill": Faces("input with value where mask is true.", function="masked_fill",
                         method=("masked_fill", "masked_fill_")),
    "sort": Faces("(values, indices) sorted along dim.", function="sort", method="sort"),
    "argsort": Faces("The indices that sort input along dim.", function="argsort", method="argsort"),
    "topk": Faces("The k largest (or smallest) entries along dim and their indices.", function="topk", method="topk"),
    "bincount": Faces("How often each value 0, 1, ... occurs.", function="bincount", method="bincount"),
    "dropout": Faces("Entries zeroed with probability p while training, the rest scaled by 1 / (1 - p).",
                     functional="dropout", module="Dropout"),
    "layer_norm": Faces("Normalization over the trailing normalized_shape axes.", functional="layer_norm"),
    "batch_norm": Faces("Normalization of each channel by batch or running statistics.", functional="batch_norm"),
    "embedding": Faces("Rows of weight picked by integer indices.", functional="embedding"),
    "one_hot": Faces("int64 indicators of the classes.", functional="one_hot"),
    "normalize": Faces("input divided by its p-norm over dim.", functional="normalize"),
    "cosine_similarity": Faces("The cosine of the angle between x1 and x2 along dim.", functional="cosine_similarity",
                               module="CosineSimilarity"),
    "mse_loss": Faces("The mean squared error.", functional="mse_loss", module="MSELoss"),
    "l1_loss": Faces("The mean absolute error.", functional="l1_loss", module="L1Loss"),
    "smooth_l1_loss": Faces("Squared error below beta, absolute error above.", functional="smooth_l1_loss",
                            module="SmoothL1Loss"),
    "huber_loss": Faces("Squared error below delta, delta times absolute error above.", functional="huber_loss",
                        module="HuberLoss"),
    "nll_loss": Faces("The negative log-likelihood of log-probabilities at the target classes.", functional="nll_loss",
                      module="NLLLoss"),
}
"""Composite ops, {name: Faces}: made of the primitives above by their hand-written faces."""
