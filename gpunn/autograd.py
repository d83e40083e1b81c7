"""The backward pass: reverse topological order over nodes, without recursion.

The engine knows nodes, not ops. A node holds its primitive, the arrays its rules need (cached in
the forward pass), the device whose namespace the rules run in, and one parent per input: the
node that made that input, the leaf tensor itself, or None where no gradient is needed. Edges
point at nodes, not tensors, so an in-place op that gives a tensor a new node leaves the graphs
built before it intact (PyTorch's model). A node also remembers the version of every tensor whose
values its rules read; backward refuses to run if one was modified in place since.

Grad mode, anomaly mode and recording are per thread, as in PyTorch: one thread's no_grad()
never changes what another thread records.
"""

import contextlib
import functools
import os
import threading
import traceback

from gpunn import backends
from gpunn.errors import AnomalyError, GraphError, OutOfMemoryError, is_out_of_memory


class _Mode(threading.local):
    """Per-thread switches; a new thread starts from these class defaults."""
    grad_enabled = True
    anomaly = False
    recording = False  # a CUDA graph is being recorded (compile_step): no one-off work may be queued


mode = _Mode()


class Version:
    """The version counter that a tensor shares with its views and aliases: every in-place write
    bumps it, and a node compares it with the count it saw when it saved the tensor."""

    __slots__ = ("n",)

    def __init__(self, n=0):
        self.n = n


class Node:
    """How a tensor was made: `primitive(*inputs, **attrs)` on `device`.

    `parents[i]` is where input i's gradient goes (a Node, a leaf Tensor, or None); `arrays` feed
    the rules; `saved` lists (version, count, position) for each tensor the rules read (position -1
    is the output); `retained` is a weak reference to a tensor that keeps this node's gradient,
    `hooks` the functions registered on the output (Tensor.register_hook)."""

    __slots__ = ("primitive", "parents", "arrays", "out", "attrs", "device", "saved", "where", "retained",
                 "hooks", "__weakref__")

    def __init__(self, primitive, parents, arrays, out, attrs, device, saved=None):
        self.primitive, self.parents, self.arrays, self.out = primitive, parents, arrays, out
        self.attrs, self.device, self.saved = attrs, device, saved
        self.where = _user_frame() if mode.anomaly else None
        self.retained = self.hooks = None  # hooks: register_hook's functions of the output's gradient


@contextlib.contextmanager
def _mode(name, value):
    previous = getattr(mode, name)
    setattr(mode, name, value)
    try:
        yield
    finally:
        setattr(mode, name, previous)


def no_grad():
    """Record nothing inside: for evaluation and for optimizer updates (this thread only)."""
    return _mode("grad_enabled", False)


def enable_grad():
    return _mode("grad_enabled", True)


class set_grad_enabled:
    """Grad mode on or off for this thread, as torch.set_grad_enabled: called, it switches at once
    (`set_grad_enabled(False)`); in a with-statement it also restores the previous mode on exit;
    as a decorator it switches for each call of the function."""

    def __init__(self, enabled):
        self.enabled, self.previous = bool(enabled), mode.grad_enabled
        mode.grad_enabled = self.enabled

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        mode.grad_enabled = self.previous

    def __call__(self, fn):
        mode.grad_enabled = self.previous  # as a decorator, switching belongs to each call

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with _mode("grad_enabled", self.enabled):
                return fn(*args, **kwargs)
        return run


def is_grad_enabled():
    return mode.grad_enabled


def inference_mode(enabled=True):
    """torch.inference_mode: gpunn has no separate inference tensors, so this is no_grad()
    (nothing is recorded); inference_mode(False) records again, as in PyTorch (even inside
    no_grad). Works in a with-statement, as @inference_mode() and as a bare @inference_mode."""
    if callable(enabled):  # @inference_mode without parentheses: the argument is the function
        return no_grad()(enabled)
    return _mode("grad_enabled", not enabled)


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


def topological_order(roots):
    """Nodes reachable from a node or a list of nodes, each after the nodes that made its inputs."""
    if isinstance(roots, list) and len(roots) == 1:
        order = _chain_order(roots[0])
        if order is not None:
            return order
    order, seen, stack = [], set(), [(r, False) for r in (roots if isinstance(roots, list) else [roots])]
    push, mark = stack.append, seen.add
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        mark(node)
        push((node, True))
        for parent in node.parents:
            if type(parent) is Node and parent not in seen:
                push((parent, False))
    return order


def _chain_order(node):
    """The order of a graph that is one chain of nodes (each has at most one node among its
    parents, as a Sequential's forward and its loss make), found in one walk; None otherwise."""
    chain = []
    while node is not None:
        chain.append(node)
        below = None
        for parent in node.parents:
            if type(parent) is Node:
                if below is not None and parent is not below:
                    return None  # two nodes meet here: the general walk orders them
                below = parent
        node = below
    chain.reverse()
    return chain


def check_saved(order):
    """Refuse, before any gradient is written, a graph whose saved values are gone: freed by an
    earlier backward, or overwritten by an in-place op since the forward pass."""
    for node in order:
        if node.arrays is None:
            raise GraphError(
                f"backward through the graph a second time (at {node.primitive.name}): its saved "
                "values were freed after the first backward; pass retain_graph=True to the first call")
        if node.saved is None:
            continue
        for version, count, position in node.saved:
            if version.n != count:
                array = node.out if position < 0 else node.arrays[position]
                what = "output" if position < 0 else f"input {position}"
                raise GraphError(
                    f"one of the tensors needed for gradient computation has been modified by an in-place "
                    f"operation: the {what} of '{node.primitive.name}' (shape {tuple(array.shape)}) is at "
                    f"version {version.n}, but it was saved at version {count}. Hint: do the in-place change "
                    "(for example optimizer.step()) after every backward that needs the old values, or "
                    "change a clone() instead of the tensor itself")


def backward(root, grad, retain_graph=False):
    """Accumulate d(root)/d(leaf), weighted by `grad` (an array like root's), into leaf `.grad`s."""
    run_backward([root], [grad], retain_graph)


def run_backward(roots, seeds, retain_graph=False, capture=None):
    """The backward pass from tensors `roots`, seeded with arrays `seeds`.

    Without `capture`, gradients accumulate into the leaves' `.grad`. With `capture`, a list of
    tensors, nothing's `.grad` changes: the gradients reaching them (leaves, or intermediate tensors
    by their node) are summed and returned in that order, None where none arrived (autograd.grad)."""
    Tensor = _tensor_type()
    if capture is None:
        sink, results = _accumulate, None
    else:
        results = [None] * len(capture)
        wanted = {id(t._node if t._node is not None else t): i for i, t in enumerate(capture)}
        sink = _capture_into(results, wanted)
    pending, starts = {}, []
    for root, seed in zip(roots, seeds):
        if root._node is None:  # a leaf: its gradient is the seed itself
            _deliver(root, seed, root._array, pending, sink, Tensor)
        else:
            starts.append(root._node)
            previous = pending.get(root._node)
            pending[root._node] = seed if previous is None else previous + seed
    order = topological_order(starts) if starts else []
    check_saved(order)
    slots = capture is None  # into-rules write .grad directly: not when gradients are captured
    for node in reversed(order):
        g = pending.pop(node, None)
        if g is not None:
            if node.hooks is not None:
                g = _run_hooks(node.hooks, g, node.device, Tensor)
            if capture is not None:
                sink(node, g, Tensor)
            elif node.retained is not None:
                kept = node.retained()
                if kept is not None:
                    _accumulate(kept, g, Tensor)
            if node.device.ctx is not None:
                _run_rules(node, g, pending, sink, slots, Tensor)
            elif node.primitive.backward is not None:  # (the calls _run_rules would make, one fewer)
                _run_joint_rule(node, g, pending, sink, Tensor)
            else:
                _run_rules_here(node, g, pending, sink, slots, Tensor)
        if not retain_graph:
            node.arrays = node.out = None
    for leaf, g in pending.items():  # leaves with hooks: their summed gradient, once
        sink(leaf, _run_hooks(leaf._hooks, g, leaf.device, Tensor), Tensor)
    return results


@functools.cache
def _tensor_type():
    """gpunn.tensor.Tensor, which fills .grad (imported on first use: tensor imports this module)."""
    from gpunn.tensor import Tensor
    return Tensor


def no_higher_order(create_graph):
    if create_graph:
        raise GraphError("create_graph=True (higher-order gradients) is not supported by gpunn: gradients are "
                         "computed outside the graph; see docs/pytorch-differences.md")


def grad_targets(inputs):
    from gpunn.tensor import Tensor

    for t in inputs:
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise GraphError(f"gradients can be asked only for tensors that require grad, got "
                             f"{t if not isinstance(t, Tensor) else f'a tensor of shape {t.shape} without requires_grad'}")
    return inputs


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=None,
         materialize_grads=False):
    """torch.autograd.grad: the gradients of `outputs` with respect to `inputs`, returned as a
    tuple, without touching any .grad. An input no output depends on raises unless allow_unused
    (then None, or zeros with materialize_grads)."""
    from gpunn.tensor import Tensor, zeros_like

    no_higher_order(create_graph)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"autograd.grad: {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    seeds = [o._seed(g, "autograd.grad", unit_ok=False) for o, g in zip(outputs, grad_outputs)]
    found = run_backward(outputs, seeds, bool(retain_graph), capture=grad_targets(inputs))
    results = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None and not (allow_unused or materialize_grads):
            raise GraphError(f"autograd.grad: input {i} (shape {t.shape}) was not used to compute the outputs; "
                             "pass allow_unused=True to get None for it")
        if g is None and materialize_grads:
            results.append(zeros_like(t))
        else:
            results.append(None if g is None else Tensor._wrap(g, t.device))
    return tuple(results)


def _capture_into(results, wanted):
    def sink(target, g, Tensor):
        i = wanted.get(id(target))
        if i is not None:
            results[i] = g if results[i] is None else results[i] + g
    return sink


def _run_hooks(hooks, g, device, Tensor):
    """Tensor.register_hook's functions, in order: each may return a replacement gradient."""
    for hook in list(hooks.values()):
        replaced = hook(Tensor._wrap(g, device))
        if replaced is not None:
            g = replaced._array if isinstance(replaced, Tensor) else device.xp.asarray(replaced)
    return g


def _run_rules(node, g, pending, sink, slots, Tensor):
    ctx = node.device.ctx
    if ctx is None:  # not `with node.device.scope:`, which costs every node 0.6 us more on the cpu
        _run_rules_here(node, g, pending, sink, slots, Tensor)
    else:
        with ctx:  # CuPy computes on the current device: make it the node's, once for all its rules
            _run_rules_here(node, g, pending, sink, slots, Tensor)


def _run_rules_here(node, g, pending, sink, slots, Tensor):
    if node.primitive.backward is not None:
        _run_joint_rule(node, g, pending, sink, Tensor)
        return
    xp, prim, arrays, out, attrs = node.device.xp, node.primitive, node.arrays, node.out, node.attrs
    written = None  # the input whose gradient a fused prepare already wrote into its slot
    if prim.prepare is not None:  # a fused primitive's common first step, once for all its rules
        prepared = None
        if prim.prepare_into is not None and slots:
            written, fused = prim.prepare_into
            prepared = _into_slot(node.parents[written], Tensor, lambda dest, accumulate: fused(
                xp, g, out, *arrays, dest, accumulate, **attrs))
            if prepared is None:
                written = None
        g = prepared if prepared is not None else prim.prepare(xp, g, out, *arrays, **attrs)
    anomaly, into = mode.anomaly, prim.into if slots else None
    for i, parent in enumerate(node.parents):
        if parent is None or i == written:
            continue
        rule = prim.grads[i] if not prim.variadic else prim.rule(i)
        if rule is None:
            continue
        if (into is not None and into[i] is not None and type(parent) is not Node and parent._grad_slot is not None
                and _written_into(node, i, parent, g, Tensor)):
            continue
        try:
            gi = rule(xp, g, out, *arrays, **attrs)
        except Exception as exc:
            _raise_if_out_of_memory(node, exc)
            raise
        if anomaly or parent.device is not node.device:
            _hand_on(node, g, i, parent, gi, anomaly, pending, sink, Tensor)
        else:
            _deliver(parent, gi, arrays[i], pending, sink, Tensor)


def _run_joint_rule(node, g, pending, sink, Tensor):
    """A primitive with one backward pass for all its inputs (Primitive.backward)."""
    parents = node.parents
    try:
        grads = node.primitive.backward(node.device.xp, g, node.out, *node.arrays,
                                        needs=[p is not None for p in parents], **node.attrs)
    except Exception as exc:
        _raise_if_out_of_memory(node, exc)
        raise
    anomaly, arrays, device = mode.anomaly, node.arrays, node.device
    for i, parent in enumerate(parents):
        if parent is None or grads[i] is None:
            continue
        if anomaly or parent.device is not device:
            _hand_on(node, g, i, parent, grads[i], anomaly, pending, sink, Tensor)
        else:
            _deliver(parent, grads[i], arrays[i], pending, sink, Tensor)


def _raise_if_out_of_memory(node, exc):
    """A backend's out-of-memory error, said as gpunn's, naming the op."""
    if is_out_of_memory(exc):
        raise OutOfMemoryError(f"backward of '{node.primitive.name}': {node.device} ran out of memory ({exc}); "
                               "use a smaller batch or model") from exc


def _hand_on(node, g, i, parent, gi, anomaly, pending, sink, Tensor):
    """Input i's gradient `gi` (from g) to its parent, checked for NaN and inf in anomaly mode."""
    if anomaly:
        _check_finite(node, g, parent.device, gi)
    if parent.device is node.device:
        _deliver(parent, gi, node.arrays[i], pending, sink, Tensor)
    else:  # across a .to(): the gradient is on the parent's device already, and is handled there
        with parent.device.scope:
            _deliver(parent, gi, node.arrays[i], pending, sink, Tensor)


def _deliver(parent, gi, like, pending, sink, Tensor):
    """Add `gi` to what `parent` has received: its .grad for a leaf, else the pending sum. `like`
    is the input array as the forward saw it: the gradient takes its shape and dtype.

    Sums are formed out of place and no rule writes into the `g` it is given: a gradient may be
    an array something else holds (cross_entropy hands on its saved residual under loss.backward(),
    which a retained graph reads again), so writing into one in place would corrupt it."""
    if gi.shape != like.shape:
        gi = sum_to_shape(parent.device.xp, gi, like.shape)
    if gi.dtype != like.dtype:
        gi = parent.device.xp.astype(gi, like.dtype)
    if type(parent) is Node or parent._hooks:  # a leaf with hooks sees its sum, once
        previous = pending.get(parent)
        pending[parent] = gi if previous is None else previous + gi
    else:
        sink(parent, gi, Tensor)


def _written_into(node, i, leaf, g, Tensor):
    """Let a fast into-rule write leaf's gradient straight into its flat-buffer slot (True if it did)."""
    return _into_slot(leaf, Tensor, lambda dest, accumulate: node.primitive.into[i](
        node.device.xp, g, node.out, *node.arrays, dest, accumulate, **node.attrs)) is not None


def _into_slot(leaf, Tensor, write):
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
    slot = leaf._grad_slot
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
