"""Draw a computation graph: Graphviz DOT text for any tensor, rendered when `dot` is installed."""

import shutil
import subprocess

from gpunn.autograd import Node, topological_order


def to_dot(root, names=None):
    """DOT text of the graph that made `root`: one box per value, labelled with the op that made
    it ("leaf" for tensors that require grad, "const" for the others) and its shape; arrows run
    from inputs to outputs, in topological order.

    `names` maps tensors to labels (e.g. {w: "w"}); `dict(model.named_parameters())` reversed works.
    Draw before backward: it frees what the nodes saved, and with it the constant inputs and the
    shapes of unnamed intermediate values ("?" after it).
    """
    labels = {_key(t): n for t, n in (names or {}).items()}
    order = topological_order(root._node) if root._node is not None else []
    shapes = {_key(t): t.shape for t in [root, *(names or {})]}
    for node in order:  # a node's output shape is what its consumers received (until backward frees them)
        for parent, array in zip(node.parents, node.arrays or ()):
            if parent is not None:
                shapes[id(parent)] = tuple(array.shape)
    ids, lines = {}, ["digraph gpunn {", '  rankdir="LR";', '  node [shape=box, fontname="Helvetica"];']

    def box(key, op, shape, filled=False):
        ids[key] = f"t{len(ids)}"
        label = f"{labels[key]}\\n" if key in labels else ""
        style = ', style=filled, fillcolor="#dbe9f6"' if filled else ""
        lines.append(f'  {ids[key]} [label="{label}{op}\\n{shape}"{style}];')
        return ids[key]

    def vertex(obj):
        if id(obj) not in ids:
            if type(obj) is Node:
                box(id(obj), obj.primitive.name, shapes.get(id(obj), "?"))
            else:
                box(id(obj), "leaf" if obj.requires_grad else "const", tuple(obj.shape), filled=obj.requires_grad)
        return ids[id(obj)]

    for node in order:
        for parent, array in zip(node.parents, node.arrays or (None,) * len(node.parents)):
            if parent is not None:
                lines.append(f"  {vertex(parent)} -> {vertex(node)};")
            elif hasattr(array, "shape"):  # a constant tensor input, known by its array
                key = ("const", id(array))
                source = ids[key] if key in ids else box(key, "const", tuple(array.shape))
                lines.append(f"  {source} -> {vertex(node)};")
        vertex(node)
    if not order:
        vertex(root)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _key(t):
    """How a named tensor is found in the graph: by its node, as a leaf, or as a constant's array."""
    if t._node is not None:
        return id(t._node)
    return id(t) if t.requires_grad else ("const", id(t._array))


def render(dot_text, path, format=None):
    """Write `dot_text` to `path` as SVG/PNG with Graphviz; returns False when `dot` is missing."""
    exe = shutil.which("dot")
    if exe is None:
        return False
    fmt = format or str(path).rsplit(".", 1)[-1]
    subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(), check=True)
    return True
