"""The host cost of one model's training step, best of many blocks: for comparing two trees.

Runs gpunn's step (nn.MLP, cross_entropy, SGD; gpunn.cli.bench.GpunnStep) and the hand-written NumPy
step on the same weights and batch, 3 rounds of 7 blocks each, and prints the best block of each
and their ratio. The best block is what a busy machine disturbs least, so alternating runs of two
checkouts (PYTHONPATH=<checkout>) compare their per-step Python cost:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_best_of.py 64-32-10 32 500
"""

import sys
import time

from gpunn.cli import bench


def best(step, steps, blocks=7):
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step.step()
        times.append((time.perf_counter() - start) / steps)
    return min(times)


def main(argv):
    widths, batch, steps = argv[0] if argv else "64-32-10", int(argv[1]) if len(argv) > 1 else 32, \
        int(argv[2]) if len(argv) > 2 else 500
    bench.limit_threads(1)
    weights, x, y = bench.make_problem(tuple(int(s) for s in widths.split("-")), batch, "float32")
    gpunn_step, numpy_step = bench.GpunnStep("cpu", weights, x, y, 0.01), bench.NumpyStep(weights, x, y, 0.01)
    for _ in range(200):
        gpunn_step.step()
        numpy_step.step()
    g = min(best(gpunn_step, steps) for _ in range(3))
    n = min(best(numpy_step, steps) for _ in range(3))
    print(f"{widths} @{batch}: gpunn {g * 1e6:.1f} us  numpy {n * 1e6:.1f} us  ratio {g / n:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
