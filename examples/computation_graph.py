"""Backpropagation on a computation graph: ridge regression for one example, node by node.

The objective is broken into nodes, each a simple function of the nodes before it:

    prediction      r_hat = w . x
    residual        r     = y - r_hat
    loss            l     = r^2
    regularizer     R     = lam * ||w||^2
    objective       J     = l + R

The forward pass computes the nodes in topological order. The backward pass visits them in
reverse: each node receives dJ/d(node), multiplies it by its local derivative, and passes the
result to the nodes it was made from; a node used twice (w feeds r_hat and R) sums what its
children send it. To see every dJ/d(node), each stage below runs on a detached copy of its inputs
(a fresh leaf), so backward from one stage stops at that stage's inputs and we can print the
gradient arriving there before sending it one stage further back. The printed values are checked
against the closed forms dJ/dl = 1, dJ/dr = 2r, dJ/dr_hat = -2r, dJ/dw = -2 r x + 2 lam w, and
against one ordinary backward pass through the whole graph; the script exits non-zero on a mismatch.
"""

import matplotlib.pyplot as plt
import numpy as np

import gpunn
from common import parse_args, save


def stages(x, y, lam):
    """(node, what it is, the nodes it is made from, how) in topological order."""
    return [
        ("r_hat", "prediction  r_hat = w . x", ("w",), lambda w: (w * x).sum()),
        ("r", "residual    r = y - r_hat", ("r_hat",), lambda r_hat: y - r_hat),
        ("l", "loss        l = r^2", ("r",), lambda r: r ** 2),
        ("R", "regularizer R = lam ||w||^2", ("w",), lambda w: lam * (w * w).sum()),
        ("J", "objective   J = l + R", ("l", "R"), lambda l, R: l + R),
    ]


def show(name, value):
    return f"{name:6s} = {np.array2string(value.numpy(), precision=6)}"


def main():
    args = parse_args(__doc__, "computation_graph")
    rng = np.random.default_rng(args.seed)
    dev = args.device
    x = gpunn.tensor(rng.normal(size=3), dtype="float64", device=dev)
    y = gpunn.tensor(rng.normal(), dtype="float64", device=dev)
    lam = gpunn.tensor(0.1, dtype="float64", device=dev)
    w = gpunn.tensor(rng.normal(size=3), dtype="float64", device=dev, requires_grad=True)
    graph = stages(x, y, lam)

    print("inputs:", show("x", x), "|", show("y", y), "|", show("lam", lam), "|", show("w", w))
    print("\nforward, in topological order:")
    leaf = {"w": w}  # every node's value as a fresh leaf, so backward stops there
    made = {}  # every node as made from its inputs' leaves
    for name, what, inputs, fn in graph:
        made[name] = fn(*(leaf[i] for i in inputs))
        leaf[name] = made[name].detach().requires_grad_()
        print(f"  {what:30s} {show(name, made[name])}")

    print("\nbackward, in reverse order: dJ/d(node)")
    leaf["J"].grad = gpunn.ones_like(leaf["J"])
    for name, _, inputs, _ in reversed(graph):
        made[name].backward(leaf[name].grad)  # sends dJ/d(name) on to this stage's input leaves
    for name in ["J", "l", "R", "r", "r_hat", "w"]:
        print(f"  dJ/d{show(name, leaf[name].grad)}")

    # The same graph in one piece, as training code builds it: one backward gives dJ/dw.
    w_whole = w.detach().requires_grad_()
    value = {"w": w_whole}
    for name, _, inputs, fn in graph:
        value[name] = fn(*(value[i] for i in inputs))
    names = {x: "x", y: "y", lam: "lam", w_whole: "w", **{value[n]: n for n, *_ in graph}}
    dot = gpunn.viz.to_dot(value["J"], names=names)  # before backward, which frees what the nodes saved
    value["J"].backward()

    r, xs, ws, lm = (t.numpy() for t in (leaf["r"], x, w, lam))
    closed_form = {"J": 1.0, "l": 1.0, "R": 1.0, "r": 2 * r, "r_hat": -2 * r, "w": -2 * r * xs + 2 * lm * ws}
    print("\ncheck against the closed forms (dJ/dr = 2r, dJ/dr_hat = -2r, dJ/dw = -2 r x + 2 lam w):")
    ok = True
    for name, expected in closed_form.items():
        error = float(np.max(np.abs(leaf[name].grad.numpy() - expected)))
        ok &= error < 1e-12
        print(f"  dJ/d{name:6s} max error {error:.1e}")
    whole_error = float(np.max(np.abs(w_whole.grad.numpy() - leaf["w"].grad.numpy())))
    ok &= whole_error < 1e-12
    print(f"  one backward through the whole graph gives the same dJ/dw: max error {whole_error:.1e}")
    print("all gradients match the closed forms" if ok else "GRADIENT MISMATCH")

    (args.out / "computation_graph.dot").write_text(dot)
    print(f"wrote {args.out / 'computation_graph.dot'}")
    if gpunn.viz.render(dot, args.out / "computation_graph.png"):
        gpunn.viz.render(dot, args.out / "computation_graph.svg")
        print(f"wrote {args.out / 'computation_graph.png'} and .svg")
    else:
        print("Graphviz `dot` is not installed: no rendering of the DOT file (apt-get install graphviz)")

    scalars = ["r_hat", "r", "l", "R", "J"]
    labels = scalars + [f"w[{i}]" for i in range(3)]
    forward = [leaf[n].item() for n in scalars] + list(ws)
    gradient = [leaf[n].grad.item() for n in scalars] + list(leaf["w"].grad.numpy())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].bar(labels, forward, color="tab:blue")
    axes[0].set_title("forward: value of each node")
    axes[1].bar(labels, gradient, color="tab:orange")
    axes[1].set_title("backward: dJ/d(node)")
    for ax in axes:
        ax.axhline(0, color="black", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
    save(fig, args, "node_values.png")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
