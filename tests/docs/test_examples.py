"""Every example in examples/ runs with --quick, writes its figures, and prints what the lecture claims.

Each script runs in a subprocess (as a user would run it); the checks recompute what they can
from the printed numbers instead of trusting the script's own verdicts.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn.datasets import regression_1d

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name, tmp_path, *extra):
    """Run examples/<name>.py --quick --out <tmp>; return (stdout, output folder)."""
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, out


def assert_png(path):
    assert path.is_file(), f"{path.name} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(data) > 1024, f"{path.name} is only {len(data)} bytes"


def numbers(text):
    return [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?", text)]


def test_logic_gates(tmp_path):
    stdout, out = run_example("logic_gates", tmp_path)
    assert_png(out / "logic_gates.png")
    assert "units computing XNOR: 0" in stdout
    assert re.search(r"units computing AND:\s+[1-9]", stdout)  # the search can find a gate when one exists
    assert "linearly separable" in stdout
    # The recoded table: h1 = AND, h2 = NOR, and the output unit [h1 + h2 >= 1] computes XNOR.
    table = stdout.split("raw i1 i2 | recoded h1 h2")[1].split("recoded inputs")[0]
    rows = [numbers(line) for line in table.splitlines()[1:5]]
    assert len(rows) == 4
    for i1, i2, h1, h2, out_bit, xnor in rows:
        assert h1 == (i1 and i2) and h2 == (not i1 and not i2)
        assert out_bit == (h1 + h2 >= 1) == xnor == (i1 == i2)
    assert "learned network computes XNOR: yes" in stdout


def test_universal_approximation(tmp_path):
    stdout, out = run_example("universal_approximation", tmp_path)
    assert_png(out / "universal_approximation.png")
    for name in ["square", "sin", "abs", "step"]:
        match = re.search(rf"{name}\s+training mean squared error ([\d.e-]+)", stdout)
        assert match, f"no training error printed for {name}"
        _, t = regression_1d(name, n=50, seed=0)
        # Three tanh units explain nearly all the variance of each target (a constant explains none).
        assert float(match.group(1)) < 0.1 * np.var(t), name


def parse_vector(text, name):
    match = re.search(rf"{name}\s+= (\[[^\]]*\]|[-\d.e]+)", text)
    assert match, f"{name} not printed"
    return np.array(numbers(match.group(1)))


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_computation_graph(tmp_path, device):
    stdout, out = run_example("computation_graph", tmp_path, "--device", device)
    assert_png(out / "node_values.png")
    dot = (out / "computation_graph.dot").read_text()
    assert dot.startswith("digraph") and all(f"{n}\\n" in dot for n in ["w", "x", "r_hat", "r", "l", "R", "J"])
    if shutil.which("dot"):
        assert_png(out / "computation_graph.png")
    assert "all gradients match the closed forms" in stdout
    # Recompute the closed forms from the printed inputs (printed to 6 significant digits).
    x, y, lam, w = (parse_vector(stdout, n) for n in ["x", "y", "lam", "w"])
    backward = stdout.split("backward, in reverse order")[1]
    r = y - w @ x
    expected = {"dJ/dl": 1.0, "dJ/dR": 1.0, "dJ/dr": 2 * r, "dJ/dr_hat": -2 * r, "dJ/dw": -2 * r * x + 2 * lam * w}
    for name, value in expected.items():
        np.testing.assert_allclose(parse_vector(backward, name), value, rtol=1e-4, atol=1e-5, err_msg=name)
    # Negative control: the check can tell a wrong gradient (dJ/dw without the penalty) from the right one.
    assert not np.allclose(parse_vector(backward, "dJ/dw"), -2 * r * x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("strict:1", marks=pytest.mark.slow)])
def test_ridge_regression(tmp_path, device):
    stdout, out = run_example("ridge_regression", tmp_path, "--device", device)
    assert_png(out / "ridge_regression.png")
    rows = [numbers(line) for line in stdout.splitlines() if re.match(r"\s+[\d.e-]+ \|", line)]
    assert len(rows) >= 3
    lam, train, test, _, gap = (np.array(column) for column in zip(*rows))
    assert np.all(gap < 2e-2), "gradient descent did not reach the closed-form solution"
    assert np.all(np.diff(lam) > 0) and np.all(np.diff(train) > 0), "training error must grow with lambda"
    assert test.min() < test[lam == 0][0], "some penalty should beat plain least squares on the test set"


def test_multiclass(tmp_path):
    stdout, out = run_example("multiclass", tmp_path)
    assert_png(out / "multiclass.png")

    def accuracy(pattern):
        match = re.search(pattern + r"\s+([\d.]+)", stdout)
        assert match, pattern
        return float(match.group(1))

    assert accuracy(r"blobs\s+softmax regression") > 0.9
    assert accuracy(r"blobs\s+MLP \(2 hidden layers of 64 ReLU\)") > 0.9
    assert accuracy(r"spirals\s+MLP \(2 hidden layers of 64 ReLU\)") > 0.9
    assert accuracy(r"spirals\s+softmax regression") < 0.6  # linear regions cannot follow the spirals
    digits = stdout.split("digits (")[1]
    assert float(re.search(r"softmax regression\s+([\d.]+)", digits).group(1)) > 0.8
    assert float(re.search(r"MLP \(2 hidden layers of 64 ReLU\)\s+([\d.]+)", digits).group(1)) > 0.85


def test_restarts(tmp_path):
    stdout, out = run_example("restarts", tmp_path)
    assert_png(out / "restarts.png")
    assert_png(out / "cliff.png")
    assert float(re.search(r"best of \d+: ([\d.]+)", stdout).group(1)) < 0.1
    finals = {}
    for line in stdout.split("cliff objective")[1].splitlines()[1:5]:
        name, rest = line.split("final theta")
        _theta, loss, step = numbers(rest)
        finals[name.strip()] = (loss, step)
    assert len(finals) == 4
    sgd_loss, sgd_step = finals["SGD, lr 0.1"]
    assert sgd_loss > 0.5 and sgd_step > 1, "plain SGD should be thrown off the wall"
    for name in ["SGD, lr 0.1, clip_grad_norm_ 1", "Adam, lr 0.1"]:
        assert finals[name][0] < 1e-2 and finals[name][1] <= 0.5, name
    rmsprop_loss, rmsprop_step = next(v for k, v in finals.items() if k.startswith("RMSprop"))
    assert rmsprop_loss < 0.1 and rmsprop_step <= 0.5


@pytest.mark.parametrize("device", ["cpu", "strict:1"])  # strict:1: the data and model stay off the host device
def test_train_digits(tmp_path, device):
    stdout, out = run_example("train_digits", tmp_path, "--device", device)
    assert_png(out / "train_digits.png")
    accuracies = [float(a) for a in re.findall(r"test accuracy ([\d.]+)", stdout)]
    assert len(accuracies) == 5 and accuracies[-1] > 0.85


def test_compare_devices(tmp_path):
    stdout, out = run_example("compare_devices", tmp_path, "--devices", "cpu,strict,cuda", "--compile")
    assert_png(out / "compare_devices.png")
    assert re.search(r"cpu\s+[\d.]+ ms/step", stdout)
    assert re.search(r"strict\s+[\d.]+ ms/step", stdout)
    reason = gpunn.cuda.why_unavailable()
    if reason is None:
        assert re.search(r"cuda:0\s+[\d.]+ ms/step", stdout)
    else:
        assert re.search(rf"cuda\s+skipped: {re.escape(reason)}", stdout)
    assert "speed-up of strict over cpu" in stdout
    assert re.search(r"cpu graph\s+[\d.]+ ms/step .*ran eagerly: CUDA graphs need a CUDA device", stdout)


def test_png_check_rejects_what_is_not_a_figure(tmp_path):
    """Negative control for assert_png: a missing file, a non-PNG and a tiny PNG all fail it."""
    (tmp_path / "text.png").write_text("not an image" * 200)
    (tmp_path / "tiny.png").write_bytes(PNG_SIGNATURE + b"\0" * 100)
    for name in ["missing.png", "text.png", "tiny.png"]:
        with pytest.raises(AssertionError):
            assert_png(tmp_path / name)


def test_unusable_device_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "train_digits.py"), "--quick", "--device", "nonsense",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr and "Traceback" not in proc.stderr
