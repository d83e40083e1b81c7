"""CPU against GPU: the same model and training step, timed on every usable device.

The graph is written once against the array API, so moving a model is `device=`: nothing else
changes. A GPU pays off when each step has enough arithmetic to hide the cost of launching
kernels; with a tiny model the CPU can be faster. Devices that cannot be used here are skipped,
with gpunn's reason. (--device is not used: list the devices to compare with --devices.)

On a GPU the kernel launches themselves are the cost of a small model's step; `--compile` also
times each device's step through gpunn.compile_step, which on CUDA records the step into a CUDA
graph and replays it with one launch (elsewhere it runs eagerly, and says so).
"""

import warnings

import time

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from gpunn import nn, optim
from common import parse_args, save


def add_arguments(parser):
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated devices to compare (default cpu,cuda)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden layer width (default 1024, --quick 128)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 1024, --quick 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, --quick 5)")
    parser.add_argument("--compile", action="store_true", help="also time the step through gpunn.compile_step")


def usable(spec):
    """(gpunn.Device, None), or (None, why it cannot be used here)."""
    if spec.startswith("cuda"):
        index = int(spec.split(":")[1]) if ":" in spec else 0
        reason = gpunn.cuda.why_unavailable(index)
        if reason is not None:
            return None, reason
    try:
        return gpunn.device(spec), None
    except gpunn.DeviceError as exc:
        return None, str(exc)


def ms_per_step(device, X, y, hidden, steps, warmup=3, compiled=False):
    """Train an MLP on (X, y) held on `device`: (milliseconds per step after `warmup` untimed
    steps, the last loss, and why a compiled step ran eagerly, if it did)."""
    gpunn.manual_seed(0)
    model = nn.MLP([X.shape[1], hidden, hidden, 10], device=device)
    opt = optim.Adam(model.parameters(), lr=1e-3)  # fused by default on CUDA, as a graph needs
    X, y = gpunn.tensor(X, device=device), gpunn.tensor(y, device=device)
    graph_step = gpunn.compile_step(model, nn.functional.cross_entropy, opt) if compiled else None

    def step():
        if graph_step is not None:
            return graph_step(X, y)
        loss = nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gpunn.compile.CompileWarning)  # the reason is returned instead
        for _ in range(warmup):  # first calls allocate memory and compile kernels (and record the graph)
            step()
        device.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        device.synchronize()  # GPU work is asynchronous: wait for it before reading the clock
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / steps, loss.item(), graph_step.reason if graph_step is not None else None


def main():
    args = parse_args(__doc__, "compare_devices", add_arguments)
    hidden = args.hidden or (128 if args.quick else 1024)
    batch = args.batch or (128 if args.quick else 1024)
    steps = args.steps or (5 if args.quick else 20)
    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((batch, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    print(f"MLP 64-{hidden}-{hidden}-10, batch {batch}, Adam; {steps} timed steps per device")

    timings = {}
    for spec in [s.strip() for s in args.devices.split(",") if s.strip()]:
        device, reason = usable(spec)
        if device is None:
            print(f"  {spec:12s} skipped: {reason}")
            continue
        timings[str(device)], loss, _ = ms_per_step(device, X, y, hidden, steps)
        print(f"  {str(device):12s} {timings[str(device)]:9.2f} ms/step   (last loss {loss:.4f})")
        if args.compile:
            name = f"{device} graph"
            timings[name], loss, reason = ms_per_step(device, X, y, hidden, steps, compiled=True)
            note = f"; ran eagerly: {reason}" if reason else ""
            print(f"  {name:12s} {timings[name]:9.2f} ms/step   (last loss {loss:.4f}{note})")
    if not timings:
        raise SystemExit("no usable device to time")
    baseline_name, baseline = next(iter(timings.items()))
    for name, ms in list(timings.items())[1:]:
        print(f"  speed-up of {name} over {baseline_name}: {baseline / ms:.2f}x")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bars = ax.bar(list(timings), list(timings.values()), color="tab:blue")
    ax.bar_label(bars, labels=[f"{ms:.1f} ms" for ms in timings.values()])
    ax.set(ylabel="ms per training step", title=f"MLP 64-{hidden}-{hidden}-10, batch {batch}")
    save(fig, args, "compare_devices.png")


if __name__ == "__main__":
    main()
