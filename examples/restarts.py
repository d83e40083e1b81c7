"""Non-convex optimisation: restarts, gradient clipping and adaptive step sizes.

1. Restarts. A network's loss is not convex in its weights, so where gradient descent ends depends
   on where it starts. A 2-2-1 tanh network on noisy XOR, trained from many random
   initialisations, ends either near zero loss or stuck in a poor local minimum (one corner of the
   square on the wrong side). Training several times and keeping the best is the simple remedy:
   the best of n falls quickly with n.

2. Cliffs. Deep compositions (long tanh chains, recurrent nets) make objectives with steep walls.
   A gradient step is learning rate times gradient, so on a wall plain SGD is thrown far away,
   here onto a flat stretch where the gradient vanishes and it stays. Clipping the gradient norm
   bounds the step; Adam and RMSprop divide by a running size of the gradient, which bounds it too
   (and, remembering the wall's huge gradients, they creep for a while after it).
   The objective below is 1-D so the whole landscape fits in a plot:
       L(theta) = 1 - exp(-theta^2 / 2) + 10 * clip((theta - 1) / 0.2, 0, 1)
   a valley at 0 that flattens out far away, and a wall of height 10 and slope 50 at theta = 1..1.2.
"""

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from gpunn import nn, optim
from gpunn.datasets import xor
from common import parse_args, save


def train_xor(X, y, steps):
    """One run from a fresh random initialisation; returns the final training loss."""
    net = nn.MLP([2, 2, 2], activation="tanh", device=X.device)
    opt = optim.Adam(net.parameters(), lr=0.03)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def cliff(theta):
    wall = ((theta - 1) / 0.2).clip(0, 1)
    return 1 - (-theta * theta / 2).exp() + 10 * wall


def descend(make_optimizer, device, steps, max_norm=None):
    """Minimise the cliff objective from theta = 2.5; returns the thetas and losses visited."""
    theta = gpunn.tensor([2.5], dtype="float64", device=device, requires_grad=True)
    opt = make_optimizer([theta])
    thetas, losses = [], []
    for _ in range(steps):
        loss = cliff(theta).sum()
        thetas.append(theta.item())
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        if max_norm is not None:
            nn.utils.clip_grad_norm_([theta], max_norm)
        opt.step()
    return np.array(thetas), np.array(losses)


def main():
    args = parse_args(__doc__, "restarts")
    dev = args.device
    runs, steps = (8, 300) if args.quick else (30, 500)

    X_np, y_np = xor(200, noise=0.15, seed=args.seed)
    X, y = gpunn.tensor(X_np, device=dev), gpunn.tensor(y_np, device=dev)
    finals = np.array([train_xor(X, y, steps) for _ in range(runs)])
    best_of = np.minimum.accumulate(finals)
    print(f"noisy XOR, 2-2-2 tanh network, Adam, {steps} steps, {runs} initialisations")
    print(f"  final losses: min {finals.min():.3f}, median {np.median(finals):.3f}, max {finals.max():.3f}")
    print(f"  runs ending above 0.2 (stuck): {np.sum(finals > 0.2)} of {runs}")
    print(f"  best of {runs}: {finals.min():.3f}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].hist(finals, bins=np.linspace(0, max(0.6, finals.max() * 1.05), 31), color="tab:blue",
                 edgecolor="white")
    axes[0].set(xlabel="final training loss (cross-entropy)", ylabel="initialisations",
                title=f"{runs} random initialisations of one network")
    axes[1].plot(np.arange(1, runs + 1), finals, "o", color="tab:blue", alpha=0.6, label="run n")
    axes[1].step(np.arange(1, runs + 1), best_of, where="post", color="tab:red", label="best of the first n")
    axes[1].set(xlabel="n", ylabel="final training loss", title="keeping the best of n restarts")
    axes[1].legend()
    save(fig, args, "restarts.png")

    cliff_steps = 300
    optimizers = {
        "SGD, lr 0.1": (lambda p: optim.SGD(p, lr=0.1), None),
        "SGD, lr 0.1, clip_grad_norm_ 1": (lambda p: optim.SGD(p, lr=0.1), 1.0),
        "Adam, lr 0.1": (lambda p: optim.Adam(p, lr=0.1), None),
        "RMSprop, lr 0.03": (lambda p: optim.RMSprop(p, lr=0.03), None),
    }
    print(f"\ncliff objective from theta = 2.5, {cliff_steps} steps:")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    grid = np.linspace(-4.5, 3, 1500)
    with gpunn.no_grad():
        axes[0].plot(grid, cliff(gpunn.tensor(grid, device=dev)).numpy(), color="black", lw=1)
    for (name, (make, max_norm)), color in zip(optimizers.items(), ["tab:red", "tab:blue", "tab:green", "tab:purple"]):
        thetas, losses = descend(make, dev, cliff_steps, max_norm)
        print(f"  {name:32s} final theta {thetas[-1]:7.3f}, loss {losses[-1]:.2e}, "
              f"largest step {np.max(np.abs(np.diff(thetas))):.2f}")
        axes[0].plot(thetas, losses, ".-", ms=4, lw=0.6, color=color, label=name)
        axes[1].semilogy(np.maximum(losses, 1e-10), color=color, label=name)
        if max_norm is None and name.startswith("SGD"):
            jump = np.argmax(np.abs(np.diff(thetas)))
            axes[0].annotate(f"one step of {abs(thetas[jump + 1] - thetas[jump]):.1f}\nlands where the\n"
                             "gradient is ~0", (thetas[-1], losses[-1]), xytext=(-4.3, 4), fontsize=8,
                             arrowprops={"arrowstyle": "->", "color": color}, color=color)
    axes[0].set(xlabel="theta", ylabel="L(theta)", ylim=(-0.5, 11.5),
                title="the landscape and the points each method visits")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].set(xlabel="step", ylabel="L(theta)  (log scale, floored at 1e-10)", title="loss curves")
    axes[1].legend(fontsize=8)
    save(fig, args, "cliff.png")


if __name__ == "__main__":
    main()
