"""gpunn._files.atomic_write: the one way gpunn writes a file (checkpoints, run files, downloads)."""

import contextlib
import os

import pytest

from gpunn._files import atomic_write


def crash_midway(write, path):
    """Write half of the new content through `write`, then fail as a crash would."""
    with pytest.raises(RuntimeError, match="crash"):
        with write(path) as f:
            f.write(b"NEW-")
            f.flush()
            raise RuntimeError("simulated crash")


def survives_a_crash(write, tmp_path):
    """True when a crash mid-write leaves the old file as it was and nothing else behind."""
    path = tmp_path / "state.bin"
    path.write_bytes(b"OLD CONTENT")
    crash_midway(write, path)
    return path.read_bytes() == b"OLD CONTENT" and os.listdir(tmp_path) == ["state.bin"]


def test_a_crash_mid_write_leaves_the_old_file(tmp_path):
    assert survives_a_crash(atomic_write, tmp_path)


def test_control_a_plain_write_fails_the_crash_check(tmp_path):
    """Negative control: writing in place loses the old file, and the check sees it."""
    @contextlib.contextmanager
    def in_place(path):
        with open(path, "wb") as f:
            yield f

    assert not survives_a_crash(in_place, tmp_path)


def test_writes_bytes_and_text_and_replaces(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_write(path) as f:
        f.write(b"first")
        assert not path.exists()  # nothing shows until the block ends
        assert os.path.dirname(f.name) == str(tmp_path)
    assert path.read_bytes() == b"first"
    with atomic_write(str(path), "w", encoding="utf-8", newline="") as f:
        f.write("second\r\n")
    assert path.read_bytes() == b"second\r\n"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"x")
    os.chmod(path, 0o640)
    with atomic_write(path) as f:
        f.write(b"y")
    assert path.stat().st_mode & 0o777 == 0o640


def test_an_error_names_the_target_file(tmp_path):
    missing = tmp_path / "no-such-folder" / "weights.safetensors"
    with pytest.raises(FileNotFoundError, match=f"cannot write {missing}"):
        with atomic_write(missing) as f:
            f.write(b"x")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (folder / "inside").write_text("keep")
    with pytest.raises(OSError, match=f"cannot write {folder}"):  # a folder cannot be replaced by a file
        with atomic_write(folder) as f:
            f.write(b"x")
    assert sorted(os.listdir(tmp_path)) == ["a-folder"]
    assert (folder / "inside").read_text() == "keep"
