"""`gpunn train` / `gpunn info` end to end in subprocesses, plus the training library behind them.

Every run here is one to three epochs on cpu (one on strict), so the file stays fast; the full
default run that must reach 0.97 test accuracy is marked slow and runs only with GPUNN_SLOW=1.
"""

import csv
import dataclasses
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import gpunn
import gpunn.io
from gpunn import datasets, safetensors_format
from gpunn.cli import build_parser
from gpunn.cli.train import TrainConfig, TrainingInterrupted, evaluate, fit

RUN_FILES = ["config.json", "metrics.csv", "checkpoint.safetensors", "model.safetensors", "summary.json", "curves.png"]
SUMMARY_KEYS = ["test_accuracy", "test_loss", "train_loss", "device", "epochs", "seconds", "restarts"]
METRIC_COLUMNS = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "lr"]


def gpunn_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gpunn", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def train(out, *args, device="cpu"):
    return gpunn_cli("train", "--no-progress", "--device", device, "--out", out, *args)


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_one_line_error(result, status=None):
    assert result.returncode != 0, f"expected a failure, got exit 0:\n{result.stdout}"
    if status is not None:
        assert result.returncode == status, f"exit {result.returncode}, expected {status}: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got:\n{result.stderr}"
    assert "error" in lines[0], lines[0]
    return lines[0]


def read_metrics(path, drop=("seconds",)):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def numpy_mlp(weights, X):
    """Logits of the saved MLP computed in plain NumPy (relu between the layers)."""
    layers = sorted({int(name.split(".")[0]) for name in weights})
    h = X.astype(np.float64)
    for i, layer in enumerate(layers):
        h = h @ weights[f"{layer}.weight"].astype(np.float64).T + weights[f"{layer}.bias"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def cross_entropy(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


# --- end-to-end runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset, device, dtype", [("digits", "cpu", "float32"), ("xor", "cpu", "float32"),
                                                    ("moons", "strict", "float64"), ("spirals", "cpu", "float32")])
def test_train_writes_every_file(tmp_path, dataset, device, dtype):
    out = tmp_path / "run"
    result = train(out, "--dataset", dataset, "--epochs", 2, "--dtype", dtype, device=device)
    assert_ok(result)
    assert "test accuracy" in result.stdout
    assert result.stderr == ""  # no progress bar with --no-progress, no warnings
    for name in RUN_FILES:
        assert (out / name).is_file(), f"{name} missing; folder holds {sorted(os.listdir(out))}"
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")], "temporary files left behind"

    rows = read_metrics(out / "metrics.csv", drop=())
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == METRIC_COLUMNS
    summary = json.loads((out / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in summary, f"summary.json lacks {key}"
    assert summary["device"] == device and summary["epochs"] == 2 and summary["seconds"] > 0
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and 0.0 <= summary["train_accuracy"] <= 1.0
    assert 0.0 < summary["test_loss"] < 10.0 and 0.0 < summary["train_loss"] < 10.0
    assert summary["test_accuracy"] == float(rows[-1]["test_accuracy"])  # the summary reports the last epoch
    assert summary["train_loss"] == float(rows[-1]["train_loss"])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == dataset and config["epochs"] == 2 and config["dtype"] == dtype

    weights = safetensors_format.load_file(out / "model.safetensors")
    assert all(w.dtype == np.dtype(dtype) for w in weights.values())
    model = gpunn.nn.MLP([weights["0.weight"].shape[1], *TrainConfig().hidden, weights["4.weight"].shape[0]],
                         dtype=dtype)
    model.load_state_dict(weights)  # the saved state fits the default architecture
    meta = gpunn.io.load_checkpoint(out / "checkpoint.safetensors", model=model)
    assert meta["epoch"] == 2 and meta["config"]["dataset"] == dataset


def test_digits_metrics_match_an_independent_evaluation(tmp_path):
    """The reported test loss and accuracy are those of the saved model on the stated 25% split."""
    out = tmp_path / "run"
    assert_ok(train(out, "--epochs", 2, "--seed", 3))
    summary = json.loads((out / "summary.json").read_text())
    X, y = datasets.load_digits()
    _, X_test, _, y_test = datasets.train_test_split(X, y, test_size=0.25, stratify=True, seed=3)
    logits = numpy_mlp(safetensors_format.load_file(out / "model.safetensors"), X_test)
    assert summary["n_test"] == len(y_test)
    assert abs(summary["test_accuracy"] - np.mean(logits.argmax(axis=1) == y_test)) <= 1 / len(y_test)
    assert math.isclose(summary["test_loss"], cross_entropy(logits, y_test), rel_tol=1e-4)
    # negative control: the same check on the other seed's split does not match
    _, X_other, _, y_other = datasets.train_test_split(X, y, test_size=0.25, stratify=True, seed=4)
    assert not math.isclose(summary["test_loss"], cross_entropy(numpy_mlp(
        safetensors_format.load_file(out / "model.safetensors"), X_other), y_other), rel_tol=1e-4)



def write_idx(path, array):
    """An uncompressed IDX file: zero, zero, type 0x08 (uint8), number of dims, big-endian sizes, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.tobytes())


def test_mnist_from_data_root_uses_its_own_test_split(tmp_path):
    """Tiny MNIST-format files: 60 training and 20 test images of 28x28, all test images counted."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    out = tmp_path / "run"
    assert_ok(train(out, "--dataset", "mnist", "--data-root", tmp_path, "--epochs", 1, "--hidden", "16"))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_train"], summary["n_test"]) == (60, 20)
    assert safetensors_format.load_file(out / "model.safetensors")["0.weight"].shape == (16, 784)

def test_restarts_keep_the_lowest_validation_loss(tmp_path):
    out = tmp_path / "run"
    result = train(out, "--dataset", "moons", "--epochs", 2, "--restarts", 3, "--seed", 5)
    assert_ok(result)
    summary = json.loads((out / "summary.json").read_text())
    restarts = summary["restarts"]
    assert [r["seed"] for r in restarts] == [5, 6, 7]
    assert all(r["val_loss"] is not None for r in restarts)
    best = min(restarts, key=lambda r: r["val_loss"])
    assert summary["best_restart"] == best["restart"]
    assert summary["test_loss"] == best["test_loss"] and summary["test_accuracy"] == best["test_accuracy"]
    assert summary["n_val"] > 0
    rows = read_metrics(out / "metrics.csv")
    # restarts count from 1 everywhere, like epochs and the console (restart 1 uses the seed itself)
    assert [(int(r["restart"]), int(r["epoch"])) for r in rows] == [(i, e) for i in (1, 2, 3) for e in (1, 2)]
    assert [r["restart"] for r in restarts] == [1, 2, 3] and summary["best_restart"] in (1, 2, 3)
    assert len(result.stdout.splitlines()) >= 5  # the restart table
    assert f"kept restart {summary['best_restart']} (lowest" in result.stdout
    table = {line.split()[0]: line for line in result.stdout.splitlines()[1:4]}
    assert table[f"{summary['best_restart']}*"].split()[1] == str(4 + summary["best_restart"])  # its seed
    assert safetensors_format.read_metadata(out / "model.safetensors")["restart"] == str(summary["best_restart"])
    # model.safetensors holds the kept restart: its weights give that restart's test loss
    X, y = datasets.moons(n=summary["n_train"] + summary["n_val"] + summary["n_test"], seed=5)
    _, X_test, _, y_test = datasets.train_test_split(X, y, test_size=0.25, stratify=True, seed=5)
    logits = numpy_mlp(safetensors_format.load_file(out / "model.safetensors"), X_test)
    assert math.isclose(cross_entropy(logits, y_test), best["test_loss"], rel_tol=1e-4)


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    """A single run trained 1 epoch and resumed to 3 equals a 3-epoch run, row for row and weight for weight."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert_ok(train(whole, "--epochs", 3, "--optimizer", "sgd", "--clip-norm", 1))
    assert_ok(train(parts, "--epochs", 1, "--optimizer", "sgd", "--clip-norm", 1))
    assert len(read_metrics(parts / "metrics.csv")) == 1
    assert_ok(gpunn_cli("train", "--no-progress", "--resume", parts / "checkpoint.safetensors", "--epochs", 3))
    assert read_metrics(parts / "metrics.csv") == read_metrics(whole / "metrics.csv")
    a = safetensors_format.load_file(whole / "model.safetensors")
    b = safetensors_format.load_file(parts / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stop_at", [(0, 1, 0), (1, 1, 3)], ids=["end-of-epoch", "mid-epoch-second-restart"])
def test_stopped_run_resumes_exactly(tmp_path, stop_at):
    config = TrainConfig(dataset="xor", epochs=3, restarts=2, batch_size=32, device="cpu", optimizer="adamw")
    fit(config, out=tmp_path / "whole")
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(config, out=tmp_path / "parts", should_stop=lambda *position: position == stop_at)
    assert stopped.value.checkpoint == tmp_path / "parts" / "checkpoint.safetensors"
    assert not (tmp_path / "parts" / "summary.json").exists()
    fit(None, resume=stopped.value.checkpoint)
    whole, parts = read_metrics(tmp_path / "whole" / "metrics.csv"), read_metrics(tmp_path / "parts" / "metrics.csv")
    assert len(whole) == 6 and parts == whole
    # negative control: another seed gives other rows, so the comparison can fail
    fit(dataclasses.replace(config, seed=1), out=tmp_path / "other")
    assert read_metrics(tmp_path / "other" / "metrics.csv") != whole


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, signum, status):
    """Ctrl-C, and SIGTERM (what docker stop, Kubernetes and SLURM send first), stop the same way."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gpunn", "train", "--no-progress", "--device", "cpu", "--dataset", "digits",
            "--epochs", "10000", "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.csv").exists():  # the handler is installed once training runs
            assert process.poll() is None and time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.02)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"gpunn train --resume {out / 'checkpoint.safetensors'}" in lines[0], stderr
    model = gpunn.nn.MLP([64, *TrainConfig().hidden, 10])
    optimizer = gpunn.optim.Adam(model.parameters())
    meta = gpunn.io.load_checkpoint(out / "checkpoint.safetensors", model=model, optimizer=optimizer)
    done = meta["epoch"]
    assert done >= 1 and len(read_metrics(out / "metrics.csv")) == done
    # finish one more epoch than the checkpoint started: the interrupted epoch, if it was mid-way
    result = gpunn_cli("train", "--no-progress", "--resume", out, "--epochs", done + 1)
    assert_ok(result)
    assert [int(r["epoch"]) for r in read_metrics(out / "metrics.csv")] == list(range(1, done + 2))


# --- bad input ------------------------------------------------------------------------------------------


BAD_OPTIONS = {
    "unknown option": (["--bogus"], 2),
    "zero epochs": (["--epochs", "0"], 2),
    "negative epochs": (["--epochs", "-3"], 2),
    "zero batch size": (["--batch-size", "0"], 2),
    "malformed hidden": (["--hidden", "12,,x"], 2),
    "zero lr": (["--lr", "0"], 2),
    "negative lr": (["--lr", "-0.1"], 2),
    "zero clip norm": (["--clip-norm", "0"], 2),
    "zero restarts": (["--restarts", "0"], 2),
    "unknown dataset": (["--dataset", "cifar"], 2),
    "momentum with adam": (["--momentum", "0.5"], 2),
    "mnist without data root": (["--dataset", "mnist"], 2),
    "missing data root": (["--dataset", "fashion-mnist", "--data-root", "/nonexistent/gpunn-data"], 2),
    "unknown device": (["--device", "tpu"], None),
    "missing resume file": (["--resume", "/nonexistent/checkpoint.safetensors"], None),
}


@pytest.mark.parametrize("name", BAD_OPTIONS)
def test_bad_option_gives_one_line_and_keeps_out_untouched(tmp_path, name):
    args, status = BAD_OPTIONS[name]
    out = tmp_path / "run"
    message = assert_one_line_error(gpunn_cli("train", "--no-progress", "--out", out, *args), status)
    assert message.startswith("gpunn")
    assert not out.exists(), "a failed run created its output folder"


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_hidden_is_refused_as_a_likely_quoting_mistake(tmp_path, value):
    message = assert_one_line_error(train(tmp_path / "run", "--dataset", "xor", "--hidden", value), 2)
    assert "--hidden" in message and "empty" in message and "'none'" in message
    assert not (tmp_path / "run").exists()


def test_hidden_none_still_trains_softmax_regression(tmp_path):
    """Control: the spelled-out way to ask for no hidden layer keeps working."""
    out = tmp_path / "run"
    assert_ok(train(out, "--dataset", "xor", "--epochs", 1, "--hidden", "none"))
    assert sorted(safetensors_format.load_file(out / "model.safetensors")) == ["0.bias", "0.weight"]


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    if gpunn.cuda.is_available():
        pytest.skip("a CUDA device is usable here")
    message = assert_one_line_error(train(tmp_path / "run", device="cuda"))
    assert "cuda" in message and "--device cpu" in message


def test_resume_rejects_files_that_are_not_train_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    weights = tmp_path / "weights.safetensors"
    gpunn.io.save({"w": gpunn.zeros(2, 2)}, weights)
    for path in (text, weights, tmp_path):
        message = assert_one_line_error(gpunn_cli("train", "--resume", path))
        assert str(path) in message


def test_resume_given_another_file_of_the_run_names_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert_ok(train(out, "--dataset", "xor", "--epochs", 1))
    for name, what in (("config.json", "is not a safetensors checkpoint (it looks like JSON text)"),
                       ("metrics.csv", "is not a safetensors checkpoint (it looks like a text file)"),
                       ("curves.png", "is not a safetensors checkpoint (it looks like a PNG image)"),
                       ("model.safetensors", "holds tensors but no training state")):
        message = assert_one_line_error(gpunn_cli("train", "--resume", out / name))
        assert f"{out / name} {what}" in message
        assert f"give {out / 'checkpoint.safetensors'} or the run folder {out}" in message
        assert "header length" not in message


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_out_that_cannot_be_created_is_refused_before_training(tmp_path, where):
    if where == "proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc here")
        out, parent = "/proc/gpunn-nope", "/proc"
    else:
        (tmp_path / "a-file").write_text("")
        out, parent = tmp_path / "a-file" / "run", tmp_path / "a-file"
    result = train(out, "--dataset", "xor", "--epochs", 1)
    message = assert_one_line_error(result, 2)
    assert f"the output folder {out} (--out) cannot be created in {parent}" in message
    assert result.stdout == ""  # nothing trained: no summary line


def test_resume_rejects_a_conflicting_architecture(tmp_path):
    out = tmp_path / "run"
    assert_ok(train(out, "--dataset", "xor", "--epochs", 1))
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    message = assert_one_line_error(gpunn_cli("train", "--resume", out, "--hidden", "10"), 2)
    assert "--hidden" in message
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before


def test_out_holding_a_run_is_refused_and_unrelated_files_survive(tmp_path):
    out = tmp_path / "run"
    assert_ok(train(out, "--dataset", "xor", "--epochs", 1))
    (out / "notes.txt").write_text("mine")
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    message = assert_one_line_error(train(out, "--dataset", "xor", "--epochs", 1), 2)
    assert "--resume" in message
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    # a folder with only unrelated files is fine, and they stay
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert_ok(train(other, "--dataset", "xor", "--epochs", 1))
    assert (other / "notes.txt").read_text() == "mine" and (other / "summary.json").is_file()


def test_progress_bar_only_on_a_terminal(tmp_path):
    """`gpunn train 2>&1 | tee log` must not fill the log with carriage-return bar frames (tqdm's
    disable=None); on a terminal the bar still shows (the control)."""
    args = ["train", "--device", "cpu", "--dataset", "xor", "--epochs", 2]
    piped = gpunn_cli(*args, "--out", tmp_path / "piped")
    assert_ok(piped)
    assert piped.stderr == ""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    process = subprocess.Popen([sys.executable, "-m", "gpunn", *map(str, args), "--out", str(tmp_path / "tty")],
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    try:
        while select.select([leader], [], [], 120)[0]:  # read as it comes: a full terminal buffer would block the run
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the run ended and closed its side
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=120) == 0, shown
    finally:
        process.kill()
        os.close(leader)
    assert b"epoch 1/2" in shown and b"epoch 2/2" in shown and b"batch" in shown


# --- the rest of the command line ----------------------------------------------------------------------


def test_help_documents_every_train_option():
    result = gpunn_cli("train", "--help")
    assert_ok(result)
    for option in ["--dataset", "--data-root", "--hidden", "--activation", "--optimizer", "--lr", "--momentum",
                   "--weight-decay", "--clip-norm", "--epochs", "--batch-size", "--device", "--seed", "--restarts",
                   "--out", "--resume", "--no-progress", "--dtype"]:
        assert option in result.stdout, f"{option} missing from gpunn train --help"
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    undocumented = [a.option_strings for a in train_parser._actions if not a.help]
    assert not undocumented, f"options without help: {undocumented}"


def test_info_lists_versions_blas_and_devices():
    result = gpunn_cli("info")
    assert_ok(result)
    assert f"gpunn {gpunn.__version__}" in result.stdout and f"numpy {np.__version__}" in result.stdout
    assert "BLAS:" in result.stdout and "cpu" in result.stdout and "cuda" in result.stdout
    if not gpunn.cuda.is_available():
        assert gpunn.cuda.why_unavailable() in result.stdout


def test_no_command_and_unknown_command_are_usage_errors():
    assert_one_line_error(gpunn_cli(), 2)
    assert_one_line_error(gpunn_cli("fly"), 2)
    assert_ok(gpunn_cli("bench", "--help"))


# --- the library behind the command --------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_evaluate_matches_numpy(device):
    gpunn.manual_seed(0)
    model = gpunn.nn.MLP([4, 5, 3], device=device)
    X = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 2, 1, 0, 1])
    loss, accuracy = evaluate(model, gpunn.tensor(X, device=device), gpunn.tensor(y, device=device), batch_size=3)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    logits = numpy_mlp(weights, X)
    assert math.isclose(loss, cross_entropy(logits, y), rel_tol=1e-5)
    assert accuracy == np.mean(logits.argmax(axis=1) == y)


def test_fit_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = fit(TrainConfig(dataset="xor", epochs=1, device="cpu"))
    assert os.listdir(tmp_path) == []
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["epochs"] == 1


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GPUNN_SLOW") != "1", reason="full-length run; set GPUNN_SLOW=1")
@pytest.mark.parametrize("seed", range(5))
def test_default_run_reaches_097_on_digits(tmp_path, seed):
    result = gpunn_cli("train", "--no-progress", "--device", "cpu", "--seed", seed, "--out", tmp_path / "run",
                       timeout=600)
    assert_ok(result)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97, summary


def test_device_auto_is_a_one_line_note_on_the_command_line(tmp_path):
    if gpunn.cuda.is_available():
        pytest.skip("a CUDA device is usable here")
    result = train(tmp_path / "run", "--dataset", "xor", "--epochs", 1, device="auto")
    assert_ok(result)
    assert result.stderr == f"gpunn: note: device 'auto' -> cpu ({gpunn.cuda.why_unavailable()})\n"


def test_train_compile_on_the_cpu_notes_the_eager_fallback_and_trains_the_same(tmp_path):
    """--compile records steps into CUDA graphs; on the cpu it says so in one note line and the
    run is the run without it (the fused optimizer it asks for gives the same numbers)."""
    plain = train(tmp_path / "plain", "--dataset", "xor", "--hidden", "8", "--epochs", "2", "--clip-norm", "0.5")
    compiled = train(tmp_path / "compiled", "--dataset", "xor", "--hidden", "8", "--epochs", "2", "--clip-norm", "0.5",
                     "--compile")
    assert_ok(plain)
    assert_ok(compiled)
    assert "gpunn: note: compile_step runs eagerly: CUDA graphs need a CUDA device" in compiled.stderr
    assert "Traceback" not in compiled.stderr and "CompileWarning" not in compiled.stderr
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["compile"] is True
    rows = [list(csv.DictReader(open(tmp_path / name / "metrics.csv"))) for name in ("plain", "compiled")]
    for a, b in zip(*rows):
        assert a["train_loss"] == b["train_loss"] and a["test_accuracy"] == b["test_accuracy"]
