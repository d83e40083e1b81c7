"""CPU against GPU: the same model and training step, timed on every usable device.

The graph is written once against the array API, so moving a model is `device=`: nothing else
changes. A GPU pays off when each step has enough arithmetic to hide the cost of launching
kernels; with a tiny model the CPU can be faster. Devices that cannot be used here are skipped,
with gpunn's reason. (--device is not used: list the devices to compare with --devices.)
"""

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


def ms_per_step(device, X, y, hidden, steps, warmup=3):
    """Train an MLP on (X, y) held on `device`; milliseconds per step after `warmup` untimed steps."""
    gpunn.manual_seed(0)
    model = nn.MLP([X.shape[1], hidden, hidden, 10], device=device)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    X, y = gpunn.tensor(X, device=device), gpunn.tensor(y, device=device)

    def step():
        loss = nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):  # first calls allocate memory and compile kernels
        step()
    device.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    device.synchronize()  # GPU work is asynchronous: wait for it before reading the clock
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / steps, loss.item()


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
            print(f"  {spec:8s} skipped: {reason}")
            continue
        timings[str(device)], loss = ms_per_step(device, X, y, hidden, steps)
        print(f"  {str(device):8s} {timings[str(device)]:9.2f} ms/step   (last loss {loss:.4f})")
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
