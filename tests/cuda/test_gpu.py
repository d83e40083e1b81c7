"""Checks that need a CUDA device (marked gpu: skipped with the reason elsewhere).

They run from scripts/gpu_check.sh on a GPU machine: every CUDA fast path against the generic
primitive or update it overrides, the direct cuBLAS products in every layout, the TF32 switch,
compile_step's CUDA graph against the generic eager trajectory, a training step with host syncs
forbidden, out-of-memory handling, and cpu/cuda agreement of one training step.
"""

import warnings

import numpy as np
import pytest

import gpunn
from gpunn import nn, ops, optim
from gpunn.functional import cross_entropy
from gpunn.optim.adam import adam_update
from gpunn.optim.sgd import sgd_update

pytestmark = pytest.mark.gpu

RTOL = {"float32": 1e-5, "float64": 1e-10}


@pytest.fixture
def cuda():
    reason = gpunn.cuda.why_unavailable()
    if reason:
        pytest.skip(f"no usable CUDA device: {reason}")
    return gpunn.device("cuda")


def host(cuda, a):
    return cuda.backend.to_host(a)


def cupy_version():
    """CuPy's version string: tests/cuda/fake_cuda's fake CuPy says "fake" in it."""
    import cupy

    return cupy.__version__


def primitive_cases(cuda, dtype):
    """(primitive name, input arrays, attrs) covering every primitive fast path, in several layouts."""
    rng = np.random.default_rng(0)
    put = lambda a: cuda.put(np.asarray(a, dtype=dtype))  # noqa: E731
    x, w, b = put(rng.standard_normal((7, 5))), put(rng.standard_normal((4, 5))), put(rng.standard_normal(4))
    logits = put(rng.standard_normal((9, 6)) * 3)
    labels = cuda.put(np.array([0, 5, 1, 1, 3, 2, 4, 0, 5]))
    some_ignored = cuda.put(np.array([0, -100, 1, 1, -100, 2, 4, 0, 5]))
    return [
        ("linear", (x, w, b), {}),
        ("linear", (x, w, None), {}),
        ("linear", (put(rng.standard_normal((5, 7))).T, w, b), {}),  # an F-contiguous input
        ("linear", (x[::2], w, b), {}),  # a strided one
        ("linear", (put(rng.standard_normal((2, 3, 5))), w, b), {}),  # batched: one 2-D product
        ("linear", (put(rng.standard_normal((3, 2, 5))).transpose(1, 0, 2), w, b), {}),  # not contiguous: generic
        ("linear_act", (put(rng.standard_normal((2, 3, 5))), w, b), {"activation": "relu"}),
        ("matmul", (x, put(rng.standard_normal((5, 3)))), {}),
        ("matmul", (put(rng.standard_normal((5, 7))).T, put(rng.standard_normal((3, 5))).T), {}),
        ("matmul", (put(rng.standard_normal(5)), put(rng.standard_normal((5, 3)))), {}),  # 1-D: fallback
        ("linear_act", (x, w, b), {"activation": "relu"}),
        ("linear_act", (x, w, b), {"activation": "tanh"}),
        ("linear_act", (x * 10, w, b), {"activation": "sigmoid"}),  # both tails of the sigmoid
        ("linear_act", (x, w, None), {"activation": "relu"}),  # no bias: the generic composition
        ("relu", (x,), {}),
        ("tanh", (x,), {}),
        ("sigmoid", (x,), {}),
        ("cross_entropy", (logits, labels), {"reduction": "mean"}),
        ("cross_entropy", (logits, labels), {"reduction": "sum"}),
        ("cross_entropy", (logits, labels), {"reduction": "none"}),
        ("cross_entropy", (logits, some_ignored), {"reduction": "mean"}),
        ("cross_entropy", (put(rng.standard_normal((700, 400))), cuda.put(rng.integers(0, 400, 700))),
         {"reduction": "mean"}),  # above the one-block size: the row-per-warp kernels
        ("cross_entropy", (put(rng.standard_normal((700, 400))),
                           cuda.put(np.where(np.arange(700) % 7 == 0, -100, rng.integers(0, 400, 700)))),
         {"reduction": "sum"}),
        ("getitem", (x,), {"index": cuda.put(np.array([0, 2, 2, 5]))}),
        ("gather", (x, cuda.put(rng.integers(0, 5, (7, 3)))), {"axis": 1}),  # repeated columns add up
        ("scatter_add", (x, cuda.put(rng.integers(0, 7, (4, 5))), put(rng.standard_normal((4, 5)))), {"axis": 0}),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_paths_match_generic_rules(cuda, dtype):
    """Each CuPy override gives the generic primitive's values and gradients."""
    cases = primitive_cases(cuda, dtype)
    covered = {name for name, _, _ in cases}
    missing = {n for n, f in cuda.fast_paths.items() if isinstance(f, ops.Primitive)} - covered
    assert not missing, f"no parity case for fast paths {sorted(missing)}: add them to primitive_cases"
    rtol = RTOL[dtype]
    for name, arrays, attrs in cases:
        fast, generic = cuda.fast_paths[name], getattr(ops, name)
        with cuda.ctx:
            out_fast = fast.forward(cuda.xp, *arrays, **attrs)
            out_gen = generic.forward(cuda.xp, *arrays, **attrs)
            if generic.saves:
                (out_fast, saved_fast), (out_gen, saved_gen) = out_fast, out_gen
            else:
                saved_fast, saved_gen = out_fast, out_gen
            np.testing.assert_allclose(host(cuda, out_fast), host(cuda, out_gen), rtol=rtol, atol=rtol,
                                       err_msg=f"{name} forward")
            g = cuda.xp.asarray(np.random.default_rng(1).standard_normal(out_gen.shape), dtype=out_gen.dtype)
            g_fast, g_gen = g, g  # what the engine hands the rules: prepared once, for fused primitives
            if generic.prepare is not None:
                g_fast = fast.prepare(cuda.xp, g, saved_fast, *arrays, **attrs)
                g_gen = generic.prepare(cuda.xp, g, saved_gen, *arrays, **attrs)
                np.testing.assert_allclose(host(cuda, g_fast), host(cuda, g_gen), rtol=rtol, atol=rtol,
                                           err_msg=f"{name} prepared gradient")
            for i, (rule_f, rule_g) in enumerate(zip(fast.grads, generic.grads)):
                if rule_f is None or arrays[i] is None:
                    continue
                np.testing.assert_allclose(host(cuda, rule_f(cuda.xp, g_fast, saved_fast, *arrays, **attrs)),
                                           host(cuda, rule_g(cuda.xp, g_gen, saved_gen, *arrays, **attrs)),
                                           rtol=rtol, atol=rtol, err_msg=f"{name} gradient of input {i}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_into_rules_write_and_add_the_generic_gradients(cuda, dtype):
    """Weight and bias gradients written (accumulate=False) or added (True) straight into a slot of
    a flat buffer, for linear and linear_act, equal the generic rules' gradients."""
    rng = np.random.default_rng(6)
    put = lambda a: cuda.put(np.asarray(a, dtype=dtype))  # noqa: E731
    x, w, b = put(rng.standard_normal((7, 5))), put(rng.standard_normal((4, 5))), put(rng.standard_normal(4))
    g = put(rng.standard_normal((7, 4)))
    rtol = RTOL[dtype]
    for name, attrs in (("linear", {}), ("linear_act", {"activation": "tanh"})):
        fast, generic = cuda.fast_paths[name], getattr(ops, name)
        with cuda.ctx:
            saved_fast = fast.forward(cuda.xp, x, w, b, **attrs)
            saved_gen = generic.forward(cuda.xp, x, w, b, **attrs)
            if generic.saves:
                saved_fast, saved_gen = saved_fast[1], saved_gen[1]
            flat = cuda.xp.asarray(np.full(1 + w.size + b.size, 7.0, dtype=dtype))
            slots = {1: flat[1:1 + w.size].reshape(w.shape), 2: flat[1 + w.size:]}
            if generic.prepare is not None:  # the engine prepares g once; the rules get the result
                g_in = g
                g = generic.prepare(cuda.xp, g_in, saved_gen, x, w, b, **attrs)
                np.testing.assert_allclose(host(cuda, fast.prepare(cuda.xp, g_in, saved_fast, x, w, b, **attrs)),
                                           host(cuda, g), rtol=rtol, atol=rtol)
            for i, slot in slots.items():
                expected = host(cuda, generic.grads[i](cuda.xp, g, saved_gen, x, w, b, **attrs))
                assert fast.into[i](cuda.xp, g, saved_fast, x, w, b, slot, False, **attrs)
                np.testing.assert_allclose(host(cuda, slot), expected, rtol=rtol, atol=rtol, err_msg=f"{name} {i}")
                assert fast.into[i](cuda.xp, g, saved_fast, x, w, b, slot, True, **attrs)
                np.testing.assert_allclose(host(cuda, slot), 2 * expected, rtol=rtol, atol=rtol)
            assert host(cuda, flat)[0] == 7.0  # nothing written outside the slots


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_fused_prepare_writes_the_bias_gradient_and_the_generic_prepared_gradient(cuda, dtype, activation,
                                                                                    monkeypatch):
    """linear_act's prepare_into on CUDA (the activation's backward and the bias gradient in one
    kernel) gives the generic prepared gradient and bias gradient, written or added into the slot,
    for shapes of one and of several column blocks; above its size limit it declines (None)."""
    from gpunn.backends import cupy_kernels

    fast, generic = cuda.fast_paths["linear_act"], ops.linear_act
    index, fused = fast.prepare_into
    assert index == 2
    rng = np.random.default_rng(7)
    put = lambda a: cuda.put(np.asarray(a, dtype=dtype))  # noqa: E731
    rtol = RTOL[dtype]
    attrs = {"activation": activation}
    for n, f in ((7, 5), (130, 70)):
        x, w, b = put(rng.standard_normal((n, 9))), put(rng.standard_normal((f, 9))), put(rng.standard_normal(f))
        g = put(rng.standard_normal((n, f)))
        with cuda.ctx:
            out = generic.forward(cuda.xp, x, w, b, **attrs)
            want_g = host(cuda, generic.prepare(cuda.xp, g, out, x, w, b, **attrs))
            want_b = host(cuda, generic.grads[2](cuda.xp, generic.prepare(cuda.xp, g, out, x, w, b, **attrs), out,
                                                 x, w, b, **attrs))
            flat = cuda.xp.asarray(np.full(f + 2, 7.0, dtype=dtype))
            slot = flat[1:-1]
            got_g = fused(cuda.xp, g, out, x, w, b, slot, False, **attrs)
            np.testing.assert_allclose(host(cuda, got_g), want_g, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(host(cuda, slot), want_b, rtol=rtol, atol=rtol)
            fused(cuda.xp, g, out, x, w, b, slot, True, **attrs)
            np.testing.assert_allclose(host(cuda, slot), 2 * want_b, rtol=rtol, atol=rtol)
            assert host(cuda, flat)[0] == 7.0 and host(cuda, flat)[-1] == 7.0  # nothing written outside the slot
            other = "tanh" if activation != "tanh" else "relu"  # negative control: another activation's rule
            fused(cuda.xp, g, out, x, w, b, slot, False, activation=other)
            assert not np.allclose(host(cuda, slot), want_b, rtol=rtol, atol=rtol)
    monkeypatch.setattr(cupy_kernels, "_ACT_BIAS_MAX", 10)
    with cuda.ctx:
        assert fused(cuda.xp, g, out, x, w, b, slot, False, **attrs) is None


def test_cross_entropy_kernel_out_of_range_label_is_nan_not_a_crash(cuda):
    logits = gpunn.randn(4, 3, device=cuda)
    loss = cross_entropy(logits, gpunn.tensor([0, 1, 7, 2], device=cuda))
    assert np.isnan(loss.item())


def test_fast_path_parity_check_can_fail(cuda):
    """Negative control: a relu rule that is off at the kink is caught by the comparison above."""
    x = cuda.put(np.array([[-1.0, 0.0, 2.0]]))
    g = cuda.xp.ones_like(x)
    with cuda.ctx:
        wrong = g * cuda.xp.astype(x >= 0, g.dtype)  # counts the kink as active
        right = cuda.fast_paths["relu"].grads[0](cuda.xp, g, cuda.xp.maximum(x, 0), x)
    assert not np.allclose(host(cuda, wrong), host(cuda, right))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optimizer_kernels_match_generic_updates(cuda, dtype):
    """The one-kernel updates equal the generic update functions, with host floats or (for the
    scheduled scalars, as compile_step uploads them) 0-d device arrays. Tight tolerances: an
    update rounded differently (e.g. 1 - beta2 formed in float32) must show."""
    from gpunn.optim import SGD, Adam

    rng = np.random.default_rng(2)
    n = 10_001
    start = {k: rng.standard_normal(n).astype(dtype) for k in ("p", "g", "m", "v", "buf")}
    start["v"] = np.abs(start["v"])
    fresh = dict(start, m=np.zeros(n, dtype), v=np.zeros(n, dtype))  # the first step's moments
    rtol, atol = (1e-6, 1e-7) if dtype == "float32" else (1e-12, 1e-14)

    def run(update, names, scheduled=(), values=start, **hyper):
        arrays = {k: cuda.put(values[k].copy()) for k in names}
        hyper = {k: (cuda.put(np.asarray(v, dtype=dtype)) if k in scheduled else v) for k, v in hyper.items()}
        with cuda.ctx:
            update(cuda.xp, *(arrays[k] for k in names), **hyper)
        return [host(cuda, arrays[k]) for k in names if k != "g"]

    def check(generic, fast, names, scheduled, values=start, **hyper):
        expected = run(generic, names, values=values, **hyper)
        for on_device in ((), scheduled):
            got = run(fast, names, on_device, values=values, **hyper)
            for e, a in zip(expected, got):
                np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{hyper}, device scalars {on_device}")

    adam_cases = [dict(weight_decay=0.0, decay=1.0, maximize=False), dict(weight_decay=0.01, decay=1.0, maximize=True),
                  dict(weight_decay=0.0, decay=0.999, maximize=False)]
    for case in adam_cases:
        for values, t in ((start, 3), (fresh, 1)):
            hyper = dict(beta1=0.9, one_minus_beta1=1 - 0.9, beta2=0.999, eps=1e-8, step_size=1e-3 / (1 - 0.9 ** t),
                         bias_correction2_sqrt=(1 - 0.999 ** t) ** 0.5, **case)
            check(adam_update, cuda.fast_paths["adam_update"], ("p", "g", "m", "v"), Adam._scheduled, values,
                  **hyper)
    sgd_cases = [dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
                 dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=1e-3, maximize=True),
                 dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
                 dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-3, maximize=False),
                 dict(momentum=0.5, dampening=0.25, nesterov=False, weight_decay=0.0, maximize=True)]
    for case in sgd_cases:
        if case["momentum"]:
            names = ("p", "g", "buf")
            generic = lambda xp, p, g, buf, **h: sgd_update(xp, p, g, buf, False, **h)  # noqa: E731
            fast = lambda xp, p, g, buf, **h: cuda.fast_paths["sgd_update"](xp, p, g, buf, False, **h)  # noqa: E731
        else:
            names = ("p", "g")
            generic = lambda xp, p, g, **h: sgd_update(xp, p, g, None, False, **h)  # noqa: E731
            fast = lambda xp, p, g, **h: cuda.fast_paths["sgd_update"](xp, p, g, None, False, **h)  # noqa: E731
        check(generic, fast, names, SGD._scheduled, lr=0.05, **case)


def test_gemm_layouts_match_cupy(cuda):
    import cupy

    from gpunn.backends import cublas_gemm

    rng = np.random.default_rng(3)
    for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a = cupy.asarray(rng.standard_normal((6, 4)).astype(dtype))
        b = cupy.asarray(rng.standard_normal((4, 5)).astype(dtype))
        cases = [(a, b, False, False), (a.T.copy(), b, True, False), (a, b.T.copy(), False, True),
                 (a.T.copy(), b.T.copy(), True, True), (cupy.asfortranarray(a), b, False, False),
                 (a[:, ::2], b[::2], False, False), (a[::2], b, False, False)]  # strided: copied first
        for x, y, ta, tb in cases:
            xh, yh = cupy.asnumpy(x).astype(np.float64), cupy.asnumpy(y).astype(np.float64)
            expected = (xh.T if ta else xh) @ (yh.T if tb else yh)  # float64 on the host
            np.testing.assert_allclose(cupy.asnumpy(cublas_gemm.gemm(x, y, ta, tb)), expected, rtol=rtol, atol=rtol)
        out = cupy.ones((6, 5), dtype=dtype)
        cublas_gemm.gemm(a, b, out=out, accumulate=True)
        expected = cupy.asnumpy(a).astype(np.float64) @ cupy.asnumpy(b).astype(np.float64) + 1
        np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=rtol, atol=rtol)
        empty = cublas_gemm.gemm(cupy.zeros((3, 0), dtype), cupy.zeros((0, 2), dtype))
        assert empty.shape == (3, 2) and not cupy.asnumpy(empty).any()
        # negative control: a wrong transposition flag gives a different product
        s = cupy.asarray(rng.standard_normal((5, 5)).astype(dtype))
        assert not np.allclose(cupy.asnumpy(cublas_gemm.gemm(s, s, trans_b=True)), cupy.asnumpy(s @ s), rtol=1e-3)
        with pytest.raises(ValueError, match="inner dimensions"):
            cublas_gemm.gemm(a, a)


def test_tf32_switch_changes_float32_products_only_when_high(cuda):
    import cupy

    from gpunn.backends import cublas_gemm

    rng = np.random.default_rng(4)
    a = cupy.asarray(rng.standard_normal((512, 512)).astype(np.float32))
    b = cupy.asarray(rng.standard_normal((512, 512)).astype(np.float32))
    exact = cupy.asnumpy(a.astype(cupy.float64) @ b.astype(cupy.float64))
    scale = np.abs(exact).max()
    full = cupy.asnumpy(cublas_gemm.gemm(a, b, tf32=False))
    tf32 = cupy.asnumpy(cublas_gemm.gemm(a, b, tf32=True))
    assert np.abs(full - exact).max() / scale < 1e-5
    assert 1e-5 < np.abs(tf32 - exact).max() / scale < 1e-2  # TF32 keeps 10 mantissa bits of each input
    previous = gpunn.get_float32_matmul_precision()
    x = gpunn.tensor(cupy.asnumpy(a), device=cuda)
    w = gpunn.tensor(np.ascontiguousarray(cupy.asnumpy(b).T), device=cuda)  # linear takes (out, in)
    batched_x = gpunn.tensor(cupy.asnumpy(a)[None].repeat(2, 0), device=cuda)  # (2, 512, 512): one 2-D product
    try:
        for precision, low, high in (("highest", 0, 1e-5), ("high", 1e-5, 1e-2)):
            gpunn.set_float32_matmul_precision(precision)
            error = np.abs(gpunn.functional.linear(x, w).numpy() - exact).max() / scale
            assert low <= error < high, f"{precision}: relative error {error:.2e}"
            error = np.abs(gpunn.functional.linear(batched_x, w).numpy()[1] - exact).max() / scale
            assert low <= error < high, f"{precision}, batched: relative error {error:.2e}"
    finally:
        gpunn.set_float32_matmul_precision(previous)


def _mlp_run(cuda, make_optimizer, steps, mode, batches, schedule=False):
    """Losses of `steps` steps of a seeded 784-256-256-10 MLP on cuda, in the batches' dtype; mode:
    "generic" (no fast paths, per-parameter optimizer), "eager" (fast paths, fused optimizer) or "graph"."""
    gpunn.manual_seed(0)
    model = nn.MLP([784, 256, 256, 10], dtype=batches[0][0].dtype).to(cuda)
    saved = cuda.fast_paths
    if mode == "generic":
        cuda.fast_paths = {}  # the generic primitives and per-parameter updates, on the same device
    try:
        opt = make_optimizer(model.parameters(), fused=(mode != "generic"))
        scheduler = optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5) if schedule else None
        step = gpunn.compile_step(model, cross_entropy, opt) if mode == "graph" else None
        losses = []
        for k in range(steps):
            x, y = batches[k % len(batches)]
            if step is not None:
                loss = step(x, y)
            else:
                loss = cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss = loss.detach()
            losses.append(loss)
            if scheduler is not None:
                scheduler.step()
        return np.array([l.item() for l in losses]), step
    finally:
        cuda.fast_paths = saved


def _eager_losses(model, opt, x, y, steps):
    """The losses of `steps` plain training steps on one batch."""
    losses = []
    for _ in range(steps):
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _batches(cuda, sizes=(128,), dtype=np.float32):
    rng = np.random.default_rng(5)
    return [(gpunn.tensor(rng.standard_normal((n, 784)).astype(dtype), device=cuda),
             gpunn.tensor(rng.integers(0, 10, n), device=cuda)) for n in sizes]


_OPTIMIZERS = {
    "sgd-momentum": lambda params, fused: optim.SGD(params, lr=0.05, momentum=0.9, fused=fused),
    "adam": lambda params, fused: optim.Adam(params, lr=1e-3, fused=fused),
    "adamw": lambda params, fused: optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=fused),
}


def _three_runs(cuda, make_optimizer, dtype):
    """50 steps with a schedule and a smaller last batch (a second graph): generic, eager, graph losses."""
    batches = _batches(cuda, sizes=(128, 128, 128, 96), dtype=dtype)
    generic, _ = _mlp_run(cuda, make_optimizer, 50, "generic", batches, schedule=True)
    eager, _ = _mlp_run(cuda, make_optimizer, 50, "eager", batches, schedule=True)
    graph, step = _mlp_run(cuda, make_optimizer, 50, "graph", batches, schedule=True)
    assert step.mode == "graph", step.reason
    assert generic[-1] < generic[0]
    return generic, eager, graph


def _record_drifts(record_property, generic, eager, graph):
    """The largest relative differences, kept in the JUnit report (scripts/gpu_check.sh writes one)
    so that each GPU run measures the margins of the tolerances below."""
    def drift(a, b):
        return float(np.max(np.abs(a - b) / np.abs(b)))

    record_property("eager_vs_generic", drift(eager, generic))
    record_property("graph_vs_generic", drift(graph, generic))
    record_property("graph_vs_eager", drift(graph, eager))


@pytest.mark.parametrize("name", _OPTIMIZERS)
def test_compiled_and_eager_steps_compute_what_the_generic_path_does(cuda, name, record_property):
    """In float64 the fast paths and the recorded step follow the generic trajectory to 1e-9: the
    same arithmetic, only summed in another order (a wrong formula is off by far more)."""
    generic, eager, graph = _three_runs(cuda, _OPTIMIZERS[name], np.float64)
    _record_drifts(record_property, generic, eager, graph)
    np.testing.assert_allclose(eager, generic, rtol=1e-9)
    np.testing.assert_allclose(graph, generic, rtol=1e-9)


@pytest.mark.parametrize("name", _OPTIMIZERS)
def test_float32_trajectories_meet_the_issue_tolerance(cuda, name, record_property):
    """The issue's numerics target in float32: within 1e-5 relative over 50 steps. A replay runs the
    eager step's kernels, so those two agree closer still.

    Measured on an H100 (scripts/gpu_check.sh, which records these drifts in its JUnit report):
    2e-7 to 6.3e-7 for every optimizer. The fake CuPy (tests/cuda/fake_cuda) rounds differently: there
    AdamW under a schedule drifts 1.3e-5 while its update kernel is bitwise the generic update (the
    stand-in cuBLAS's summation order, amplified by decoupled decay under a schedule; without the
    schedule 1.3e-6), so on the fake alone it is held to 1e-4. 1e-5 also catches scalars rounded in
    float32 (1 - beta formed on the device drifts Adam 8e-4); test_optimizer_kernels_match_generic_updates
    checks each update kernel to a few ulp."""
    generic, eager, graph = _three_runs(cuda, _OPTIMIZERS[name], np.float32)
    _record_drifts(record_property, generic, eager, graph)
    rtol = 1e-4 if name == "adamw" and "fake" in cupy_version() else 1e-5
    np.testing.assert_allclose(eager, generic, rtol=rtol)
    np.testing.assert_allclose(graph, generic, rtol=rtol)
    np.testing.assert_allclose(graph, eager, rtol=1e-6)


def test_graph_trajectory_check_can_fail(cuda):
    """Negative control: a different learning rate moves the trajectory beyond the tolerance."""
    batches = _batches(cuda)
    a, _ = _mlp_run(cuda, lambda p, fused: optim.Adam(p, lr=1e-3, fused=fused), 20, "graph", batches)
    b, _ = _mlp_run(cuda, lambda p, fused: optim.Adam(p, lr=1.1e-3, fused=fused), 20, "graph", batches)
    assert not np.allclose(a, b, rtol=1e-5)


def _freeze_edit_hook_run(cuda, compiled):
    """Losses and final weights of 20 SGD steps on cuda, with what users do between steps: freeze
    the first layer (requires_grad only), edit its frozen weights, add then remove a hook."""
    gpunn.manual_seed(0)
    model = nn.MLP([32, 64, 10]).to(cuda)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = gpunn.compile_step(model, cross_entropy, opt) if compiled else None
    x, y = gpunn.randn(64, 32, device=cuda), gpunn.randint(10, (64,), device=cuda)
    first, calls, handles, losses = list(model.parameters())[:2], [], [], []
    for k in range(20):
        if k == 5:
            for p in first:
                p.requires_grad = False
        if k == 9:
            with gpunn.no_grad():
                for p in first:
                    p.copy_(p * 0.5)
        if k == 12:
            handles.append(model.register_forward_hook(lambda module, args, output: calls.append(k)))
        if k == 15:
            handles.pop().remove()
        if step is not None:
            losses.append(step(x, y).item())
        else:
            loss = cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return np.array(losses), [p.numpy() for p in model.parameters()], len(calls), step


def test_real_graphs_follow_freezing_edits_and_forward_hooks(cuda, monkeypatch):
    """What the CPU emulation cannot show: a real replay runs no Python, so a graph must go stale
    when parameters are frozen (their recorded gradients would keep training them), read frozen
    weights edited since, and leave the step eager while a hook is registered."""
    captures = []
    capture = type(cuda.backend).capture
    monkeypatch.setattr(type(cuda.backend), "capture", lambda self, run: captures.append(1) or capture(self, run))
    with pytest.warns(gpunn.compile.CompileWarning, match="forward hooks"):
        losses, params, calls, step = _freeze_edit_hook_run(cuda, True)
    ref_losses, ref_params, ref_calls, _ = _freeze_edit_hook_run(cuda, False)
    assert calls == ref_calls == 3 and step.reason is None
    assert len(captures) == 3  # at the start, after the freeze, after the hook's removal (an edit is copied in)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(params, ref_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_compile_step_falls_back_to_eager_for_dropout(cuda):
    """Dropout draws its masks on the host: the capture fails, the step says why and trains on."""
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3)).to(cuda)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    step = gpunn.compile_step(model, cross_entropy, opt)
    x, y = gpunn.randn(64, 20, device=cuda), gpunn.randint(3, (64,), device=cuda)
    with pytest.warns(gpunn.compile.CompileWarning, match="captured"):
        losses = [step(x, y).item() for _ in range(30)]
    assert step.mode == "eager" and "captured" in step.reason
    assert opt.state[next(iter(model.parameters()))]["step"] == 30
    assert losses[-1] < losses[0]


def test_training_steps_make_no_host_sync(cuda):
    """An eager fused step and a graph replay run with device synchronization forbidden."""
    import cupyx

    batches = _batches(cuda)
    gpunn.manual_seed(0)
    model = nn.MLP([784, 256, 256, 10]).to(cuda)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    step = gpunn.compile_step(model, cross_entropy, opt)
    x, y = batches[0]
    for _ in range(4):  # warm-up and capture may sync (kernel compilation, allocation)
        step(x, y)
    assert step.mode == "graph", step.reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # allow_synchronize is deprecated, and says so
        with cupyx.allow_synchronize(False):
            for _ in range(3):
                loss = step(x, y)
                eager = cross_entropy(model(x), y)
                opt.zero_grad()
                eager.backward()
                opt.step()
            with pytest.raises(cupyx.DeviceSynchronized):  # negative control: reading a value syncs
                loss.item()
    assert np.isfinite(loss.item())


def test_uploads_reach_the_device_in_stream_order(cuda):
    """compile_step's scalar uploads go through a ring of pinned buffers: many in a row, each read
    by a kernel queued right after it, must each be seen with its own values."""
    import cupy

    target = cupy.zeros(3, dtype=cupy.float32)
    upload = cuda.backend.uploader(target)
    seen = []
    with cuda.ctx:
        for k in range(11):
            upload(np.full(3, k, dtype=np.float32))
            seen.append(target * 1)  # queued after the copy, before the next upload
    assert [float(a[0]) for a in seen] == list(range(11))
    assert np.array_equal(cupy.asnumpy(target), np.full(3, 10, np.float32))


def test_clipping_and_outputs_are_recorded_into_the_graph(cuda):
    """compile_step(max_grad_norm=, return_output=) as `gpunn train --compile --clip-norm` uses it:
    the step is recorded (clipping makes no host sync) and follows the eager trajectory."""
    batches = _batches(cuda)
    runs = []
    for compiled in (True, False):
        gpunn.manual_seed(0)
        model = nn.MLP([784, 256, 256, 10]).to(cuda)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        step = gpunn.compile_step(model, cross_entropy, opt, max_grad_norm=0.5, return_output=True)
        losses = []
        for _ in range(12):
            x, y = batches[0]
            if compiled:
                loss, out = step(x, y)
            else:
                out = model(x)
                loss = cross_entropy(out, y)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                opt.step()
            losses.append(loss)
        if compiled:
            assert step.mode == "graph", step.reason
        runs.append(np.array([l.item() for l in losses]))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5)


def test_fused_is_the_default_on_cuda(cuda):
    model = nn.Linear(4, 3).to(cuda)
    opt = optim.Adam(model.parameters())
    cross_entropy(model(gpunn.randn(5, 4, device=cuda)), gpunn.tensor([0, 1, 2, 0, 1], device=cuda)).backward()
    opt.step()
    assert opt._flat[0] is not None
    assert model.weight.grad._array.data.ptr >= opt._flat[0].grad.data.ptr


def test_out_of_memory_is_reraised_with_size_and_pool_stays_usable(cuda):
    free, total = __import__("cupy").cuda.Device(cuda.index).mem_info
    elements = int(total * 4) // 4  # four times the card's memory, in float32
    with pytest.raises(gpunn.OutOfMemoryError) as info:
        gpunn.zeros(elements, device=cuda)
    assert "MiB" in str(info.value) and "smaller batch" in str(info.value)
    small = gpunn.ones(1024, device=cuda)
    assert small.sum().item() == 1024


def test_training_step_agrees_with_cpu(cuda):
    losses = {}
    for dev in ("cpu", cuda):
        gpunn.manual_seed(0)
        model = nn.MLP([20, 32, 5], dtype="float64").to(dev)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        X = gpunn.tensor(np.random.default_rng(1).standard_normal((64, 20)), device=dev)
        y = gpunn.tensor(np.random.default_rng(2).integers(0, 5, 64), device=dev)
        losses[str(dev)] = _eager_losses(model, opt, X, y, 20)
    np.testing.assert_allclose(losses["cuda:0"], losses["cpu"], rtol=1e-10)


def test_copy_into_is_a_memcpy_for_contiguous_arrays_and_a_setitem_otherwise(cuda):
    """compile_step copies each batch in and each loss out with the backend's copy_into: contiguous
    arrays of one dtype and shape as one device-to-device memcpy, anything else by setitem."""
    import cupy

    rng = np.random.default_rng(2)
    host = rng.standard_normal((5, 3)).astype(np.float32)
    src = cupy.asarray(host)
    for source, want in ((src, host), (cupy.asarray(host.T.copy()).T, host), (cupy.asarray(host[:, :1]), host[:, :1])):
        dst = cupy.zeros((5, 3), dtype=np.float32)
        cuda.backend.copy_into(dst, source)  # the last broadcasts (5, 1) into (5, 3): the setitem path
        np.testing.assert_array_equal(cupy.asnumpy(dst), np.broadcast_to(want, (5, 3)))
    empty = cupy.zeros((0, 3), dtype=np.float32)
    cuda.backend.copy_into(empty, cupy.zeros((0, 3), dtype=np.float32))
    assert empty.shape == (0, 3)


def test_a_second_gpu_trains_and_tensors_move_between_gpus(cuda):
    """cuda:1 (where there is one; the fake CuPy has two devices): a fused, fast-path training run
    there equals the same run on cuda:0, and a tensor moved cuda:0 -> cuda:1 sends its gradient
    back across the move. Every kernel must run with its arrays' device current."""
    if gpunn.cuda.device_count() < 2:
        pytest.skip("one CUDA device")
    second = gpunn.device("cuda:1")
    rng = np.random.default_rng(4)
    x_host, y_host = rng.standard_normal((32, 6)).astype(np.float32), rng.integers(0, 3, 32)

    def run(dev):
        gpunn.manual_seed(0)
        model = nn.MLP([6, 16, 3]).to(dev)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        losses = _eager_losses(model, opt, gpunn.tensor(x_host, device=dev), gpunn.tensor(y_host, device=dev), 5)
        assert all(p.device == dev for p in model.parameters())
        return losses

    np.testing.assert_allclose(run(second), run(cuda), rtol=1e-6)
    a = gpunn.tensor(x_host, device=cuda, requires_grad=True)
    moved = a.to(second)
    assert moved.device == second
    (moved * 3).sum().backward()
    assert a.grad.device == cuda
    np.testing.assert_array_equal(a.grad.numpy(), np.full_like(x_host, 3))


def test_adam_kernel_keeps_its_scalars_in_double_precision(cuda):
    """One fused Adam step with its scalars as compile_step uploads them (0-d float32 device
    arrays; 1 - beta1 formed on the host in double): each moment is within a few float32 ulp of
    its terms, and the coefficients the kernel applied, fitted over 20001 entries, are 1 - beta1
    and 1 - beta2 to 5e-8 and 5e-7. Control: 1 - beta1 formed on the device in float32 (not passed)
    is off by 2.4e-7, within each entry's ulp bound but not within the fit's."""
    from gpunn.optim import Adam

    rng = np.random.default_rng(7)
    n, t, beta1, beta2 = 20_001, 5, 0.9, 0.999
    m0 = rng.standard_normal(n).astype(np.float32)
    v0 = np.abs(rng.standard_normal(n)).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    group = dict(lr=1e-3, betas=(beta1, beta2), eps=1e-8, weight_decay=0, maximize=False)
    hyper = Adam([gpunn.zeros(1, requires_grad=True)])._hyper(group, t)
    g64, eps32 = g.astype(np.float64), np.finfo(np.float32).eps

    def moments(drop_one_minus_beta1):
        arrays = [cuda.put(a.copy()) for a in (np.zeros(n, np.float32), g, m0, v0)]
        scalars = {k: (cuda.put(np.asarray(v, np.float32)) if k in Adam._scheduled else v) for k, v in hyper.items()}
        if drop_one_minus_beta1:
            del scalars["one_minus_beta1"]
        with cuda.ctx:
            cuda.fast_paths["adam_update"](cuda.xp, *arrays, **scalars)
        return host(cuda, arrays[2]).astype(np.float64), host(cuda, arrays[3]).astype(np.float64)

    def fitted(out, before, keep, x):  # the c in out = keep * before + c * x, by least squares
        return float(np.dot(out - keep * before, x) / np.dot(x, x))

    m, v = moments(False)
    assert np.all(np.abs(m - (beta1 * m0 + (1 - beta1) * g64)) <= 4 * eps32 * (beta1 * np.abs(m0) + (1 - beta1) * np.abs(g64)))
    assert np.all(np.abs(v - (beta2 * v0 + (1 - beta2) * g64 ** 2)) <= 4 * eps32 * (beta2 * v0 + (1 - beta2) * g64 ** 2))
    assert abs(fitted(m, m0, beta1, g64) / (1 - beta1) - 1) < 5e-8
    assert abs(fitted(v, v0, beta2, g64 ** 2) / (1 - beta2) - 1) < 5e-7
    m_bad, _ = moments(True)
    assert abs(fitted(m_bad, m0, beta1, g64) / (1 - beta1) - 1) > 5e-8
