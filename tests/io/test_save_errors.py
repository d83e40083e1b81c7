"""Saving errors name the file asked for and what failed (never only a temporary file), and a
`gpunn train` run whose very first save failed can be started again in the same folder."""

import errno
import os

import pytest

import gpunn
from gpunn import _files, safetensors_format
from gpunn.cli.train import TrainConfig, fit


def _full_disk(monkeypatch, calls=1):
    """The next `calls` writes fail as on a full disk."""
    left = [calls]
    real = safetensors_format._write_bytes

    def write(fileobj, chunks):
        if left[0] > 0:
            left[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fileobj, chunks)

    monkeypatch.setattr(safetensors_format, "_write_bytes", write)


def _leftovers(folder):
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


def test_a_full_disk_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "checkpoint.safetensors"
    path.parent.mkdir()
    gpunn.save({"w": gpunn.ones(2)}, path)
    _full_disk(monkeypatch)
    with pytest.raises(OSError) as info:
        gpunn.save({"w": gpunn.zeros(2)}, path)
    assert info.value.errno == errno.ENOSPC
    assert f"cannot write {path}: No space left on device while writing it" in str(info.value)
    assert gpunn.load(path)["w"].tolist() == [1.0, 1.0] and not _leftovers(path.parent)


def test_without_the_wrapper_the_error_does_not_name_the_file(tmp_path, monkeypatch):
    """Negative control: the raw write error says nothing of the target, which is what was fixed."""
    _full_disk(monkeypatch)
    monkeypatch.setattr(_files, "write_error", lambda exc, path: exc)
    path = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as info:
        gpunn.save({"w": gpunn.ones(2)}, path)
    assert str(path) not in str(info.value)


def test_a_read_only_folder_names_the_folder_and_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: refuse the temporary file as the kernel would
        def refuse(dir, prefix, suffix):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, prefix + "x" + suffix))
        monkeypatch.setattr(_files.tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(PermissionError) as info:
            gpunn.save({"w": gpunn.ones(2)}, folder / "model.safetensors")
    finally:
        folder.chmod(0o700)
    message = str(info.value)
    assert f"cannot write {folder / 'model.safetensors'}: Permission denied in its folder {folder}" in message
    assert ".tmp" not in message


def test_a_folder_given_as_the_file_says_so(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(OSError, match=r"weights: it is a folder; give a file path inside it, e\.g\. .*weights/model"):
        gpunn.save({"w": gpunn.ones(2)}, tmp_path / "weights")
    assert not _leftovers(tmp_path)


def test_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot write .*nope/m.safetensors: its folder .*nope does not exist"):
        gpunn.save_checkpoint(tmp_path / "nope" / "m.safetensors", model=gpunn.nn.Linear(2, 2))


def test_a_run_whose_first_save_failed_starts_again_in_the_same_folder(tmp_path, monkeypatch):
    config = TrainConfig(dataset="xor", epochs=1, device="cpu")
    out = tmp_path / "run"
    _full_disk(monkeypatch)
    with pytest.raises(OSError, match=f"cannot write {out}/.*safetensors: No space left"):
        fit(config, out=out)
    assert not out.exists()  # left as it was found
    fit(config, out=out)  # the same command, once there is space again
    assert (out / "checkpoint.safetensors").exists() and (out / "config.json").exists()


def test_a_run_that_saved_once_keeps_its_files_when_a_later_save_fails(tmp_path, monkeypatch):
    """Control: only the very first save is undone; after that the run's files are its record."""
    config = TrainConfig(dataset="xor", epochs=2, device="cpu")
    real = safetensors_format._write_bytes
    calls = []

    def write(fileobj, chunks):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fileobj, chunks)

    monkeypatch.setattr(safetensors_format, "_write_bytes", write)
    with pytest.raises(OSError):
        fit(config, out=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.safetensors").exists() and (tmp_path / "run" / "config.json").exists()
