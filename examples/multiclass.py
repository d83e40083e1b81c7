"""Multiclass classification: softmax regression against a multilayer network.

Multinomial logistic regression scores each class with an affine function of the input, turns
the scores into probabilities with the softmax, and maximises the log-likelihood of the labels:
in gpunn that is one Linear layer and cross_entropy. Its decision regions are convex (each class
wins where its affine score is largest), so it separates well-spread blobs but not interleaved
spirals. An MLP is the same model applied to learned features (hidden ReLU units) instead of the
raw inputs: the same softmax and loss, with nonlinear decision regions. On the 8x8 digits both
are compared by test accuracy.
"""

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from gpunn import nn, optim
from gpunn.data import DataLoader
from gpunn.datasets import blobs, load_digits, spirals, train_test_split
from common import parse_args, save


def models(n_in, n_classes, device):
    return {"softmax regression": nn.Linear(n_in, n_classes, device=device),
            "MLP (2 hidden layers of 64 ReLU)": nn.MLP([n_in, 64, 64, n_classes], device=device)}


def fit_full_batch(model, X, y, steps):
    """Adam on the mean cross-entropy of the whole (small) training set."""
    opt = optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def fit_minibatch(model, loader, epochs):
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(model, X, y):
    with gpunn.no_grad():
        return float(np.mean(model(X).argmax(axis=1).numpy() == y.numpy()))


def standardize(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def main():
    args = parse_args(__doc__, "multiclass")
    dev = args.device
    steps, epochs = (200, 4) if args.quick else (1000, 30)
    sets = {"blobs": blobs(300, centers=3, std=1.5, seed=args.seed),
            "spirals": spirals(300, classes=3, noise=0.05, seed=args.seed)}
    fig, axes = plt.subplots(2, 2, figsize=(9, 9))
    print(f"2-D sets, full-batch Adam, {steps} steps: training accuracy")
    for row, (set_name, (X_np, y_np)) in zip(axes, sets.items()):
        X_np = standardize(X_np)
        X, y = gpunn.tensor(X_np, device=dev), gpunn.tensor(y_np, device=dev)
        lo, hi = X_np.min(axis=0) - 0.5, X_np.max(axis=0) + 0.5
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
        grid = gpunn.tensor(np.stack([g0.ravel(), g1.ravel()], axis=1).astype(np.float32), device=dev)
        for ax, (model_name, model) in zip(row, models(2, 3, dev).items()):
            fit_full_batch(model, X, y, steps)
            acc = accuracy(model, X, y)
            print(f"  {set_name:8s} {model_name:34s} {acc:.3f}")
            with gpunn.no_grad():
                regions = model(grid).argmax(axis=1).numpy().reshape(g0.shape)
            ax.contourf(g0, g1, regions, levels=[-0.5, 0.5, 1.5, 2.5], colors=["#fbb4ae", "#b3cde3", "#ccebc5"])
            ax.scatter(X_np[:, 0], X_np[:, 1], c=y_np, cmap="Set1", vmin=0, vmax=8, s=12, edgecolors="k",
                       linewidths=0.3)
            ax.set(title=f"{set_name}: {model_name}\ntraining accuracy {acc:.0%}", xticks=[], yticks=[])
    fig.tight_layout()
    save(fig, args, "multiclass.png")

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=args.seed)
    loader = DataLoader(X_train, y_train, batch_size=64, shuffle=True, device=dev, seed=args.seed)
    X_test, y_test = gpunn.tensor(X_test, device=dev), gpunn.tensor(y_test, device=dev)
    print(f"digits ({len(y_train)} train, {len(y)-len(y_train)} test), Adam, batch 64, {epochs} epochs: "
          "test accuracy")
    for model_name, model in models(64, 10, dev).items():
        fit_minibatch(model, loader, epochs)
        print(f"  {model_name:34s} {accuracy(model, X_test, y_test):.3f}")


if __name__ == "__main__":
    main()
