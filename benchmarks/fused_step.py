"""Fused (flat-buffer) optimizers against the per-parameter path, on one device.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fused_step.py --threads 1
    python benchmarks/fused_step.py --device cuda          # on a GPU machine

For each model and optimizer (SGD, Adam) both versions are built from the same seed and timed
alternately in blocks of steps (forward, cross-entropy, backward, update), with the device
synchronized around each block; prints the median step time of each and fused / per-parameter.
Also prints the host cost of one step of a tiny model (4-4-4-3 at batch 2), where the arrays are
too small to matter: gpunn's own Python per step, split into forward, backward and update.
"""

import argparse
import statistics
import time

import gpunn
from gpunn import functional as F, nn, optim
from gpunn.cli import bench

CONFIGS = [((64, 256, 128, 10), 64, 200), ((784, 256, 256, 10), 128, 40), ((784, 1024, 1024, 1024, 10), 512, 3)]


def make_step(device, optimizer, sizes, batch, fused):
    gpunn.manual_seed(0)
    model = nn.MLP(list(sizes)).to(device)
    opt = getattr(optim, optimizer)(model.parameters(), lr=1e-3, fused=fused)
    x, y = gpunn.randn(batch, sizes[0], device=device), gpunn.randint(sizes[-1], (batch,), device=device)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(3):
        step()
    return step


def block_ms(step, n, dev):
    dev.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    dev.synchronize()
    return (time.perf_counter() - start) / n * 1e3


def host_cost(device, repeats=2000):
    """Microseconds per phase of a tiny model's step (arrays of a few numbers)."""
    gpunn.manual_seed(0)
    model = nn.MLP([4, 4, 4, 3]).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, fused=True)
    x, y = gpunn.randn(2, 4, device=device), gpunn.randint(3, (2,), device=device)
    phases = {"forward+loss": 0.0, "zero_grad+backward": 0.0, "step": 0.0}
    for k in range(repeats + 100):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if k >= 100:
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                phases[name] += dt / repeats * 1e6
    return phases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per version (default 15)")
    parser.add_argument("--threads", type=int, default=None, help="limit NumPy's BLAS to this many threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        bench.limit_threads(args.threads)
    dev = gpunn.device(args.device)
    print(f"device {dev}; median of {args.repeats} alternating blocks; ratio = fused / per-parameter")
    for sizes, batch, n in CONFIGS:
        for optimizer in ("SGD", "Adam"):
            steps = {fused: make_step(dev, optimizer, sizes, batch, fused) for fused in (False, True)}
            times = {False: [], True: []}
            for rep in range(args.repeats):
                for fused in ((False, True) if rep % 2 else (True, False)):
                    times[fused].append(block_ms(steps[fused], n, dev))
            per, fused = statistics.median(times[False]), statistics.median(times[True])
            print(f"{'-'.join(map(str, sizes))} @{batch} {optimizer:<4}  per-parameter {per:9.3f} ms   "
                  f"fused {fused:9.3f} ms   {fused / per:.3f}")
    phases = host_cost(dev)
    print("host cost of a 4-4-4-3 step at batch 2 (us): "
          + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) + f", total {sum(phases.values()):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
