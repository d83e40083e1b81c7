"""A small, strict, pure-NumPy reader and writer of the safetensors format.

Layout of a file::

    8 bytes        N, the header length, unsigned 64-bit little-endian
    N bytes        a UTF-8 JSON object, optionally padded with trailing spaces:
                     {"__metadata__": {str: str, ...},            (optional)
                      "<name>": {"dtype": "F32", "shape": [2, 3],
                                 "data_offsets": [begin, end]}, ...}
    the rest       the byte buffer; every tensor is stored little-endian and
                   row-major at buffer[begin:end]

Loading never executes anything from the file (this module does not import
``pickle``) and treats the file as hostile: every number in the header is
checked against the file size before it is used, so a malformed file gives a
:class:`SafetensorsError` naming the file and the problem instead of a crash,
a hang or a huge allocation.  Nothing allocated while loading is larger than
the file itself (BF16 tensors, upcast to float32, take twice their bytes).

Checks on load: header length <= 100 MB and <= file size - 8; header is UTF-8,
starts with ``{`` and is a JSON object without duplicate keys; ``__metadata__``
maps str to str; every entry has exactly ``dtype``, ``shape`` and
``data_offsets``; the dtype is known; the shape is a list of at most 64
non-negative ints; the offsets are two ints with begin <= end <= buffer
length; end - begin == prod(shape) * itemsize (Python ints, so no overflow);
and sorted by offset the tensors cover the buffer exactly from 0 to its end,
without gaps, overlaps or trailing bytes.  BOOL bytes must be 0 or 1.

Saving is atomic: the data goes to a temporary file in the target directory
which is flushed, fsynced and then renamed over the target, so an interrupted
save leaves the previous file as it was.

The official ``safetensors`` package is not needed at run time; the tests
check that files written by either side load with the other.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

from gpunn._files import atomic_write
from gpunn.errors import GpunnError

__all__ = [
    "SafetensorsError",
    "NotSafetensorsError",
    "save_file",
    "load_file",
    "load_file_with_metadata",
    "read_metadata",
    "MAX_HEADER_SIZE",
]

#: Largest header accepted (the limit of the reference implementation).
MAX_HEADER_SIZE = 100_000_000
_MAX_NDIM = 64  # NumPy's limit on the number of dimensions
_MAX_NBYTES = int(np.iinfo(np.intp).max)  # NumPy cannot describe larger arrays
_LEN = 8  # bytes of the header-length field

# safetensors dtype name -> little-endian NumPy dtype used to read it.
_READ_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # read as raw bits, returned as float32
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# Valid in the format but with no NumPy equivalent: a clear error, not "unknown".
_UNSUPPORTED_DTYPES = frozenset(
    {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"}
)
# little-endian NumPy dtype string -> safetensors dtype name, for saving.
_WRITE_DTYPES: dict[str, str] = {
    dt.str: name for name, dt in _READ_DTYPES.items() if name != "BF16"
}

_PICKLE_PROTOCOLS = (2, 3, 4, 5)
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class SafetensorsError(GpunnError, ValueError):
    """A file (or the data given to save) is not valid safetensors."""


class NotSafetensorsError(SafetensorsError):
    """The file is recognisably something else (`looks_like`: a pickle, a text file, ...), not a
    damaged safetensors file: callers can point at the file the user meant instead."""

    def __init__(self, message: str, looks_like: str) -> None:
        super().__init__(message)
        self.looks_like = looks_like


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------


class _Entry:
    __slots__ = ("name", "dtype_name", "shape", "begin", "end")

    def __init__(self, name: str, dtype_name: str, shape: tuple[int, ...],
                 begin: int, end: int) -> None:
        self.name = name
        self.dtype_name = dtype_name
        self.shape = shape
        self.begin = begin
        self.end = end


_CONVERT = ("gpunn never unpickles or executes checkpoint contents, convert it to safetensors "
            "with the tool that wrote it")


def _describe_magic(head: bytes) -> tuple[str, str] | None:
    """(what the file looks like, what to do) when its first bytes show another format, else None."""
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return f"a pickle (protocol {head[1]}, e.g. a legacy torch.save file)", _CONVERT
    if head.startswith(_ZIP_MAGIC):
        return "a zip archive (e.g. a torch.save file)", _CONVERT
    if head.startswith(_NPY_MAGIC):
        return "a NumPy .npy file", _CONVERT
    if head.startswith(_PNG_MAGIC):
        return "a PNG image", "give the path of a .safetensors file"
    if _looks_like_text(head):
        kind = "JSON text" if head.lstrip()[:1] in (b"{", b"[") else "a text file"
        return kind, "give the path of a .safetensors file"
    return None


def _looks_like_text(head: bytes) -> bool:
    """Printable UTF-8 (a multi-byte character cut at the end allowed). A safetensors file starts
    with its header length, at most 100 MB, so its high bytes are 0, which text never holds."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data":
            return False
        text = head[:e.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\n\r" for c in text)


def _is_int(x: Any) -> bool:
    return type(x) is int  # bool is an int subclass: reject true/false


def _read_exact(f, n: int, path: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SafetensorsError(
            f"{path}: file ended while reading {what} "
            f"(wanted {n} bytes, got {len(data)})"
        )
    return data


def _parse_entry(path: str, name: str, info: Any, buffer_len: int) -> _Entry:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise SafetensorsError(
            f"{where}: entry must be a JSON object, got {type(info).__name__}")
    keys = set(info)
    wanted = {"dtype", "shape", "data_offsets"}
    if keys != wanted:
        missing = sorted(wanted - keys)
        extra = sorted(keys - wanted)
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise SafetensorsError(f"{where}: entry keys are wrong ({', '.join(parts)})")

    dtype_name = info["dtype"]
    if not isinstance(dtype_name, str):
        raise SafetensorsError(f"{where}: dtype must be a string, got {dtype_name!r:.80}")
    if dtype_name not in _READ_DTYPES:
        if dtype_name in _UNSUPPORTED_DTYPES:
            raise SafetensorsError(
                f"{where}: dtype {dtype_name} is valid safetensors but has no "
                "NumPy equivalent, so gpunn cannot load it")
        raise SafetensorsError(f"{where}: unknown dtype {dtype_name!r:.80}")
    itemsize = _READ_DTYPES[dtype_name].itemsize

    shape = info["shape"]
    if not isinstance(shape, list):
        raise SafetensorsError(f"{where}: shape must be a list, got {shape!r:.80}")
    if len(shape) > _MAX_NDIM:
        raise SafetensorsError(
            f"{where}: shape has {len(shape)} dimensions (at most {_MAX_NDIM})")
    for d in shape:
        if not _is_int(d) or d < 0:
            raise SafetensorsError(
                f"{where}: shape {shape!r:.200} must hold non-negative integers")

    offsets = info["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)):
        raise SafetensorsError(
            f"{where}: data_offsets must be two integers, got {offsets!r:.200}")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise SafetensorsError(
            f"{where}: data_offsets [{begin}, {end}] must satisfy 0 <= begin <= end")
    if end > buffer_len:
        raise SafetensorsError(
            f"{where}: data_offsets [{begin}, {end}] reach beyond the data "
            f"buffer of {buffer_len} bytes")

    # Byte size with Python ints; the product of the non-zero dimensions is
    # capped so a hostile shape cannot make us multiply giant numbers.
    nonzero = itemsize
    for d in shape:
        if d:
            nonzero *= d
            if nonzero > _MAX_NBYTES:
                raise SafetensorsError(
                    f"{where}: shape {shape!r:.200} of {dtype_name} is too large "
                    f"(byte size exceeds {_MAX_NBYTES})")
    nbytes = 0 if 0 in shape else nonzero
    if end - begin != nbytes:
        raise SafetensorsError(
            f"{where}: data_offsets [{begin}, {end}] do not match shape "
            f"{shape!r:.200} of {dtype_name} ({nbytes} bytes)")
    return _Entry(name, dtype_name, tuple(shape), begin, end)


def _read_header(f, path: str) -> tuple[list[_Entry], dict[str, str], int]:
    """Read and fully validate the header of the open file ``f``.

    Returns the entries in header order, the metadata and the buffer length;
    ``f`` is left at the start of the byte buffer.
    """
    size = os.fstat(f.fileno()).st_size
    head = f.read(min(size, 16))
    magic = _describe_magic(head)

    def not_safetensors() -> None:
        if magic is not None:
            looks_like, advice = magic
            raise NotSafetensorsError(f"{path}: not a safetensors file (looks like {looks_like}); {advice}",
                                      looks_like)

    if size < _LEN:
        not_safetensors()
        raise SafetensorsError(
            f"{path}: file is {size} bytes, too short for the 8-byte header "
            "length of a safetensors file")
    n = int.from_bytes(head[:_LEN], "little")
    if n > MAX_HEADER_SIZE or n > size - _LEN or (
            n > 0 and len(head) > _LEN and head[_LEN] != 0x7B):
        not_safetensors()
    if n > size - _LEN:
        raise SafetensorsError(
            f"{path}: header length {n} is beyond the file size {size} bytes")
    if n > MAX_HEADER_SIZE:
        raise SafetensorsError(
            f"{path}: header length {n} exceeds the limit of {MAX_HEADER_SIZE} bytes")
    if n < 2:
        raise SafetensorsError(f"{path}: header length {n} is too small for a JSON object")

    f.seek(_LEN)
    raw = _read_exact(f, n, path, "the header")
    if raw[:1] != b"{":
        raise SafetensorsError(
            f"{path}: header must be a JSON object starting with '{{', "
            f"starts with {raw[:16]!r}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise SafetensorsError(f"{path}: header has the key {e.key!r:.200} twice") from None
    except RecursionError:
        raise SafetensorsError(f"{path}: header JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, over-long integers
        raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(
            f"{path}: header must be a JSON object, got {type(header).__name__}")

    metadata: dict[str, str] = {}
    buffer_len = size - _LEN - n
    entries: list[_Entry] = []
    for name, info in header.items():
        if name == "__metadata__":
            if info is None:
                continue
            if not isinstance(info, dict):
                raise SafetensorsError(
                    f"{path}: __metadata__ must be an object of strings, "
                    f"got {type(info).__name__}")
            for k, v in info.items():
                if not isinstance(v, str):
                    raise SafetensorsError(
                        f"{path}: __metadata__[{k!r:.80}] must be a string, "
                        f"got {type(v).__name__}")
            metadata = dict(info)
            continue
        entries.append(_parse_entry(path, name, info, buffer_len))

    # The tensors must tile the buffer: no gaps, overlaps or trailing bytes.
    pos = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            if e.begin > pos:
                raise SafetensorsError(
                    f"{path}: tensor {e.name!r}: data_offsets [{e.begin}, {e.end}] "
                    f"leave a gap of {e.begin - pos} bytes after offset {pos}")
            raise SafetensorsError(
                f"{path}: tensor {e.name!r}: data_offsets [{e.begin}, {e.end}] "
                f"overlap another tensor's data (which ends at {pos})")
        pos = e.end
    if pos != buffer_len:
        if pos < buffer_len:
            raise SafetensorsError(
                f"{path}: {buffer_len - pos} trailing bytes after the last tensor "
                f"(tensors cover {pos} of the {buffer_len}-byte data buffer)")
        raise SafetensorsError(  # unreachable: ends are checked per entry
            f"{path}: tensors need {pos} bytes but the data buffer has {buffer_len}")
    return entries, metadata, buffer_len


def _read_tensor(f, path: str, e: _Entry, data_start: int) -> np.ndarray:
    dt = _READ_DTYPES[e.dtype_name]
    try:
        arr = np.empty(e.shape, dtype=dt)
    except (ValueError, MemoryError) as err:  # bounded above; belt and braces
        raise SafetensorsError(f"{path}: tensor {e.name!r}: cannot allocate ({err})") from None
    nbytes = e.end - e.begin
    if nbytes:
        f.seek(data_start + e.begin)
        view = memoryview(arr.reshape(-1).view(np.uint8))
        got = f.readinto(view)
        while got is not None and got < nbytes:
            more = f.readinto(view[got:])
            if not more:
                break
            got += more
        if got != nbytes:
            raise SafetensorsError(
                f"{path}: tensor {e.name!r}: file ended inside its data "
                f"(read {got or 0} of {nbytes} bytes)")
    if e.dtype_name == "BOOL":
        if nbytes and int(arr.view(np.uint8).max()) > 1:
            raise SafetensorsError(
                f"{path}: tensor {e.name!r}: BOOL data holds bytes other than 0 and 1")
    elif e.dtype_name == "BF16":
        # bfloat16 is the top half of a float32: widening is exact.
        out = np.empty(e.shape, dtype=np.float32)
        bits = out.view(np.uint32)
        bits[...] = arr
        bits <<= 16
        return out
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def load_file_with_metadata(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Load every tensor of a safetensors file, and its ``__metadata__``.

    Returns ``(arrays, metadata)``: arrays by name in header order, each a
    writable, C-contiguous, native-byte-order array that owns its memory;
    metadata ``{}`` when the file has none.  BF16 tensors come back as
    float32 (exactly).  Raises :class:`SafetensorsError` for any malformed
    file and ``OSError`` if the file cannot be read.
    """
    spath = os.fspath(path)
    with open(spath, "rb") as f:
        entries, metadata, _ = _read_header(f, spath)
        data_start = f.tell()
        arrays = {e.name: _read_tensor(f, spath, e, data_start) for e in entries}
    return arrays, metadata


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every tensor of a safetensors file (see :func:`load_file_with_metadata`)."""
    return load_file_with_metadata(path)[0]


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the ``__metadata__`` of a safetensors file without reading tensor data.

    The whole header is validated as in :func:`load_file`.
    """
    spath = os.fspath(path)
    with open(spath, "rb") as f:
        return _read_header(f, spath)[1]


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


def _write_bytes(fileobj, chunks: Iterable[Any]) -> None:
    """The one place where saving puts bytes into the file."""
    for chunk in chunks:
        fileobj.write(chunk)


def _prepare(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None,
             path: str) -> list[Any]:
    """Validate the inputs and return the chunks of bytes making up the file."""
    if not isinstance(arrays, Mapping):
        raise SafetensorsError(
            f"{path}: arrays must be a dict of str -> numpy.ndarray, "
            f"got {type(arrays).__name__}")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise SafetensorsError(
                f"{path}: metadata must be a dict of str -> str, got {type(metadata).__name__}")
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(
                    f"{path}: metadata must map str to str, got {k!r:.80}: {v!r:.80}")

    prepared = []
    for name, a in arrays.items():
        if not isinstance(name, str):
            raise SafetensorsError(f"{path}: tensor names must be str, got {name!r:.80}")
        if name == "__metadata__":
            raise SafetensorsError(f"{path}: '__metadata__' is reserved and cannot name a tensor")
        if not isinstance(a, np.ndarray):
            raise SafetensorsError(
                f"{path}: tensor {name!r} must be a numpy.ndarray, got {type(a).__name__}")
        le = a.dtype.newbyteorder("<") if a.dtype.byteorder != "|" else a.dtype
        dtype_name = _WRITE_DTYPES.get(le.str) if le.fields is None else None
        if dtype_name is None:
            raise SafetensorsError(
                f"{path}: tensor {name!r} has unsupported dtype {a.dtype} "
                f"(supported: {', '.join(sorted(np.dtype(s).name for s in _WRITE_DTYPES))})")
        data = np.asarray(a, dtype=le, order="C")  # C order, little-endian, keeps 0-d
        prepared.append((name, dtype_name, data))

    # Widest dtype first, then by name (as the reference writer does), so every
    # tensor starts at a multiple of its item size within the buffer.
    prepared.sort(key=lambda t: (-t[2].dtype.itemsize, t[0]))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype_name, data in prepared:
        header[name] = {"dtype": dtype_name, "shape": list(data.shape),
                        "data_offsets": [offset, offset + data.nbytes]}
        offset += data.nbytes
    try:
        raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as e:
        raise SafetensorsError(f"{path}: a name or metadata string is not valid Unicode ({e})") from None
    raw += b" " * (-len(raw) % 8)  # pad so the data buffer starts 8-aligned
    if len(raw) > MAX_HEADER_SIZE:
        raise SafetensorsError(
            f"{path}: header would be {len(raw)} bytes, over the limit of {MAX_HEADER_SIZE}")
    chunks: list[Any] = [len(raw).to_bytes(_LEN, "little"), raw]
    chunks += [data.reshape(-1).view(np.uint8) for _, _, data in prepared if data.nbytes]
    return chunks


def save_file(arrays: Mapping[str, np.ndarray], path: str | os.PathLike,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write ``arrays`` (and optional str -> str ``metadata``) to ``path``.

    Supported dtypes: float64, float32, float16, int64, int32, int16, int8,
    uint64, uint32, uint16, uint8 and bool; arrays of any layout or byte
    order are written C-contiguous and little-endian.  The write is atomic:
    a temporary file in the same directory is written, flushed, fsynced and
    renamed over ``path``; on any error it is removed and an existing file at
    ``path`` is left untouched.  Invalid input raises :class:`SafetensorsError`
    before anything is written.
    """
    spath = os.fspath(path)
    chunks = _prepare(arrays, metadata, spath)
    with atomic_write(spath) as f:
        _write_bytes(f, chunks)
