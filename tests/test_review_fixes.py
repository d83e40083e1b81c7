"""PyTorch behaviours and failure paths found in review: iteration, host conversion, integer
results without gradient, 0-d results on NumPy, non-differentiable writes, randint's signature,
anomaly mode across devices, out-of-memory in backward, atomic checkpoint loading."""

import numpy as np
import pytest

import gpunn
from gpunn import ops
from gpunn.tensor import apply


def test_iteration_and_unpacking_give_rows_with_gradient(device):
    x = gpunn.tensor(np.arange(6.0).reshape(3, 2), device=device, requires_grad=True)
    rows = list(x)
    assert len(rows) == 3 and all(r.shape == (2,) for r in rows)
    a, b, c = x
    (a.sum() + 2 * c.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1, 1], [0, 0], [2, 2]])
    with pytest.raises(TypeError):
        iter(gpunn.tensor(1.0))


def test_numpy_asarray_copies_from_any_device(device):
    x = gpunn.tensor([[1.5, 2.5]], device=device)
    host = np.asarray(x)
    assert isinstance(host, np.ndarray) and host.tolist() == [[1.5, 2.5]]
    assert np.asarray(x, dtype=np.float64).dtype == np.float64


def test_integer_results_carry_no_gradient(device):
    x = gpunn.tensor([1.5, 2.5], device=device, requires_grad=True)
    as_int = x.long()
    assert not as_int.requires_grad and as_int._node is None
    y = (x * 2).sum()
    assert y.requires_grad  # control: the float path keeps its graph


def test_full_reductions_are_zero_d_arrays_on_numpy():
    loss = (gpunn.tensor([1.0, 2.0], requires_grad=True) ** 2).sum()
    assert type(loss._array) is np.ndarray and loss.shape == ()
    assert np.from_dlpack(loss.detach()) == 5.0


def test_writes_of_a_tensor_that_requires_grad_are_recorded():
    """buffer[0:2] = w and copy_(w) carry w's gradient, as in PyTorch; under no_grad they are plain writes."""
    w = gpunn.tensor([1.0, 2.0], requires_grad=True)
    buffer = gpunn.zeros(3)
    buffer[0:2] = w
    copied = gpunn.zeros(2).copy_(w)
    (buffer * 3).sum().backward()
    (copied * 5).sum().backward()
    assert w.grad.numpy().tolist() == [8.0, 8.0]
    with gpunn.no_grad():
        plain = gpunn.zeros(3)
        plain[0:2] = w
    assert plain.numpy().tolist() == [1.0, 2.0, 0.0] and not plain.requires_grad


def test_randint_takes_pytorchs_high_and_size():
    gpunn.manual_seed(0)
    a = gpunn.randint(10, (3,))
    gpunn.manual_seed(0)
    b = gpunn.randint(0, 10, (3,))
    assert a.shape == (3,) and a.numpy().tolist() == b.numpy().tolist()
    assert ((a.numpy() >= 0) & (a.numpy() < 10)).all()


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


@pytest.mark.parametrize("name", sorted(gpunn.device("cpu").fast_paths))
def test_numpy_fast_paths_match_the_generic_primitives(name, monkeypatch):
    """Each NumPy override gives the generic primitive's values and gradients."""
    cpu = gpunn.device("cpu")
    fast_paths = dict(cpu.fast_paths)
    rng = np.random.default_rng(0)
    x = gpunn.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    w = gpunn.tensor(rng.standard_normal((4, 5)))
    columns, rows = gpunn.tensor(rng.integers(0, 5, (6, 3))), gpunn.tensor(rng.integers(0, 6, (4, 5)))
    cases = {
        "getitem": lambda prim: apply(prim, x, index=np.array([0, 2, 2, 5])),
        "cross_entropy": lambda prim: apply(prim, x, gpunn.tensor([0, 4, 1, 1, 3, 2]), reduction="mean"),
        "linear": lambda prim: apply(prim, x, w, gpunn.tensor(np.ones(4))),
        "linear_act": lambda prim: apply(prim, x, w, gpunn.tensor(np.ones(4)), activation="relu"),
        "gather": lambda prim: apply(prim, x, columns, axis=1),
        "scatter_add": lambda prim: apply(prim, x, rows, gpunn.tensor(np.arange(20.0).reshape(4, 5)), axis=0),
    }
    assert name in cases, f"no parity case for the NumPy fast path {name!r}: add one"
    results = []
    for table in (fast_paths, {}):  # apply() looks primitives up by name: {} leaves the generic one
        monkeypatch.setattr(cpu, "fast_paths", table)
        prim = fast_paths[name] if table else getattr(ops, name)
        x.grad = None
        out = cases[name](prim)
        weights = np.random.default_rng(1).standard_normal(out.shape)  # the same for both
        (out * gpunn.tensor(weights)).sum().backward()
        results.append((out.numpy(), x.grad.numpy()))
    (fast_out, fast_grad), (gen_out, gen_grad) = results
    np.testing.assert_allclose(fast_out, gen_out, rtol=1e-12)
    np.testing.assert_allclose(fast_grad, gen_grad, rtol=1e-12)


def test_numpy_into_rules_write_the_generic_gradients():
    """Linear's into-rules (gradients written straight into a fused optimizer's slot) give the
    generic rules' values, and decline to accumulate (the engine adds instead)."""
    linear = gpunn.device("cpu").fast_paths["linear"]
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(shape) for shape in ((6, 5), (4, 5), (4,), (6, 4)))
    for i in (1, 2):
        dest = np.full_like((x, w, b)[i], np.nan)
        assert linear.into[i](np, g, None, x, w, b, dest=dest, accumulate=False)
        np.testing.assert_allclose(dest, ops.linear.grads[i](np, g, None, x, w, b), rtol=1e-12)
        assert not linear.into[i](np, g, None, x, w, b, dest=dest, accumulate=True)
    assert not linear.into[1](np, g[None], None, x[None], w, b, dest=np.empty_like(w), accumulate=False)


def test_integer_true_division_gives_float32_like_pytorch(device):
    i = gpunn.tensor([1, 2, 3], device=device)
    for result in (i / 2, 6 / i, i / i):
        assert result.dtype == "float32" and result.device == device
    np.testing.assert_allclose((i / 2).numpy(), [0.5, 1.0, 1.5])
    assert (gpunn.tensor([1.0, 2.0], dtype="float64", device=device) / 2).dtype == "float64"  # floats keep theirs


def test_integer_tensors_meeting_floats_take_the_float_dtype(device):
    i = gpunn.tensor([0, 1, 2], device=device)
    f64 = gpunn.tensor([1.0, 1.0, 1.0], dtype="float64", device=device)
    assert (i * 1.5).dtype == "float32" and (1.5 - i).dtype == "float32"
    assert (i + gpunn.ones(3, device=device)).dtype == "float32"
    assert (i + f64).dtype == "float64"
    assert (i * 2).dtype == "int64"  # control: integers with integers stay integers
    np.testing.assert_allclose((i * 1.5).numpy(), [0.0, 1.5, 3.0])


def test_pytorch_conveniences():
    loss = gpunn.tensor(0.123456)
    assert f"{loss:.3f}" == "0.123"
    a, b = gpunn.tensor([1.0, 5.0]), gpunn.tensor([3.0, 2.0])
    assert gpunn.max(a, b).numpy().tolist() == [3.0, 5.0] and a.min(b).numpy().tolist() == [1.0, 2.0]
    with pytest.raises(IndexError, match="out of bounds"):
        a[5]
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    copy = x.clone()
    assert copy._array is not x._array
    (copy * 3).sum().backward(gradient=gpunn.tensor(2.0))
    assert x.grad.numpy().tolist() == [6.0, 6.0]
    shared = np.zeros(2)
    gpunn.from_numpy(shared)._array[0] = 7.0
    assert shared[0] == 7.0
    assert gpunn.long == gpunn.int64 and gpunn.double == gpunn.float64 and gpunn.bool == gpunn.bool_
    with gpunn.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    with pytest.raises(gpunn.ShapeError, match="different lengths"):
        gpunn.tensor([[1, 2], [3]])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignored_targets_are_skipped_by_the_default_losses_on_every_device(device, reduction):
    from gpunn import functional as F

    logits = np.random.default_rng(3).standard_normal((4, 3))
    labels = np.array([2, -100, 0, -100])
    kept = labels != -100
    lse = np.log(np.exp(logits).sum(axis=1))
    per_row = np.where(kept, lse - logits[np.arange(4), np.where(kept, labels, 0)], 0.0)
    expected = {"mean": per_row.sum() / kept.sum(), "sum": per_row.sum(), "none": per_row}[reduction]
    for loss_of in (lambda x, t: F.cross_entropy(x, t, reduction=reduction),
                    lambda x, t: F.nll_loss(F.log_softmax(x, axis=1), t, reduction=reduction)):
        x = gpunn.tensor(logits, device=device, requires_grad=True)
        loss = loss_of(x, gpunn.tensor(labels, device=device))
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
        loss.sum().backward()
        assert np.all(x.grad.numpy()[~kept] == 0)  # ignored rows get no gradient
        assert np.any(x.grad.numpy()[kept] != 0)
