"""Tests for gpunn.safetensors_format: round trips, interop with the official
package, malformed files, pickle payloads, interrupted writes and a fuzz run."""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import random
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gpunn.safetensors_format as sf
from gpunn.safetensors_format import (
    SafetensorsError,
    load_file,
    load_file_with_metadata,
    read_metadata,
    save_file,
)

SUPPORTED = [
    np.float64, np.float32, np.float16,
    np.int64, np.int32, np.int16, np.int8,
    np.uint64, np.uint32, np.uint16, np.uint8,
    np.bool_,
]


def _sample(dtype, shape=(3, 4), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)


def _raw_file(path: Path, header, data: bytes = b"", n: int | None = None) -> Path:
    """Write a file by hand: header is a dict (dumped as JSON) or raw bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if n is None else n
    path.write_bytes(length.to_bytes(8, "little") + raw + data)
    return path


def _assert_same(got: dict, want: dict) -> None:
    assert list(sorted(got)) == list(sorted(want))
    for k, w in want.items():
        g = got[k]
        assert isinstance(g, np.ndarray)
        assert g.dtype == w.dtype.newbyteorder("=") or g.dtype == w.dtype
        assert g.dtype.isnative
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def _expect_error(path: Path, *fragments: str, in_header: bool = True) -> SafetensorsError:
    t0 = time.perf_counter()
    with pytest.raises(SafetensorsError) as info:
        load_file(path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"rejecting {path.name} took {elapsed:.2f}s"
    msg = str(info.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    if in_header:  # read_metadata validates the same header and must fail too
        with pytest.raises(SafetensorsError):
            read_metadata(path)
    return info.value


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", SUPPORTED, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype(tmp_path, dtype):
    arrays = {"a": _sample(dtype), "b": _sample(dtype, shape=(7,), seed=1)}
    path = tmp_path / "x.safetensors"
    save_file(arrays, path)
    got = load_file(path)
    _assert_same(got, arrays)
    for arr in got.values():
        assert arr.flags.writeable and arr.flags.owndata and arr.flags.c_contiguous
        assert not np.shares_memory(arr, arrays["a"])
    got["a"][...] = 0  # writable in place
    assert not arrays["a"].any() or not np.array_equal(got["a"], arrays["a"])


def test_zero_d_empty_and_mixed(tmp_path):
    arrays = {
        "scalar": np.array(3.5, dtype=np.float64),
        "iscalar": np.array(-7, dtype=np.int16),
        "bscalar": np.array(True),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "empty3": np.zeros((2, 0, 5), dtype=np.int64),
        "empty1": np.zeros((0,), dtype=np.uint8),
        "w": _sample(np.float16, (5, 2)),
    }
    path = tmp_path / "m.safetensors"
    save_file(arrays, path)
    got = load_file(path)
    _assert_same(got, arrays)
    assert got["scalar"].shape == () and got["scalar"] == 3.5
    assert got["empty3"].shape == (2, 0, 5)


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    arrays = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        "big_f8": np.arange(5, dtype=">f8") * 1.5,
        "big_i4": np.array([[1, -2], [3, 2**30]], dtype=">i4"),
    }
    assert not arrays["transposed"].flags.c_contiguous
    path = tmp_path / "nc.safetensors"
    save_file(arrays, path)
    got = load_file(path)
    _assert_same(got, arrays)
    assert got["big_f8"].dtype == np.dtype("float64") and got["big_f8"].dtype.isnative


def test_metadata_round_trip_and_layout(tmp_path):
    meta = {"format": "np", "epoch": "3", "note": "ünïcødé ✓", "": "empty key"}
    arrays = {"b": np.ones(3, np.int8), "a": np.ones((2, 2), np.float64),
              "c": np.ones(5, np.float16)}
    path = tmp_path / "meta.safetensors"
    save_file(arrays, path, metadata=meta)
    got, got_meta = load_file_with_metadata(path)
    _assert_same(got, arrays)
    assert got_meta == meta
    assert read_metadata(path) == meta

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8:9] == b"{"
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"] == meta
    # every tensor starts at a multiple of its item size
    sizes = {"F64": 8, "F16": 2, "I8": 1}
    for name, info in header.items():
        if name != "__metadata__":
            assert info["data_offsets"][0] % sizes[info["dtype"]] == 0
    assert len(raw) == 8 + n + 32 + 10 + 3


def test_no_metadata_and_empty_dict(tmp_path):
    path = tmp_path / "e.safetensors"
    save_file({}, path)
    arrays, meta = load_file_with_metadata(path)
    assert arrays == {} and meta == {}
    save_file({"x": np.zeros(2, np.float32)}, path, metadata=None)
    assert read_metadata(path) == {}


def test_bf16_is_loaded_as_float32(tmp_path):
    want = np.array([[1.0, -2.5], [3.140625, 0.0]], dtype=np.float32)  # exact in bf16
    bits = (want.view(np.uint32) >> 16).astype("<u2")
    path = _raw_file(tmp_path / "bf.safetensors",
                     {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}},
                     bits.tobytes())
    got = load_file(path)["w"]
    assert got.dtype == np.float32 and got.flags.owndata
    np.testing.assert_array_equal(got, want)


def test_header_length_starting_like_a_pickle_is_still_loaded(tmp_path):
    # A legitimate header of 640 bytes has length bytes 80 02 00 .. which look
    # like pickle protocol 2; it must not be mistaken for one.
    header = {"x": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}
    raw = json.dumps(header).encode()
    raw += b" " * (640 - len(raw))
    path = _raw_file(tmp_path / "p.safetensors", raw, b"\x01\x02\x03")
    assert path.read_bytes()[:2] == b"\x80\x02"
    np.testing.assert_array_equal(load_file(path)["x"], [1, 2, 3])


def test_save_rejects_bad_input_without_touching_anything(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"ok": np.ones(2, np.float32)}, path)
    before = path.read_bytes()
    bad_cases = [
        ({1: np.ones(2)}, None, "names must be str"),
        ({"x": [1.0, 2.0]}, None, "numpy.ndarray"),
        ({"x": np.ones(2, np.complex64)}, None, "unsupported dtype"),
        ({"x": np.array(["a"], dtype=object)}, None, "unsupported dtype"),
        ({"x": np.zeros(2, dtype=[("a", "<f4")])}, None, "unsupported dtype"),
        ({"__metadata__": np.ones(2)}, None, "reserved"),
        ({"x": np.ones(2)}, {"k": 1}, "metadata"),
        ({"x": np.ones(2)}, {2: "v"}, "metadata"),
        ([np.ones(2)], None, "dict"),
    ]
    for arrays, meta, frag in bad_cases:
        with pytest.raises(SafetensorsError, match=frag):
            save_file(arrays, path, metadata=meta)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["bad.safetensors"]


# --------------------------------------------------------------------------
# Interop with the official package
# --------------------------------------------------------------------------


def _interop_arrays():
    arrays = {f"t_{np.dtype(d).name}": _sample(d, (2, 3), seed=i)
              for i, d in enumerate(SUPPORTED)}
    arrays["scalar"] = np.array(2.25, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 4), dtype=np.float64)
    return arrays


def test_interop_official_writes_we_read(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = _interop_arrays()
    meta = {"source": "official", "n": "12"}
    path = tmp_path / "official.safetensors"
    st.save_file(arrays, str(path), metadata=meta)
    got, got_meta = load_file_with_metadata(path)
    _assert_same(got, arrays)
    assert got_meta == meta


def test_interop_we_write_official_reads(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    safetensors = pytest.importorskip("safetensors")
    arrays = _interop_arrays()
    meta = {"source": "gpunn", "ß": "✓"}
    path = tmp_path / "ours.safetensors"
    save_file(arrays, path, metadata=meta)
    got = st.load_file(str(path))
    _assert_same(got, arrays)
    with safetensors.safe_open(str(path), framework="np") as f:
        assert f.metadata() == meta


# --------------------------------------------------------------------------
# Malformed files
# --------------------------------------------------------------------------

T = {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}
DATA48 = bytes(range(48))


def test_header_length_beyond_file(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors", {"w": T}, DATA48, n=1000)
    size = p.stat().st_size
    _expect_error(p, f"header length 1000 is beyond the file size {size} bytes")


def test_header_length_max_u64(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors", {"w": T}, DATA48, n=2**64 - 1)
    _expect_error(p, "header length 18446744073709551615 is beyond the file size")


def test_header_length_over_100mb(tmp_path):
    # The length field claims 100 MB + 1 and the file is (sparsely) big enough,
    # so only the size limit can reject it; nothing of that size is read.
    p = _raw_file(tmp_path / "a.safetensors", b"{}", n=100_000_001)
    with open(p, "r+b") as f:
        f.truncate(100_000_200)
    _expect_error(p, "header length 100000001 exceeds the limit of 100000000 bytes")


def test_header_length_too_small(tmp_path):
    _expect_error(_raw_file(tmp_path / "a.safetensors", b"", DATA48, n=0), "too small")
    _expect_error(_raw_file(tmp_path / "b.safetensors", b"{", DATA48), "too small")


@pytest.mark.parametrize("size", [0, 1, 7])
def test_file_shorter_than_8_bytes(tmp_path, size):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x02" * size)
    _expect_error(p, f"file is {size} bytes, too short")


def test_non_utf8_header(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors", b'{"w\xff\xfe": 1}      ')
    _expect_error(p, "not valid UTF-8")


@pytest.mark.parametrize("raw", [b"{not json}", b'{"w": {"dtype": "F32",', b"{}}"])
def test_non_json_header(tmp_path, raw):
    _expect_error(_raw_file(tmp_path / "a.safetensors", raw), "not valid JSON")


@pytest.mark.parametrize("raw", [b"[1, 2, 3]", b'"text"', b"12", b"null", b" {}"])
def test_header_not_a_json_object(tmp_path, raw):
    _expect_error(_raw_file(tmp_path / "a.safetensors", raw), "must be a JSON object")


def test_deeply_nested_and_huge_int_json(tmp_path):
    deep = b'{"w": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    _expect_error(_raw_file(tmp_path / "a.safetensors", deep), "JSON")
    huge = b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'
    _expect_error(_raw_file(tmp_path / "b.safetensors", huge, b"\0" * 4))


@pytest.mark.parametrize("dtype,frag", [
    ("F128", "unknown dtype 'F128'"),
    ("f32", "unknown dtype 'f32'"),
    (7, "dtype must be a string"),
    ("F8_E4M3", "no NumPy equivalent"),
])
def test_bad_dtype(tmp_path, dtype, frag):
    p = _raw_file(tmp_path / "a.safetensors", {"w": dict(T, dtype=dtype)}, DATA48)
    _expect_error(p, "tensor 'w'", frag)


@pytest.mark.parametrize("shape,frag", [
    ([-1, 4], "non-negative integers"),
    ([-3, -4], "non-negative integers"),
    ([3.0, 4], "non-negative integers"),
    (["3", 4], "non-negative integers"),
    ([True, 12], "non-negative integers"),  # true == 1 would match 48 bytes
    ([3, None], "non-negative integers"),
    ("34", "shape must be a list"),
    (None, "shape must be a list"),
    ({"a": 3}, "shape must be a list"),
])
def test_bad_shape(tmp_path, shape, frag):
    p = _raw_file(tmp_path / "a.safetensors", {"w": dict(T, shape=shape)}, DATA48)
    _expect_error(p, "tensor 'w'", frag)


def test_too_many_dimensions(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors",
                  {"w": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, b"\0")
    _expect_error(p, "65 dimensions")


def test_shape_does_not_match_offsets(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors",
                  {"w": dict(T, data_offsets=[0, 40])}, DATA48[:40])
    _expect_error(p, "tensor 'w': data_offsets [0, 40] do not match shape [3, 4] of F32 (48 bytes)")


@pytest.mark.parametrize("shape", [[2**62, 2**62], [2**40, 2**40, 0, 2**40], [0, 2**62, 4]])
def test_shape_byte_size_overflow(tmp_path, shape):
    p = _raw_file(tmp_path / "a.safetensors",
                  {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}},
                  b"\0" * 16)
    _expect_error(p, "tensor 'w'", "too large")


@pytest.mark.parametrize("offsets,frag", [
    ([0, 48, 1], "two integers"),
    ([0], "two integers"),
    ([0.0, 48], "two integers"),
    ("0-48", "two integers"),
    ([48, 0], "0 <= begin <= end"),
    ([-48, 0], "0 <= begin <= end"),
])
def test_bad_offsets(tmp_path, offsets, frag):
    p = _raw_file(tmp_path / "a.safetensors", {"w": dict(T, data_offsets=offsets)}, DATA48)
    _expect_error(p, "tensor 'w'", frag)


def test_offsets_with_gap(tmp_path):
    h = {"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
         "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}
    _expect_error(_raw_file(tmp_path / "a.safetensors", h, b"\0" * 12), "gap of 4 bytes")
    h0 = {"b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}
    _expect_error(_raw_file(tmp_path / "b.safetensors", h0, b"\0" * 6), "gap of 2 bytes")


def test_overlapping_offsets(tmp_path):
    h = {"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
         "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}
    _expect_error(_raw_file(tmp_path / "a.safetensors", h, b"\0" * 8), "overlap")
    same = {"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}
    _expect_error(_raw_file(tmp_path / "b.safetensors", same, b"\0" * 4), "overlap")


def test_offsets_beyond_buffer_and_truncated_data(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors", {"w": T}, DATA48[:20])
    _expect_error(p, "data_offsets [0, 48] reach beyond the data buffer of 20 bytes")
    # the same file cut short inside its header
    good = _raw_file(tmp_path / "good.safetensors", {"w": T}, DATA48)
    raw = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:20])
    _expect_error(cut, "beyond the file size 20 bytes")
    np.testing.assert_array_equal(load_file(good)["w"].view(np.uint8).ravel(),
                                  np.frombuffer(DATA48, np.uint8))


def test_trailing_bytes(tmp_path):
    p = _raw_file(tmp_path / "a.safetensors", {"w": T}, DATA48 + b"junk")
    _expect_error(p, "4 trailing bytes after the last tensor")


def test_duplicate_keys(tmp_path):
    t = json.dumps(T).encode()
    dup = b'{"w": ' + t + b', "w": ' + t + b"}"
    _expect_error(_raw_file(tmp_path / "a.safetensors", dup, DATA48), "key 'w' twice")
    dup_meta = b'{"__metadata__": {"k": "1", "k": "2"}, "w": ' + t + b"}"
    _expect_error(_raw_file(tmp_path / "b.safetensors", dup_meta, DATA48), "key 'k' twice")
    dup_field = b'{"w": {"dtype": "F32", "dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}}'
    _expect_error(_raw_file(tmp_path / "c.safetensors", dup_field, DATA48), "'dtype' twice")


@pytest.mark.parametrize("meta,frag", [
    ({"k": 1}, "must be a string"),
    ({"k": None}, "must be a string"),
    (["k", "v"], "object of strings"),
    ("kv", "object of strings"),
])
def test_bad_metadata(tmp_path, meta, frag):
    p = _raw_file(tmp_path / "a.safetensors", {"__metadata__": meta, "w": T}, DATA48)
    _expect_error(p, "__metadata__", frag)


@pytest.mark.parametrize("entry,frag", [
    ({"dtype": "F32", "shape": [3, 4]}, "missing ['data_offsets']"),
    (dict(T, extra=1), "unexpected ['extra']"),
    ([0, 48], "must be a JSON object"),
])
def test_bad_entry(tmp_path, entry, frag):
    p = _raw_file(tmp_path / "a.safetensors", {"w": entry}, DATA48)
    _expect_error(p, "tensor 'w'", frag)


def test_bool_bytes_must_be_0_or_1(tmp_path):
    h = {"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}
    _expect_error(_raw_file(tmp_path / "a.safetensors", h, b"\x00\x01\x02"), "BOOL",
                  in_header=False)
    ok = load_file(_raw_file(tmp_path / "b.safetensors", h, b"\x00\x01\x01"))["m"]
    np.testing.assert_array_equal(ok, [False, True, True])


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------
# Pickle and zip payloads are refused, never executed
# --------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        # Unpickling this calls os.system and creates the marker file.
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_payload_is_refused_and_not_executed(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Evil(str(marker))}, protocol=protocol)
    path = tmp_path / "model.safetensors"
    path.write_bytes(payload)
    err = _expect_error(path, "pickle", "never unpickles")
    assert "not a safetensors file" in str(err)
    assert not marker.exists()
    # Control: the payload is live, so the check above is meaningful.
    if os.name == "posix":
        control = tmp_path / "control"
        pickle.loads(pickle.dumps(_Evil(str(control)), protocol=protocol))
        assert control.exists()


def test_tiny_pickle_and_zip_are_named(tmp_path):
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(pickle.dumps(1, protocol=4))  # 5 bytes
    assert len(tiny.read_bytes()) < 8
    _expect_error(tiny, "pickle")

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # the layout torch.save uses
        z.writestr("archive/data.pkl", pickle.dumps({"w": [1.0, 2.0]}))
        z.writestr("archive/version", "3\n")
    zpath = tmp_path / "torch.safetensors"
    zpath.write_bytes(buf.getvalue())
    _expect_error(zpath, "zip", "never unpickles")


@pytest.mark.parametrize("name, content, looks_like", [
    ("config.json", b'{\n  "dataset": "digits",\n  "epochs": 30\n}\n', "JSON text"),
    ("metrics.csv", b"epoch,train_loss,test_loss\n1,0.5,0.4\n", "a text file"),
    ("notes.txt", "Gewichte für später\n".encode(), "a text file"),
    ("short.txt", b"hi", "a text file"),
    ("curves.png", b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG image"),
])
def test_text_json_and_images_are_named_as_what_they_are(tmp_path, name, content, looks_like):
    """A run's config.json given as a checkpoint: say it is not safetensors, not 'header length 83860...'."""
    path = tmp_path / name
    path.write_bytes(content)
    err = _expect_error(path, f"not a safetensors file (looks like {looks_like})", "give the path of a .safetensors file")
    assert isinstance(err, sf.NotSafetensorsError) and err.looks_like == looks_like
    assert "header length" not in str(err) and "unpickle" not in str(err)


def test_damaged_binary_files_are_not_called_text(tmp_path):
    """Control: a safetensors file with a broken length is damaged, not some other format."""
    err = _expect_error(_raw_file(tmp_path / "a.safetensors", {"w": T}, DATA48, n=2**64 - 1), "header length")
    assert not isinstance(err, sf.NotSafetensorsError)
    err = _expect_error(_raw_file(tmp_path / "b.safetensors", {"w": T}, DATA48, n=1000), "header length")
    assert not isinstance(err, sf.NotSafetensorsError)


def test_module_never_unpickles():
    src = Path(sf.__file__).read_text()
    tree = ast.parse(src)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "torch"}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"eval", "exec", "__import__"}
    assert "np.load(" not in src and "allow_pickle" not in src


# --------------------------------------------------------------------------
# Atomic save
# --------------------------------------------------------------------------


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    first = {"w": _sample(np.float32, (4, 5)), "b": _sample(np.int64, (3,))}
    save_file(first, path, metadata={"version": "1"})
    second = {"w": _sample(np.float32, (8, 9), seed=5), "b": _sample(np.int64, (6,), seed=6),
              "m": _sample(np.bool_, (7,), seed=7)}

    probe = tmp_path / "probe" / "second.safetensors"
    probe.parent.mkdir()
    save_file(second, probe, metadata={"version": "2"})
    total = probe.stat().st_size
    header_end = 8 + int.from_bytes(probe.read_bytes()[:8], "little")
    offsets = sorted({0, 1, 7, 8, header_end // 2, header_end, header_end + 1,
                      (header_end + total) // 2, total - 8, total - 1})
    assert len(offsets) == 10

    real_write = sf._write_bytes
    for limit in offsets:
        written = []

        def crashing_write(fileobj, chunks, limit=limit, written=written):
            left = limit
            for chunk in chunks:
                mv = memoryview(chunk).cast("B")
                if len(mv) > left:
                    fileobj.write(mv[:left])
                    written.append(left)
                    raise OSError(f"simulated crash after {limit} bytes")
                fileobj.write(mv)
                left -= len(mv)
                written.append(len(mv))
            raise AssertionError("the crash offset was never reached")

        monkeypatch.setattr(sf, "_write_bytes", crashing_write)
        with pytest.raises(OSError, match="simulated crash"):
            save_file(second, path, metadata={"version": "2"})
        assert sum(written) == limit
        got, meta = load_file_with_metadata(path)
        _assert_same(got, first)
        assert meta == {"version": "1"}
        assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors", "probe"]

    monkeypatch.setattr(sf, "_write_bytes", real_write)
    save_file(second, path, metadata={"version": "2"})
    got, meta = load_file_with_metadata(path)
    _assert_same(got, second)
    assert meta == {"version": "2"}
    assert path.read_bytes() == probe.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors", "probe"]


def test_save_keeps_mode_of_existing_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"x": np.ones(2)}, path)
    if os.name == "posix":
        os.chmod(path, 0o640)
        save_file({"x": np.zeros(2)}, path)
        assert (path.stat().st_mode & 0o777) == 0o640
    np.testing.assert_array_equal(load_file(path)["x"], [0.0, 0.0])


# --------------------------------------------------------------------------
# Fuzz
# --------------------------------------------------------------------------


def test_fuzz_mutations_give_arrays_or_safetensors_error(tmp_path):
    arrays = {
        "w": _sample(np.float32, (3, 4)),
        "b": _sample(np.int64, (5,)),
        "mask": _sample(np.bool_, (6,)),
        "h": _sample(np.float16, (2, 2)),
        "e": np.zeros((0, 3), np.uint8),
        "s": np.array(1.5),
    }
    src = tmp_path / "src.safetensors"
    save_file(arrays, src, metadata={"k": "v", "epoch": "7"})
    good = src.read_bytes()
    n = int.from_bytes(good[:8], "little")
    rng = random.Random(1234)
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"ok": 0, "error": 0}
    kinds = set()

    for i in range(400):
        data = bytearray(good)
        kind = rng.choice(["flip_header", "flip_data", "truncate", "insert", "delete",
                           "length", "digit", "multi"])
        kinds.add(kind)
        if kind == "flip_header":
            j = rng.randrange(8, 8 + n)
            data[j] ^= 1 << rng.randrange(8)
        elif kind == "flip_data":
            j = rng.randrange(8 + n, len(data))
            data[j] = rng.randrange(256)
        elif kind == "truncate":
            del data[rng.randrange(len(data)):]
        elif kind == "insert":
            j = rng.randrange(len(data) + 1)
            data[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "delete":
            j = rng.randrange(len(data))
            del data[j:j + rng.randint(1, 8)]
        elif kind == "length":
            new = rng.choice([0, 1, n - 1, n + 1, n + 8, len(data), 2**64 - 1,
                              rng.randrange(2**64), rng.randrange(2 * len(data))])
            data[:8] = new.to_bytes(8, "little")
        elif kind == "digit":
            digits = [k for k in range(8, 8 + n) if chr(data[k]).isdigit()]
            data[rng.choice(digits)] = ord(rng.choice("0123456789"))
        else:
            for _ in range(rng.randint(2, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))

        try:
            got = load_file(path)
        except SafetensorsError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - any other type is the bug we hunt
            pytest.fail(f"mutation {i} ({kind}) raised {type(e).__name__}: {e}")
        outcomes["ok"] += 1
        assert all(isinstance(a, np.ndarray) for a in got.values())
        assert sum(a.nbytes for a in got.values()) <= len(data)

    assert kinds == {"flip_header", "flip_data", "truncate", "insert", "delete",
                     "length", "digit", "multi"}
    assert outcomes["ok"] >= 20 and outcomes["error"] >= 100, outcomes
