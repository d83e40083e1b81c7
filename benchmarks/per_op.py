"""gpunn's host cost per op: a chain of 31 small ops on 8x8 arrays (10 x (h * w + 0.1).tanh(), then
a sum), forward alone and forward + backward, against the same forward in NumPy. The arrays are
tiny, so the time is almost all Python: what every op of a hand-written model pays.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/per_op.py

Best of --repeats blocks of --number calls; compare trees by running it alternately.
"""

import argparse
import timeit

import numpy as np

import gpunn

OPS = 31  # 10 x (mul, add, tanh) + sum


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per block (default 2000)")
    parser.add_argument("--repeats", type=int, default=7, help="blocks; the best counts (default 7)")
    args = parser.parse_args(argv)

    x = gpunn.randn(8, 8, requires_grad=True)
    w = gpunn.randn(8, 8, requires_grad=True)
    xa, wa = x.numpy().copy(), w.numpy().copy()

    def forward():
        h = x
        for _ in range(10):
            h = (h * w + 0.1).tanh()
        return h.sum()

    def numpy_forward():
        h = xa
        for _ in range(10):
            h = np.tanh(h * wa + 0.1)
        return h.sum()

    for name, fn in (("gpunn forward", forward), ("gpunn forward+backward", lambda: forward().backward()),
                     ("numpy forward", numpy_forward)):
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeats)) / args.number * 1e6
        print(f"{name:<24}{best:8.1f} us  ({best / OPS:.2f} us per op)")


if __name__ == "__main__":
    main()
