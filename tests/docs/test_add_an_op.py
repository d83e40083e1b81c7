"""README's "How to add an op" holds: in a copy of gpunn whose gpunn/ops.py alone is changed, an
elementwise op gets its faces, passes gradcheck and the agreement test of test_op_faces.py, and an
activation declared there reaches nn.MLP, nn.Sequential's fusion, the command line's choices and
the backends (which run the generic version of an activation they have no fast one for).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"

# an activation, appended to the copy's ops.py after the README's sin: d/dx x / (1 + |x|) is
# 1 / (1 + |x|)^2 = (1 - |out|)^2, so the rule reads only the output, as a fusable one must
SOFTSIGN = '''
softsign = Primitive("softsign", lambda xp, x: x / (1 + xp.abs(x)),
                     lambda xp, g, out, x: g * (1 - xp.abs(out)) ** 2, floats=(0,), reads=(), fusable=True,
                     faces=Faces("input / (1 + |input|), elementwise.", functional="softsign", module="Softsign",
                                 make="unary"))
'''


def readme_entry():
    """The entry that README's "How to add an op" shows."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## How to add an op"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """gpunn and backends/ copied, with README's sin and SOFTSIGN appended to ops.py and no other change."""
    root = tmp_path_factory.mktemp("added_op")
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "gpunn", root / "gpunn", ignore=skip)
    shutil.copytree(ROOT / "backends", root / "backends", ignore=skip)
    ops = root / "gpunn" / "ops.py"
    ops.write_text(ops.read_text() + "\n\n" + readme_entry() + SOFTSIGN)
    return root


def run(root, script, *path):
    """Run `script` with the copy's gpunn (and the tests' helpers) importable; its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, path), str(root), str(TESTS), str(TESTS / "core")]),
           "GPUNN_CUPY": "fake", "FAKE_CUDA_DEVICES": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


ELEMENTWISE = """
import numpy as np
import gpunn
import test_op_faces as faces
from gpunn.testing import gradcheck

assert gpunn.__file__.startswith({root!r}), gpunn.__file__
host = np.array([[0.3, -1.2, 2.0], [0.0, 0.7, -2.5]])
for spec in ("cpu", "strict", "strict:1"):
    x = gpunn.tensor(host, device=spec, requires_grad=True)
    np.testing.assert_allclose(x.sin().numpy(), np.sin(host), rtol=1e-12)
    assert gradcheck(gpunn.sin, [x]) and gradcheck(lambda t: t.sin(), [x])
    faces.check_agreement("sin", gpunn.device(spec))
np.testing.assert_allclose(gpunn.sin([0.5, 1.0]).numpy(), np.sin(np.float32([0.5, 1.0])), rtol=1e-6)
faces.check_declaration("sin")
faces.check_lists("sin")
assert not any(faces.undeclared(kind) for kind in ("function", "method", "functional"))
print(gpunn.sin.__doc__)
"""


def test_an_elementwise_op_needs_one_entry(copy):
    assert run(copy, ELEMENTWISE.format(root=str(copy))).strip() == "The sine of input, elementwise."


ACTIVATION = """
import numpy as np
import gpunn
import test_op_faces as faces
from gpunn import functional as F, nn
from gpunn.cli import build_parser
from gpunn.cli.train import TrainConfig

assert list(gpunn.ops.ACTIVATIONS) == ["relu", "tanh", "sigmoid", "softsign"]
assert build_parser().parse_args(["train", "--activation", "softsign"]).activation == "softsign"
assert TrainConfig(activation="softsign").resolved().activation == "softsign"
x_host = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
results = []
for spec in {devices}:
    gpunn.manual_seed(0)
    model = nn.MLP([3, 4, 2], activation="softsign", device=spec)
    assert type(model[1]) is nn.Softsign
    x = gpunn.tensor(x_host, device=spec)
    fused = model(x)
    node, names = fused._node, []
    while node is not None:  # the primitives back from the output along first inputs
        names.append(node.primitive.name)
        node = node.parents[0] if isinstance(node.parents[0], gpunn.autograd.Node) else None
    assert names in (["linear_chain"], ["linear", "linear_act"]), f"Sequential did not fuse Softsign: {{names}}"
    fused.sum().backward()
    fused_grad = model[0].weight.grad.numpy()
    model.zero_grad()
    unfused = model[2](F.softsign(model[0](x)))  # the same layers, two nodes
    unfused.sum().backward()
    np.testing.assert_allclose(fused.numpy(), unfused.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused_grad, model[0].weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    results.append(fused.numpy())
    if spec != "cuda":
        faces.check_agreement("softsign", gpunn.device(spec))
for other in results[1:]:
    np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_an_activation_declared_in_the_table_reaches_layers_cli_and_backends(copy):
    assert run(copy, ACTIVATION.format(devices=("cpu", "strict"))).strip() == "ok"


@pytest.mark.skipif(shutil.which("g++") is None, reason="the fake CuPy compiles kernels with g++")
def test_the_cuda_backend_runs_an_activation_it_has_no_kernel_for(copy):
    """On the fake CuPy: linear_act's CUDA fast path falls back to the generic forward and gradient."""
    assert run(copy, ACTIVATION.format(devices=("cpu", "cuda")), TESTS / "cuda" / "fake_cuda").strip() == "ok"
