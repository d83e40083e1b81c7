"""Run by tests/distributed/test_distributed.py under `mpiexec -n N` (never collected by pytest itself).

    python tests/distributed/distributed_worker.py SCENARIO OUT [VARIANT]

Rank 0 writes what the test compares into OUT (.npz or .json). VARIANT "sum" (no averaging) and
"drop-tail" (sharding that loses the ragged tail) are the deliberately wrong negative controls.
"""

import json
import sys

import numpy as np

import gpunn
import gpunn.distributed as dist
from gpunn.nn.parallel import DistributedDataParallel

# the equivalence runs: (optimizer, fused, clip); 103 samples in global batches of 17: the ragged last
# batch has one sample, so some ranks' shares of it are empty
CASES = [("sgd", False, None), ("sgd", True, 0.5), ("adam", False, 0.5), ("adam", True, None)]
N_SAMPLES, BATCH, EPOCHS = 103, 17, 3


def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N_SAMPLES, 5))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, y


def train(case, ddp, seed=0, device="cpu", accumulate=False):
    """Train an MLP on the data above; `ddp`: through DistributedDataParallel and a sharded loader;
    `accumulate`: each rank's share in two halves, the first backward under no_sync()."""
    name, fused, clip = case
    gpunn.manual_seed(seed)
    model = gpunn.nn.MLP([5, 8, 3], dtype="float64", device=device)
    net = DistributedDataParallel(model) if ddp else model
    fused = fused if getattr(gpunn.device(device).backend, "views", False) else None  # strict: no flat buffers
    if name == "sgd":
        opt = gpunn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused)
    else:
        opt = gpunn.optim.Adam(model.parameters(), lr=0.01, fused=fused)
    loader = gpunn.data.DataLoader(*data(), batch_size=BATCH, shuffle=True, seed=3, dtype="float64",
                                   distributed=ddp, device=device)
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad()
            if xb.shape[0] == 0:  # an empty share: no loss to take, but the rank joins the reduction
                net.reduce_gradients()
            elif accumulate:
                half = xb.shape[0] // 2
                if half:  # (a share of one sample has only a second half)
                    with net.no_sync():
                        (gpunn.functional.cross_entropy(net(xb[:half]), yb[:half]) * (half / xb.shape[0])).backward()
                rest = xb.shape[0] - half
                (gpunn.functional.cross_entropy(net(xb[half:]), yb[half:]) * (rest / xb.shape[0])).backward()
            else:
                gpunn.functional.cross_entropy(net(xb), yb).backward()
            if clip is not None:
                gpunn.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    return [p.numpy() for p in model.parameters()]


def equivalence(out, variant):
    if variant == "sum":
        import gpunn.nn.parallel as parallel
        parallel._weight = lambda local, total, world_size: 1.0
    elif variant == "drop-tail":
        import gpunn.data
        share = gpunn.data._share
        gpunn.data._share = lambda begin, end, rank, size: share(begin, begin + (end - begin) // size * size, rank,
                                                                   size)
    arrays = {f"{i}-{j}": a for i, case in enumerate(CASES) for j, a in enumerate(train(case, ddp=True))}
    reductions, reduce = [0], DistributedDataParallel.reduce_gradients
    DistributedDataParallel.reduce_gradients = lambda self: reductions.__setitem__(0, reductions[0] + 1) or reduce(self)
    arrays.update({f"no_sync-{j}": a for j, a in enumerate(train(CASES[0], ddp=True, accumulate=True))})
    arrays["no_sync_reductions"] = np.array(reductions[0])  # one per step: none under no_sync()
    if dist.get_rank() == 0:
        np.savez(out, **arrays)


def staged(out, variant):
    """DDP on a device MPI cannot reach directly (VARIANT: strict, or cuda under the fake CuPy):
    gradients staged through host memory; rank 0 writes the largest difference from one process
    on the cpu, and what compile_step said about a DDP step there."""
    import warnings

    worst = 0.0
    for case in CASES:
        got = train(case, ddp=True, device=variant)
        if dist.get_rank() == 0:
            worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(got, train(case, ddp=False))))
    model = gpunn.nn.MLP([5, 3], dtype="float64", device=variant)
    step = gpunn.compile_step(DistributedDataParallel(model), gpunn.functional.cross_entropy,
                              gpunn.optim.SGD(model.parameters(), lr=0.1))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        step(gpunn.ones((4, 5), dtype="float64", device=variant), gpunn.zeros(4, dtype="int64", device=variant))
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump({"worst": worst, "said": [str(w.message) for w in said]}, f)


def seeds(out, variant):
    """Each rank builds its model from its own seed; after DDP every rank holds rank 0's."""
    gpunn.manual_seed(100 + dist.get_rank())
    model = gpunn.nn.MLP([5, 8, 3])
    if variant != "no-ddp":
        DistributedDataParallel(model)
    mine = np.concatenate([p.numpy().ravel() for p in model.parameters()]).tolist()
    everyone = dist.all_gather_object(mine)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)


def mismatch(out, variant):
    """Rank 1 builds a wider model: DDP must refuse (the excepthook then ends the job)."""
    gpunn.manual_seed(0)
    DistributedDataParallel(gpunn.nn.MLP([5, 8 + dist.get_rank(), 3]))


def timeout(out, variant):
    """Rank 1 never joins the all-reduce: rank 0 must abort the job naming the operation."""
    if dist.get_rank() == 0:
        dist.all_reduce(gpunn.ones(3), op="sum")
    else:
        import time
        time.sleep(60)


def collectives(out, variant):
    """all_reduce with every op, broadcast and broadcast_object, as rank 0 sees them."""
    rank = dist.get_rank()
    results = {op: dist.all_reduce(gpunn.tensor([rank + 1.0, -rank], dtype="float64"), op=op).tolist()
               for op in ("sum", "avg", "max", "min")}
    results["broadcast"] = dist.broadcast(gpunn.tensor([float(rank)] * 2), src=1).tolist()
    results["object"] = dist.broadcast_object({"from": rank} if rank == 1 else None, src=1)
    results["local"] = [dist.get_local_rank(), dist.get_world_size()]
    dist.barrier()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


def cli(fault, argv):
    """`gpunn train argv` with a fault injected on rank 1 at its `at`-th training batch: 'raise' (an
    exception), 'error' (a GpunnError: the `gpunn: error:` exit), 'kill' (SIGKILL), 'sigint' (Ctrl-C
    on that rank alone), or 'none'."""
    import os
    import signal

    import gpunn.cli
    import gpunn.functional

    kind, _, at = fault.partition("@")
    if os.environ.get("PMI_RANK") == "1" and kind != "none":
        loss, calls = gpunn.functional.cross_entropy, [0]

        def faulty(*args, **kwargs):
            if gpunn.is_grad_enabled():
                calls[0] += 1
                if calls[0] == int(at):
                    if kind == "raise":
                        raise RuntimeError("injected fault")
                    if kind == "error":
                        raise gpunn.GpunnError("injected failure")
                    os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGINT)
            return loss(*args, **kwargs)

        gpunn.functional.cross_entropy = faulty
    sys.exit(gpunn.cli.main(argv))


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        cli(sys.argv[2], sys.argv[3:])
    scenario, out = sys.argv[1], sys.argv[2]
    variant = sys.argv[3] if len(sys.argv) > 3 else ""
    dist.init_process_group(timeout=2 if scenario == "timeout" else None)
    {"equivalence": equivalence, "seeds": seeds, "mismatch": mismatch, "timeout": timeout,
     "collectives": collectives, "staged": staged}[scenario](out, variant)
    dist.destroy_process_group()
