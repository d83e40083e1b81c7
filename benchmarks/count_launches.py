"""Kernel launches per training step on CUDA, counted on the fake CuPy (no GPU needed).

    PYTHONPATH=tests/cuda/fake_cuda python benchmarks/count_launches.py [--sizes 784-256-256-10] [--batch 128]

A small model's eager step on a GPU is bound by the host: each launch (kernel, cuBLAS call, copy)
costs CuPy 10-20 us of Python and driver time whatever its size. So the number of launches per
step, by phase and by kind, is a figure to drive down that needs no GPU time to measure (the H100
timings of BENCHMARKS.md confirm it matters); a recorded step (compile_step) replays its launches in one graph, and what it launches outside
the graph (copying the batch in, uploading the learning rate) is counted apart.
"""

import argparse
import collections
import sys

import numpy as np

import gpunn
from cupy import _fake
from gpunn import nn, optim
from gpunn.functional import cross_entropy

OPTIMIZERS = {
    "SGD": lambda params: optim.SGD(params, lr=0.01, momentum=0.9),
    "Adam": lambda params: optim.Adam(params, lr=1e-3),
}


def summary(launches):
    kinds = collections.Counter(name for name, _ in launches)
    return f"{len(launches):3d}  " + ", ".join(f"{name} {n}" for name, n in kinds.most_common())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="784-256-256-10")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split("-")]
    cuda = gpunn.device("cuda")
    rng = np.random.default_rng(0)
    x = gpunn.tensor(rng.standard_normal((args.batch, sizes[0])).astype(np.float32), device=cuda)
    y = gpunn.tensor(rng.integers(0, sizes[-1], args.batch), device=cuda)
    print(f"launches per step, {args.sizes} @{args.batch}, float32, on the fake CuPy")
    for name, make in OPTIMIZERS.items():
        model = nn.MLP(sizes).to(cuda)
        opt = make(model.parameters())
        for _ in range(2):  # state and flat buffers exist from here on
            loss = cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        phases = {}
        with _fake.count_launches() as phases["forward + loss"]:
            loss = cross_entropy(model(x), y)
        with _fake.count_launches() as phases["zero_grad"]:
            opt.zero_grad()
        with _fake.count_launches() as phases["backward"]:
            loss.backward()
        with _fake.count_launches() as phases["step"]:
            opt.step()
        total = [launch for found in phases.values() for launch in found]
        print(f"\n{name}, eager (fused optimizer): {summary(total)}")
        for phase, found in phases.items():
            print(f"  {phase:<15} {summary(found)}")

        model = nn.MLP(sizes).to(cuda)
        opt = make(model.parameters())
        step = gpunn.compile_step(model, cross_entropy, opt)
        with _fake.count_launches() as first:
            for _ in range(3):  # eager warm-up, then the capture
                step(x, y)
        with _fake.count_launches() as replay:
            step(x, y)
        if step.mode != "graph":
            print(f"{name}, compile_step: ran eagerly ({step.reason})")
            return 1
        graph = [launch for launch in first if launch[1]]
        print(f"{name}, compile_step: graph {summary(graph)}")
        print(f"  {'each call':<15} {summary(replay)} (+ the graph launch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
