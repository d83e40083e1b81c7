"""Draw a computation graph: Graphviz DOT text for any tensor, rendered when `dot` is installed."""

import shutil
import subprocess

from gpunn.autograd import topological_order


def to_dot(root, names=None):
    """DOT text of the graph that made `root`: one box per tensor, labelled with the op that made
    it (or "leaf") and its shape; arrows run from inputs to outputs, in topological order.

    `names` maps tensors to labels (e.g. {w: "w"}); `dict(model.named_parameters())` reversed works.
    """
    names = {id(t): n for t, n in (names or {}).items()}
    order = topological_order(root) if root._node is not None else [root]
    ids, lines = {}, ["digraph gpunn {", '  rankdir="LR";', '  node [shape=box, fontname="Helvetica"];']

    def node_id(t):
        if id(t) not in ids:
            ids[id(t)] = f"t{len(ids)}"
            op = t._node.primitive.name if t._node is not None else ("leaf" if t.requires_grad else "const")
            label = f"{names[id(t)]}\\n" if id(t) in names else ""
            style = ', style=filled, fillcolor="#dbe9f6"' if t._node is None and t.requires_grad else ""
            lines.append(f'  {ids[id(t)]} [label="{label}{op}\\n{tuple(t.shape)}"{style}];')
        return ids[id(t)]

    for t in order:
        for parent in t._node.inputs:
            if hasattr(parent, "_node"):
                lines.append(f"  {node_id(parent)} -> {node_id(t)};")
        node_id(t)
    if not order[0]._node:
        node_id(root)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text, path, format=None):
    """Write `dot_text` to `path` as SVG/PNG with Graphviz; returns False when `dot` is missing."""
    exe = shutil.which("dot")
    if exe is None:
        return False
    fmt = format or str(path).rsplit(".", 1)[-1]
    subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(), check=True)
    return True
