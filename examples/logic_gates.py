"""Logic gates: one threshold unit computes AND, no single unit computes XNOR, a hidden layer does.

A unit fires (outputs 1) when w . x >= threshold, so the inputs where it fires lie on one side of
a line: it can only compute linearly separable functions. AND is one (w1 = w2 = 1, threshold 2).
XNOR ("both inputs equal") is not: (0,0) and (1,1) must fire, (0,1) and (1,0) must not, and no line
puts the diagonal on one side and the anti-diagonal on the other. A hidden layer recodes the
inputs: h1 = AND(i1, i2) and h2 = NOR(i1, i2) map the four points to three, and in (h1, h2) space
the output unit "h1 + h2 >= 1" separates them with a line. Finally a small sigmoid network learns
such a recoding from the four examples by gradient descent.
"""

import itertools

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from gpunn import nn, optim
from common import parse_args, save

INPUTS = np.array(list(itertools.product([0, 1], repeat=2)), dtype=np.float32)  # (0,0) (0,1) (1,0) (1,1)
XNOR = (INPUTS[:, 0] == INPUTS[:, 1]).astype(np.float32)


def fires(x, w, threshold):
    """A threshold unit: 1 where w . x >= threshold, else 0 (x holds one input per row)."""
    return (x @ np.asarray(w, dtype=np.float32) >= threshold).astype(np.int64)


def single_units_computing(target, grid):
    """Every (w1, w2, threshold) on the grid whose unit agrees with `target` on all four inputs."""
    return [(w1, w2, t) for w1, w2, t in itertools.product(grid, repeat=3)
            if np.array_equal(fires(INPUTS, (w1, w2), t), target)]


def train_sigmoid_net(device, steps, restarts):
    """A 2-2-1 sigmoid network fitted to the XNOR table; restart from a new init when one gets stuck."""
    x = gpunn.tensor(INPUTS, device=device)
    t = gpunn.tensor(XNOR[:, None], device=device)
    for attempt in range(1, restarts + 1):
        net = nn.MLP([2, 2, 1], activation="sigmoid", device=device)
        opt = optim.Adam(net.parameters(), lr=0.1)
        for _ in range(steps):
            loss = nn.functional.binary_cross_entropy_with_logits(net(x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if loss.item() < 0.05:
            break
        print(f"  restart {attempt}: stuck at loss {loss.item():.3f}")
    print(f"  attempt {attempt}: cross-entropy {loss.item():.4f}")
    return net


def main():
    args = parse_args(__doc__, "logic_gates")

    print("AND as one unit (w1 = w2 = 1, threshold 2):")
    print("  i1 i2 | w.x | fires")
    for (i1, i2), out in zip(INPUTS, fires(INPUTS, (1, 1), 2)):
        print(f"   {i1:.0f}  {i2:.0f} |  {i1 + i2:.0f}  |   {out}")

    grid = np.arange(-3, 3.01, 0.25)
    print(f"\nXNOR as one unit: search all w1, w2, threshold in {grid[0]:g}..{grid[-1]:g} step 0.25 "
          f"({len(grid) ** 3} units)")
    print(f"  units computing AND:  {len(single_units_computing(fires(INPUTS, (1, 1), 2), grid))}")
    print(f"  units computing XNOR: {len(single_units_computing(XNOR, grid))}")
    print("  why none can: firing on (0,0) needs 0 >= t; silence on (1,0) and (0,1) needs w1 < t and w2 < t,\n"
          "  so w1 + w2 < 2t <= t; but firing on (1,1) needs w1 + w2 >= t. XNOR is not linearly separable.")

    print("\nA hidden layer: h1 = [i1 + i2 >= 2] (AND), h2 = [-(i1 + i2) >= 0] (NOR), out = [h1 + h2 >= 1]")
    h = np.stack([fires(INPUTS, (1, 1), 2), fires(INPUTS, (-1, -1), 0)], axis=1).astype(np.float32)
    out = fires(h, (1, 1), 1)
    print("  raw i1 i2 | recoded h1 h2 | out | XNOR")
    for (i1, i2), (h1, h2), o, want in zip(INPUTS, h, out, XNOR):
        print(f"       {i1:.0f}  {i2:.0f} |         {h1:.0f}  {h2:.0f} |  {o}  |  {want:.0f}")
    ok = np.array_equal(out, XNOR)
    print(f"  recoded inputs are linearly separable: the unit [h1 + h2 >= 1] computes XNOR ({'yes' if ok else 'NO'})")

    print("\nLearned from the four examples: a 2-2-1 sigmoid network, Adam, cross-entropy")
    net = train_sigmoid_net(args.device, steps=600 if args.quick else 2000, restarts=10)
    with gpunn.no_grad():
        x = gpunn.tensor(INPUTS, device=args.device)
        hidden = net[1](net[0](x)).numpy()
        prob = net(x).sigmoid().numpy()[:, 0]
    print("  raw i1 i2 | learned h1    h2   | P(out=1) | XNOR")
    for (i1, i2), (h1, h2), p, want in zip(INPUTS, hidden, prob, XNOR):
        print(f"       {i1:.0f}  {i2:.0f} |      {h1:.3f} {h2:.3f} |  {p:.3f}   |  {want:.0f}")
    learned_ok = np.array_equal(prob > 0.5, XNOR > 0.5)
    print(f"  learned network computes XNOR: {'yes' if learned_ok else 'NO'}")

    w_out = net[2].weight.numpy()[0]
    b_out = net[2].bias.numpy()[0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 5), gridspec_kw={"wspace": 0.3})
    panels = [(axes[0], INPUTS, "input space: no line separates XNOR", ("$i_1$", "$i_2$")),
              (axes[1], h, "hidden space (hand-set): out = $[h_1 + h_2 \\geq 1]$", ("$h_1$ = AND", "$h_2$ = NOR")),
              (axes[2], hidden, "learned sigmoid hidden units", ("$h_1$", "$h_2$"))]
    for ax, points, title, (xlabel, ylabel) in panels:
        for label, color, marker in [(1, "tab:blue", "o"), (0, "tab:red", "X")]:
            sel = XNOR == label
            ax.scatter(points[sel, 0], points[sel, 1], s=140, c=color, marker=marker,
                       label=f"XNOR = {label}", zorder=3)
        labels = {}  # the hidden layer maps (0,1) and (1,0) to one point: name both there
        for (i1, i2), (px, py) in zip(INPUTS, points):
            labels.setdefault((round(px, 1), round(py, 1)), []).append(f"({i1:.0f},{i2:.0f})")
        for (px, py), names in labels.items():
            ax.annotate(" ".join(names), (px, py), textcoords="offset points", xytext=(10, 8), fontsize=8)
        ax.set(xlim=(-0.3, 1.45), ylim=(-0.3, 1.45), xlabel=xlabel, ylabel=ylabel, title=title, aspect="equal")
        ax.grid(alpha=0.3)
    line = np.linspace(-0.3, 1.3, 2)
    axes[0].plot(line, 1.5 - line, "k:", lw=1, label="$h_1$ fires above")
    axes[0].plot(line, 0.5 - line, "k--", lw=1, label="$h_2$ fires below")
    axes[1].plot(line, 0.5 - line, "k-", label="a separating line")
    axes[2].plot(line, -(b_out + w_out[0] * line) / w_out[1], "k-", label="output unit: P = 0.5")
    for ax in axes:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8)
    save(fig, args, "logic_gates.png")
    if not (ok and learned_ok):
        raise SystemExit("a network failed to compute XNOR")


if __name__ == "__main__":
    main()
