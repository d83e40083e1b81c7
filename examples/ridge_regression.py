"""Least squares and ridge regression: gradient descent on the graph against the closed form.

Features are steps phi_j(x) = [x >= s_j] at 400 thresholds, so a linear model w . phi(x) is a
piecewise constant function; the true one has 10 jumps and the targets carry heavy-tailed
(Student t) noise. With 100 training points and 400 features, least squares can fit the noise
exactly, and the penalty lam ||w||^2 trades that fit for smaller weights:

    J(w) = mean_i (w . phi(x_i) - y_i)^2 + lam ||w||^2,   minimised by  (X'X/n + lam I) w = X'y/n.

Gradient descent on J, written as a gpunn graph, reaches the same w as numpy.linalg.solve (for
lam = 0, started at w = 0, it reaches the minimum-norm least-squares solution, numpy's lstsq).
J is badly conditioned, so plain gradient descent crawls; heavy-ball momentum fixes that.
"""

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from gpunn import optim
from gpunn.datasets import step_features
from common import parse_args, save

LAMBDAS = [0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
PLOTTED = [0.0, 1e-2, 1.0]


def closed_form(X, y, lam):
    n, p = X.shape
    if lam == 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]  # X'X is singular here: take the minimum-norm solution
    return np.linalg.solve(X.T @ X / n + lam * np.eye(p), X.T @ y / n)


def gradient_descent(X, y, lam, steps, device):
    """Full-batch heavy-ball descent on J from w = 0, step 1/L (L: J's largest curvature)."""
    n, p = X.shape
    curvature = float(2 * np.linalg.eigvalsh(X.T @ X / n)[-1] + 2 * lam)
    Xd = gpunn.tensor(X, device=device)
    yd = gpunn.tensor(y, device=device)
    w = gpunn.zeros(p, dtype="float64", device=device, requires_grad=True)
    opt = optim.SGD([w], lr=1 / curvature, momentum=0.99)
    for _ in range(steps):
        objective = ((Xd @ w - yd) ** 2).mean() + lam * (w * w).sum()
        opt.zero_grad()
        objective.backward()
        opt.step()
    return w.detach().numpy()


def mse(X, y, w):
    return float(np.mean((X @ w - y) ** 2))


def main():
    args = parse_args(__doc__, "ridge_regression")
    d = step_features(n_train=100, n_test=900, n_features=400, n_nonzero=10, seed=args.seed)
    X, y, Xt, yt = d["X_train"], d["y_train"], d["X_test"], d["y_test"]
    steps, lambdas = (1500, PLOTTED) if args.quick else (3000, LAMBDAS)
    print(f"{X.shape[0]} training points, {X.shape[1]} step features; {steps} steps of gradient descent "
          f"(momentum 0.99) per lambda")
    print(f"true w: train MSE {mse(X, y, d['w_true']):.3f}, test MSE {mse(Xt, yt, d['w_true']):.3f} (the noise)")
    print("  lambda | train MSE | test MSE |   |w| | gap: |w_gd - w_closed| / |w_closed|")
    fits = {}
    for lam in lambdas:
        w_exact = closed_form(X, y, lam)
        w_gd = gradient_descent(X, y, lam, steps, args.device)
        gap = np.linalg.norm(w_gd - w_exact) / np.linalg.norm(w_exact)
        fits[lam] = w_gd
        print(f"  {lam:6g} | {mse(X, y, w_gd):9.3f} | {mse(Xt, yt, w_gd):8.3f} | "
              f"{np.linalg.norm(w_gd):5.2f} | {gap:.1e}")

    grid = np.linspace(0, 1, 1000)
    phi = (grid[:, None] >= d["thresholds"][None, :]).astype(np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    ax.plot(d["x_train"], y, ".", color="gray", label="training points")
    ax.plot(grid, phi @ d["w_true"], "k", lw=2, label="true function")
    for lam, color in zip(PLOTTED, ["tab:red", "tab:orange", "tab:blue"]):
        ax.plot(grid, phi @ fits[lam], color=color, lw=1.2,
                label=f"fit, $\\lambda$ = {lam:g}" + (" (least squares)" if lam == 0 else ""))
    low, high = np.percentile(y, [1, 99])
    ax.set(xlabel="x", ylabel="y", ylim=(low - 1, high + 1),
           title="fits by gradient descent (a few outliers are off the chart)")
    ax.legend(fontsize=8)

    sweep = np.logspace(-4, 2, 40)
    exact = [closed_form(X, y, lam) for lam in sweep]
    ax = axes[1]
    ax.semilogx(sweep, [mse(X, y, w) for w in exact], color="tab:green", label="train, closed form")
    ax.semilogx(sweep, [mse(Xt, yt, w) for w in exact], color="tab:purple", label="test, closed form")
    positive = [lam for lam in lambdas if lam > 0]
    ax.semilogx(positive, [mse(X, y, fits[lam]) for lam in positive], "o", color="tab:green",
                mfc="none", label="train, gradient descent")
    ax.semilogx(positive, [mse(Xt, yt, fits[lam]) for lam in positive], "o", color="tab:purple",
                mfc="none", label="test, gradient descent")
    ax.axhline(mse(Xt, yt, d["w_true"]), color="black", ls=":", label="test, true w (noise level)")
    ax.set(xlabel=r"$\lambda$", ylabel="mean squared error", title=r"error against the penalty $\lambda$")
    ax.legend(fontsize=8)
    save(fig, args, "ridge_regression.png")


if __name__ == "__main__":
    main()
