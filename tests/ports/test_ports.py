"""Five PyTorch training scripts (tests/ports/), run unchanged but for their import lines under
gpunn, give what they give under PyTorch: against torch where it is installed, against the
values recorded from torch (tests/ports/recorded.json) where it is not.

Each script builds its model with `build_model()` and trains it with `train(model)`, which
returns plain numbers (losses, accuracies, learning rates, ...). The two frameworks draw
different initial weights, so before training this harness overwrites every parameter of
either framework's model with the same deterministic values (`_same_start`); the scripts'
data are deterministic too. Regenerate the recording with `python tests/ports/test_ports.py`.
"""

import importlib.util
import json
import math
import pathlib
import re
import sys
import types

import numpy as np
import pytest

import gpunn

PORTS = pathlib.Path(__file__).resolve().parent
RECORDED = PORTS / "recorded.json"
NAMES = ["mlp_classifier", "regression_steplr", "loader_accumulation", "residual_tied", "batchnorm_classifier"]

# The only lines rewritten: import lines naming torch. Everything after them is the script's.
_IMPORTS = [
    (re.compile(r"^import torch$"), "import gpunn as torch"),
    (re.compile(r"^import torch\.([\w.]+) as (\w+)$"), r"import gpunn.\1 as \2"),
    (re.compile(r"^from torch((?:\.\w+)*) import "), r"from gpunn\1 import "),
]


def to_gpunn(source):
    lines = []
    for line in source.splitlines():
        for pattern, replacement in _IMPORTS:
            line = pattern.sub(replacement, line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def load_port(name, framework):
    path = PORTS / f"{name}.py"
    source = path.read_text()
    if framework == "gpunn":
        source = to_gpunn(source)
    module = types.ModuleType(f"port_{name}_{framework}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def _same_start(model, lib):
    """Overwrite every parameter with sin-based values scaled by 1/sqrt(fan-in): the same start
    in either framework (parameters() gives them in the same order in both)."""
    with lib.no_grad():
        for k, p in enumerate(model.parameters()):
            shape = tuple(p.shape)
            fan_in = shape[1] if len(shape) == 2 else 4
            values = np.sin(0.9 * np.arange(math.prod(shape)) + k) / math.sqrt(fan_in)
            p.copy_(lib.tensor(values.reshape(shape).astype(np.float32)))


def run_port(name, framework):
    lib = gpunn if framework == "gpunn" else pytest.importorskip("torch")
    port = load_port(name, framework)
    model = port.build_model()
    _same_start(model, lib)
    return port.train(model)


def assert_close(ours, reference, path="result"):
    """Same keys and types; numbers equal to float32 training precision (measured: at most 8e-7
    relative for ports 1-4, 1.6e-5 for BatchNorm1d's running mean, against PyTorch)."""
    if isinstance(reference, dict):
        assert sorted(ours) == sorted(reference), path
        for key in reference:
            assert_close(ours[key], reference[key], f"{path}[{key!r}]")
    elif isinstance(reference, list):
        assert isinstance(ours, list) and len(ours) == len(reference), path
        np.testing.assert_allclose(ours, reference, rtol=5e-5, atol=5e-6, err_msg=path)
    elif isinstance(reference, bool) or isinstance(reference, int):
        assert ours == reference and type(ours) is type(reference), (path, ours, reference)
    else:
        np.testing.assert_allclose(ours, reference, rtol=5e-5, atol=5e-6, err_msg=path)


def _reference(name):
    """PyTorch's result: run now where torch is installed, else as recorded."""
    if importlib.util.find_spec("torch") is None:
        return json.loads(RECORDED.read_text())[name]
    return run_port(name, "torch")


def _needs(name):
    if name == "batchnorm_classifier":
        return [pytest.mark.skipif(not hasattr(gpunn.nn, "BatchNorm1d"),
                                   reason="nn.BatchNorm1d is not in gpunn yet (helper B adds it)")]
    return []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs(n)) for n in NAMES])
def test_port_matches_pytorch(name):
    assert_close(run_port(name, "gpunn"), _reference(name))


@pytest.mark.parametrize("name", NAMES)
def test_only_import_lines_are_rewritten(name):
    original = (PORTS / f"{name}.py").read_text().splitlines()
    rewritten = to_gpunn("\n".join(original)).splitlines()
    changed = [(a, b) for a, b in zip(original, rewritten) if a != b]
    assert changed and len(original) == len(rewritten)
    assert all(a.startswith(("import torch", "from torch")) for a, _ in changed)
    assert "torch" not in "".join(b.replace("import gpunn as torch", "") for _, b in changed)


def test_recording_has_every_port_and_matches_torch():
    recorded = json.loads(RECORDED.read_text())
    assert sorted(recorded) == sorted(NAMES)
    pytest.importorskip("torch")
    assert_close(run_port("regression_steplr", "torch"), recorded["regression_steplr"])


def test_the_comparison_catches_a_small_drift():
    """Negative control: a loss one part in a thousand off, or a flag flipped, is caught."""
    reference = json.loads(RECORDED.read_text())["regression_steplr"]
    drifted = json.loads(json.dumps(reference))
    drifted["losses"][5] *= 1.001
    with pytest.raises(AssertionError):
        assert_close(drifted, reference)
    flag = json.loads(RECORDED.read_text())["loader_accumulation"]
    with pytest.raises(AssertionError):
        assert_close({**flag, "frozen_unchanged": not flag["frozen_unchanged"]}, flag)


if __name__ == "__main__":  # record PyTorch's results for machines without torch
    RECORDED.write_text(json.dumps({name: run_port(name, "torch") for name in NAMES}, indent=1) + "\n")
    sys.stdout.write(f"wrote {RECORDED}\n")
