"""Writing a file so that a reader never sees half of it: every file gpunn writes goes through here.

The data goes to a temporary file beside the target, is flushed to disk and then renamed over the
target in one step, so a crash or an error mid-write leaves the previous file (or none) and no
temporary behind. Imports nothing of gpunn: any layer may use it.
"""

import contextlib
import os
import stat
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_args):
    """`with atomic_write(path) as f:` write to `f`; `path` is replaced when the block ends without
    an error. `f.name` is the temporary file (to read back what was written before it counts).
    `mode` is "wb" or "w" (with `encoding=`, `newline=` as for `open`). Keeps the permissions of the
    file it replaces. An error of the file system names `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        permissions = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        permissions = 0o644
    with _naming(path):
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(temp, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # (some file systems have no permissions to set)
            os.chmod(temp, permissions)  # mkstemp makes it 0600
        with _naming(path):
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


@contextlib.contextmanager
def _naming(path):
    """Re-raise an OSError with `path` in its message (mkstemp's would name a temporary name)."""
    try:
        yield
    except OSError as exc:
        message = f"cannot write {path}: {exc.strerror or exc}"
        raise (type(exc)(exc.errno, message) if exc.errno else type(exc)(message)) from exc


def _fsync_directory(directory):
    """Make the rename itself durable where the platform allows it (not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
