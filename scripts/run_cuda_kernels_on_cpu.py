"""Run the CUDA kernels of backends/cupy_kernels.py on the CPU (g++) and check their numbers.

    /tmp/cupyenv/bin/python scripts/run_cuda_kernels_on_cpu.py [--fmad]

check_cuda_sources.py only compiles the kernels; this executes their exact sources, called by the
exact Python wrappers (the cupy module inside backends.cupy_kernels is swapped for a NumPy
stand-in), so indexing, reduction, argument-mapping and formula bugs show before GPU time is
spent. Needs CuPy (for the kernel objects and ElementwiseKernel's type rules; no GPU or driver)
and g++. A developer's check, not a test: one line per check, exit status 1 on any failure.

How CUDA is emulated: each block runs alone, its threads as cooperative fibers (ucontext) that
switch only at __syncthreads (all live threads of the block) and __shfl_xor_sync (all 32 lanes of
the warp); a deadlock (e.g. a shuffle some lanes never reach) is reported. Every raw-kernel case
runs twice, fibers scheduled forward and in reverse: different results mean a race between
barriers. __shared__ is a function static (one block at a time), NaN-filled before each block.
Emulated device memory is NaN inside (as if uninitialised) with NaN guard zones either side, so
reading outside an array or leaving an output unwritten shows as NaN, and writing outside one is
caught. The launcher checks each argument's size and kind against the kernel's parameter.
--fmad compiles with contracted multiply-adds (NVRTC's default, though not its exact choices);
without it the arithmetic is NumPy's, operation for operation.

cuBLAS: cublas_gemm runs unchanged against a stand-in libcublas (EmulatedCublas, installed as its
_library) that takes the same ctypes arguments and reads BLAS's column-major contract literally
from the raw device addresses (`.data.ptr` of the emulated arrays): m, n, k, op flags, lda/ldb/ldc,
alpha and beta through host pointers, C not read when beta is 0; bad values give status 7 as in
cuBLAS, an operand reaching outside every device allocation is an illegal address. Checked: gemm
itself (every transpose pair, C/F/strided operands, edge shapes, out=, accumulate) and the linear,
matmul and linear_act fast paths built on it, including the into-rules writing optimizer slots.
Last come a check that every kernel ran and negative controls: broken kernels (and a broken
cuBLAS) that the checks must catch.

What it cannot show: timing, coalescing, bank conflicts, occupancy, the GPU's exp/log/tanh (glibc's
are used), races that the fixed switch points hide (e.g. between threads of one warp), cuBLAS's own
summation order (TF32 inputs are rounded to 10 mantissa bits, round to nearest even).
"""

import argparse
import contextlib
import ctypes
import io
import math
import os
import sys
import types

import cupy  # the real one: its ElementwiseKernel objects and type rules (no GPU needed)
import numpy as np

from gpunn import ops
from gpunn.backends import cublas_gemm, cupy_kernels
from gpunn.optim.adam import Adam
from gpunn.updates import adam_update, sgd_update
from gpunn.precision import set_float32_matmul_precision

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_cuda"))  # after site-packages: CuPy stays real
from cuda_emulation import (FLAGS, KERNELS, SCHEDULE, EmulatedCublas, EmulatedElementwise,  # noqa: E402
                            EmulatedRawModule, device_empty, to_device)


def gemm_calls():
    return cublas_gemm._lib.calls if cublas_gemm._lib is not None else 0


def emulate_cupy_kernels():
    """Point backends.cupy_kernels and cublas_gemm at the emulation: their cupy module, the kernel
    objects, libcublas."""
    cupy_kernels.cupy = types.SimpleNamespace(
        RawModule=EmulatedRawModule, float32=np.float32, float64=np.float64, int32=np.int32, int64=np.int64,
        empty=lambda shape, dtype=np.float64: device_empty(shape, dtype),
        empty_like=lambda a: device_empty(a.shape, a.dtype),
        ascontiguousarray=lambda a: a if a.flags.c_contiguous else to_device(a),
        ones=lambda shape, dtype=np.float64: to_device(np.ones(shape, dtype)), uint8=np.uint8,
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                   get_current_stream=lambda: types.SimpleNamespace(ptr=0)))
    cublas_gemm.cupy = cupy_kernels.cupy  # its empty/ascontiguousarray, streams and device ids
    cublas_gemm._library, cublas_gemm._lib = EmulatedCublas, None  # where it loads libcublas
    cublas_gemm._handles.clear()
    for name, found in vars(cupy_kernels).items():  # kernels, and tables of them
        table = found if isinstance(found, dict) else {name: found}
        for key, kernel in table.items():
            if isinstance(kernel, cupy.ElementwiseKernel):
                KERNELS["present"].add(kernel.name)
                table[key] = EmulatedElementwise(kernel)
        if not isinstance(found, dict) and table[name] is not found:
            setattr(cupy_kernels, name, table[name])
    cupy_kernels._raw_modules.clear()
    return cupy_kernels.fast_paths()


# --- comparisons and reporting ------------------------------------------------------------------

TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
results = []  # (passed, detail) per check


def error(got, want):
    """max |got - want| / max |want| over the finite entries; inf where NaNs or infinities differ."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return math.inf
    finite = np.isfinite(want)
    if not np.array_equal(got[~finite], want[~finite], equal_nan=True) or not np.isfinite(got[finite]).all():
        return math.inf
    if not finite.any():
        return 0.0
    return float(np.max(np.abs(got - want)[finite]) / max(np.max(np.abs(want[finite])), 1e-300))


def report(name, measured):
    """One line: each measurement is (label, error, tolerance); passes if every error is within."""
    ok = all(err <= tol for _, err, tol in measured)
    detail = "  ".join(f"{label} {err:.1e}" + ("" if err <= tol else f" > {tol:.0e}") for label, err, tol in measured)
    results.append((ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'}  {name:<58} {detail}", flush=True)


def failure(name, exc):
    results.append((False, f"{type(exc).__name__}: {exc}"))
    print(f"FAIL  {name:<58} {results[-1][1]}", flush=True)


def reference_cross_entropy(logits, target, reduction, ignore_index):
    """Float64 softmax cross-entropy, PyTorch's semantics; an out-of-range label: a NaN loss;
    every row ignored under a mean: a NaN loss and a zero gradient."""
    x = logits.astype(np.float64)
    n, c = x.shape
    with np.errstate(all="ignore"):
        peak = x.max(axis=1, keepdims=True)
        lse = np.log(np.exp(x - peak).sum(axis=1)) + peak[:, 0]
        kept = target != ignore_index
        valid = (target >= 0) & (target < c)
        picked = x[np.arange(n), np.clip(target, 0, c - 1)]
        per_row = np.where(kept, np.where(valid, lse - picked, np.nan), 0.0)
        onehot = valid[:, None] & (target[:, None] == np.arange(c))
        # a mean over no kept rows: a NaN loss but a zero gradient, as in PyTorch
        weight = kept / max(kept.sum(), 1) if reduction == "mean" else kept.astype(np.float64)
        residual = (np.exp(x - lse[:, None]) - onehot) * weight[:, None]
        loss = per_row.sum() / kept.sum() if reduction == "mean" else per_row.sum()
    return loss, residual


def check_cross_entropy(name, logits, target, reduction, ignore_index=-100):
    """The wrapper's kernels, both fiber orders, against float64 and against the generic forward."""
    path = "small" if logits.size <= cupy_kernels._CE_SMALL else "rows"
    label = f"ce[{path}] {name} n={logits.shape[0]} c={logits.shape[1]} {reduction} {logits.dtype}"
    try:
        runs = []
        for reverse in (0, 1):
            SCHEDULE["reverse"] = reverse
            loss, residual = cupy_kernels._cross_entropy_forward(np, to_device(logits), to_device(target),
                                                                 reduction=reduction, ignore_index=ignore_index)
            runs.append((np.asarray(loss).copy(), residual.copy()))
        SCHEDULE["reverse"] = 0
    except RuntimeError as exc:
        return failure(label, exc)
    (loss, residual), (loss_r, residual_r) = runs
    same = np.array_equal(loss, loss_r, equal_nan=True) and np.array_equal(residual, residual_r, equal_nan=True)
    want_loss, want_residual = reference_cross_entropy(logits, target, reduction, ignore_index)
    with np.errstate(all="ignore"):
        gen_loss, gen_residual = ops.cross_entropy.forward(np, logits, target, reduction=reduction,
                                                           ignore_index=ignore_index)
    tol = TOL[logits.dtype]
    measured = [("ref loss", error(loss, want_loss), tol), ("ref resid", error(residual, want_residual), tol),
                ("orders", 0.0 if same else math.inf, 0.0)]
    if ((target == ignore_index) | ((target >= 0) & (target < logits.shape[1]))).all():  # the generic's domain
        measured += [("gen loss", error(loss, gen_loss), tol), ("gen resid", error(residual, gen_residual), tol)]
    report(label, measured)


def cross_entropy_checks(dtype):
    rng = np.random.default_rng(0)

    def case(name, n, c, reduction, ignored=(), ignore_index=-100, scale=3.0, labels=None, order="C"):
        logits = (rng.standard_normal((n, c)) * scale).astype(dtype)
        target = rng.integers(0, c, n) if labels is None else np.asarray(labels)
        target[list(ignored)] = ignore_index
        check_cross_entropy(name, np.asarray(logits, order=order), target, reduction, ignore_index)

    case("one row", 1, 5, "mean")
    case("c<32, n%8!=0, ignored", 7, 31, "mean", ignored=(2, 5))
    case("c=32", 8, 32, "sum")
    case("c=33, ignored", 13, 33, "mean", ignored=(0, 12))
    case("c=100, ignored, int32 labels, F-order", 64, 100, "sum", ignored=(3, 4, 63),
         labels=rng.integers(0, 100, 64).astype(np.int32), order="F")
    case("one class", 3, 1, "mean")
    logits = (rng.standard_normal((5, 40)) * 3).astype(dtype)
    logits[2, 17] = np.nan
    check_cross_entropy("a NaN logit", logits, np.arange(5), "sum")
    case("wide rows", 16, 1000, "mean", scale=30.0)
    case("all ignored", 5, 7, "mean", ignored=range(5))
    case("all ignored", 5, 7, "sum", ignored=range(5))
    case("label == c", 6, 40, "mean", labels=[0, 1, 40, 2, 3, 4])
    case("label -1", 6, 40, "sum", labels=[0, 1, -1, 2, 3, 4])
    case("ignore_index=2", 20, 9, "mean", ignore_index=2, labels=np.arange(20) % 9)
    logits = (rng.standard_normal((9, 50)) * 3).astype(dtype)
    logits[[0, 4], [7, 30]] = -np.inf  # masked classes (not the targets)
    check_cross_entropy("-inf logits", logits, np.arange(9), "mean")
    case("n%8!=0, ignored", 2049, 129, "mean", ignored=range(0, 2049, 97))
    case("c<32", 9000, 30, "sum", ignored=(5,))
    case("all ignored", 2100, 130, "mean", ignored=range(2100))
    case("label == c", 2100, 130, "mean", labels=np.r_[np.zeros(2099, np.int64), 130])


# --- elementwise checks ---------------------------------------------------------------------------

def activation_checks(fast, dtype):
    rng = np.random.default_rng(1)
    tol = TOL[np.dtype(dtype)]
    for shape in ((7, 5), (2, 3, 5)):
        x = (rng.standard_normal(shape) * 10).astype(dtype)
        x.reshape(-1, 5)[0] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
        w, b = rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal(4).astype(dtype)
        w[:, 0] = np.abs(w[:, 0])  # so the inf row gives infinities, not NaN, in every column
        for act in ("relu", "tanh", "sigmoid"):
            label = f"linear_act {act} forward x{shape} {np.dtype(dtype)}"
            try:
                got = fast["linear_act"].forward(np, to_device(x), to_device(w), to_device(b), activation=act)
            except (RuntimeError, TypeError) as exc:
                failure(label, exc)
                continue
            with np.errstate(all="ignore"):
                want = ops.linear_act.forward(np, x, w, b, activation=act)
            report(label, [("gen", error(got, want), tol)])
    for act in ("relu", "tanh", "sigmoid"):
        x = (rng.standard_normal(4099) * 4).astype(dtype)
        x[:6] = [0.0, -0.0, np.inf, -np.inf, 1.0, -1.0]
        with np.errstate(all="ignore"):
            out = ops.ACTIVATIONS[act].forward(np, x)
        g = rng.standard_normal(4099).astype(dtype)
        g[4:6] = np.nan  # NaN stays NaN, also at a dead unit
        got = fast[act].grads[0](np, to_device(g), to_device(out), None)
        with np.errstate(all="ignore"):
            want = ops.ACTIVATIONS[act].grads[0](np, g, out, None)
        report(f"{act} grad {np.dtype(dtype)}", [("gen", error(got, want), tol)])


def trajectory(update, dtype, steps, state_names, hyper_at, rng_seed=3, n=4099):
    """`steps` updates of a parameter pulled towards a target with noisy gradients; final state."""
    rng = np.random.default_rng(rng_seed)
    target = rng.standard_normal(n)
    state = {"p": rng.standard_normal(n).astype(dtype), **{k: np.zeros(n, dtype) for k in state_names}}
    state = {k: to_device(v) for k, v in state.items()}
    for t in range(1, steps + 1):
        g = to_device((0.1 * (state["p"] - target) + rng.standard_normal(n)).astype(dtype))
        update(state["p"], g, *(state[k] for k in state_names), t=t, **hyper_at(t))
    return {k: v.copy() for k, v in state.items()}


def optimizer_checks(fast, dtype, adam_only=False):
    dt = np.dtype(dtype)
    tol = TOL[dt]

    def device_scalars(hyper, names):  # as compile_step uploads them: 0-d arrays of the flat dtype
        return {k: (to_device(np.asarray(v, dt)) if k in names else v) for k, v in hyper.items()}

    adam_cases = {"adam": dict(weight_decay=0.0), "adam wd maximize": dict(weight_decay=0.01, maximize=True),
                  "adamw": dict(weight_decay=0.01, decoupled=True)}
    for name, case in adam_cases.items():
        group = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=case["weight_decay"],
                     maximize=case.get("maximize", False))
        owner = types.SimpleNamespace(_decoupled=case.get("decoupled", False))
        hyper_at = lambda t: Adam._hyper(owner, group, t)  # noqa: E731  the optimizer's own host values
        generic = lambda p, g, m, v, t, **h: adam_update(np, p, g, m, v, None, **h)  # noqa: E731
        want = trajectory(generic, dtype, 50, ("m", "v"), hyper_at)
        for on_device in ((), Adam._scheduled):
            label = f"adam_update {name} 50 steps{' device scalars' if on_device else ''} {dt}"
            kernel = lambda p, g, m, v, t, **h: fast["adam_update"](np, p, g, m, v, None,  # noqa: E731
                                                                    **device_scalars(h, on_device))
            try:
                got = trajectory(kernel, dtype, 50, ("m", "v"), hyper_at)
            except RuntimeError as exc:
                failure(label, exc)
                continue
            report(label, [(k, error(got[k], want[k]), tol) for k in ("p", "m", "v")])

    if adam_only:
        return
    sgd_cases = {"plain": dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
                 "plain wd maximize": dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=1e-3,
                                           maximize=True),
                 "momentum": dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
                 "nesterov wd": dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-3, maximize=False),
                 "dampening maximize": dict(momentum=0.5, dampening=0.25, nesterov=False, weight_decay=0.0,
                                            maximize=True)}
    for name, case in sgd_cases.items():
        names = ("buf",) if case["momentum"] else ()

        def stepper(update, on_device=()):  # the momentum buffer's first fill is step 1, as in SGD
            return lambda p, g, *buf, t, **h: update(np, p, g, buf[0] if buf else None, bool(buf) and t == 1,
                                                     **device_scalars(h, on_device))

        hyper_at = lambda t: dict(lr=0.05, **case)  # noqa: E731
        want = trajectory(stepper(sgd_update), dtype, 50, names, hyper_at)
        for on_device in ((), ("lr", "momentum")):  # SGD._scheduled
            label = f"sgd_update {name} 50 steps{' device lr, momentum' if on_device else ''} {dt}"
            try:
                got = trajectory(stepper(fast["sgd_update"], on_device), dtype, 50, names, hyper_at)
            except RuntimeError as exc:
                failure(label, exc)
                continue
            report(label, [(k, error(got[k], want[k]), tol) for k in ("p", *names)])


# --- cuBLAS checks: the gemm wrapper, and the linear/matmul fast paths built on it --------------------

LAYOUTS = ("C", "F", "strided")


def device_operand(host, layout):
    """`host` on the emulated device: C-contiguous, F-contiguous (a transposed view, 2-D only) or a
    strided slice of a NaN-filled larger array (every other row, columns offset by 2)."""
    if layout == "C":
        return to_device(host)
    if layout == "F":
        return to_device(np.ascontiguousarray(host.T)).T
    big = device_empty((2 * host.shape[0] + 1, *host.shape[1:-1], host.shape[-1] + 3), host.dtype)
    view = big[1::2, ..., 2:-1]
    view[...] = host
    return view


def in_flat_buffer(shape, dtype, accumulate, rng):
    """(flat device buffer, C-contiguous slot of `shape` inside it, copy of the buffer): an optimizer's
    slot; NaN (never written) unless it is to be accumulated into."""
    size = math.prod(shape)
    flat = to_device(rng.standard_normal(size + 11).astype(dtype))
    slot = flat[4:4 + size].reshape(shape)
    if not accumulate:
        slot[...] = np.nan
    return flat, slot, flat.copy()


def slot_error(flat, slot, before, want, accumulate):
    """The slot against `want` (plus what it held, if accumulating); inf if the rest of the buffer changed."""
    outside = np.r_[0:4, 4 + slot.size:flat.size]
    if not np.array_equal(flat[outside], before[outside]):
        return math.inf
    return error(slot, before[4:4 + slot.size].reshape(slot.shape) + want if accumulate else want)


def gemm_checks(dtype):
    """cublas_gemm.gemm against a float64 product: every transpose pair, operand layout and shape
    (1-row, 1-column, k = m = n = 0), fresh, out= (NaN-filled: beta 0 must not read it) and accumulate."""
    dtype, rng = np.dtype(dtype), np.random.default_rng(5)
    shapes = ((5, 5, 5), (3, 7, 4), (1, 6, 5), (4, 6, 1), (6, 1, 3), (1, 1, 1), (3, 0, 4), (0, 4, 3), (4, 5, 0))
    for trans_a, trans_b in ((False, False), (False, True), (True, False), (True, True)):
        worst = {"fresh": (0.0, ""), "out=": (0.0, ""), "accumulate": (0.0, "")}
        for (m, k, n), layout_a, layout_b in ((s, la, lb) for s in shapes for la in LAYOUTS for lb in LAYOUTS):
            case = f"{m}x{k}x{n} {layout_a},{layout_b}"
            a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
            want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
            x, y = device_operand(a, layout_a), device_operand(b, layout_b)
            for how in worst:
                where = case
                try:
                    if how == "fresh":
                        err = error(cublas_gemm.gemm(x, y, trans_a, trans_b), want)
                    else:
                        flat, out, before = in_flat_buffer((m, n), dtype, how == "accumulate", rng)
                        got = cublas_gemm.gemm(x, y, trans_a, trans_b, out=out, accumulate=how == "accumulate")
                        err = slot_error(flat, out, before, want, how == "accumulate") if got is out else math.inf
                except (RuntimeError, TypeError, ValueError) as exc:
                    err, where = math.inf, f"{case}: {exc}"
                if err > worst[how][0]:
                    worst[how] = err, where
        tol = TOL[dtype]
        report(f"gemm a{'ᵀ' if trans_a else ''} b{'ᵀ' if trans_b else ''}, {len(shapes)} shapes x 9 layouts {dtype}",
               [(how if err <= tol else f"{how}[{case}]", err, tol) for how, (err, case) in worst.items()])


def path_error(expected_fast, run):
    """run()'s result, and 0 if it called cuBLAS exactly when the fast path should (else inf)."""
    before = gemm_calls()
    result = run()
    return result, 0.0 if (gemm_calls() > before) == expected_fast else math.inf


def linear_checks(fast, dtype):
    """The linear fast path against gpunn.ops.linear: forward, each rule, each into-rule (written and
    added into a slot of a flat buffer), on C/F/strided 2-D and C/strided 3-D inputs, with and without
    bias; `paths` checks that cuBLAS ran exactly where a 2-D view exists (else the generic ran)."""
    dtype, rng, tol = np.dtype(dtype), np.random.default_rng(6), TOL[np.dtype(dtype)]
    lin, gen = fast["linear"], ops.linear
    cases = (("2-D", (7, 5), "C", "C"), ("2-D F", (7, 5), "F", "F"), ("2-D strided", (7, 5), "strided", "strided"),
             ("3-D", (2, 3, 5), "C", "C"), ("3-D strided x", (2, 3, 5), "strided", "C"),
             ("3-D strided x, g", (2, 3, 5), "strided", "strided"))
    for name, shape, layout_x, layout_g in cases:
        for bias in (True, False):
            x, w = rng.standard_normal(shape).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
            b = rng.standard_normal(4).astype(dtype) if bias else None
            g = rng.standard_normal((*shape[:-1], 4)).astype(dtype)
            dx, dg = device_operand(x, layout_x), device_operand(g, layout_g)
            dw, db = to_device(w), None if b is None else to_device(b)
            rows_x, rows_g = len(shape) == 2 or layout_x == "C", len(shape) == 2 or layout_g == "C"
            label = f"linear {name} {'bias' if bias else 'no bias'} {dtype}"
            try:
                out, paths = path_error(rows_x, lambda: lin.forward(np, dx, dw, db))
                want_out = gen.forward(np, x, w, b)
                measured, wrong_paths = [("fwd", error(out, want_out), tol)], ["fwd"] * bool(paths)
                for k, rule in enumerate(("gx", "gw", "gb")[:3 if bias else 2]):
                    fast_rule = (rows_g, rows_g and rows_x, rows_g)[k]
                    got, paths = path_error(fast_rule, lambda: lin.grads[k](np, dg, out, dx, dw, db))
                    want = gen.grads[k](np, g, want_out, x, w, b)
                    measured.append((rule, error(got, want), tol))
                    wrong_paths += [rule] * bool(paths)
                    for accumulate in (False, True) if lin.into[k] else ():
                        flat, slot, before = in_flat_buffer(want.shape, dtype, accumulate, rng)
                        done = lin.into[k](np, dg, out, dx, dw, db, slot, accumulate)
                        err = (slot_error(flat, slot, before, want, accumulate) if done
                               else 0.0 if np.array_equal(flat, before, equal_nan=True) else math.inf)
                        measured.append((f"{rule} into{'+' if accumulate else ''}", err, tol))
                        wrong_paths += [f"{rule} into"] * (done != fast_rule)
            except (RuntimeError, TypeError, ValueError) as exc:
                failure(label, exc)
                continue
            report(label, measured + [(f"paths[{','.join(wrong_paths)}]" if wrong_paths else "paths",
                                       math.inf if wrong_paths else 0.0, 0.0)])


def matmul_checks(fast, dtype):
    """The matmul fast path against gpunn.ops.matmul, 2-D operands in several layouts; 3-D falls back."""
    dtype, rng, tol = np.dtype(dtype), np.random.default_rng(7), TOL[np.dtype(dtype)]
    mm, gen = fast["matmul"], ops.matmul
    cases = [((4, 6), (6, 3), layouts, True) for layouts in
             (("C", "C"), ("F", "C"), ("C", "F"), ("F", "F"), ("strided", "F"), ("F", "strided"))]
    for x_shape, y_shape, (layout_x, layout_y), fast_path in cases + [((2, 4, 6), (2, 6, 3), ("C", "C"), False)]:
        x, y = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(y_shape).astype(dtype)
        g = rng.standard_normal((*x_shape[:-1], y_shape[-1])).astype(dtype)
        dx, dy, dg = device_operand(x, layout_x), device_operand(y, layout_y), device_operand(g, layout_x)
        label = f"matmul {'x'.join(map(str, x_shape))} {layout_x} @ {'x'.join(map(str, y_shape))} {layout_y} {dtype}"
        try:
            out, path = path_error(fast_path, lambda: mm.forward(np, dx, dy))
            want_out = gen.forward(np, x, y)
            measured = [("fwd", error(out, want_out), tol)]
            for k, rule in enumerate(("gx", "gy")):
                got, paths = path_error(fast_path, lambda: mm.grads[k](np, dg, out, dx, dy))
                measured.append((rule, error(got, gen.grads[k](np, g, want_out, x, y)), tol))
                path = max(path, paths)
        except (RuntimeError, TypeError, ValueError) as exc:
            failure(label, exc)
            continue
        report(label, measured + [("fast path" if fast_path else "generic path", path, 0.0)])


def linear_act_backward_checks(fast, dtype):
    """linear_act's backward through the fast path (prepare: the activation's kernel; then linear's
    rules and into-rules) against generic linear + activation."""
    dtype, rng, tol = np.dtype(dtype), np.random.default_rng(8), TOL[np.dtype(dtype)]
    la = fast["linear_act"]
    for act in ("relu", "tanh", "sigmoid"):
        x, w = rng.standard_normal((2, 3, 5)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
        b, g = rng.standard_normal(4).astype(dtype), rng.standard_normal((2, 3, 4)).astype(dtype)
        dx, dw, db, dg = (to_device(v) for v in (x, w, b, g))
        label = f"linear_act {act} backward x(2, 3, 5) {dtype}"
        try:
            out = la.forward(np, dx, dw, db, activation=act)
            g_pre = la.prepare(np, dg, out, dx, dw, db, activation=act)
            want_out = ops.ACTIVATIONS[act].forward(np, ops.linear.forward(np, x, w, b))
            want_pre = ops.ACTIVATIONS[act].grads[0](np, g, want_out, None)
            measured = [("fwd", error(out, want_out), tol)]
            for k, rule in enumerate(("gx", "gw", "gb")):
                want = ops.linear.grads[k](np, want_pre, want_out, x, w, b)
                measured.append((rule, error(la.grads[k](np, g_pre, out, dx, dw, db, activation=act), want), tol))
                for accumulate in (False, True) if la.into[k] else ():
                    flat, slot, before = in_flat_buffer(want.shape, dtype, accumulate, rng)
                    done = la.into[k](np, g_pre, out, dx, dw, db, slot, accumulate, activation=act)
                    measured.append((f"{rule} into{'+' if accumulate else ''}",
                                     slot_error(flat, slot, before, want, accumulate) if done else math.inf, tol))
        except (RuntimeError, TypeError, ValueError) as exc:
            failure(label, exc)
            continue
        report(label, measured)


def tf32_check(fast):
    """Under set_float32_matmul_precision("high") float32 products run in TF32 math mode (3), bias
    gradients and float64 products in the default (0); back under "highest", none in TF32."""
    cases = (("high", np.float32, "f32 high", 3), ("high", np.float32, "f32 high bias grad", 0),
             ("high", np.float64, "f64 high", 0), ("highest", np.float32, "f32 highest", 0))
    wrong = []
    for precision, dtype, name, mode in cases:
        x, w, g = (to_device(np.ones(shape, dtype)) for shape in ((3, 2), (4, 2), (3, 4)))
        set_float32_matmul_precision(precision)
        try:
            if "bias" in name:
                fast["linear"].grads[2](np, g, None, x, w, w[0])
            else:
                fast["linear"].forward(np, x, w, None)
            if cublas_gemm._lib.modes[-1] != mode:
                wrong.append(f"{name}: {cublas_gemm._lib.modes[-1]}, not {mode}")
        except (RuntimeError, TypeError, ValueError) as exc:
            wrong.append(f"{name}: {exc}")
        finally:
            set_float32_matmul_precision("highest")
    results.append((not wrong, wrong))
    print(f"{'ok  ' if not wrong else 'FAIL'}  {'cuBLAS math mode per product (TF32: 3)':<58} "
          f"{'; '.join(wrong) or ', '.join(f'{name} {mode}' for _, _, name, mode in cases)}")


def cublas_argument_checks():
    """The stand-in refuses what cuBLAS refuses (else the checks above prove less): each bad argument
    gives status 7 where a good call gives 0; a host pointer for an operand is an illegal address."""
    handle = cublas_gemm._handle()
    a, c = to_device(np.ones((3, 4), np.float32)), device_empty((3, 3), np.float32)
    host, one = np.ones(12, np.float32), np.ones((), np.float32)
    good = dict(op_a=0, op_b=0, m=3, n=3, k=4, alpha=one.ctypes.data, a=a.data.ptr, lda=3, b=a.data.ptr, ldb=4, ldc=3)
    bad = {"good": {}, "lda < m": dict(lda=2), "ldb < k": dict(ldb=3), "ldc < m": dict(ldc=2),
           "lda < k (op T)": dict(op_a=1), "op 3": dict(op_b=3), "k < 0": dict(k=-1), "NULL alpha": dict(alpha=0)}
    wrong = []
    for name, change in {**bad, "host pointer": dict(b=host.ctypes.data)}.items():
        v = {**good, **change}
        try:
            status = handle.lib.cublasSgemm_v2(
                handle.ptr, *(ctypes.c_int(v[key]) for key in ("op_a", "op_b", "m", "n", "k")),
                ctypes.c_void_p(v["alpha"]), ctypes.c_void_p(v["a"]), ctypes.c_int(v["lda"]), ctypes.c_void_p(v["b"]),
                ctypes.c_int(v["ldb"]), ctypes.c_void_p(one.ctypes.data), ctypes.c_void_p(c.data.ptr),
                ctypes.c_int(v["ldc"]))
        except RuntimeError:
            status = "illegal address"
        if status != {"good": 0, "host pointer": "illegal address"}.get(name, 7):
            wrong.append(f"{name}: {status}")
    results.append((not wrong, wrong))
    print(f"{'ok  ' if not wrong else 'FAIL'}  {'cuBLAS stand-in refuses bad arguments':<58} "
          f"{'; '.join(wrong) if wrong else f'{len(bad) - 1} bad values: status 7; host pointer: illegal address'}")


# --- negative controls: broken kernels the checks above must catch ----------------------------------

def expect_caught(name, run):
    """Run `run` (which reports checks) quietly; passes if one of its checks failed."""
    before = len(results)
    with contextlib.redirect_stdout(io.StringIO()):
        run()
    how = next((detail for ok, detail in results[before:] if not ok), None)
    del results[before:]
    results.append((how is not None, how))
    print(f"{'ok  ' if how else 'FAIL'}  control: {name:<49} {'caught: ' + how if how else 'NOT caught'}")


def with_ce_source(old, new, run, small=None):
    """`run` with _CE_SOURCE edited (and, if given, another small-batch threshold)."""
    source, threshold = cupy_kernels._CE_SOURCE, cupy_kernels._CE_SMALL
    assert old in source, f"control out of date: {old!r} is no longer in _CE_SOURCE"
    cupy_kernels._CE_SOURCE, cupy_kernels._CE_SMALL = source.replace(old, new), small or threshold
    cupy_kernels._raw_modules.clear()
    try:
        run()
    finally:
        cupy_kernels._CE_SOURCE, cupy_kernels._CE_SMALL = source, threshold
        cupy_kernels._raw_modules.clear()


def controls(fast):
    rng = np.random.default_rng(4)
    logits, target = rng.standard_normal((13, 20)).astype(np.float32), rng.integers(0, 20, 13)
    target[[1, 6]] = -100
    ce = lambda: check_cross_entropy("control", logits, target, "mean")  # noqa: E731
    expect_caught("no barrier before the scale is read", lambda: with_ce_source(
        "    __syncthreads();\n    if (mean) {", "    if (mean) {", ce))
    expect_caught("rows kernel: one warp past the last row", lambda: with_ce_source(
        "if (row >= n) return;", "if (row > n) return;", ce, small=1))
    expect_caught("rows kernel: a lane leaves before a shuffle", lambda: with_ce_source(
        "if (row >= n) return;", "if (row >= n || lane == 31) return;", ce, small=1))

    def int32_rows():
        kernel = cupy_kernels._ce_functions(np.float32)["small"]
        try:
            kernel((1,), (512,), (to_device(logits), to_device(target), np.int32(13), np.int64(20), np.int64(-100),
                                  np.int32(1), device_empty((), np.float32), device_empty(logits.shape, np.float32)))
            report("int32 row count", [])
        except RuntimeError as exc:
            failure("int32 row count", exc)
    expect_caught("an int32 passed for a long long", int32_rows)

    adam = cupy_kernels._adam_kernel
    broken = cupy.ElementwiseKernel(", ".join(f"{p.ctype} {p.name}" for p in adam.kernel.in_params),
                                    ", ".join(f"{p.ctype} {p.name}" for p in adam.kernel.out_params),
                                    adam.kernel.operation.replace("one_minus_beta2", "((T)1 - beta2)"), "broken_adam")

    def float32_one_minus_beta2():
        cupy_kernels._adam_kernel = EmulatedElementwise(broken)
        try:
            optimizer_checks(fast, np.float32, adam_only=True)
        finally:
            cupy_kernels._adam_kernel = adam
    expect_caught("Adam with 1 - beta2 rounded in float32", float32_one_minus_beta2)

    def with_cublas(flaw):
        def run():
            lib, handles = cublas_gemm._lib, dict(cublas_gemm._handles)
            cublas_gemm._lib = cublas_gemm._declare(EmulatedCublas(flaw))  # as _handle() installs it
            cublas_gemm._handles.clear()
            try:
                gemm_checks(np.float32)
            finally:
                cublas_gemm._lib = lib
                cublas_gemm._handles.clear()
                cublas_gemm._handles.update(handles)
        return run
    expect_caught("cuBLAS reading A with ldb and B with lda", with_cublas("swapped ld"))
    expect_caught("cuBLAS ignoring beta", with_cublas("ignores beta"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fmad", action="store_true",
                        help="contract a * b + c into one rounding, as NVRTC does by default (-mfma)")
    args = parser.parse_args(argv)
    if args.fmad:
        FLAGS[FLAGS.index("-ffp-contract=off")] = "-ffp-contract=fast"
        FLAGS.append("-mfma")
    fast = emulate_cupy_kernels()
    for dtype in (np.float32, np.float64):
        cross_entropy_checks(dtype)
        activation_checks(fast, dtype)
        optimizer_checks(fast, dtype)
        gemm_checks(dtype)
        linear_checks(fast, dtype)
        matmul_checks(fast, dtype)
        linear_act_backward_checks(fast, dtype)
    tf32_check(fast)
    cublas_argument_checks()
    unchecked = sorted(KERNELS["present"] - KERNELS["ran"])
    results.append((not unchecked, unchecked))
    coverage = f"never ran: {', '.join(unchecked)}" if unchecked else f"{len(KERNELS['ran'])} kernels"
    print(f"{'ok  ' if not unchecked else 'FAIL'}  {'every kernel ran':<58} {coverage}")
    controls(fast)
    failed = [ok for ok, _ in results].count(False)
    print(f"{len(results) - failed} of {len(results)} checks pass"
          f" ({'contracted' if args.fmad else 'uncontracted'} multiply-adds)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
