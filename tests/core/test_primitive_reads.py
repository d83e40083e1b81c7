"""Each primitive's `reads`/`reads_out` declaration holds against its rules (issue 15).

Backward's version check guards only what a primitive declares its rules read. A declaration that
leaves out a value a rule does read would let that rule use a value changed in place: a silently
wrong gradient. So every rule is run twice, once as the forward left things and once with every
undeclared input (and the output, where undeclared) replaced by NaN; the gradients must agree.
"""

import dataclasses
import math

import numpy as np
import pytest

import gpunn
from gpunn import ops

CPU = gpunn.device("cpu")
R = np.random.default_rng(0)


def floats(*shape):
    return R.uniform(0.5, 1.5, size=shape) * R.choice([-1.0, 1.0], size=shape)


def positive(*shape):
    return R.uniform(0.5, 1.5, size=shape)


# name -> (inputs, attrs): one call of each primitive that declares less than "everything"
CASES = {
    "add": ((floats(2, 3), floats(2, 3)), {}),
    "sub": ((floats(2, 3), floats(3)), {}),
    "mul": ((floats(2, 3), floats(2, 3)), {}),
    "div": ((floats(2, 3), positive(2, 3)), {}),
    "neg": ((floats(2, 3),), {}),
    "matmul": ((floats(2, 3), floats(3, 4)), {}),
    "linear": ((floats(2, 3), floats(4, 3), floats(4)), {}),
    "exp": ((floats(2, 3),), {}),
    "log": ((positive(2, 3),), {}),
    "sqrt": ((positive(2, 3),), {}),
    "abs": ((floats(2, 3),), {}),
    "tanh": ((floats(2, 3),), {}),
    "sigmoid": ((floats(2, 3),), {}),
    "relu": ((floats(2, 3),), {}),
    "linear_act": ((floats(2, 3), floats(4, 3), floats(4)), {"activation": "tanh"}),
    "leaky_relu": ((floats(2, 3),), {"negative_slope": 0.1}),
    "gelu": ((floats(2, 3),), {}),
    "maximum": ((floats(2, 3), floats(2, 3)), {}),
    "minimum": ((floats(2, 3), floats(2, 3)), {}),
    "where": ((floats(2, 3) > 0, floats(2, 3), floats(2, 3)), {}),
    "clip": ((floats(2, 3),), {"lo": -0.9, "hi": 0.9}),
    "astype": ((floats(2, 3),), {"dtype": np.float32}),
    "sum": ((floats(2, 3),), {"axis": 1}),
    "mean": ((floats(2, 3),), {"axis": 0}),
    "logsumexp": ((floats(2, 3),), {"axis": 1}),
    "softmax": ((floats(2, 3),), {"axis": -1}),
    "log_softmax": ((floats(2, 3),), {"axis": -1}),
    "copy": ((floats(2, 3),), {}),
    "reshape": ((floats(2, 3),), {"shape": (3, 2)}),
    "permute": ((floats(2, 3),), {"axes": (1, 0)}),
    "getitem": ((floats(2, 3),), {"index": (slice(0, 1), Ellipsis)}),
    "index_put": ((floats(2, 3), floats(3)), {"index": (1, Ellipsis)}),
    "concat": ((floats(2, 3), floats(1, 3)), {"axis": 0}),
    "stack": ((floats(2, 3), floats(2, 3)), {"axis": 0}),
    "cross_entropy": ((floats(4, 3), np.array([0, 2, 1, 2])), {}),
    "bce_with_logits": ((floats(2, 3), R.uniform(size=(2, 3))), {}),
    # issue 17's ops
    "gather": ((floats(3, 4), np.array([[0, 2, 2, 1], [2, 2, 0, 0]])), {"axis": 0}),
    "scatter_add": ((floats(3, 4), np.array([[0, 2, 2], [1, 1, 0]]), floats(2, 3)), {"axis": 1}),
    "broadcast_to": ((floats(3, 1),), {"shape": (2, 3, 4)}),
    "cumsum": ((floats(2, 3),), {"axis": 1}),
    "prod": ((floats(2, 3),), {"axis": 1}),
    "binary_cross_entropy": ((R.uniform(0.1, 0.9, size=(2, 3)), R.uniform(size=(2, 3))), {}),
    "linear_chain": ((floats(2, 3), floats(4, 3), floats(4), floats(2, 4), floats(2)),
                     {"activations": ("tanh", None)}),
}


def _declared_narrow(p):
    return p.reads is not None or not p.reads_out


def _table():
    """Every primitive of gpunn.ops, and the cpu backend's overrides of them, with a test id each."""
    generic = {p.name: p for p in vars(ops).values() if isinstance(p, ops.Primitive)}
    return ([pytest.param(p, id=name) for name, p in generic.items()]
            + [pytest.param(p, id=f"cpu-{p.name}") for p in CPU.fast_paths.values() if isinstance(p, ops.Primitive)])


def _rules(p, xp, out, arrays, attrs, shape):
    g = xp.asarray(np.ones(shape))
    if p.backward is not None:  # one joint rule for every input
        grads = p.backward(xp, g, out, *arrays, needs=[True] * len(arrays), **attrs)
        return [None if gi is None else np.asarray(gi) for gi in grads]
    if p.prepare is not None:
        g = p.prepare(xp, g, out, *arrays, **attrs)
    grads = []
    for i in range(len(arrays)):
        rule = p.rule(i) if p.variadic else p.grads[i]
        grads.append(None if rule is None else np.asarray(rule(xp, g, out, *arrays, **attrs)))
    return grads


def _poisoned(a):
    if not hasattr(a, "dtype") or a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.floating):
        return a  # integer targets and masks are never written in place by a gradient-carrying op
    return np.full_like(a, math.nan)


@pytest.mark.parametrize("p", _table())
def test_declared_reads_cover_what_the_rules_read(p):
    if not _declared_narrow(p):
        return  # reads everything: the version check guards all of it
    assert p.name in CASES, f"primitive {p.name!r} declares what it reads but has no case here"
    inputs, attrs = CASES[p.name]
    xp = CPU.xp
    arrays = tuple(np.array(a, copy=True) for a in inputs)
    result = p.forward(xp, *arrays, **attrs)
    out = result[1] if p.saves else result
    shape = np.shape(result[0] if p.saves else result)
    before = _rules(p, xp, out, arrays, attrs, shape)
    reads = range(len(arrays)) if p.reads is None else p.reads
    hidden = tuple(a if i in reads else _poisoned(a) for i, a in enumerate(arrays))
    hidden_out = out if (p.reads_out or p.saves) else _poisoned(out)
    after = _rules(p, xp, hidden_out, hidden, attrs, shape)
    for i, (b, a) in enumerate(zip(before, after)):
        if b is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{p.name}: a rule reads input {i} or the output "
                                                        "without declaring it")


def test_negative_control_an_undeclared_read_is_caught():
    """mul's rules read both inputs: declaring that they read none must fail the check above."""
    wrong = ops.mul.replace(reads=())
    with pytest.raises(AssertionError, match="reads input"):
        test_declared_reads_cover_what_the_rules_read(wrong)


def test_replace_carries_every_field():
    """A new Primitive field cannot be dropped by override(): replace() copies them all."""
    copy = ops.relu.override(forward=ops.relu.forward)
    fields = [f.name for f in dataclasses.fields(ops.Primitive)]
    assert "faces" in fields and all(getattr(copy, f) == getattr(ops.relu, f) for f in fields if f != "grads")
    with pytest.raises(TypeError, match="no field"):
        ops.relu.replace(nonsense=1)
