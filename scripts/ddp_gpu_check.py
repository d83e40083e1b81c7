"""Data parallelism on CUDA, run by scripts/gpu_check.sh under mpiexec (needs a GPU, mpi4py, mpich):

    mpiexec -n 1 python scripts/ddp_gpu_check.py     # NCCL with one rank
    mpiexec -n 2 python scripts/ddp_gpu_check.py     # two ranks on one GPU (or one GPU each)

Prints NCCL's version and which engine moves the gradients; checks an all-reduce, that DDP over
the ranks trains (float32, 2 epochs of the digits, global batch 128, SGD with momentum, fused) equal
to one process within 1e-5, and that compile_step records a DDP step into a CUDA graph when the
engine is NCCL (equal within 1e-5 again). Two ranks on one GPU need NCCL >= 2.30 with
NCCL_MULTI_RANK_GPU_ENABLE=1 (set here); with an older NCCL they go through host staging over MPI.
Exit status 0 when every check holds.
"""

import os
import sys

import numpy as np

import gpunn
import gpunn.distributed as dist
from gpunn.nn.parallel import DistributedDataParallel


def train(device, ddp, compile=False):
    X, y = gpunn.datasets.load_digits()
    gpunn.manual_seed(0)
    model = gpunn.nn.MLP([64, 128, 10], device=device)
    net = DistributedDataParallel(model) if ddp else model
    opt = gpunn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = gpunn.data.DataLoader(X, y, batch_size=128, shuffle=True, seed=0, device=device, dtype="float32",
                                   distributed=ddp)
    step = gpunn.compile_step(net, gpunn.functional.cross_entropy, opt) if compile else None
    for _ in range(2):
        for xb, yb in loader:
            if step is not None:
                step(xb, yb)
                continue
            opt.zero_grad()
            gpunn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
    return [p.numpy() for p in model.parameters()], step.mode if step is not None else None


def main():
    version = dist.nccl_version()
    size = dist.launched()
    backend = "auto"
    if size > 1 and gpunn.cuda.device_count() < size:  # ranks share a GPU
        if version is not None and version >= 23000:
            os.environ["NCCL_MULTI_RANK_GPU_ENABLE"] = "1"
        else:
            backend = "mpi"  # NCCL refuses two ranks on one GPU before 2.30: host staging
    dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    device = gpunn.device(f"cuda:{dist.get_local_rank() % gpunn.cuda.device_count()}")
    engine = dist.backend_of(device)
    say = print if rank == 0 else (lambda *a: None)
    say(f"NCCL {version}; {dist.get_world_size()} rank(s) on {gpunn.cuda.device_count()} GPU(s); gradients via {engine}")
    t = gpunn.full((5,), float(rank + 1), device=device)
    dist.all_reduce(t, op="sum")
    n = dist.get_world_size()
    ok = bool(np.all(t.numpy() == n * (n + 1) / 2))
    say(f"all_reduce: {'ok' if ok else 'WRONG ' + str(t.numpy())}")
    reference, _ = train(device, ddp=False)
    for compile in (False, True):
        got, mode = train(device, ddp=True, compile=compile)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(got, reference))
        good = worst < 1e-5 and (not compile or engine != "nccl" or mode == "graph")
        ok = ok and good
        say(f"DDP{' + compile_step (' + str(mode) + ')' if compile else ''}: largest difference from one "
            f"process {worst:.2e} {'ok' if good else 'WRONG'}")
    verdicts = dist.all_gather_object(ok)
    dist.destroy_process_group()
    say("DDP GPU CHECK " + ("PASSED" if all(verdicts) else "FAILED"))
    sys.exit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    main()
