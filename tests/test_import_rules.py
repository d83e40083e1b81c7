"""The layers import one way (DESIGN.md): array-level code <- backends <- device <- tensor and
autograd <- functional, nn, optim, data, io <- compile <- the tools.

The graph is read from the source (every `import`, also those inside functions, which run later
but still load what they name) and followed transitively, so a rule fails however deep the edge
that breaks it. Importing `gpunn.x.y` runs the `__init__` of `gpunn.x` first: that counts as an
edge. The top package `gpunn` is loaded before any of its modules anyway, so it is not one.
A few layers are also imported alone in a fresh interpreter, listing what they really pulled in.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"gpunn.cli", "gpunn.__main__"}  # the gpunn command: the package gpunn.cli and its modules


def _module_names(root):
    """{module name: file} for gpunn/ and backends/ (imported as gpunn.backends) under `root`."""
    names = {}
    for top, prefix in (("gpunn", "gpunn"), ("backends", "gpunn.backends")):
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root / top).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names[".".join((prefix, *parts))] = path
    return names


def _with_parents(name):
    """`gpunn.optim.sgd` loads gpunn.optim (its __init__) and itself; gpunn is always there."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}


def _imports(name, path, known):
    """The gpunn modules one file imports, anywhere in it. A package's `_MODULES` table (backends/)
    names modules it imports by name at run time; those count too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_MODULES" for t in node.targets)
              and isinstance(node.value, ast.Dict)):
            targets = [f"{package}.{value.value}" for value in node.value.values]
        else:
            continue
        for target in targets:
            found |= {parent for parent in _with_parents(target) if parent in known}
    found.discard(name)
    return found


def third_party_imports(path):
    """The top-level names of the modules outside gpunn that one file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"gpunn"}


def import_closure(root):
    """{module: every gpunn module it may load, directly or through others}."""
    files = _module_names(root)
    direct = {name: _imports(name, path, files) for name, path in files.items()}
    closure = {}
    for name in direct:
        seen, todo = set(), list(direct[name])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(direct[module])
        seen.discard(name)
        closure[name] = seen
    return closure


def _in(modules, *packages):
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.fixture(scope="module")
def closure():
    return import_closure(ROOT)


def test_the_graph_covers_the_library(closure):
    """A guard on the reader: every layer is found, and known edges are seen (lazy and relative)."""
    assert {"gpunn.backends.cupy_kernels", "gpunn.autograd", "gpunn.optim.sgd", "gpunn.cli"} <= set(closure)
    assert "gpunn.updates" in closure["gpunn.optim.sgd"]  # from gpunn.updates import ...
    assert "gpunn.backends.cupy_kernels" in closure["gpunn.backends"]  # by name, through _MODULES
    assert "gpunn.cli.bench" in closure["gpunn.cli"]  # inside a function
    assert "gpunn.datasets.idx" in closure["gpunn.datasets.mnist"]  # relative


def test_backends_import_no_tensor_nn_or_optim(closure):
    broken = {m: _in(closure[m], "gpunn.tensor", "gpunn.nn", "gpunn.optim")
              for m in closure if m.startswith("gpunn.backends")}
    assert not {m: v for m, v in broken.items() if v}


def test_update_rules_are_array_level(closure):
    """The optimizers' update rules import nothing of gpunn (backends use them by name)."""
    assert closure["gpunn.updates"] == set()


def test_autograd_does_not_import_optim(closure):
    assert _in(closure["gpunn.autograd"], "gpunn.optim") == []


def test_no_library_module_imports_the_tools(closure):
    broken = {m: _in(closure[m], *TOOLS) for m in closure if not _in([m], *TOOLS)}
    assert not {m: v for m, v in broken.items() if v}


def foreign_imports(root):
    """{module: [cupy or mpi4py modules it imports]} for modules that may not: CuPy belongs to
    backends/, mpi4py to backends/ and the distributed module."""
    found = {}
    for name, path in _module_names(root).items():
        allowed = {"cupy", "cupyx", "cupy_backends", "mpi4py"} if name.startswith("gpunn.backends") else \
            {"mpi4py"} if name.startswith("gpunn.distributed") else set()
        bad = sorted(third_party_imports(path) & ({"cupy", "cupyx", "cupy_backends", "mpi4py"} - allowed))
        if bad:
            found[name] = bad
    return found


def test_only_backends_import_cupy_and_mpi4py():
    """NCCL's CuPy calls included: they live in backends/nccl.py, gpunn.distributed asks it."""
    assert foreign_imports(ROOT) == {}


def test_rule_checks_catch_a_backend_importing_optim(tmp_path):
    """Negative control: a backend reaching gpunn.optim through a lazy import and a relative one,
    and a library module importing CuPy inside a function."""
    for path, text in {
        "gpunn/__init__.py": "",
        "gpunn/updates.py": "",
        "gpunn/optim/__init__.py": "from .sgd import SGD\n",
        "gpunn/optim/sgd.py": "from gpunn.updates import sgd_update\nclass SGD: pass\n",
        "backends/__init__.py": "_MODULES = {'cuda': 'fast'}\n",
        "backends/fast.py": "from . import helper\n",
        "backends/helper.py": "def f():\n    from gpunn.optim.sgd import SGD\n",
        "gpunn/probe.py": "def f():\n    import cupy.cuda\n",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    closure = import_closure(tmp_path)
    assert _in(closure["gpunn.backends"], "gpunn.optim") == ["gpunn.optim", "gpunn.optim.sgd"]
    assert _in(closure["gpunn.backends.fast"], "gpunn.optim") == ["gpunn.optim", "gpunn.optim.sgd"]
    assert closure["gpunn.updates"] == set()
    assert foreign_imports(tmp_path) == {"gpunn.probe": ["cupy"]}


ALONE = """
import importlib, importlib.util, os, sys, types
root = sys.argv[1]
package = types.ModuleType("gpunn")  # the package without its __init__, which loads every layer
package.__path__ = [os.path.join(root, "gpunn")]
sys.modules["gpunn"] = package
spec = importlib.util.spec_from_file_location("gpunn.backends", os.path.join(root, "backends", "__init__.py"),
                                              submodule_search_locations=[os.path.join(root, "backends")])
sys.modules["gpunn.backends"] = backends = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backends)
package.backends = backends
importlib.import_module(sys.argv[2])
for kind in sys.argv[3:]:
    backends.get(kind)
print(" ".join(sorted(m for m in sys.modules if m.startswith("gpunn."))))
"""


@pytest.mark.parametrize("module, backends, forbidden", [
    ("gpunn.backends.numpy_backend", ["cpu", "strict"], ["gpunn.tensor", "gpunn.nn", "gpunn.optim"]),
    ("gpunn.backends.cupy_backend", [], ["gpunn.tensor", "gpunn.nn", "gpunn.optim"]),
    ("gpunn.autograd", ["cpu"], ["gpunn.optim"]),
])
def test_a_layer_imported_alone_pulls_in_no_higher_layer(module, backends, forbidden, fake_cuda_env):
    """At run time, in a fresh interpreter (on the fake CuPy, for the CUDA backend): what one layer
    pulled in, without gpunn/__init__.py (which imports them all)."""
    done = subprocess.run([sys.executable, "-c", ALONE, str(ROOT), module, *backends], capture_output=True,
                          text=True, env=fake_cuda_env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.split()
    assert module in loaded
    assert _in(loaded, *forbidden) == []


def test_import_gpunn_loads_neither_cupy_nor_mpi4py_nor_the_tools():
    """At run time, in a fresh interpreter: what `import gpunn` pulled in."""
    code = ("import sys, gpunn; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('cupy', 'cupyx', 'cupy_backends', 'mpi4py') or m in %r)))" % sorted(TOOLS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                            cwd=ROOT).stdout.split()
    assert loaded == []
