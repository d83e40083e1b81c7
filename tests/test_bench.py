"""gpunn bench and benchmarks/parity.py: they run, write what they promise, and their checks can fail.

No assertion here is about speed: timings only have to be positive and consistent.
"""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn import bench

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(*argv):
    return bench.build_parser().parse_args(list(argv))


def _quick(out, *extra):
    return _args("--quick", "--devices", "cpu", "--repeats", "2", "--block-ms", "1", "--out", str(out), *extra)


# --- the bench run ---------------------------------------------------------------------------------


def test_quick_bench_writes_csv_json_and_plot_with_sane_times(tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench.main(_quick(out)) == 0
    printed = capsys.readouterr().out

    report = json.loads((out / "bench.json").read_text())
    assert {"machine", "settings", "results", "loss_checks", "loss_checks_ok", "speedups", "notes"} <= report.keys()
    machine = report["machine"]
    assert {"platform", "cpu", "cpu_count", "python", "versions", "numpy_blas", "threadpools", "environment",
            "gpus", "load_average"} <= machine.keys()
    assert machine["versions"]["numpy"] == np.__version__
    assert machine["versions"]["gpunn"] == gpunn.__version__

    models = ["-".join(map(str, s)) for s in bench.parse_sizes(bench.QUICK_SIZES)]
    batches = bench.parse_batch_sizes(bench.QUICK_BATCHES)
    results = report["results"]
    for model in models:
        for batch in batches:
            impls = {r["impl"] for r in results if r["model"] == model and r["batch"] == batch and r["device"] == "cpu"}
            assert {"gpunn", "numpy"} <= impls, (model, batch, impls)
            assert any(line.startswith(model) and f" {batch} " in line and " cpu " in line
                       for line in printed.splitlines()), f"no table line for {model} @{batch}"
    for r in results:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"], r
        assert r["samples_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
        assert r["params"] == bench.parameter_count([int(n) for n in r["model"].split("-")])
        assert r["repeats"] == 2 and r["steps_per_repeat"] >= 1

    # every non-NumPy contender was checked against the NumPy baseline, and all agreed
    checked = {(c["model"], c["batch"], c["impl"], c["device"]) for c in report["loss_checks"]}
    contenders = {(r["model"], r["batch"], r["impl"], r["device"]) for r in results if r["impl"] != "numpy"}
    assert checked == contenders
    assert report["loss_checks_ok"] and all(c["ok"] for c in report["loss_checks"])
    assert all(np.isfinite(c["loss"]) and c["loss"] > 0 for c in report["loss_checks"])

    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results)
    assert float(rows[0]["median_ms"]) == pytest.approx(results[0]["median_ms"])
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_loss_mismatch_is_reported_and_fails_the_run(tmp_path, capsys, monkeypatch):
    """Negative control: a NumPy baseline that reports a different loss must trip the check."""
    original = bench.NumpyStep.value
    monkeypatch.setattr(bench.NumpyStep, "value", lambda self, loss: original(self, loss) * 1.01)
    out = tmp_path / "bench"
    assert bench.main(_quick(out, "--baselines", "numpy", "--no-plot")) == 1
    assert "WARNING: first-step loss of gpunn on cpu" in capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    assert report["loss_checks"] and not report["loss_checks_ok"]
    assert not (out / "bench.png").exists()


def test_first_loss_check_separates_same_from_different_weights():
    weights, x, y = bench.make_problem((20, 16, 5), 8, seed=3)
    nudged = [(w * 1.05, b) for w, b in weights]
    contenders = [bench.NumpyStep(weights, x, y, 0.1), bench.GpunnStep("cpu", weights, x, y, 0.1),
                  bench.GpunnStep("cpu", nudged, x, y, 0.1)]
    first, times, blocks = bench.measure(contenders, repeats=1, warmup=0, block_s=0)
    assert bench.losses_agree(first[1], first[0], "float32")
    assert not bench.losses_agree(first[2], first[0], "float32")
    assert all(len(t) == 1 and t[0] > 0 for t in times) and blocks == [1, 1, 1]


# --- the baselines do the same step as gpunn ----------------------------------------------------


def _weights_after(step, n):
    for _ in range(n):
        step.step()
    return step.weights()


def test_numpy_baseline_takes_the_same_steps_as_gpunn_in_float64():
    weights, x, y = bench.make_problem((12, 9, 7, 4), 10, dtype="float64", seed=1)
    ours = _weights_after(bench.GpunnStep("cpu", weights, x, y, 0.5), 3)
    theirs = _weights_after(bench.NumpyStep(weights, x, y, 0.5), 3)
    for (w1, b1), (w2, b2), (w0, _) in zip(ours, theirs, weights):
        assert np.abs(w1 - w0).max() > 1e-3  # the steps moved the weights...
        np.testing.assert_allclose(w1, w2, rtol=1e-10, atol=1e-12)  # ...identically
        np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-12)


def test_torch_baseline_takes_the_same_steps_as_gpunn_in_float64():
    torch = pytest.importorskip("torch")
    weights, x, y = bench.make_problem((12, 9, 7, 4), 10, dtype="float64", seed=2)
    ours = _weights_after(bench.GpunnStep("cpu", weights, x, y, 0.5), 3)
    theirs = _weights_after(bench.TorchStep(torch, "cpu", weights, x, y, 0.5), 3)
    for (w1, b1), (w2, b2) in zip(ours, theirs):
        np.testing.assert_allclose(w1, w2, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-12)


# --- options and devices -------------------------------------------------------------------------


def test_sizes_and_batch_sizes_parse_and_bad_ones_say_what_is_wrong():
    assert bench.parse_sizes("784-256-256-10, 64-10") == [(784, 256, 256, 10), (64, 10)]
    assert bench.parse_batch_sizes("128,512") == [128, 512]
    for bad in ("784", "784-x-10", "784-0-10", ""):
        with pytest.raises(Exception, match="784-256-256-10|model"):
            bench.parse_sizes(bad)
    with pytest.raises(SystemExit):
        _args("--sizes", "784-abc")
    with pytest.raises(SystemExit):
        _args("--batch-sizes", "0")


def test_unusable_cuda_is_skipped_with_gpunn_reason():
    reason = gpunn.cuda.why_unavailable()
    if reason is None:
        pytest.skip("CUDA is usable here: nothing to skip")
    devices, notes = bench.usable_devices(["cpu", "cuda"])
    assert devices == [gpunn.device("cpu")]
    assert notes == [f"skipping device cuda: {reason}"]


# --- benchmarks/parity.py --------------------------------------------------------------------------


def test_parity_cpu_and_strict_agree(capsys):
    parity = _load_script("parity")
    assert parity.main(["--devices", "cpu,strict", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    assert "parity: all devices agree" in printed
    report = parity.run(["cpu", "strict"], steps=3)
    assert [r["dtype"] for r in report] == ["float32", "float64"]
    for r in report:
        assert r["agree"] and r["max_rel_diff"] <= r["rtol"] and np.isfinite(r["last_loss"])


def test_parity_reports_a_perturbed_device_as_disagreeing(capsys):
    """Negative control: a 0.1% change of one layer's weights on the second device must be caught."""
    parity = _load_script("parity")
    assert parity.main(["--devices", "cpu,strict", "--steps", "4", "--perturb", "1e-3"]) == 1
    assert "DISAGREE" in capsys.readouterr().out
    for r in parity.run(["cpu", "strict"], steps=3, perturb=1e-3):
        assert not r["agree"] and r["max_rel_diff"] > r["rtol"]


def test_parity_float64_tolerance_catches_what_float32_would_forgive():
    parity = _load_script("parity")
    (r,) = parity.run(["cpu", "strict"], dtypes=("float64",), steps=3, perturb=1e-7)
    assert not r["agree"] and r["max_rel_diff"] < parity.RTOL["float32"]


def test_parity_compare_rejects_nan_and_length_mismatch():
    parity = _load_script("parity")
    assert parity.compare([1.0, 2.0], [1.0, 2.0], 1e-12)[0]
    assert not parity.compare([1.0, 2.0], [1.0, float("nan")], 1.0)[0]
    assert not parity.compare([1.0, 2.0], [1.0], 1.0)[0]
