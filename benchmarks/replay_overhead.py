"""Host cost of a compile_step call besides the graph itself: gpunn's bookkeeping per replay.

    python benchmarks/replay_overhead.py [--repeats 7] [--calls 2000]

On a GPU a recorded step of a small model takes the GPU about 70 us (784-256-256-10 at batch 128,
the issue's prototype); when the host needs longer than that to check the graph is still valid,
copy the batch in and launch it, the host is the bottleneck. This measures that host part on the
CPU: the cpu backend is given a capture that runs the step once and a replay that does nothing,
so each call is compile_step's own work (staleness check, upload check, state bookkeeping) plus
NumPy copies of the batch and the loss (about a microsecond each; CuPy's are 5-10 us more).
Best of `--repeats` runs of `--calls` calls, in microseconds per call.
"""

import argparse
import sys
import timeit

import numpy as np

import gpunn
from gpunn import nn, optim
from gpunn.functional import cross_entropy

OPTIMIZERS = {
    "SGD": lambda params: optim.SGD(params, lr=0.01, momentum=0.9, fused=True),
    "Adam": lambda params: optim.Adam(params, lr=1e-3, fused=True),
}


def give_cpu_a_null_graph():
    backend = gpunn.device("cpu").backend
    backend.capture = lambda run: (None, None, run())
    backend.replay = lambda graph: None
    backend.uploader = lambda array: (lambda host: array.__setitem__(..., host))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sizes", default="784-256-256-10")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    give_cpu_a_null_graph()
    sizes = [int(s) for s in args.sizes.split("-")]
    rng = np.random.default_rng(0)
    x = gpunn.tensor(rng.standard_normal((args.batch, sizes[0])).astype(np.float32))
    y = gpunn.tensor(rng.integers(0, sizes[-1], args.batch))
    print(f"compile_step call without the graph, {args.sizes} @{args.batch} (us per call, best of {args.repeats})")
    for name, make in OPTIMIZERS.items():
        model = nn.MLP(sizes)
        opt = make(model.parameters())
        step = gpunn.compile_step(model, cross_entropy, opt)
        for _ in range(4):
            step(x, y)
        if step.mode != "graph":
            print(f"{name}: runs eagerly ({step.reason})")
            return 1
        graph = next(iter(step._graphs.values()))
        call = min(timeit.repeat(lambda: step(x, y), number=args.calls, repeat=args.repeats)) / args.calls * 1e6
        stale = min(timeit.repeat(graph.stale, number=args.calls, repeat=args.repeats)) / args.calls * 1e6
        print(f"{name:<5} call {call:6.1f}   of which the staleness check {stale:5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
