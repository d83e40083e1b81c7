"""The backward engine: graph shapes, accumulation, freeing, misuse, no_grad, in-place edits,
retain_grad, and anomaly mode (loud NaN/inf in backward, naming the op and the user's line)."""

import numpy as np
import pytest

import gpunn
from gpunn import ops
from gpunn.tensor import apply
from helpers import assert_close, to_device


def leaf(values, device, dtype="float64"):
    return to_device(np.asarray(values, dtype=np.float64), device, requires_grad=True, dtype=dtype)


def test_long_chain_has_no_recursion_limit():
    """100,000 nodes deep: an iterative backward, not a recursive one."""
    x = gpunn.tensor(0.5, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.backward()
    assert x.grad.item() == 1.0
    assert y.item() == pytest.approx(100_000.5)


def test_long_chain_with_fan_in():
    """A deep chain whose every node also reads x: the gradient counts each use."""
    x = gpunn.tensor(1.0, dtype="float64", requires_grad=True)
    y = x
    for _ in range(2_000):
        y = y * 1.0 + x
    y.backward()
    assert x.grad.item() == pytest.approx(2_001.0)


def test_diamond_graph(device):
    """y is used by two branches; its gradient is the sum: z = y + 3y, y = x^2 -> dz/dx = 8x."""
    x = leaf([1.5, -2.0], device)
    y = x * x
    z = (y + y * 3).sum()
    z.backward()
    assert_close(x.grad, 8 * np.array([1.5, -2.0]), device=device)


def test_same_tensor_twice_in_one_op(device):
    x = leaf([3.0], device)
    (x * x).sum().backward()
    assert_close(x.grad, [6.0])
    x.grad = None
    (x + x + x).sum().backward()
    assert_close(x.grad, [3.0])


def test_gradients_accumulate_across_backward_calls(device):
    x = leaf([1.0, 2.0], device)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    assert_close(x.grad, [3 + 2.0, 3 + 4.0], device=device)
    x.grad = None
    (x * 3).sum().backward()
    assert_close(x.grad, [3.0, 3.0])


def test_accumulated_gradient_is_not_shared_between_leaves(device):
    """a + b gives both leaves the same incoming array; accumulating into one must not touch the other."""
    a, b = leaf([1.0, 2.0], device), leaf([3.0, 4.0], device)
    (a + b).sum().backward()
    (a * 5).sum().backward()
    assert_close(a.grad, [6.0, 6.0])
    assert_close(b.grad, [1.0, 1.0])


def test_second_backward_without_retain_graph_raises(device):
    x = leaf([1.0, 2.0], device)
    loss = (x.exp() * x).sum()
    loss.backward()
    with pytest.raises(gpunn.GraphError, match="retain_graph=True"):
        loss.backward()
    assert isinstance(gpunn.GraphError("x"), RuntimeError)


def test_retain_graph_allows_a_second_backward(device):
    x = leaf([1.0, 2.0], device)
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy()
    loss.backward()
    expected = np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0]))
    np.testing.assert_allclose(first, expected)
    assert_close(x.grad, 2 * expected)


def test_backward_on_tensor_without_grad_raises(device):
    with pytest.raises(gpunn.GraphError, match="does not require grad"):
        gpunn.ones(3, device=device).sum().backward()


def test_non_scalar_backward_needs_a_gradient(device):
    x = leaf([1.0, 2.0, 3.0], device)
    y = x * x
    with pytest.raises(gpunn.GraphError, match="scalar"):
        y.backward()
    y.backward(grad=to_device([1.0, 0.0, -2.0], device, dtype="float64"))
    assert_close(x.grad, [2.0, 0.0, -12.0], device=device)


def test_backward_gradient_of_the_wrong_shape_raises(device):
    y = leaf([1.0, 2.0], device) * 2
    with pytest.raises(gpunn.ShapeError, match=r"\(3,\)"):
        y.backward(grad=to_device([1.0, 1.0, 1.0], device, dtype="float64"))


def test_backward_gradient_spellings(device):
    """grad= may be a number, a list or a NumPy array (made on the tensor's device and dtype)."""
    x = leaf([1.0, 2.0], device)
    (x * x).sum().backward(grad=2.0)
    assert_close(x.grad, [4.0, 8.0], device=device)
    x.grad = None
    (x * 3).backward(grad=[1.0, -1.0])
    assert_close(x.grad, [3.0, -3.0], device=device)
    x.grad = None
    (x * 3).backward(grad=np.float32([2.0, 0.0]))
    assert_close(x.grad, [6.0, 0.0], device=device, dtype=gpunn.float64)


@pytest.mark.parametrize("first, second", [("strict", "strict:1"), ("cpu", "strict")])
def test_backward_gradient_on_another_device_raises(first, second):
    y = leaf([1.0, 2.0], first) * 2
    with pytest.raises(gpunn.DeviceError, match="backward"):
        y.backward(grad=to_device([1.0, 1.0], second, dtype="float64"))


def test_backward_of_a_leaf(device):
    x = leaf([4.0], device)
    x.backward(grad=to_device([2.0], device, dtype="float64"))
    assert_close(x.grad, [2.0])


def test_no_grad_records_nothing(device):
    x = leaf([1.0, 2.0], device)
    with gpunn.no_grad():
        y = (x * 2).exp().sum()
        assert not gpunn.is_grad_enabled()
    assert gpunn.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(gpunn.GraphError):
        y.backward()
    with gpunn.no_grad():
        with gpunn.enable_grad():
            z = (x * 2).sum()
    assert z.requires_grad


def test_no_grad_restores_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with gpunn.no_grad():
            1 / 0
    assert gpunn.is_grad_enabled()


def test_rules_run_only_for_inputs_that_need_gradients(device):
    """A primitive whose rule for input 1 raises: fine while input 1 needs no gradient."""
    def forbidden(xp, g, out, x, y):
        raise AssertionError("rule for input 1 must not run")

    prim = gpunn.ops.Primitive("scaled", lambda xp, x, y: x * y, lambda xp, g, out, x, y: g * y, forbidden)
    x = leaf([1.0, 2.0], device)
    w = to_device([3.0, 5.0], device, dtype="float64")
    apply(prim, x, w).sum().backward()
    assert_close(x.grad, [3.0, 5.0])
    # negative control: once input 1 needs a gradient, its rule runs and raises
    w.requires_grad = True
    with pytest.raises(AssertionError, match="must not run"):
        apply(prim, x, w).sum().backward()


def test_rules_do_not_run_below_a_no_grad_branch(device):
    """Only nodes on a path to a leaf that needs a gradient are visited."""
    calls = []
    counted = gpunn.ops.Primitive("counted", lambda xp, x: x * 2,
                                  lambda xp, g, out, x: calls.append(1) or g * 2)
    x = leaf([1.0], device)
    frozen = to_device([2.0], device, dtype="float64")
    y = apply(counted, frozen) * x
    y.sum().backward()
    assert calls == []
    assert_close(x.grad, [4.0])


def test_inplace_on_a_graph_tensor_is_recorded_and_on_a_leaf_refused(device):
    x = leaf([1.0, 2.0], device)
    y = x * 2
    y += 1
    y[0] = 5.0
    assert_close(y, [5.0, 5.0])
    with pytest.raises(gpunn.GraphError, match="leaf tensor that requires grad"):
        x *= 2
    (y * y).sum().backward()
    assert_close(x.grad, [0.0, 20.0])  # y[0] was overwritten by a constant: no gradient reaches x[0]


def test_inplace_on_a_no_grad_tensor_after_the_graph_saved_it_is_refused(device):
    """w was saved by the mul node; writing into it afterwards makes backward refuse (PyTorch's
    rule), instead of computing x's gradient from values the forward never used."""
    x = leaf([1.0, 2.0], device)
    w = to_device([3.0, 4.0], device, dtype="float64")
    loss = (x * w).sum()
    w += 10
    w *= 2
    w[0] = -1.0
    assert_close(w, [-1.0, 28.0])
    with pytest.raises(gpunn.GraphError, match="input 1 of 'mul'.*version 3.*version 0"):
        loss.backward()


def test_inplace_update_of_a_parameter_under_no_grad(device):
    x = leaf([1.0, 2.0], device)
    loss = (x * x).sum()
    loss.backward()
    with gpunn.no_grad():
        x -= 0.5 * x.grad
    assert_close(x, [0.0, 0.0])
    assert x.requires_grad and x.is_leaf


def test_detach_cuts_the_graph(device):
    x = leaf([1.0, 2.0], device)
    d = (x * 3).detach()
    assert not d.requires_grad and d.is_leaf and d.device == device
    assert_close(d, [3.0, 6.0])
    y = (d * x).sum()
    y.backward()
    assert_close(x.grad, [3.0, 6.0])  # not 2 * 3x: d is a constant


@pytest.mark.parametrize("source, target", [("strict", "strict:1"), ("strict:1", "strict"), ("cpu", "strict")])
def test_to_device_is_differentiable(source, target):
    x = leaf([1.0, -2.0], source)
    y = x.to(target)
    assert y.device == target and y.requires_grad
    (y * y * 3).sum().backward()
    assert x.grad.device == source
    assert_close(x.grad, [6.0, -12.0], device=source)


def test_to_dtype_is_differentiable(device):
    x = leaf([1.0, 2.0], device, dtype="float32")
    y = x.to("float64")
    assert y.dtype == gpunn.float64
    (y * y).sum().backward()
    assert x.grad.dtype == gpunn.float32
    assert_close(x.grad, [2.0, 4.0], rtol=1e-6)


def test_grad_of_an_unused_leaf_stays_none(device):
    x, unused = leaf([1.0], device), leaf([2.0], device)
    (x * 2).sum().backward()
    assert unused.grad is None


def test_backward_frees_saved_arrays_of_intermediate_nodes(device):
    x = leaf([1.0, 2.0], device)
    y = x.exp()
    loss = y.sum()
    loss.backward()
    assert y._node.arrays is None and loss._node.arrays is None


def test_grad_fn_and_is_leaf(device):
    x = leaf([1.0], device)
    y = x.tanh()
    assert x.is_leaf and x.grad_fn is None
    assert not y.is_leaf and y.grad_fn == "tanh"


def test_retain_grad_keeps_intermediate_gradients():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 3).retain_grad()
    r = h - 1
    r.retain_grad()
    loss = (r * r).sum()
    loss.backward()
    np.testing.assert_allclose(r.grad.numpy(), 2 * (3 * x.numpy() - 1))
    np.testing.assert_allclose(h.grad.numpy(), r.grad.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 3 * h.grad.numpy())
    assert (x * 2).grad is None  # not retained: PyTorch's behaviour


def test_integer_results_carry_no_gradient(device):
    x = gpunn.tensor([1.5, 2.5], device=device, requires_grad=True)
    as_int = x.long()
    assert not as_int.requires_grad and as_int._node is None
    y = (x * 2).sum()
    assert y.requires_grad  # control: the float path keeps its graph


def test_loss_backward_hands_cross_entropy_its_saved_gradient_as_is(device):
    """loss.backward() seeds with ones, so cross_entropy's rule returns its saved residual without
    multiplying it by one, and no ones array is even filled (kernel launches on a GPU); an explicit
    grad= is still multiplied in."""
    rng = np.random.default_rng(3)
    logits = to_device(rng.normal(size=(5, 4)), device, requires_grad=True)
    target = to_device(rng.integers(0, 4, 5), device)
    host_logits, host_target = logits.numpy(), target.numpy()
    e = np.exp(host_logits - host_logits.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True) - np.eye(4)[host_target]) / 5  # (softmax - onehot) / n
    gpunn.functional.cross_entropy(logits, target).backward()
    assert_close(logits.grad, expected)
    logits.grad = None
    loss = gpunn.functional.cross_entropy(logits, target)
    loss.backward(to_device(np.array(2.0), device), retain_graph=True)
    assert_close(logits.grad, 2 * expected)
    logits.grad = None
    loss.backward(retain_graph=True)  # same graph, implicit seed: the residual itself
    assert_close(logits.grad, expected)
    logits.grad = None
    loss.backward(retain_graph=True)  # the residual the first one handed on is unchanged
    assert_close(logits.grad, expected)
    loss.backward()
    with pytest.raises(gpunn.GraphError):
        loss.backward()  # its saved values were freed
    x = to_device(rng.normal(size=(5, 4)), device, requires_grad=True)
    (x * 3).sum().backward()  # another root's rule reads the seed's ones
    assert_close(x.grad, np.full((5, 4), 3.0))
    # where something else reads the seed, it is a real ones array: a retained root gradient, and
    # anomaly detection's finiteness check of the incoming gradient
    logits.grad = None
    loss = gpunn.functional.cross_entropy(logits, target)
    loss.retain_grad()
    loss.backward()
    assert_close(loss.grad, np.array(1.0))
    assert_close(logits.grad, expected)
    logits.grad = None
    with gpunn.detect_anomaly():
        gpunn.functional.cross_entropy(logits, target).backward()
    assert_close(logits.grad, expected)


# --- anomaly mode: NaN or inf in backward is loud, naming the op and the user's line --------------


def test_anomaly_names_op_and_user_line():
    x = gpunn.tensor([0.0, 1.0], requires_grad=True)
    with gpunn.detect_anomaly():
        y = (x.sqrt() * 0).sum()  # the line the error must point at
        with pytest.raises(gpunn.AnomalyError) as info, np.errstate(all="ignore"):
            y.backward()
    message = str(info.value)
    assert "'sqrt'" in message
    assert "test_autograd.py" in message and "x.sqrt() * 0" in message


def test_without_anomaly_mode_nan_flows_silently():
    x = gpunn.tensor([0.0, 1.0], requires_grad=True)
    with np.errstate(all="ignore"):
        (x.sqrt() * 0).sum().backward()
    assert np.isnan(x.grad.numpy()[0])


def test_anomaly_does_not_blame_an_op_that_only_passes_nan_on():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    with gpunn.detect_anomaly(), np.errstate(all="ignore"):
        y = x * 2
        y.backward(gpunn.tensor([np.nan, 1.0]))  # the seed itself is NaN: no op produced it
    assert np.isnan(x.grad.numpy()[0]) and x.grad.numpy()[1] == 2.0


def test_anomaly_records_nothing_when_off():
    x = gpunn.tensor([1.0], requires_grad=True)
    y = x.exp()
    assert y._node.where is None
    with gpunn.detect_anomaly():
        z = x.exp()
    assert "test_autograd.py" in z._node.where


def test_anomaly_mode_across_a_device_transfer():
    x = gpunn.tensor([1.0, 4.0], requires_grad=True)
    with gpunn.detect_anomaly():
        (x.to("strict:1").sqrt()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.25])
    assert x.grad.device == "cpu"


def test_out_of_memory_in_backward_is_reported_with_the_op():
    def forward(xp, x):
        return x * 2

    def rule(xp, g, out, x):
        raise MemoryError("simulated: cannot allocate 64 GiB")

    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    y = apply(ops.Primitive("hungry", forward, rule), x).sum()
    with pytest.raises(gpunn.OutOfMemoryError, match="backward of 'hungry'.*smaller batch"):
        y.backward()
