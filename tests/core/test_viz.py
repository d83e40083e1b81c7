"""gpunn.viz.to_dot: the graph behind a tensor as Graphviz text, ops and shapes labelled."""

import numpy as np

import gpunn


def test_to_dot_labels_ops_and_shapes():
    w = gpunn.tensor(np.ones((2, 3)), requires_grad=True)
    x = gpunn.tensor(np.ones((4, 3)))
    loss = (x @ w.T).tanh().sum()
    dot = gpunn.viz.to_dot(loss, {w: "w"})
    for piece in ("digraph", "matmul", "tanh", "sum", "permute", "(4, 2)", "w\\nleaf"):
        assert piece in dot
    assert dot.count("->") == 5  # w->permute, permute->matmul, x->matmul, matmul->tanh, tanh->sum
