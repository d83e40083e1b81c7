"""Universal approximation, as in PRML figure 5.3: three tanh units fit four different functions.

A network with one hidden layer of tanh units and a linear output is a weighted sum of shifted,
stretched tanh curves (plus a constant). Even three such units fit x^2, sin(pi x), |x| and the
step function from 50 samples each: gradient descent picks where each tanh bends and how much it
counts. The objective is not convex, so each fit is restarted from several random initialisations
and the best one is kept.
"""

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from gpunn import nn, optim
from gpunn.datasets import regression_1d
from common import parse_args, save

TARGETS = {"square": "$x^2$", "sin": r"$\sin(\pi x)$", "abs": "$|x|$", "step": "step $[x \\geq 0]$"}
HIDDEN = 3


def fit(x, t, steps, restarts):
    """Full-batch Adam on the mean squared error; returns (best network, its training error)."""
    best, best_error = None, float("inf")
    for _ in range(restarts):
        net = nn.MLP([1, HIDDEN, 1], activation="tanh", device=x.device)
        opt = optim.Adam(net.parameters(), lr=0.05)
        for _ in range(steps):
            loss = nn.functional.mse_loss(net(x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with gpunn.no_grad():
            error = nn.functional.mse_loss(net(x), t).item()
        if error < best_error:
            best, best_error = net, error
    return best, best_error


def main():
    args = parse_args(__doc__, "universal_approximation")
    steps, restarts = (500, 2) if args.quick else (3000, 5)
    grid = np.linspace(-1, 1, 200, dtype=np.float32)[:, None]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=False)
    print(f"1-{HIDDEN}-1 tanh network, Adam lr 0.05, {steps} steps, best of {restarts} initialisations")
    for ax, (name, label) in zip(axes, TARGETS.items()):
        x_np, t_np = regression_1d(name, n=50, seed=args.seed)
        x, t = gpunn.tensor(x_np, device=args.device), gpunn.tensor(t_np, device=args.device)
        net, error = fit(x, t, steps, restarts)
        print(f"  {name:7s} training mean squared error {error:.5f}")
        with gpunn.no_grad():
            g = gpunn.tensor(grid, device=args.device)
            hidden = net[1](net[0](g)).numpy()
            y = net(g).numpy()
        ax.plot(grid, hidden, "--", lw=1, color="tab:gray", label="hidden units (tanh)")
        ax.plot(x_np, t_np, "o", ms=4, color="tab:blue", label="data (50 points)")
        ax.plot(grid, y, color="tab:red", lw=2, label="network output")
        ax.set(title=f"{label}   (MSE {error:.1e})", xlabel="x", xlim=(-1, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    keep = {label: h for h, label in zip(handles, labels)}  # one legend entry per kind of curve
    fig.legend(keep.values(), keep.keys(), loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.08))
    save(fig, args, "universal_approximation.png")


if __name__ == "__main__":
    main()
