"""`gpunn train` on clusters and in sweeps: unique run folders, BLAS threads, the progress bar, the exit
status of a stop (SIGTERM itself is tested with Ctrl-C in tests/cli/test_cli.py)."""

import signal
from pathlib import Path

import pytest

import gpunn
from gpunn import cli
from gpunn.cli import train


def test_interrupted_status_names_the_signal():
    assert cli._interrupted(None, signal.SIGTERM, lead=False) == 143
    assert cli._interrupted(None, None, lead=False) == 130


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders = [cli._fresh_folder() for _ in range(3)]  # within one second, as a sweep started with & does
    assert len(set(folders)) == 3
    assert all(f.is_dir() and f.parent == Path("runs") for f in folders)
    # the control: a folder that exists already is never handed out again
    (tmp_path / "runs" / "taken").mkdir()
    assert all(f.name != "taken" for f in folders)


def test_set_num_threads_reaches_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]:
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    before = gpunn.get_num_threads()
    try:
        gpunn.set_num_threads(1)
        assert gpunn.get_num_threads() == 1
        gpunn.set_num_threads(2)
        assert gpunn.get_num_threads() == 2
    finally:
        gpunn.set_num_threads(before)
    with pytest.raises(ValueError, match="positive integer"):
        gpunn.set_num_threads(0)


def test_threads_are_in_the_summary(tmp_path):
    summary = train.fit(train.TrainConfig(device="cpu", epochs=1, hidden=(8,)))
    assert summary["threads"] == gpunn.get_num_threads() and summary["world_size"] == 1


def test_progress_shows_a_falling_loss():
    assert train._digits(0.0016123) == "0.001612"  # not 0.0000
    assert train._digits(1.23456) == "1.235"


def test_one_bar_for_the_whole_run(monkeypatch):
    """The bar is made once per run (its total covers every epoch), not once per epoch."""
    made = []
    real = train._bar
    monkeypatch.setattr(train, "_bar", lambda total, initial: made.append((total, initial)) or real(total, initial))
    train.fit(train.TrainConfig(device="cpu", epochs=3, hidden=(8,), batch_size=512), progress=True)
    assert made == [(3 * 3, 0)]  # 1347 training samples: 3 batches of 512 per epoch


def test_optimizer_state_of_another_type_is_refused():
    p = [gpunn.zeros(3, requires_grad=True)]
    saved = gpunn.optim.SGD(p, lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(TypeError, match=r"Adam.load_state_dict: this state was saved from SGD .*dampening"):
        gpunn.optim.Adam(p).load_state_dict(saved)
    with pytest.raises(TypeError, match=r"SGD.load_state_dict: this state was saved from .*Adam"):
        gpunn.optim.SGD(p, lr=0.1).load_state_dict(gpunn.optim.Adam(p).state_dict())
    gpunn.optim.SGD(p, lr=0.5).load_state_dict(saved)  # the control: the same type loads
