"""The backends' fast paths on the cpu (NumPy): each gives the values and gradients of the
generic primitive it overrides, which stays the reference (CuPy's: tests/cuda/test_gpu.py)."""

import numpy as np
import pytest

import gpunn
from gpunn import ops
from gpunn.tensor import apply
from helpers import away_from_zero, rng


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
        "linear_chain": lambda prim: apply(prim, x, w, gpunn.tensor(np.ones(4)), w.T, None,
                                           activations=("relu", "tanh")),
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


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("spec", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fast_paths_match_the_generic_scatter(spec, dtype):
    """The backends' scatter-adds (NumPy: bincount over flat positions; CuPy: an atomic
    scatter-add) in gather's gradient and in scatter_add, against the standard-only one-hot sums."""
    dev = gpunn.device(spec)
    xp = dev.xp
    x = (away_from_zero((4, 5), seed=19) * 10).astype(dtype)
    src = (away_from_zero((3, 5), seed=20) * 10).astype(dtype)
    for axis in (0, 1):
        index = rng(21 + axis).integers(0, x.shape[axis], size=(3, 4))
        arrays = [dev.put(a) for a in (x, index, src[:, :4])]
        with dev.scope:
            for name in ("scatter_add", "gather"):
                fast, generic = dev.fast_paths[name], getattr(ops, name)
                if name == "scatter_add":
                    got, want = fast.forward(xp, *arrays, axis=axis), generic.forward(xp, *arrays, axis=axis)
                else:
                    x_, index_, g = arrays
                    got, want = fast.grads[0](xp, g, None, x_, index_, axis), generic.grads[0](xp, g, None, x_, index_,
                                                                                                 axis)
                assert got.dtype == want.dtype == arrays[0].dtype
                np.testing.assert_allclose(dev.backend.to_host(got), dev.backend.to_host(want), rtol=1e-6)
