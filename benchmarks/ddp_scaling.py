"""Data-parallel scaling on the CPU: samples per second at 1 and 2 ranks, one BLAS thread per rank.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ddp_scaling.py [--ranks 1,2] [--steps 20]

Starts `mpiexec -n N` (the one next to this Python) for each N and prints, per model, the global
batch, samples/s, the speed-up over one rank and the all-reduce's share of the step (time inside
DistributedDataParallel's reduction, including waiting for the slower rank). Each rank trains
784-1024x3-10 at global batch 512 and 784-256-256-10 at 128 with SGD (momentum 0.9) on random data,
fused by default: the optimizer's flat gradient buffer is all-reduced in place (--unfused: the
gradients are packed into one buffer and unpacked after).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS = [("784-1024x3-10", [784, 1024, 1024, 1024, 10], 512), ("784-256-256-10", [784, 256, 256, 10], 128)]


def worker(steps, fused):
    import numpy as np

    import gpunn
    import gpunn.distributed as dist
    import gpunn.nn.parallel as parallel

    dist.init_process_group()
    gpunn.set_num_threads(1)
    spent = [0.0]
    reduce = parallel.DistributedDataParallel.reduce_gradients

    def timed(self):
        start = time.perf_counter()
        reduce(self)
        spent[0] += time.perf_counter() - start

    parallel.DistributedDataParallel.reduce_gradients = timed
    rows = []
    for name, sizes, batch in MODELS:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch * 8, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch * 8)
        gpunn.manual_seed(0)
        model = gpunn.nn.MLP(sizes)
        net = parallel.DistributedDataParallel(model)
        opt = gpunn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=fused)
        loader = gpunn.data.DataLoader(X, y, batch_size=batch, shuffle=True, seed=0, distributed=True)

        def run(count):
            done = 0
            while done < count:
                for xb, yb in loader:
                    opt.zero_grad()
                    gpunn.functional.cross_entropy(net(xb), yb).backward()
                    opt.step()
                    done += 1
                    if done == count:
                        return

        run(3)  # warm-up
        dist.barrier()
        spent[0] = 0.0
        start = time.perf_counter()
        run(steps)
        dist.barrier()
        elapsed = time.perf_counter() - start
        share = dist.all_gather_object(spent[0] / elapsed)
        rows.append({"model": name, "batch": batch, "ranks": dist.get_world_size(), "step_ms": 1e3 * elapsed / steps,
                     "samples_per_s": steps * batch / elapsed, "allreduce_share": max(share)})
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--unfused", dest="fused", action="store_false",
                        help="per-parameter SGD (DDP packs the gradients) instead of flat buffers (reduced in place)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.fused)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    mpiexec = Path(sys.executable).parent / "mpiexec"
    results = {}
    for n in map(int, args.ranks.split(",")):
        command = [str(mpiexec), "-n", str(n), sys.executable, __file__, "--worker", "--steps", str(args.steps)]
        out = subprocess.run(command + ([] if args.fused else ["--unfused"]), capture_output=True, text=True, env=env,
                             check=True)
        line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
        for row in json.loads(line[len("RESULT "):]):
            results[(row["model"], n)] = row
    print(f"{'model':<16} {'batch':>5} {'ranks':>5} {'step ms':>8} {'samples/s':>10} {'speed-up':>8} {'all-reduce':>10}")
    for name, _, _ in MODELS:
        base = results.get((name, 1))
        for n in map(int, args.ranks.split(",")):
            r = results[(name, n)]
            up = r["samples_per_s"] / base["samples_per_s"] if base else float("nan")
            print(f"{name:<16} {r['batch']:>5} {n:>5} {r['step_ms']:>8.2f} {r['samples_per_s']:>10.0f} {up:>8.2f}x "
                  f"{100 * r['allreduce_share']:>9.1f}%")


if __name__ == "__main__":
    main()
