"""What mixed precision costs a float32 step that does not use it: the autocast check in `apply`
and the half-precision test in the matrix products (gpunn.ops._product), measured in one process.

The tiny 64-32-10 MLP at batch 32 with SGD (all per-op overhead) steps alternately with the code as
it is and with both removed (apply re-made from its source without the check; _product replaced by
a plain product), many blocks each; the medians and their ratio are printed. On a busy machine
that ratio is noise, so the script also times the two additions alone (per call, timeit) and
counts how often one step makes them: their product is the added cost per step. Run with NumPy's
BLAS at full speed:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/amp_overhead.py
"""

import argparse
import inspect
import statistics
import sys
import textwrap
import time

import gpunn
from gpunn import ops
from gpunn.cli import bench

tensor = sys.modules["gpunn.tensor"]  # the module (gpunn.tensor is also the function tensor())


def _without_check():
    """`apply` compiled from its own source minus the autocast lines, in tensor's namespace."""
    source = textwrap.dedent(inspect.getsource(tensor.apply))
    lines = source.splitlines()
    kept = [ln for ln in lines if "_amp." not in ln]  # the if line and its body
    assert len(kept) == len(lines) - 2, "the autocast lines in apply were not found"
    namespace = {}
    exec("\n".join(kept), tensor.__dict__, namespace)
    return namespace["apply"]


def _plain_product(xp, a, b, bias=None):
    y = a @ b
    if bias is not None:
        y += bias
    return y


def _use(apply, product):
    original = tensor.apply
    for module in list(sys.modules.values()):
        if module is not None and module.__name__.startswith("gpunn") and getattr(module, "apply", None) is original:
            module.apply = apply
    ops._product = product


def _added_cost(step):
    """(apply calls, products, ns per check, ns per half test) for one step of `step`."""
    import timeit

    import numpy as np

    counts = {"apply": 0, "product": 0}
    apply, product = tensor.apply, ops._product

    def counting_apply(*args, **kwargs):
        counts["apply"] += 1
        return apply(*args, **kwargs)

    def counting_product(*args, **kwargs):
        counts["product"] += 1
        return product(*args, **kwargs)

    _use(counting_apply, counting_product)
    try:
        step.step()
    finally:
        _use(apply, product)
    amp_state, prim, a = tensor._amp.state, ops.linear, np.ones((2, 2), np.float32)
    n = 1_000_000
    check = min(timeit.repeat(lambda: prim.autocast is not None and amp_state.enabled, number=n, repeat=5))
    empty = min(timeit.repeat(lambda: None, number=n, repeat=5))
    half = min(timeit.repeat(lambda: a.dtype not in ops.HALF_DTYPES, number=n, repeat=5))
    return counts["apply"], counts["product"], (check - empty) / n * 1e9, (half - empty) / n * 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed block")
    args = parser.parse_args(argv)
    weights, x, y = bench.make_problem((64, 32, 10), 32)
    step = bench.GpunnStep("cpu", weights, x, y, 0.01)
    variants = {"as is": (tensor.apply, ops._product), "without": (_without_check(), _plain_product)}
    times = {name: [] for name in variants}
    for _ in range(5):
        step.step()
    for _ in range(args.repeats):
        for name, (apply, product) in variants.items():
            _use(apply, product)
            start = time.perf_counter()
            for _ in range(args.steps):
                step.step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e6)
        _use(*variants["as is"])
    with_us, without_us = statistics.median(times["as is"]), statistics.median(times["without"])
    print(f"64-32-10 MLP, batch 32, SGD, {args.repeats} x {args.steps} steps each, alternating (gpunn "
          f"{gpunn.__version__})")
    best_with, best_without = min(times["as is"]), min(times["without"])
    print(f"  with the autocast check:    {with_us:7.2f} us/step median, {best_with:7.2f} min")
    print(f"  without it:                 {without_us:7.2f} us/step median, {best_without:7.2f} min")
    print(f"  ratio: {with_us / without_us:.4f} (medians), {best_with / best_without:.4f} (minima)")
    applies, products, check_ns, half_ns = _added_cost(step)
    added = (applies * check_ns + products * half_ns) / 1e3
    print(f"  per step: {applies} apply calls x {check_ns:.0f} ns (the check) + {products} products x {half_ns:.0f} "
          f"ns (the half test) = {added:.2f} us, {100 * added / without_us:.2f}% of the median step")


if __name__ == "__main__":
    main()
