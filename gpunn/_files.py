"""Writing a file so that a reader never sees half of it: every file gpunn writes goes through here.

The data goes to a temporary file beside the target, is flushed to disk and then renamed over the
target in one step, so a crash or an error mid-write leaves the previous file (or none) and no
temporary behind. Imports nothing of gpunn: any layer may use it.
"""

import contextlib
import errno
import os
import stat
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_args):
    """`with atomic_write(path) as f:` write to `f`; `path` is replaced when the block ends without
    an error. `f.name` is the temporary file (to read back what was written before it counts).
    `mode` is "wb" or "w" (with `encoding=`, `newline=` as for `open`). Keeps the permissions of the
    file it replaces. An OSError in the block, writes to `f` included, is re-raised naming `path`
    and what failed (never only the temporary file)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        permissions = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        permissions = 0o644
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(exc, path) from exc
    os.close(fd)
    try:
        with open(temp, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # (some file systems have no permissions to set)
            os.chmod(temp, permissions)  # mkstemp makes it 0600
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise write_error(exc, path) from exc
        raise
    _fsync_directory(directory)


def write_error(exc, path):
    """The same kind of OSError (errno kept), naming the file the user asked for and what failed."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        why = "it is a folder; give a file path inside it, e.g. " + os.path.join(path, "model.safetensors")
    elif not os.path.isdir(directory):
        why = f"its folder {directory} does not exist; create it first (os.makedirs)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"{exc.strerror or exc} in its folder {directory}; save somewhere you can write to"
    else:
        why = f"{exc.strerror or exc} while writing it"
    message = f"cannot write {path}: {why}; any earlier file there is unchanged"
    try:
        return type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    except TypeError:  # an OSError subclass with its own constructor
        return OSError(exc.errno, message)


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
