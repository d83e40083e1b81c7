"""Reader for the IDX format that MNIST and Fashion-MNIST are published in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number
of dimensions), one big-endian uint32 per dimension, then the data, row-major
and big-endian. Files may be gzip-compressed; we detect that from the first
bytes rather than trusting the file name.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

# IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Return the file's contents, gunzipped if it is a gzip stream."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt gzip data ({err})") from err


def read_idx_with_magic(path: str | os.PathLike) -> tuple[int, np.ndarray]:
    """Return ``(magic, array)``; callers that expect one layout check the magic."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated, only {len(data)} bytes (the header needs 4)")

    (magic,) = struct.unpack(">I", data[:4])
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in IDX_DTYPES:
        raise ValueError(
            f"{path}: bad magic number {magic:#010x}; expected 0x0000TTNN with "
            f"dtype code TT in {sorted(hex(c) for c in IDX_DTYPES)}"
        )

    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated header, {ndim} dims need {header} bytes, file has {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=object)) if dims else 1
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise ValueError(
            f"{path}: truncated, header dims {dims} need {expected} bytes, file has {len(data)}"
        )
    if len(data) > expected:
        raise ValueError(
            f"{path}: size mismatch, header dims {dims} need {expected} bytes, "
            f"file has {len(data)} ({len(data) - expected} extra)"
        )

    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    # Native byte order and a writable copy, so callers can use it like any array.
    return magic, array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array with the shape in its header.

    Raises FileNotFoundError if the file is missing and ValueError naming the
    file if it is corrupt (bad magic, truncated, or longer than its header says).
    """
    return read_idx_with_magic(path)[1]
