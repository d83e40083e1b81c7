"""Where does gpunn's training step spend its time? cProfile over many steps, top entries by tottime.

For small models the Python work per op (dispatch, graph recording, backward bookkeeping) is a
visible share of the step; this shows which functions it sits in.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/profile_step.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/profile_step.py --sizes 784-1024-1024-1024-10 --batch 512 --steps 20
"""

import argparse
import cProfile
import io
import pstats
import sys

from gpunn.cli import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=bench.parse_sizes, default=bench.parse_sizes("784-256-256-10"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    parser.add_argument("--threads", type=int, default=None, help="limit NumPy's BLAS to this many threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        bench.limit_threads(args.threads)

    sizes = args.sizes[0]
    weights, x, y = bench.make_problem(sizes, args.batch, args.dtype)
    step = bench.GpunnStep(args.device, weights, x, y, 0.01)
    for _ in range(5):
        step.step()
    plain = min(bench.time_block(step, max(1, args.steps // 3)) for _ in range(3))  # best of 3: spikes excluded
    profiler = cProfile.Profile()
    profiler.enable()
    bench.time_block(step, args.steps)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats(args.sort).print_stats(args.top)
    calls = sum(s[1] for s in stats.stats.values())  # calls of every function, recursive ones included
    print(f"{'-'.join(map(str, sizes))} @{args.batch} on {args.device}, {args.dtype}: {plain * 1e3:.3f} ms per step "
          f"unprofiled; {calls / args.steps:.0f} Python function calls per step")
    print(text.getvalue().rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
