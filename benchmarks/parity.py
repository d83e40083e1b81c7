"""Device parity: one seeded training run, repeated on several devices, gives the same losses.

Same seed, so the same initial weights (gpunn draws them on the host for every device); the same
digits batches in the same order; plain SGD with momentum. Every step's loss on each device must
equal the first device's within 1e-4 relative in float32 and 1e-10 in float64: only the order of
floating-point sums may differ between backends. Losses are read after the run, so the steps
themselves never wait for the host.

    python benchmarks/parity.py --devices cpu,cuda --steps 50
    python benchmarks/parity.py --devices cpu,strict --steps 5
    python benchmarks/parity.py --devices cpu,strict --steps 5 --perturb 1e-3   # must disagree

--perturb EPS scales the first layer's weights on every device but the first by (1 + EPS): a
negative control, which must be reported as a disagreement.

Exit status: 0 when every device agrees, 1 when one does not, 2 when a device cannot be used.
"""

import argparse
import sys

import numpy as np

import gpunn
from gpunn import functional as F
from gpunn import nn, optim
from gpunn.datasets import load_digits
from gpunn.errors import DeviceError

RTOL = {"float32": 1e-4, "float64": 1e-10}
SIZES = (64, 128, 64, 10)  # the digits: 8x8 pixels, 10 classes


def training_losses(device, dtype="float32", steps=50, seed=0, batch=64, lr=0.05, perturb=0.0):
    """Per-step losses of a seeded MLP trained on the digits on `device`."""
    dev = gpunn.device(device)
    features, labels = load_digits()
    order = np.random.default_rng(seed).permutation(len(features))  # host-side: identical everywhere
    gpunn.manual_seed(seed)
    model = nn.MLP(SIZES, activation="relu").to(dev, dtype)
    if perturb:
        first_weight = next(iter(model.parameters()))
        with gpunn.no_grad():
            first_weight *= 1.0 + perturb
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        start = (step * batch) % (len(order) - batch + 1)
        rows = order[start:start + batch]
        x = gpunn.tensor(features[rows], dtype=dtype, device=dev)
        y = gpunn.tensor(labels[rows], device=dev)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return [loss.item() for loss in losses]


def compare(reference, other, rtol):
    """(agree, worst relative difference, step where it happened) between two loss curves."""
    worst, where = 0.0, 0
    for step, (a, b) in enumerate(zip(reference, other)):
        if not (np.isfinite(a) and np.isfinite(b)):
            return False, float("inf"), step
        rel = abs(a - b) / max(abs(a), abs(b), 1e-30)
        if rel > worst:
            worst, where = rel, step
    return len(reference) == len(other) and worst <= rtol, worst, where


def run(devices, dtypes=("float32", "float64"), steps=50, seed=0, perturb=0.0):
    """One report row per (dtype, device other than the first): the comparison with the first."""
    report = []
    for dtype in dtypes:
        reference = training_losses(devices[0], dtype, steps, seed)
        for spec in devices[1:]:
            losses = training_losses(spec, dtype, steps, seed, perturb=perturb)
            agree, worst, where = compare(reference, losses, RTOL[dtype])
            report.append({"dtype": dtype, "reference": devices[0], "device": spec, "steps": steps,
                           "first_loss": reference[0], "last_loss": reference[-1], "other_last_loss": losses[-1],
                           "max_rel_diff": worst, "at_step": where, "rtol": RTOL[dtype], "agree": agree})
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; the first is the reference")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated: float32, float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", type=float, default=0.0,
                        help="scale the first layer's weights on the non-reference devices by 1 + PERTURB "
                             "(a negative control: parity must then fail)")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if len(devices) < 2 or args.steps < 1 or not set(dtypes) <= set(RTOL) or not dtypes:
        parser.error("give at least two --devices, --steps >= 1 and --dtypes from float32, float64")
    for spec in devices:
        try:
            gpunn.device(spec)
        except DeviceError as exc:
            print(f"parity: cannot use device {spec}: {exc}")
            return 2
    report = run(devices, dtypes, args.steps, args.seed, args.perturb)
    print(f"{'dtype':<9}{'devices':<18}{'steps':>6}{'last loss':>12}{'max rel diff':>14}{'at step':>9}"
          f"{'rtol':>8}  result")
    for r in report:
        pair = f"{r['reference']} vs {r['device']}"
        print(f"{r['dtype']:<9}{pair:<18}{r['steps']:>6}{r['last_loss']:>12.6f}{r['max_rel_diff']:>14.3g}"
              f"{r['at_step']:>9}{r['rtol']:>8.0e}  {'agree' if r['agree'] else 'DISAGREE'}")
    ok = all(r["agree"] for r in report)
    print("parity: all devices agree" if ok else "parity: DISAGREEMENT (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
