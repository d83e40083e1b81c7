"""One op, one definition (issue 18): every public face of an op agrees with the others and with
the entry that gpunn.ops declares, and every public callable is a face of an entry or a listed non-op.

For every entry of the table (ops.entries()): each declared face (gpunn.x, Tensor.x, F.x, nn.X)
exists and has a docstring, the function and method faces take the same arguments, and on each
device all faces give the same values and the same gradients for one sample call (the entry's
primitive too, where the faces are made from it); the top-level function takes lists, as
gpunn.tensor does. This folds in the 16-op check that test_torch_names.py had.
"""

import inspect
import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
import gpunn.nn.functional as NF
from gpunn import ops

R = np.random.default_rng(0)


def floats(*shape):
    """float64 values with |x| in [0.5, 1.5] and random signs."""
    return R.uniform(0.5, 1.5, size=shape) * R.choice([-1.0, 1.0], size=shape)


def positive(*shape):
    return R.uniform(0.5, 1.5, size=shape)


def distinct(*shape):
    """Values that differ pairwise (no ties for max, sort, argmax)."""
    return R.permutation((np.arange(math.prod(shape)) - 3) * 0.37 + 0.11).reshape(shape)


def integers(high, *shape):
    return R.integers(0, high, size=shape)


def sample(*args, **kwargs):
    """One call of an op: float arrays become float64 tensors that require grad, other arrays
    tensors without, anything else (numbers, shapes, None, strings) is passed as it is."""
    return args, kwargs


X = floats(2, 3)
CLOSE = X + np.array([[0.0, 1e-9, 0.5], [1e-7, 0.0, -0.25]])
MASK = np.array([[True, False, True], [False, False, True]])
SPECIAL = np.array([[1.0, np.nan, np.inf], [-np.inf, 0.5, -2.0]])

# a sample call of each entry whose faces are written by hand (made entries take UNARY or BINARY)
UNARY, BINARY = sample(positive(2, 3)), sample(floats(2, 3), floats(2, 3))
SAMPLES = {
    "add": sample(floats(2, 3), floats(2, 3), alpha=2.0),
    "sub": sample(floats(2, 3), floats(3), alpha=0.5),
    "mul": sample(floats(2, 3), floats(2, 3)),
    "div": sample(floats(2, 3), positive(2, 3)),
    "pow": sample(positive(2, 3), floats(2, 3)),
    "matmul": sample(floats(2, 3), floats(3, 4)),
    "linear": sample(floats(2, 3), floats(4, 3), floats(4)),
    "linear_act": sample(floats(2, 3), floats(4, 3), floats(4), "tanh"),
    "linear_chain": sample(floats(2, 3), [(floats(4, 3), floats(4), "relu"), (floats(2, 4), None, None)]),
    "leaky_relu": sample(floats(2, 3), negative_slope=0.2),
    "gelu": sample(floats(2, 3), approximate="tanh"),
    "where": sample(MASK, floats(2, 3), floats(2, 3)),
    "clip": sample(floats(2, 3), min=-0.8, max=0.9),
    "sum": sample(floats(2, 3), dim=1),
    "mean": sample(floats(2, 3), dim=0, keepdim=True),
    "max": sample(distinct(2, 3), dim=1),
    "min": sample(distinct(2, 3), dim=0, keepdim=True),
    "logsumexp": sample(floats(2, 3), dim=1),
    "softmax": sample(floats(2, 3), dim=1),
    "log_softmax": sample(floats(2, 3), dim=0),
    "copy": sample(floats(2, 3)),
    "reshape": sample(floats(2, 3), (3, 2)),
    "permute": sample(floats(2, 3, 4), (2, 0, 1)),
    "concat": sample([floats(2, 3), floats(1, 3)], dim=0),
    "stack": sample([floats(2, 3), floats(2, 3)], dim=1),
    "cross_entropy": sample(floats(4, 3), integers(3, 4), reduction="sum"),
    "bce_with_logits": sample(floats(2, 3), R.uniform(size=(2, 3)), reduction="sum"),
    "gather": sample(floats(3, 4), 0, integers(3, 2, 4)),
    "scatter_add": sample(floats(3, 4), 1, integers(4, 2, 3), floats(2, 3)),
    "broadcast_to": sample(floats(3, 1), 3, 4),
    "cumsum": sample(floats(2, 3), 1),
    "prod": sample(floats(2, 3), dim=1),
    "binary_cross_entropy": sample(R.uniform(0.1, 0.9, size=(2, 3)), R.uniform(size=(2, 3)), reduction="sum"),
    "mm": sample(floats(2, 3), floats(3, 4)),
    "bmm": sample(floats(2, 3, 4), floats(2, 4, 5)),
    "amax": sample(floats(2, 3), dim=1),
    "amin": sample(floats(2, 3), dim=0),
    "argmax": sample(distinct(2, 3), dim=1),
    "argmin": sample(distinct(2, 3)),
    "norm": sample(floats(2, 3), 3, dim=1),
    "var": sample(floats(2, 3), dim=1),
    "std": sample(floats(2, 3), dim=0),
    "isnan": sample(SPECIAL),
    "isinf": sample(SPECIAL),
    "isfinite": sample(SPECIAL),
    "isclose": sample(X, CLOSE, atol=1e-6),
    "allclose": sample(X, CLOSE, atol=1e-6),
    "equal": sample(X, X),
    "any": sample(MASK),
    "all": sample(MASK),
    "transpose": sample(floats(2, 3, 4), 0, 2),
    "t": sample(floats(2, 3)),
    "flatten": sample(floats(2, 3, 4), start_dim=1),
    "unflatten": sample(floats(2, 6), 1, (2, 3)),
    "unsqueeze": sample(floats(2, 3), 1),
    "squeeze": sample(floats(2, 1, 3), dim=1),
    "expand_as": sample(floats(3, 1), floats(3, 4)),
    "repeat": sample(floats(2, 3), 2, 1),
    "split": sample(floats(4, 3), 3, dim=0),
    "chunk": sample(floats(4, 3), 2, dim=0),
    "masked_fill": sample(floats(2, 3), MASK, 0.5),
    "sort": sample(distinct(2, 3), dim=1, descending=True),
    "argsort": sample(distinct(2, 3), dim=0),
    "topk": sample(distinct(2, 3), 2, dim=1),
    "bincount": sample(integers(4, 7), minlength=6),
    "dropout": sample(floats(4, 5), p=0.5),
    "layer_norm": sample(floats(2, 3), (3,)),
    "batch_norm": sample(floats(4, 3), None, None, training=True),
    "embedding": sample(integers(5, 2, 4), floats(5, 3)),
    "one_hot": sample(integers(3, 4), num_classes=3),
    "normalize": sample(floats(2, 3), dim=1),
    "cosine_similarity": sample(floats(2, 3), floats(2, 3), dim=1),
    "mse_loss": sample(floats(2, 3), floats(2, 3), reduction="sum"),
    "l1_loss": sample(floats(2, 3), floats(2, 3), reduction="sum"),
    "smooth_l1_loss": sample(floats(2, 3), floats(2, 3), beta=0.5),
    "huber_loss": sample(floats(2, 3), floats(2, 3), delta=0.5),
    "nll_loss": sample(floats(4, 3), integers(3, 4), reduction="sum"),
}

# Where PyTorch's own function and method take their arguments differently (torch.reshape(input,
# shape) against Tensor.reshape(*shape); torch.split's split_size_or_sections is Tensor.split's
# split_size), so gpunn's do too.
TORCH_SIGNATURES_DIFFER = {"reshape", "permute", "split"}

# Every public callable that is not an op: it makes, moves, casts or describes tensors, controls
# autograd or the library, or is a class. A new public op fails test_every_public_callable_is_declared
# until gpunn.ops declares it (a Faces entry) or it is listed here with its reason.
NON_OPS = {
    "function": {
        # creation and random numbers
        "tensor", "zeros", "ones", "empty", "full", "full_like", "zeros_like", "ones_like", "arange", "linspace", "eye",
        "from_numpy", "from_dlpack", "rand", "randn", "randint", "randperm", "rand_like", "randn_like",
        "manual_seed", "get_rng_state", "set_rng_state",
        # autograd and its modes; the engine's entry point
        "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "inference_mode", "detect_anomaly", "apply",
        # devices, types and errors
        "device", "Device", "DeviceWarning", "Tensor", "dtype", "is_tensor", "AnomalyError", "DTypeError",
        "DeviceError", "GpunnError", "GraphError", "OutOfMemoryError", "ShapeError",
        # files, compiled steps, precision, threads, mixed precision
        "save", "load", "save_checkpoint", "load_checkpoint", "compile_step", "get_float32_matmul_precision",
        "set_float32_matmul_precision", "get_num_threads", "set_num_threads", "autocast", "get_autocast_dtype",
        "is_autocast_enabled",
    },
    "method": {
        # autograd
        "backward", "register_hook", "retain_grad", "requires_grad_", "detach",
        # device moves and dtype casts
        "to", "cpu", "cuda", "astype", "float", "double", "long", "int", "half", "type", "contiguous",
        # facts and leaving the graph
        "dim", "numel", "size", "item", "tolist", "numpy", "is_floating_point",
        # writes that are not ops: fills, copies, random values
        "zero_", "fill_", "copy_", "normal_", "uniform_",
    },
    "functional": set(),  # every function of gpunn.functional and nn.functional is an op
}


# --- the faces of an entry, called on one sample ----------------------------------------------------

def _tensors(value, device, dtype=None):
    """value with every array a tensor on device (floats: requires_grad, in `dtype` if given),
    also inside lists and tuples (which stay lists and tuples)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors(v, device, dtype) for v in value)
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind == "f":
        return gpunn.tensor(value, dtype=dtype, device=device, requires_grad=True)
    return gpunn.tensor(value, device=device)


def _leaves(value):
    """The tensors that require grad in value (and inside its lists and tuples), in order."""
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    return [value] if isinstance(value, gpunn.Tensor) and value.requires_grad else []


def _as_lists(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_as_lists(v) for v in value)
    return value.tolist() if isinstance(value, np.ndarray) else value


def faces(name):
    """[(label, call)] for every declared face of entry `name`: call(args, kwargs) runs it (an
    in-place method on a clone of its tensor, so the gradient still reaches the input)."""
    primitive, declared = ops.entries()[name]
    calls = []
    for n in declared.names("function"):
        calls.append((f"gpunn.{n}", lambda a, k, n=n: getattr(gpunn, n)(*a, **k)))
    for n in declared.names("method"):
        if n.endswith("_"):
            calls.append((f"Tensor.{n}", lambda a, k, n=n: getattr(a[0].clone(), n)(*a[1:], **k)))
        else:
            calls.append((f"Tensor.{n}", lambda a, k, n=n: getattr(a[0], n)(*a[1:], **k)))
    for n in declared.names("functional"):
        calls.append((f"F.{n}", lambda a, k, n=n: getattr(NF, n)(*a, **k)))
    for n in declared.names("module"):
        calls.append((f"nn.{n}", lambda a, k, n=n: getattr(nn, n)(**k)(*a)))
    if declared.make is not None:  # the faces are made from the primitive: hold them to it
        calls.append((f"ops.{name}", lambda a, k: gpunn.apply(primitive, *a, **k)))
    return calls


def _outputs(out):
    """A face's result as a flat list (tensors and plain values)."""
    if isinstance(out, (tuple, list)):
        return [o for part in out for o in _outputs(part)]
    return [out]


def _run(call, host_args, kwargs, device):
    """Values (NumPy or Python) and input gradients of one face on one sample."""
    args = _tensors(host_args, device)
    gpunn.manual_seed(0)  # dropout draws its mask: every face draws the same
    outs = _outputs(call(args, kwargs))
    values = [o.numpy().copy() if isinstance(o, gpunn.Tensor) else o for o in outs]
    loss = None
    for i, o in enumerate(outs):
        if isinstance(o, gpunn.Tensor) and o.requires_grad:
            weight = gpunn.tensor(np.random.default_rng(i).normal(size=o.shape), dtype=o.dtype, device=o.device)
            term = (o * weight).sum()
            loss = term if loss is None else loss + term
    if loss is not None:
        loss.backward()
    return values, [None if t.grad is None else t.grad.numpy() for t in _leaves(args)]


def _same(a, b, what):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), what
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} against {b.shape} {b.dtype}"
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=what)
    else:
        assert a == b, f"{what}: {a!r} against {b!r}"


def check_agreement(name, device):
    """Every face of entry `name` gives the first face's values and gradients on `device`."""
    _, declared = ops.entries()[name]
    args, kwargs = SAMPLES.get(name) or (UNARY if declared.make == "unary" else BINARY)
    calls = faces(name)
    first_label, first = calls[0]
    values, grads = _run(first, args, kwargs, device)
    for label, call in calls[1:]:
        v, g = _run(call, args, kwargs, device)
        assert len(v) == len(values), f"{label} gives {len(v)} results, {first_label} {len(values)}"
        for a, b in zip(v, values):
            _same(a, b, f"{label} against {first_label}: values")
        for i, (a, b) in enumerate(zip(g, grads)):
            assert (a is None) == (b is None), f"{label} against {first_label}: only one has a gradient for input {i}"
            if a is not None:
                _same(a, b, f"{label} against {first_label}: gradient of input {i}")


def check_lists(name):
    """gpunn.x takes lists (and numbers) where it takes tensors, as gpunn.tensor reads them."""
    _, declared = ops.entries()[name]
    args, kwargs = SAMPLES.get(name) or (UNARY if declared.make == "unary" else BINARY)
    for n in declared.names("function"):
        from_lists = _outputs(getattr(gpunn, n)(*_as_lists(args), **kwargs))
        gpunn.manual_seed(0)
        expected = _outputs(getattr(gpunn, n)(*_tensors(args, "cpu", dtype="float32"), **kwargs))
        for a, b in zip(from_lists, expected):
            _same(a.numpy() if isinstance(a, gpunn.Tensor) else a, b.numpy() if isinstance(b, gpunn.Tensor) else b,
                  f"gpunn.{n} of lists")


def _face_objects(name):
    _, declared = ops.entries()[name]
    found = [(f"gpunn.{n}", getattr(gpunn, n, None)) for n in declared.names("function")]
    found += [(f"Tensor.{n}", getattr(gpunn.Tensor, n, None)) for n in declared.names("method")]
    found += [(f"F.{n}", getattr(NF, n, None)) for n in declared.names("functional")]
    return found + [(f"nn.{n}", getattr(nn, n, None)) for n in declared.names("module")]


def _parameters(f, drop_inplace):
    """(name, kind, default) of f's parameters after the first (input, or self)."""
    params = list(inspect.signature(f).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in params if not (drop_inplace and p.name == "inplace")]


def check_declaration(name):
    """Each face exists and has a docstring; functions, methods and F functions take the same arguments."""
    for label, face in _face_objects(name):
        assert face is not None, f"{label} is declared by gpunn.ops but does not exist"
        assert (face.__doc__ or "").strip(), f"{label} has no docstring"
    if name in TORCH_SIGNATURES_DIFFER:
        return
    functions = [(label, f) for label, f in _face_objects(name) if label.startswith(("gpunn.", "F."))]
    methods = [(label, f) for label, f in _face_objects(name) if label.startswith("Tensor.")]
    for label, f in functions[1:]:
        assert _parameters(f, False) == _parameters(functions[0][1], False), \
            f"{label} and {functions[0][0]} take different arguments"
    for label, f in methods:
        for other, g in functions[:1] + methods[:1]:
            assert _parameters(f, True) == _parameters(g, True), f"{label} and {other} take different arguments"


ENTRIES = list(ops.entries())


@pytest.mark.parametrize("name", ENTRIES)
def test_faces_agree_on_every_device(name, device):
    check_agreement(name, device)


@pytest.mark.parametrize("name", [n for n in ENTRIES if ops.entries()[n][1].function])
def test_top_level_functions_take_lists(name):
    check_lists(name)


@pytest.mark.parametrize("name", ENTRIES)
def test_faces_exist_with_docstrings_and_the_same_arguments(name):
    check_declaration(name)


def undeclared(kind):
    """Public callables of one kind of face that no entry declares and NON_OPS does not list."""
    if kind == "function":
        public = {n for n in dir(gpunn) if not n.startswith("_") and callable(getattr(gpunn, n))
                  and not inspect.ismodule(getattr(gpunn, n))}
    elif kind == "method":
        public = {n for n in dir(gpunn.Tensor) if not n.startswith("_") and inspect.isfunction(getattr(gpunn.Tensor, n))}
    else:  # nn.functional's names, and the functions gpunn.functional defines
        public = {n for n in dir(NF) if not n.startswith("_") and callable(getattr(NF, n))}
        public |= {n for n, f in vars(gpunn.functional).items() if not n.startswith("_") and inspect.isfunction(f)
                   and f.__module__ == "gpunn.functional"}
    return sorted(public - set(ops.face_names(kind)) - NON_OPS[kind])


@pytest.mark.parametrize("kind", ["function", "method", "functional"])
def test_every_public_callable_is_declared(kind):
    assert not undeclared(kind), f"public {kind}s without an entry in gpunn.ops (add Faces, or list in NON_OPS)"
    listed = NON_OPS[kind]
    assert not listed & set(ops.face_names(kind)), "an op is declared and listed as a non-op"
    where = {"function": gpunn, "method": gpunn.Tensor, "functional": NF}[kind]
    assert all(hasattr(where, n) for n in listed), "NON_OPS lists a name that no longer exists"


def test_every_entry_without_made_faces_has_a_sample():
    """A new hand-written entry needs its sample call above (made entries use UNARY or BINARY)."""
    assert not [n for n in ENTRIES if ops.entries()[n][1].make is None and n not in SAMPLES]
    assert not set(SAMPLES) - set(ENTRIES), "SAMPLES names an entry that gpunn.ops no longer has"


def test_fusable_activations_are_unary_entries_with_a_module():
    """linear_act, nn.Sequential and MLP read an activation's module face; the table lookup by name needs
    every primitive bound to its own name in gpunn.ops."""
    assert list(ops.ACTIVATIONS) == ["relu", "tanh", "sigmoid"]
    for name, p in ops.ACTIVATIONS.items():
        assert p.faces.make == "unary" and p.faces.module, name
        assert nn.MLP([2, 2, 1], activation=name)[1].__class__ is getattr(nn, p.faces.module)
    assert all(getattr(ops, p.name) is p for p in ops.primitives())


# --- negative controls -------------------------------------------------------------------------------

def test_a_face_giving_other_values_is_caught(monkeypatch):
    monkeypatch.setattr(gpunn, "tanh", gpunn.sigmoid)
    with pytest.raises(AssertionError, match="values"):
        check_agreement("tanh", gpunn.device("cpu"))


def test_a_face_giving_another_gradient_is_caught(monkeypatch):
    """Right values, wrong gradient: softmax's method face with the gradient cut off."""
    monkeypatch.setattr(gpunn.Tensor, "softmax", lambda self, axis=-1, *, dim=None: gpunn.softmax(self.detach(), dim=dim))
    with pytest.raises(AssertionError, match="gradient"):
        check_agreement("softmax", gpunn.device("cpu"))


def test_a_face_with_other_arguments_or_no_docstring_is_caught(monkeypatch):
    monkeypatch.setattr(gpunn, "softmax", lambda input, dim=None: "undocumented")
    with pytest.raises(AssertionError, match="docstring"):
        check_declaration("softmax")

    def softmax(input, dim=None):
        """The right docstring, the wrong arguments."""

    monkeypatch.setattr(gpunn, "softmax", softmax)
    with pytest.raises(AssertionError, match="different arguments"):
        check_declaration("softmax")


def test_a_public_function_without_an_entry_is_caught(monkeypatch):
    monkeypatch.setattr(gpunn, "sinh", lambda input: input, raising=False)
    monkeypatch.setattr(gpunn.Tensor, "sinh", lambda self: self, raising=False)
    monkeypatch.setattr(NF, "softplus", lambda input: input, raising=False)
    assert undeclared("function") == ["sinh"] and undeclared("method") == ["sinh"]
    assert undeclared("functional") == ["softplus"]
