"""Checks that need a CUDA device (marked gpu: skipped with the reason elsewhere).

They run from scripts/gpu_check.sh on a GPU machine: fast paths against the generic primitives,
out-of-memory handling, and cpu/cuda agreement of one training step.
"""

import numpy as np
import pytest

import gpunn
from gpunn import ops

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    reason = gpunn.cuda.why_unavailable()
    if reason:
        pytest.skip(f"no usable CUDA device: {reason}")
    return gpunn.device("cuda")


def test_fast_paths_match_generic_rules(cuda):
    """Each CuPy override gives the generic primitive's values and gradients."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5))
    for name, fast in cuda.fast_paths.items():
        generic = getattr(ops, name)
        if name == "getitem":
            args, attrs = (x,), {"index": cuda.put(np.array([0, 2, 2, 5]))}
        elif name == "cross_entropy":
            args, attrs = (x, cuda.put(np.array([0, 4, 1, 1, 3, 2]))), {"reduction": "mean"}
        else:
            pytest.fail(f"no parity case for fast path {name!r}: add one")
        arrays = [cuda.put(a) if isinstance(a, np.ndarray) else a for a in args]
        out_fast = fast.forward(cuda.xp, *arrays, **attrs)
        out_gen = generic.forward(cuda.xp, *arrays, **attrs)
        if generic.saves:
            (out_fast, saved_fast), (out_gen, saved_gen) = out_fast, out_gen
        else:
            saved_fast, saved_gen = out_fast, out_gen
        np.testing.assert_allclose(cuda.backend.to_host(out_fast), cuda.backend.to_host(out_gen), rtol=1e-12)
        g = cuda.xp.ones_like(out_gen)
        for i, (rule_f, rule_g) in enumerate(zip(fast.grads, generic.grads)):
            if rule_f is None:
                continue
            np.testing.assert_allclose(cuda.backend.to_host(rule_f(cuda.xp, g, saved_fast, *arrays, **attrs)),
                                       cuda.backend.to_host(rule_g(cuda.xp, g, saved_gen, *arrays, **attrs)),
                                       rtol=1e-12, err_msg=f"{name} input {i}")


def test_out_of_memory_is_reraised_with_size_and_pool_stays_usable(cuda):
    free, total = __import__("cupy").cuda.Device(cuda.index).mem_info
    elements = int(total * 4) // 4  # four times the card's memory, in float32
    with pytest.raises(gpunn.OutOfMemoryError) as info:
        gpunn.zeros(elements, device=cuda)
    assert "MiB" in str(info.value) and "smaller batch" in str(info.value)
    small = gpunn.ones(1024, device=cuda)
    assert small.sum().item() == 1024


def test_training_step_agrees_with_cpu(cuda):
    from gpunn import nn, optim
    from gpunn.functional import cross_entropy

    losses = {}
    for dev in ("cpu", cuda):
        gpunn.manual_seed(0)
        model = nn.MLP([20, 32, 5], dtype="float64").to(dev)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        X = gpunn.tensor(np.random.default_rng(1).standard_normal((64, 20)), device=dev)
        y = gpunn.tensor(np.random.default_rng(2).integers(0, 5, 64), device=dev)
        trace = []
        for _ in range(20):
            loss = cross_entropy(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            trace.append(loss.item())
        losses[str(dev)] = trace
    np.testing.assert_allclose(losses["cuda:0"], losses["cpu"], rtol=1e-10)
