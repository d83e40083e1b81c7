"""gpunn.distributed, DistributedDataParallel and the sharded DataLoader.

Multi-process checks run `mpiexec -n N` as a subprocess of pytest, under a timeout, one BLAS
thread per rank (tests/distributed/distributed_worker.py holds what the ranks run). They are few and small:
each launch costs about a second on two cores.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpunn
import gpunn.distributed as dist
from helpers import FAKE_CUDA
from gpunn.data import DataLoader, _share

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def mpi_env():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def mpiexec(n, *args, timeout=60, extra_env=None, cwd=ROOT):
    """Run `mpiexec -n n args...` and return the CompletedProcess (skip where MPI is missing)."""
    if not dist.is_available():
        pytest.skip("mpi4py is not installed (pip install 'gpunn[mpi]')")
    if not MPIEXEC.exists():
        pytest.skip(f"no mpiexec next to {sys.executable} (pip install mpich)")
    return subprocess.run([str(MPIEXEC), "-n", str(n), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**mpi_env(), **(extra_env or {})}, cwd=cwd)


def worker(n, scenario, out, variant="", **kwargs):
    return mpiexec(n, sys.executable, WORKER, scenario, out, variant, **kwargs)


def _load_worker():
    sys.path.insert(0, str(WORKER.parent))
    try:
        import distributed_worker
    finally:
        sys.path.remove(str(WORKER.parent))
    return distributed_worker


# --- DistributedDataParallel equals one process --------------------------------------------------


def _largest_difference(path):
    w = _load_worker()
    saved = np.load(path)
    worst = 0.0
    for i, case in enumerate([*w.CASES, w.CASES[0]]):
        key = i if i < len(w.CASES) else "no_sync"  # the last: gradient accumulation under no_sync()
        for j, reference in enumerate(w.train(case, ddp=False)):
            worst = max(worst, float(np.abs(saved[f"{key}-{j}"] - reference).max()))
    return worst


@pytest.mark.parametrize("ranks", [2, 3])
def test_ddp_equals_one_process(tmp_path, ranks):
    """SGD with momentum and Adam, fused and unfused, with and without clipping, 3 epochs with a
    ragged last batch of one sample (empty shares), float64: N ranks at global batch 17 equal one
    process at batch 17; so does
    accumulating two half batches with no_sync()."""
    done = worker(ranks, "equivalence", tmp_path / "p.npz")
    assert done.returncode == 0, done.stderr
    assert _largest_difference(tmp_path / "p.npz") < 1e-12
    w = _load_worker()
    assert int(np.load(tmp_path / "p.npz")["no_sync_reductions"]) == w.EPOCHS * -(-w.N_SAMPLES // w.BATCH)


@pytest.mark.parametrize("variant", ["sum", "drop-tail"])
def test_negative_controls_fail_the_equivalence(tmp_path, variant):
    """Summing instead of averaging, or sharding that drops the ragged tail, is caught."""
    done = worker(2, "equivalence", tmp_path / "p.npz", variant)
    assert done.returncode == 0, done.stderr
    assert _largest_difference(tmp_path / "p.npz") > 1e-3


@pytest.mark.parametrize("device", ["strict", pytest.param("cuda", marks=pytest.mark.slow)])
def test_ddp_stages_other_devices_through_the_host(tmp_path, device):
    """array-api-strict, and CUDA without NCCL (the fake CuPy of tests/cuda/fake_cuda): the same
    parameters as one process on the cpu, and compile_step says why a DDP step stays eager."""
    env = {}
    if device == "cuda":
        if shutil.which("g++") is None:
            pytest.skip("the fake CuPy compiles kernels with g++")
        env = {"PYTHONPATH": os.pathsep.join([str(FAKE_CUDA), str(ROOT)])}
    done = worker(2, "staged", tmp_path / "s.json", device, extra_env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads((tmp_path / "s.json").read_text())
    assert got["worst"] < 1e-12
    reason = "reduces the gradients over MPI through host memory" if device == "cuda" else "need a CUDA device"
    assert any(reason in said for said in got["said"]), got["said"]


def test_ddp_copies_rank_0s_parameters(tmp_path):
    done = worker(2, "seeds", tmp_path / "s.json")
    assert done.returncode == 0, done.stderr
    first, second = json.loads((tmp_path / "s.json").read_text())
    assert first == second
    # the control: without DDP the two seeds give different models, so the check can see a difference
    done = worker(2, "seeds", tmp_path / "s.json", "no-ddp")
    first, second = json.loads((tmp_path / "s.json").read_text())
    assert first != second


def job_ends(run, *args, **kwargs):
    """Run a job that must fail: it ends with a non-zero status within 30 s; its output."""
    started = time.monotonic()
    done = run(*args, **kwargs)
    assert done.returncode != 0
    assert time.monotonic() - started < 30
    return done.stdout + done.stderr


def test_ddp_refuses_different_models_and_ends_the_job(tmp_path):
    said = job_ends(worker, 2, "mismatch", tmp_path / "x")
    assert "rank 1 holds other parameters than rank 0" in said
    assert "0.weight float32(8, 5) against 0.weight float32(9, 5)" in said


def test_collectives(tmp_path):
    done = worker(2, "collectives", tmp_path / "c.json")
    assert done.returncode == 0, done.stderr
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["sum"] == [3.0, -1.0] and got["avg"] == [1.5, -0.5]
    assert got["max"] == [2.0, 0.0] and got["min"] == [1.0, -1.0]
    assert got["broadcast"] == [1.0, 1.0] and got["object"] == {"from": 1}
    assert got["local"] == [0, 2]


def test_a_collective_past_the_timeout_aborts_naming_it(tmp_path):
    said = job_ends(worker, 2, "timeout", tmp_path / "x")
    assert "rank 0: all_reduce(sum) of a (3,) tensor waited more than 2 s" in said


# --- in one process -----------------------------------------------------------------------------


def test_import_gpunn_does_not_import_mpi4py():
    code = "import sys, gpunn, gpunn.distributed, gpunn.nn.parallel; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mpi_env(), timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_shares_cover_each_batch_once():
    for begin, end in [(0, 16), (96, 103), (5, 6)]:
        for size in (1, 2, 3, 4):
            parts = [_share(begin, end, r, size) for r in range(size)]
            assert parts[0][0] == begin and parts[-1][1] == end
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


@pytest.mark.parametrize("ranks", [2, 3])
def test_sharded_loader_serves_what_one_loader_serves(ranks):
    X = np.arange(50.0).reshape(25, 2)
    y = np.arange(25)
    whole = DataLoader(X, y, batch_size=8, shuffle=True, seed=4)
    shards = [DataLoader(X, y, batch_size=8, shuffle=True, seed=4, distributed=True, rank=r, world_size=ranks)
              for r in range(ranks)]
    assert all(len(s) == len(whole) for s in shards)
    for epoch in range(2):
        for loader in (whole, *shards):
            loader.set_epoch(epoch)
        for batches in zip(whole, *shards):
            (xb, yb), parts = batches[0], batches[1:]
            assert np.array_equal(np.concatenate([p[1].numpy() for p in parts]), yb.numpy())
            assert np.array_equal(np.concatenate([p[0].numpy() for p in parts]), xb.numpy())
    assert shards[0].state_dict() == shards[1].state_dict() == whole.state_dict()


def test_sharded_loader_errors():
    with pytest.raises(ValueError, match="init_process_group"):
        DataLoader(np.zeros((4, 2)), batch_size=2, distributed=True)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        DataLoader(np.zeros((4, 2)), batch_size=2, distributed=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="only with distributed=True"):
        DataLoader(np.zeros((4, 2)), batch_size=2, rank=0)


def test_collectives_need_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        dist.get_rank()
    with pytest.raises(dist.DistributedError, match="backend must be"):
        dist.init_process_group(backend="gloo")


# --- mpiexec -n N gpunn train ---------------------------------------------------------------------


def gpunn_train(n, tmp_path, *args, fault="none"):
    """`mpiexec -n n gpunn train args` (through the worker, which may inject `fault` on rank 1)."""
    return mpiexec(n, sys.executable, WORKER, "cli", fault, "train", "--no-progress", "--hidden", "32", *args,
                   cwd=tmp_path)


def reference(**settings):
    """One process, in pytest's, with the settings gpunn_train gives every run (a small model: fast)."""
    from gpunn.cli.train import TrainConfig, fit
    return fit(TrainConfig(device="cpu", hidden=(32,), **settings))


def test_mpiexec_train_equals_one_process(tmp_path):
    done = gpunn_train(2, tmp_path, "--epochs", "3", "--out", "run")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    expected = reference(epochs=3)
    assert summary["world_size"] == 2 and summary["threads"] == 1
    assert summary["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=3e-3)
    assert summary["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-2)  # float32, Adam: roundoff grows
    assert summary["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-2)
    assert done.stdout.count("files in run") == 1  # rank 0 alone prints
    assert done.stderr.count("gpunn: note:") <= 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        ["config.json", "metrics.csv", "checkpoint.safetensors", "model.safetensors", "summary.json", "curves.png"])
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing written elsewhere (no runs/ of rank 1)


@pytest.mark.parametrize("fault", ["raise@5", "error@5", "kill@5"])
def test_a_failing_rank_ends_the_job(tmp_path, fault):
    said = job_ends(gpunn_train, 2, tmp_path, "--epochs", "3", "--out", "run", fault=fault)
    expected = {"raise": "gpunn: rank 1 raised; ending the job", "error": "gpunn: error: rank 1: injected failure",
                "kill": "BAD TERMINATION"}[fault.split("@")[0]]
    assert expected in said


def test_stop_on_one_rank_and_resume_under_other_rank_counts(tmp_path):
    """Ctrl-C on rank 1 alone, mid-epoch 2: both ranks stop at the same batch, rank 0 saves; the run
    then resumes with 1 and with 3 ranks to what the uninterrupted run gives (float64: exactly)."""
    import shutil

    from gpunn.cli.train import fit
    done = gpunn_train(2, tmp_path, "--epochs", "3", "--dtype", "float64", "--out", "run", fault="sigint@30")
    assert done.returncode == 130, done.stderr
    assert "resume with: gpunn train --resume run/checkpoint.safetensors" in done.stderr
    meta = gpunn.load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["partial"] is not None and meta["loader"]["epoch"] == 1  # stopped inside epoch 2
    shutil.copytree(tmp_path / "run", tmp_path / "again")
    expected = reference(epochs=3, dtype="float64")
    alone = fit(resume=tmp_path / "run")
    done = gpunn_train(3, tmp_path, "--resume", "again")
    assert done.returncode == 0, done.stderr
    three = json.loads((tmp_path / "again" / "summary.json").read_text())
    for summary in (alone, three):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert summary[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def test_restarts_over_ranks_equal_the_serial_restarts(tmp_path):
    done = gpunn_train(2, tmp_path, "--epochs", "2", "--restarts", "3", "--dtype", "float64", "--out", "run")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    expected = reference(epochs=2, restarts=3, dtype="float64")
    assert summary["best_restart"] == expected["best_restart"]
    assert len(summary["restarts"]) == 3
    for got, want in zip(summary["restarts"], expected["restarts"]):
        assert got.keys() == want.keys()
        for key in got:
            assert got[key] == pytest.approx(want[key], rel=1e-9), key
