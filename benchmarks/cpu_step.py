"""The published CPU comparison: one gpunn training step against hand-written NumPy and PyTorch.

Three models: 64-32-10 at batch 32 (tiny: almost all per-op Python cost), 784-256-256-10 at batch
128 (small: per-op Python overhead shows) and 784-1024-1024-1024-10 at batch 512 (large: the matrix
products dominate). Each contender gets the
same weights and batch and takes whole training steps (forward, softmax cross-entropy, backward,
SGD); the contenders are timed alternately, many repeats each, and the ratios gpunn / baseline are
printed against the targets. Run it with NumPy's BLAS at full speed:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cpu_step.py

Options: --repeats, --block-ms, --dtype, --no-torch, --json PATH (the numbers, for BENCHMARKS.md).
"""

import argparse
import json
import statistics
import sys

from gpunn.cli import bench

CONFIGS = [((64, 32, 10), 32, 1.6), ((784, 256, 256, 10), 128, 1.15), ((784, 1024, 1024, 1024, 10), 512, 1.05)]
"""(layer widths, batch size, target for gpunn time / NumPy time). The tiny first model is nearly all
per-op Python cost (the lecture's networks are this size)."""


def compare(sizes, batch, dtype, repeats, warmup, block_s, torch):
    weights, x, y = bench.make_problem(sizes, batch, dtype)
    contenders = [bench.GpunnStep("cpu", weights, x, y, 0.01), bench.NumpyStep(weights, x, y, 0.01)]
    if torch is not None:
        contenders.append(bench.TorchStep(torch, "cpu", weights, x, y, 0.01))
    first, _, times, blocks = bench.measure(contenders, repeats, warmup, block_s)
    result = {c.impl: {"median_ms": statistics.median(t) * 1e3, "min_ms": min(t) * 1e3, "max_ms": max(t) * 1e3,
                       "steps_per_repeat": b, "first_loss": f}
              for c, t, b, f in zip(contenders, times, blocks, first)}
    rtol = bench.FIRST_LOSS_RTOL[dtype]
    result["loss_check_ok"] = all(bench.losses_agree(r["first_loss"], result["numpy"]["first_loss"], rtol)
                                  for k, r in result.items() if k != "numpy" and isinstance(r, dict))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed blocks per contender (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per contender first (default 5)")
    parser.add_argument("--block-ms", type=float, default=200.0, help="shortest timed block (default 200 ms)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit NumPy's BLAS and PyTorch to this many threads (default: as configured); "
                             "one thread is less disturbed by other busy processes")
    parser.add_argument("--json", help="also write the numbers and the machine description here")
    parser.add_argument("--only", help="run only the model whose widths are given, e.g. 64-32-10")
    args = parser.parse_args(argv)

    torch = None
    if not args.no_torch:
        torch, note = bench.import_torch()
        if note:
            print(f"note: {note}")
    if args.threads is not None:
        bench.limit_threads(args.threads, torch)
    slow = bench.slow_blas_settings()
    if slow:
        print(f"WARNING: {' '.join(f'{k}={v}' for k, v in slow.items())} is set, so NumPy's BLAS runs far below "
              f"its speed; run: env {' '.join(f'-u {k}' for k in slow)} python benchmarks/cpu_step.py")
    machine = bench.machine_info([], torch)
    blas = ", ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} x{p.get('num_threads')} threads"
                     for p in machine.get("threadpools") or [] if p.get("user_api") == "blas")
    print(f"{machine['cpu']}, {machine['cpus_usable']} CPU(s); Python {machine['python']}; "
          f"numpy {machine['versions'].get('numpy')} ({blas or 'BLAS unknown'})"
          + (f"; torch {torch.__version__} x{torch.get_num_threads()} threads" if torch else ""))
    print(f"{args.dtype}; median of {args.repeats} repeats, contenders interleaved; ratio = gpunn time / baseline time")

    results = {}
    for sizes, batch, target in CONFIGS:
        if args.only and args.only != "-".join(map(str, sizes)):
            continue
        name = f"{'-'.join(map(str, sizes))} @{batch}"
        r = results[name] = compare(sizes, batch, args.dtype, args.repeats, args.warmup, args.block_ms / 1e3, torch)
        r["target_vs_numpy"] = target
        g = r["gpunn"]["median_ms"]
        print(f"\n{name}   ({bench.parameter_count(sizes):,} parameters)")
        for impl in ("gpunn", "numpy", "torch"):
            if impl in r:
                t = r[impl]
                ratio = "" if impl == "gpunn" else (f"   gpunn/{impl} = {g / t['median_ms']:.3f}x "
                                                    f"(of minima: {r['gpunn']['min_ms'] / t['min_ms']:.3f}x)")
                print(f"  {impl:<6}{t['median_ms']:>10.3f} ms  [{t['min_ms']:.3f} .. {t['max_ms']:.3f}]"
                      f"  x{t['steps_per_repeat']} steps/repeat{ratio}")
        ratio = g / r["numpy"]["median_ms"]
        r["gpunn_over_numpy"] = ratio
        if "torch" in r:
            r["gpunn_over_torch"] = g / r["torch"]["median_ms"]
        print(f"  target gpunn/numpy <= {target:.2f}x: {'met' if ratio <= target else 'NOT met'} ({ratio:.3f}x)")
        if not r["loss_check_ok"]:
            print("  WARNING: first-step losses differ between gpunn and NumPy (same weights and batch)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "dtype": args.dtype, "repeats": args.repeats, "results": results},
                      f, indent=2, default=str)
    return 0 if all(r["loss_check_ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
