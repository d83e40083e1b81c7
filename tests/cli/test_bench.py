"""gpunn bench and benchmarks/parity.py: they run, write what they promise, and their checks can fail.

No assertion here is about speed: timings only have to be positive and consistent.
"""

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gpunn
from gpunn.cli import bench

ROOT = Path(__file__).resolve().parents[2]


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

    assert report["settings"]["tf32"] is False
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
        assert r["note"] is None
    # no CUDA graphs on the cpu; vs_torch is set exactly where a PyTorch peer ran
    assert {r["impl"] for r in results} <= {"gpunn", "numpy", "torch"}
    torch_ran = {(r["model"], r["batch"]) for r in results if r["impl"] == "torch"}
    for r in results:
        assert (r["vs_torch"] is not None) == (r["impl"] == "gpunn" and (r["model"], r["batch"]) in torch_ran), r

    # every contender's first step was checked against the NumPy forward pass, and all agreed
    checked = {(c["model"], c["batch"], c["impl"], c["device"]) for c in report["loss_checks"]}
    contenders = {(r["model"], r["batch"], r["impl"], r["device"]) for r in results}
    assert checked == contenders
    assert {(c["step"], c["against"], c["tf32"]) for c in report["loss_checks"]} == {(1, "numpy forward pass", False)}
    assert report["loss_checks_ok"] and all(c["ok"] for c in report["loss_checks"])
    assert all(np.isfinite(c["loss"]) and c["loss"] > 0 for c in report["loss_checks"])

    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results)
    assert float(rows[0]["median_ms"]) == pytest.approx(results[0]["median_ms"])
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_loss_mismatch_is_reported_and_fails_the_run(tmp_path, capsys, monkeypatch):
    """Negative control: a NumPy reference that gives a different loss must trip the check."""
    original = bench.reference_loss
    monkeypatch.setattr(bench, "reference_loss", lambda *problem: original(*problem) * 1.01)
    out = tmp_path / "bench"
    assert bench.main(_quick(out, "--baselines", "numpy", "--no-plot")) == 1
    assert "WARNING: gpunn on cpu: loss at step 1 is" in capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    assert report["loss_checks"] and not report["loss_checks_ok"]
    assert not (out / "bench.png").exists()


def test_first_loss_check_separates_same_from_different_weights():
    weights, x, y = bench.make_problem((20, 16, 5), 8, seed=3)
    nudged = [(w * 1.05, b) for w, b in weights]
    contenders = [bench.NumpyStep(weights, x, y, 0.1), bench.GpunnStep("cpu", weights, x, y, 0.1),
                  bench.GpunnStep("cpu", nudged, x, y, 0.1)]
    first, warm, times, blocks = bench.measure(contenders, repeats=1, warmup=2, block_s=0)
    rtol = bench.loss_rtol("float32", "cpu")
    assert bench.losses_agree(first[1], first[0], rtol) and bench.losses_agree(warm[1], warm[0], rtol)
    assert not bench.losses_agree(first[2], first[0], rtol)
    assert first[0] == pytest.approx(bench.reference_loss(weights, x, y), rel=1e-6)
    assert warm[0] < first[0]  # the warm-up losses are those of later steps
    assert all(len(t) == 1 and t[0] > 0 for t in times) and blocks == [1, 1, 1]


def test_reference_loss_is_log_classes_for_zero_weights_and_the_numpy_first_step():
    weights, x, y = bench.make_problem((6, 5, 4), 7, dtype="float64", seed=4)
    zero = [(np.zeros_like(w), np.zeros_like(b)) for w, b in weights]
    assert bench.reference_loss(zero, x, y) == pytest.approx(np.log(4), rel=1e-12)  # uniform softmax
    first = bench.NumpyStep(weights, x, y, 0.1).step()
    assert bench.reference_loss(weights, x, y) == pytest.approx(first, rel=1e-12)
    assert bench.reference_loss(weights, x, (y + 1) % 4) != pytest.approx(first, rel=1e-3)


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


def test_sizes_accept_the_repeat_shorthand_of_the_docs():
    assert bench.parse_sizes("784-1024x3-10") == [(784, 1024, 1024, 1024, 10)]
    assert bench.parse_sizes("4096x4-1000,64x1-10") == [(4096,) * 4 + (1000,), (64, 10)]
    assert _args("--sizes", "784-256x2-10").sizes == [(784, 256, 256, 10)]
    for bad in ("784-1024x0-10", "784-1024xfoo-10", "784-x3-10", "784-1024x-10", "784-1024x3x2-10", "10x1"):
        with pytest.raises(Exception, match="is not a model.*784-1024x3-10"):
            bench.parse_sizes(bad)


def test_every_shorthand_model_in_the_benchmark_docs_parses():
    """BENCHMARKS.md and benchmarks/README.md name models like 784-1024x3-10; --sizes takes each one."""
    import re

    width = r"\d+(?:x\d+)?"
    shorthand = re.compile(rf"\b(?:{width}-)*\d+x\d+(?:-{width})*\b")
    named = set()
    for doc in ("BENCHMARKS.md", "benchmarks/README.md"):
        named |= {m.group() for m in shorthand.finditer((ROOT / doc).read_text()) if "-" in m.group()}  # not 8x10
    assert {"784-1024x3-10", "4096x4-1000"} <= named
    for model in named:
        assert len(bench.parse_sizes(model)[0]) >= 2, model


def test_unusable_cuda_is_skipped_with_gpunn_reason():
    reason = gpunn.cuda.why_unavailable()
    if reason is None:
        pytest.skip("CUDA is usable here: nothing to skip")
    devices, skipped = bench.usable_devices(["cpu", "cuda"])
    assert devices == [gpunn.device("cpu")]
    assert skipped == {"cuda": reason}


def _bench_cli(capsys, *argv):
    """`gpunn bench ARGV` through the real command line: (exit status, stdout, stderr)."""
    from gpunn import cli

    try:
        status = cli.main(["bench", *argv])
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    printed = capsys.readouterr()
    return status, printed.out, printed.err


@pytest.mark.parametrize("argv, named", [
    (("--devices", "tpu"), "--devices: unknown device 'tpu'"),
    (("--devices", "cpu,cuda:x"), "--devices: unknown device 'cuda:x'"),
    (("--devices", ","), "--devices: no device given"),
    (("--lr", "-1"), "--lr: must be > 0"),
    (("--lr", "0"), "--lr: must be > 0"),
    (("--lr", "nan"), "--lr: expected a finite number"),
    (("--repeats", "0"), "--repeats"),
    (("--warmup", "-1"), "--warmup"),
    (("--block-ms", "-1"), "--block-ms"),
    (("--threads", "0"), "--threads"),
    (("--seed", "-1"), "--seed"),
    (("--baselines", "nump"), "--baselines: unknown baseline nump"),
    (("--sizes", "784-1024x0-10"), "--sizes"),
])
def test_bad_option_values_are_usage_errors_before_anything_runs(tmp_path, capsys, argv, named):
    out = tmp_path / "bench"
    status, printed, error = _bench_cli(capsys, "--quick", "--out", str(out), *argv)
    assert status == 2 and printed == ""
    assert error.startswith(f"gpunn bench: error: argument {named}") and error.count("\n") == 1, error
    assert not out.exists()


def test_known_devices_and_sane_values_parse():
    """Negative control for the usage errors: what a user may write is accepted as given."""
    args = _args("--devices", "cpu, cuda,cuda:1,strict:1,auto", "--lr", "0.5", "--repeats", "1", "--warmup", "0",
                 "--block-ms", "0", "--threads", "2", "--seed", "0", "--baselines", "none")
    assert args.devices == ["cpu", "cuda", "cuda:1", "strict:1", "auto"]  # cuda stays: it may be usable
    assert (args.lr, args.repeats, args.warmup, args.block_ms, args.threads, args.seed) == (0.5, 1, 0, 0.0, 2, 0)
    assert args.baselines == [] and _args("--baselines", "torch,numpy").baselines == ["torch", "numpy"]


def test_a_run_where_gpunn_ran_on_no_device_prints_the_baselines_and_fails(tmp_path, capsys):
    # cuda:99 is a well-formed device that exists nowhere: a note while running, not a usage error
    out = tmp_path / "bench"
    status, printed, error = _bench_cli(capsys, "--quick", "--devices", "cuda:99", "--baselines", "numpy",
                                        "--repeats", "1", "--block-ms", "1", "--no-plot", "--out", str(out))
    assert status == 1
    assert "note: skipping device cuda:99: " in printed
    for model in bench.parse_sizes(bench.QUICK_SIZES):
        name = "-".join(map(str, model))
        assert any(line.startswith(name) and " numpy " in line for line in printed.splitlines()), printed
    assert error.startswith("gpunn bench: error: gpunn was timed on no device") and "cuda:99" in error
    report = json.loads((out / "bench.json").read_text())
    assert {r["impl"] for r in report["results"]} == {"numpy"}


def test_a_run_with_a_usable_device_next_to_an_unusable_one_passes(tmp_path, capsys):
    """Negative control: one device that runs is enough, and the table keeps to gpunn's lines."""
    status, printed, error = _bench_cli(capsys, "--quick", "--devices", "cpu,cuda:99", "--baselines", "numpy",
                                        "--sizes", "10-5-3", "--repeats", "1", "--block-ms", "1", "--no-plot",
                                        "--out", str(tmp_path / "bench"))
    assert status == 0 and "error" not in error
    table = [line for line in printed.splitlines() if line.startswith("10-5-3")]
    assert len(table) == 1 and " gpunn " in table[0]  # NumPy's time is a column of gpunn's line


def test_threads_without_threadpoolctl_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # `import threadpoolctl` now fails
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as stop:
        bench.main(_quick(out, "--threads", "1", "--no-plot"))
    message = str(stop.value.code)
    assert message.startswith("gpunn bench: error: --threads needs threadpoolctl") and "pip install" in message
    assert not out.exists()  # refused before the output folder is made


def test_threads_limits_blas_where_threadpoolctl_is_installed():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    bench.limit_threads(1)
    try:
        pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert pools and all(p["num_threads"] == 1 for p in pools)
    finally:
        bench.limit_threads.held.restore_original_limits()


def test_threadpoolctl_is_in_the_test_extra():
    """--threads is recommended in benchmarks/README.md, so `pip install -e '.[test]'` brings it."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("threadpoolctl") for req in extras["test"])


def test_tf32_flag_parses_is_recorded_and_is_undone_after_the_run(tmp_path, monkeypatch):
    assert _args().tf32 is False and _args("--tf32").tf32 is True
    torch = bench.import_torch()[0]
    seen = []
    original = bench.run_configuration

    def spy(*a, **k):
        seen.append((gpunn.get_float32_matmul_precision(), torch and torch.get_float32_matmul_precision()))
        return original(*a, **k)

    monkeypatch.setattr(bench, "run_configuration", spy)
    out = tmp_path / "bench"
    assert bench.main(_quick(out, "--tf32", "--no-plot")) == 0
    assert seen and all(s == ("high", torch and "high") for s in seen)
    assert gpunn.get_float32_matmul_precision() == "highest"
    if torch is not None:
        assert torch.get_float32_matmul_precision() == "highest"
    report = json.loads((out / "bench.json").read_text())
    assert report["settings"]["tf32"] is True
    assert any("--tf32 changes nothing here" in n for n in report["notes"])
    # TF32 never touches the cpu, so its checks keep the float32 tolerance
    assert {(c["tf32"], c["rtol"]) for c in report["loss_checks"]} == {(False, bench.FIRST_LOSS_RTOL["float32"])}


def test_loss_tolerance_is_loosened_for_tf32_float32_on_cuda_only():
    assert bench.loss_rtol("float32", "cuda:0", tf32=True) == bench.TF32_RTOL
    assert bench.loss_rtol("float32", "cuda:0") == bench.FIRST_LOSS_RTOL["float32"]
    assert bench.loss_rtol("float32", "cpu", tf32=True) == bench.FIRST_LOSS_RTOL["float32"]
    assert bench.loss_rtol("float64", "cuda:0", tf32=True) == bench.FIRST_LOSS_RTOL["float64"]
    assert bench.losses_agree(2.0, 2.0002, bench.TF32_RTOL) and not bench.losses_agree(2.0, 2.0002, 1e-5)
    assert not bench.losses_agree(2.0, 2.01, bench.TF32_RTOL)  # a wrong step is not forgiven under TF32
    assert not bench.losses_agree(float("nan"), float("nan"), 1.0)


def _as_written(x):
    """1e-05 -> '1e-5', 0.0002 -> '2e-4': how the docs write a tolerance."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_the_docs_state_the_loss_tolerances_the_code_uses():
    f32, f64, tf32 = (_as_written(bench.FIRST_LOSS_RTOL["float32"]), _as_written(bench.FIRST_LOSS_RTOL["float64"]),
                      _as_written(bench.TF32_RTOL))
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())  # lines joined
    assert f"({f32} relative in float32, {f64} in float64, {tf32} for float32 on CUDA under `--tf32`" in readme
    benchmarks = " ".join((ROOT / "BENCHMARKS.md").read_text().split())
    assert f"checked against NumPy at {f32} relative ({tf32} under TF32)" in benchmarks


def _row(impl, device, ms, model="784-10", batch=8):
    return {"model": model, "params": 7850, "batch": batch, "device": device, "impl": impl, "median_ms": ms,
            "min_ms": ms, "max_ms": ms, "samples_per_s": batch / ms * 1e3, "gpunn_over_this": None, "note": None}


def test_vs_torch_pairs_eager_with_eager_and_graph_with_graph_on_the_same_device(tmp_path):
    rows = bench.add_torch_ratios([
        _row("gpunn", "cuda:0", 2.0), _row("torch", "cuda:0", 4.0),
        _row("gpunn-graph", "cuda:0", 1.0), _row("torch-graph", "cuda:0", 1.25),
        _row("gpunn", "cpu", 3.0), _row("torch", "cpu", 1.0), _row("numpy", "cpu", 3.0),
        _row("gpunn", "cuda:1", 5.0),  # no torch on cuda:1
        _row("gpunn", "cuda:0", 9.0, batch=16),  # another configuration: no torch there either
    ])
    ratios = [r["vs_torch"] for r in rows]
    assert ratios == [pytest.approx(0.5), None, pytest.approx(0.8), None, pytest.approx(3.0), None, None, None, None]
    lines = bench.table_lines(rows)
    graph_line = next(line for line in lines if "gpunn-graph" in line)
    assert "1.250" in graph_line and "0.80x" in graph_line  # torch-graph's time and the ratio, not torch's
    cpu_line = next(line for line in lines if " cpu " in line)
    assert "3.000" in cpu_line and "1.00x" in cpu_line and "3.00x" in cpu_line  # numpy, g/np, vs torch
    assert not any(line.startswith("784-10") and "torch-graph" in line for line in lines)
    assert not any(" numpy " in line or " torch " in line for line in lines)  # baselines are columns here...
    alone = bench.table_lines([_row("numpy", "cpu", 3.0), _row("torch", "cpu", 1.0)])
    assert [line.split()[4] for line in alone] == ["numpy", "torch"]  # ...and lines where gpunn did not run
    bench.plot(rows, bench.speedups(rows), tmp_path / "bench.png")  # graph rows plot too
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_graph_contenders_are_built_on_cuda_devices_only(monkeypatch):
    built = []

    def recorder(impl, where):  # stands in for a contender class: records its name and device
        return lambda *args: built.append((impl, where(args)))

    gpunn_device, torch_device = (lambda args: args[0].spec), (lambda args: args[1])
    monkeypatch.setattr(bench, "GpunnStep", recorder("gpunn", gpunn_device))
    monkeypatch.setattr(bench, "GpunnGraphStep", recorder("gpunn-graph", gpunn_device))
    monkeypatch.setattr(bench, "NumpyStep", recorder("numpy", lambda args: "cpu"))
    monkeypatch.setattr(bench, "TorchStep", recorder("torch", torch_device))
    monkeypatch.setattr(bench, "TorchGraphStep", recorder("torch-graph", torch_device))
    cpu = SimpleNamespace(type="cpu", index=0, spec="cpu")
    cuda = SimpleNamespace(type="cuda", index=0, spec="cuda:0")
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True, device_count=lambda: 1))
    settings = {"lr": 0.1, "baselines": ["numpy", "torch"]}
    weights, x, y = bench.make_problem((4, 3), 2)
    bench.build_contenders(settings, [cpu, cuda], fake_torch, weights, x, y)
    assert sorted(built) == [("gpunn", "cpu"), ("gpunn", "cuda:0"), ("gpunn-graph", "cuda:0"), ("numpy", "cpu"),
                             ("torch", "cpu"), ("torch", "cuda:0"), ("torch-graph", "cuda:0")]
    built.clear()
    bench.build_contenders(settings, [cpu], fake_torch, weights, x, y)
    assert sorted(built) == [("gpunn", "cpu"), ("numpy", "cpu"), ("torch", "cpu")]


def test_loss_checks_hold_graph_contenders_to_their_eager_siblings():
    contenders = [SimpleNamespace(impl=i, device=d) for i, d in
                  [("gpunn", "cuda:0"), ("gpunn-graph", "cuda:0"), ("torch", "cuda:0"), ("torch-graph", "cuda:0"),
                   ("gpunn", "cpu")]]
    first = [2.30] * 5
    warm = [2.1, 2.1, 2.1, 2.1 * 1.003, 2.1]  # torch-graph drifted by 0.3% after the warm-up
    settings = {"dtype": "float32", "tf32": False}
    checks = bench.loss_checks(settings, contenders, first, warm, reference=2.30, warm_step=4)
    assert [(c["impl"], c["step"]) for c in checks] == [(c.impl, 1) for c in contenders] + [
        ("gpunn-graph", 4), ("torch-graph", 4)]
    assert [c["against"] for c in checks[5:]] == ["gpunn on cuda:0", "torch on cuda:0"]
    assert [c["ok"] for c in checks] == [True] * 6 + [False]  # negative control: the drift is caught...
    relaxed = bench.loss_checks({"dtype": "float32", "tf32": True}, contenders, first, warm, 2.30, 4)
    assert [c["ok"] for c in relaxed] == [True] * 6 + [False]  # ...under TF32 too: both sides use TF32
    assert [c["tf32"] for c in relaxed] == [True, True, True, True, False, True, True]
    assert [c["rtol"] for c in relaxed[5:]] == [bench.FIRST_LOSS_RTOL["float32"]] * 2


def test_gpunn_graph_step_on_the_cpu_runs_eagerly_says_why_and_takes_the_same_steps():
    weights, x, y = bench.make_problem((12, 9, 4), 10, dtype="float64", seed=5)
    graph = bench.GpunnGraphStep("cpu", weights, x, y, 0.5)
    with pytest.warns(gpunn.compile.CompileWarning):
        ours = _weights_after(graph, 4)
    assert graph.compiled.mode == "eager" and graph.compiled.reason
    assert graph.note == f"ran eagerly: {graph.compiled.reason}"
    eager = _weights_after(bench.GpunnStep("cpu", weights, x, y, 0.5), 4)
    for (w1, b1), (w2, b2) in zip(ours, eager):
        np.testing.assert_allclose(w1, w2, rtol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)
    graph.compiled.mode = "graph"  # what a replaying compile_step says: then there is nothing to note
    assert graph.note is None


# --- on a GPU (run by scripts/gpu_check.sh) --------------------------------------------------------


@pytest.mark.gpu
def test_bench_on_cuda_times_both_graph_contenders_and_their_losses_agree(tmp_path):
    torch = bench.import_torch()[0]
    has_torch_cuda = torch is not None and torch.cuda.is_available()
    out = tmp_path / "bench"
    status = bench.main(_args("--devices", "cuda", "--sizes", "64-32-10", "--batch-sizes", "16", "--repeats", "2",
                              "--warmup", "0", "--block-ms", "1", "--no-plot", "--out", str(out)))
    report = json.loads((out / "bench.json").read_text())
    failed = [c for c in report["loss_checks"] if not c["ok"]]
    assert status == 0 and not failed, failed
    impls = {r["impl"]: r for r in report["results"]}
    assert {"gpunn", "gpunn-graph"} <= impls.keys()
    assert ("torch-graph" in impls) == has_torch_cuda
    assert impls["gpunn-graph"]["note"] is None  # it replayed a graph (bench exits 1 otherwise)
    if has_torch_cuda:
        assert impls["torch-graph"]["note"] is None
    # the graph contenders' loss after the warm-up (raised to GRAPH_WARMUP steps) was checked against eager
    warm = {c["impl"] for c in report["loss_checks"] if c["step"] == 1 + bench.GRAPH_WARMUP}
    assert warm == ({"gpunn-graph", "torch-graph"} if has_torch_cuda else {"gpunn-graph"})


@pytest.mark.gpu
def test_torch_graph_step_takes_the_same_steps_as_torch_eager():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    weights, x, y = bench.make_problem((32, 24, 5), 16, seed=6)
    graph = bench.TorchGraphStep(torch, "cuda:0", weights, x, y, 0.5)
    assert graph.note is None, graph.note
    eager = bench.TorchStep(torch, "cuda:0", weights, x, y, 0.5)
    assert graph.value(graph.step()) == pytest.approx(eager.value(eager.step()), rel=1e-5)  # weights were restored
    for (w1, b1), (w2, b2), (w0, _) in zip(_weights_after(graph, 3), _weights_after(eager, 3), weights):
        assert np.abs(w1 - w0).max() > 1e-3
        np.testing.assert_allclose(w1, w2, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b1, b2, rtol=1e-4, atol=1e-6)


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


def test_cpu_step_script_still_runs_and_checks_its_losses(tmp_path):
    """benchmarks/cpu_step.py is built on gpunn.cli.bench's helpers: one tiny run keeps it in step with
    them (it is a benchmark, so nothing here is timed; only its loss check and output are read)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_step.py"
    spec = importlib.util.spec_from_file_location("cpu_step", path)
    cpu_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_step)
    out = tmp_path / "cpu_step.json"
    assert cpu_step.main(["--repeats", "1", "--warmup", "0", "--block-ms", "1", "--no-torch",
                          "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == len(cpu_step.CONFIGS)
    assert all(r["loss_check_ok"] and r["gpunn"]["median_ms"] > 0 for r in results.values())


def test_fused_step_script_runs(capsys):
    """benchmarks/fused_step.py: one block per version (nothing is timed against a limit; only its
    output is read, so the script keeps working)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fused_step.py"
    spec = importlib.util.spec_from_file_location("fused_step", path)
    fused_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fused_step)
    fused_step.CONFIGS = [((8, 16, 3), 4, 2)]
    assert fused_step.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("fused") >= 2 and "host cost" in out
