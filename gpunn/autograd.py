"""The backward pass: reverse topological order over nodes, without recursion.

The engine knows nodes, not ops: a node holds its primitive, its inputs, the arrays its rules need
(cached in the forward pass), and the device whose namespace the rules run in. Gradients arriving
from several children are summed; rules run only for inputs that need a gradient; after a backward
the cached arrays are freed unless `retain_graph=True`.
"""

import contextlib
import os
import traceback

from gpunn import backends
from gpunn.errors import AnomalyError, GraphError, OutOfMemoryError, is_out_of_memory


class _Mode:
    grad_enabled = True
    anomaly = False
    recording = False  # a CUDA graph is being recorded (compile_step): no one-off work may be queued


mode = _Mode()


class Node:
    """How a tensor was made: `primitive(*inputs, **attrs)` on `device`; `arrays` feed the rules."""

    __slots__ = ("primitive", "inputs", "arrays", "out", "attrs", "device", "where", "retains_grad")

    def __init__(self, primitive, inputs, arrays, out, attrs, device):
        self.primitive, self.inputs, self.arrays, self.out = primitive, inputs, arrays, out
        self.attrs, self.device = attrs, device
        self.where = _user_frame() if mode.anomaly else None
        self.retains_grad = False  # set by Tensor.retain_grad(): keep this non-leaf's gradient


@contextlib.contextmanager
def _mode(name, value):
    previous = getattr(mode, name)
    setattr(mode, name, value)
    try:
        yield
    finally:
        setattr(mode, name, previous)


def no_grad():
    """Record nothing inside: for evaluation and for optimizer updates."""
    return _mode("grad_enabled", False)


def enable_grad():
    return _mode("grad_enabled", True)


def set_grad_enabled(enabled):
    """Record (True) or not (False) inside the block: no_grad with a switch."""
    return _mode("grad_enabled", bool(enabled))


def is_grad_enabled():
    return mode.grad_enabled


def detect_anomaly():
    """Remember where each op was created and raise on the first NaN or inf made in backward.

    Costs a stack walk per op and a host sync per gradient, so it is off by default.
    """
    return _mode("anomaly", True)


_INTERNAL = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, backends.__file__))


def _user_frame():
    """The innermost stack frame outside gpunn and its backends: the user's line that made the op."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not os.path.abspath(frame.filename).startswith(_INTERNAL):
            return f'{frame.filename}:{frame.lineno} ("{(frame.line or "").strip()}")'
    return "unknown location"


def sum_to_shape(xp, g, shape):
    """Undo broadcasting: sum `g` over the axes that broadcasting added or stretched."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(g, shape) if lead else g


def topological_order(root):
    """Tensors with a node reachable from `root`, inputs before the tensors made from them."""
    order, seen, stack = [], set(), [(root, False)]
    push, mark = stack.append, seen.add
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        mark(id(tensor))
        push((tensor, True))
        for parent in tensor._node.inputs:
            if getattr(parent, "_node", None) is not None and id(parent) not in seen:
                push((parent, False))
    return order


def backward(root, grad, retain_graph=False):
    """Accumulate d(root)/d(leaf), weighted by `grad` (an array like root's), into leaf `.grad`s."""
    from gpunn.tensor import Tensor  # the engine fills .grad with Tensors

    if root._node is None:  # a leaf: its gradient is the seed itself
        _accumulate(root, grad, Tensor)
        return
    pending = {id(root): grad}
    for tensor in reversed(topological_order(root)):
        g = pending.pop(id(tensor), None)
        node = tensor._node
        if node.arrays is None:
            raise GraphError(
                f"backward through the graph a second time (at {node.primitive.name}): its saved "
                "values were freed after the first backward; pass retain_graph=True to the first call")
        if g is not None:
            if node.retains_grad:
                _accumulate(tensor, g, Tensor)
            _run_rules(node, g, pending, Tensor)
        if not retain_graph:
            node.arrays = node.out = None


def _run_rules(node, g, pending, Tensor):
    ctx = node.device.ctx
    if ctx is None:
        _run_rules_here(node, g, pending, Tensor)
    else:
        with ctx:  # CuPy computes on the current device: make it the node's, once for all its rules
            _run_rules_here(node, g, pending, Tensor)


def _run_rules_here(node, g, pending, Tensor):
    xp, prim, arrays, out, attrs = node.device.xp, node.primitive, node.arrays, node.out, node.attrs
    written = None  # the input whose gradient a fused prepare already wrote into its slot
    if prim.prepare is not None:  # a fused primitive's common first step, once for all its rules
        prepared = None
        if prim.prepare_into is not None:
            written, fused = prim.prepare_into
            prepared = _into_slot(node, node.inputs[written], Tensor, lambda dest, accumulate: fused(
                xp, g, out, *arrays, dest, accumulate, **attrs))
            if prepared is None:
                written = None
        g = prepared if prepared is not None else prim.prepare(xp, g, out, *arrays, **attrs)
    for i, parent in enumerate(node.inputs):
        if i == written or not (isinstance(parent, Tensor) and parent.requires_grad):
            continue
        rule = prim.grads[i] if not prim.variadic else prim.rule(i)
        if rule is None:
            continue
        if prim.into is not None and prim.into[i] is not None and _written_into(node, i, parent, g, Tensor):
            continue
        try:
            gi = rule(xp, g, out, *arrays, **attrs)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryError(f"backward of '{prim.name}': {node.device} ran out of memory ({exc}); "
                                       "use a smaller batch or model") from exc
            raise
        if mode.anomaly:
            _check_finite(node, g, parent.device, gi)
        if parent.device is node.device:
            _deliver(parent, gi, pending, Tensor)
        else:  # across a .to(): the gradient is on the parent's device already, and is handled there
            with parent.device.scope:
                _deliver(parent, gi, pending, Tensor)


def _deliver(parent, gi, pending, Tensor):
    """Add `gi` to what `parent` has received: its .grad for a leaf, else the pending sum.

    Sums are formed out of place and no rule writes into the `g` it is given: a gradient may be
    an array something else holds (cross_entropy hands on its saved residual under loss.backward(),
    which a retained graph reads again), so writing into one in place would corrupt it."""
    target = parent._array
    if gi.shape != target.shape:
        gi = sum_to_shape(parent.device.xp, gi, target.shape)
    if gi.dtype != target.dtype:
        gi = parent.device.xp.astype(gi, target.dtype)
    if parent._node is None:
        _accumulate(parent, gi, Tensor)
    else:
        key = id(parent)
        previous = pending.get(key)
        pending[key] = gi if previous is None else previous + gi


def _written_into(node, i, leaf, g, Tensor):
    """Let a fast into-rule write leaf's gradient straight into its flat-buffer slot (True if it did)."""
    return _into_slot(node, leaf, Tensor, lambda dest, accumulate: node.primitive.into[i](
        node.device.xp, g, node.out, *node.arrays, dest, accumulate, **node.attrs)) is not None


def _into_slot(node, leaf, Tensor, write):
    """`write(dest, accumulate)` into leaf's flat-buffer slot, if it has one; returns what write
    returned, or None where nothing was written (no slot, or write returned None or False)."""
    if not (isinstance(leaf, Tensor) and leaf.requires_grad):
        return None
    slot = getattr(leaf, "_grad_slot", None)
    if slot is None or mode.anomaly:
        return None
    grad = leaf.grad
    if grad is not None and grad._array is not slot.array:
        return None
    if grad is None:
        slot.claim()
    done = write(slot.array, grad is not None)
    if done is None or done is False:  # declined
        return None
    if grad is None:
        leaf.grad = slot.hand_out()
    return done


def _accumulate(leaf, g, Tensor):
    slot = getattr(leaf, "_grad_slot", None)
    if slot is not None and (leaf.grad is None or leaf.grad._array is slot.array):  # a fused optimizer's buffer
        if leaf.grad is None:
            slot.claim()
            slot.array[...] = g
            leaf.grad = slot.hand_out()
        else:
            slot.array += g
        return
    if leaf.grad is None:
        leaf.grad = Tensor._wrap(g, leaf.device)
    else:  # out of place: g may be shared with another leaf
        leaf.grad._array = leaf.grad._array + g


def _check_finite(node, g, device_gi, gi):
    """g lives on the node's device (current here); gi on the input's (they differ across a
    .to(device)), so it is checked with that device current."""
    xp, xp_gi = node.device.xp, device_gi.xp
    with device_gi.scope:
        finite = bool(xp_gi.all(xp_gi.isfinite(gi)))
    if finite or not bool(xp.all(xp.isfinite(g))):
        return
    raise AnomalyError(
        f"backward of '{node.primitive.name}' produced NaN or inf from a finite incoming gradient; "
        f"the op was created at {node.where or 'an unknown location (enable detect_anomaly before the forward)'}. "
        "Check its inputs (e.g. sqrt or log at 0, division by 0).")
