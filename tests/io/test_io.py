"""gpunn.io: tensor files and checkpoints in safetensors; hostile files; interrupted writes."""

import json
import os
import pathlib
import pickle

import numpy as np
import pytest

import gpunn
from gpunn import io, nn, optim, safetensors_format
from gpunn.safetensors_format import SafetensorsError

DEVICES = ["cpu", "strict", "strict:1"]


def _sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal((5,)),
        "tiny64": np.array([1e-300, -0.0, 5e-324, np.pi]),
        "labels": np.array([0, 2**40, -(2**62), 7], dtype=np.int64),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "bytes": np.arange(250, 256, dtype=np.uint8),
        "mask": np.array([True, False, True]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def _assert_same(loaded, arrays, device):
    assert list(sorted(loaded)) == list(sorted(arrays))
    for name, expected in arrays.items():
        t = loaded[name]
        assert isinstance(t, gpunn.Tensor)
        assert t.device == gpunn.device(device)
        assert t.dtype == expected.dtype, name
        assert t.shape == expected.shape, name
        assert np.array_equal(t.numpy(), expected), name


@pytest.mark.parametrize("source", DEVICES)
@pytest.mark.parametrize("target", DEVICES)
def test_round_trip_between_devices(tmp_path, source, target):
    arrays = _sample_arrays()
    tensors = {name: gpunn.tensor(a, device=source) for name, a in arrays.items()}
    io.save(tensors, tmp_path / "t.safetensors")
    _assert_same(io.load(tmp_path / "t.safetensors", device=target), arrays, target)


def test_round_trip_of_numpy_arrays_and_metadata(tmp_path):
    arrays = _sample_arrays()
    path = tmp_path / "t.safetensors"
    io.save(arrays, path, metadata={"note": "digits run", "epoch": "3"})
    _assert_same(io.load(path), arrays, "cpu")
    assert safetensors_format.read_metadata(path) == {"note": "digits run", "epoch": "3"}


def test_comparison_catches_a_changed_value(tmp_path):
    """Negative control: the round-trip check fails when one bit of one value differs."""
    arrays = _sample_arrays()
    io.save(arrays, tmp_path / "t.safetensors")
    loaded = io.load(tmp_path / "t.safetensors")
    arrays["w64"] = arrays["w64"].copy()
    arrays["w64"][2] = np.nextafter(arrays["w64"][2], np.inf)
    with pytest.raises(AssertionError):
        _assert_same(loaded, arrays, "cpu")


def test_files_are_readable_by_the_official_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    arrays = _sample_arrays()
    io.save({k: gpunn.tensor(v, device="strict:1") for k, v in arrays.items()}, tmp_path / "t.safetensors")
    theirs = st_numpy.load_file(str(tmp_path / "t.safetensors"))
    assert all(np.array_equal(theirs[k], v) and theirs[k].dtype == v.dtype for k, v in arrays.items())


def test_save_rejects_what_is_not_data(tmp_path):
    with pytest.raises(TypeError, match="'w' is a object"):
        io.save({"w": object(), "lr": 0.1}, tmp_path / "t.safetensors")
    with pytest.raises(TypeError, match=r"'model' is a MLP.*MLP.state_dict\(\)"):
        io.save({"model": gpunn.nn.MLP([2, 2])}, tmp_path / "t.safetensors")
    assert not (tmp_path / "t.safetensors").exists()


@pytest.mark.parametrize("make, phrases", [
    (lambda m, o: m, ["got MLP", "gpunn.save(model.state_dict(), path)", "gpunn.save_checkpoint(path, model="]),
    (lambda m, o: o, ["got Adam", "gpunn.save_checkpoint(path, model=model, optimizer="]),
], ids=["module", "optimizer"])
def test_save_given_a_torch_save_habit_names_the_call_to_use(tmp_path, make, phrases):
    model = gpunn.nn.MLP([2, 3, 2])
    optimizer = gpunn.optim.Adam(model.parameters())
    model(gpunn.ones(1, 2)).sum().backward()
    optimizer.step()  # so the optimizer's state holds tensors too
    with pytest.raises(TypeError) as info:
        io.save(make(model, optimizer), tmp_path / "t.pt")
    for phrase in phrases:
        assert phrase in str(info.value)
    assert not (tmp_path / "t.pt").exists()


def test_save_given_the_path_first_says_the_order(tmp_path):
    with pytest.raises(TypeError, match=r"dict comes first.*gpunn.save\(model.state_dict\(\), path\)"):
        io.save(str(tmp_path / "t.pt"), {"w": gpunn.zeros(2)})


@pytest.mark.parametrize("target", DEVICES)
def test_map_location_is_pytorchs_name_for_device(tmp_path, target):
    arrays = _sample_arrays()
    io.save(arrays, tmp_path / "t.safetensors")
    _assert_same(io.load(tmp_path / "t.safetensors", map_location=target), arrays, target)
    _assert_same(io.load(tmp_path / "t.safetensors", map_location=gpunn.device(target), device=target,
                         weights_only=True), arrays, target)
    _assert_same(io.load(tmp_path / "t.safetensors", target), arrays, target)  # positional, as torch.load(f, loc)


def test_map_location_accepts_a_torch_device(tmp_path):
    torch = pytest.importorskip("torch")
    io.save({"w": gpunn.ones(2)}, tmp_path / "t.safetensors")
    assert io.load(tmp_path / "t.safetensors", map_location=torch.device("cpu"))["w"].device == "cpu"


@pytest.mark.parametrize("map_location", [{"cuda:0": "cpu"}, lambda storage, location: storage])
def test_map_location_as_a_mapping_or_function_asks_for_a_device(tmp_path, map_location):
    io.save({"w": gpunn.ones(2)}, tmp_path / "t.safetensors")
    with pytest.raises(TypeError, match="pass the device to load onto, e.g. map_location='cpu'"):
        io.load(tmp_path / "t.safetensors", map_location=map_location)


def test_device_and_map_location_must_agree(tmp_path):
    io.save({"w": gpunn.ones(2)}, tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match="disagree"):
        io.load(tmp_path / "t.safetensors", device="cpu", map_location="strict")


def test_weights_only_false_is_refused_because_gpunn_never_unpickles(tmp_path):
    io.save({"w": gpunn.ones(2)}, tmp_path / "t.safetensors")
    assert list(io.load(tmp_path / "t.safetensors", weights_only=True)) == ["w"]
    assert list(io.load(tmp_path / "t.safetensors", weights_only=None)) == ["w"]
    with pytest.raises(ValueError, match="weights_only=False.*never"):
        io.load(tmp_path / "t.safetensors", weights_only=False)


# --- hostile files ---------------------------------------------------------------------------------


class _TouchOnUnpickle:
    """Unpickling this creates a file: proof that a loader executed the pickle's instructions."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _write_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"weight": _TouchOnUnpickle(marker)}, f)


def test_pickle_file_raises_and_runs_nothing(tmp_path):
    path, marker = tmp_path / "model.pt", tmp_path / "EXECUTED"
    _write_pickle(path, marker)
    with pytest.raises(SafetensorsError, match="pickle"):
        io.load(path)
    with pytest.raises(SafetensorsError, match="pickle"):
        io.load_checkpoint(path)
    assert not marker.exists()


def test_pickle_payload_really_executes_when_unpickled(tmp_path):
    """Negative control: the payload above is live, so its absence above means nothing ran."""
    path, marker = tmp_path / "model.pt", tmp_path / "EXECUTED"
    _write_pickle(path, marker)
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, b"garbage that is not a checkpoint" * 4,
                                     (40).to_bytes(8, "little") + b"{not json" + b" " * 31,
                                     b"PK\x03\x04" + b"\x00" * 60, bytes(range(256))])
def test_garbage_files_raise_a_clear_value_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.safetensors"):
        io.load(path)
    with pytest.raises(ValueError, match="bad.safetensors"):
        io.load_checkpoint(path)


def test_a_plain_tensor_file_is_not_a_checkpoint(tmp_path):
    io.save({"w": gpunn.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="not a gpunn checkpoint"):
        io.load_checkpoint(tmp_path / "w.safetensors")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "nope.safetensors")


# --- checkpoints -----------------------------------------------------------------------------------


def test_meta_round_trip_keeps_types_and_exact_values(tmp_path):
    meta = {
        "epoch": 3, "step": 1200, "huge": 2**127 + 1, "negative": -(2**70),
        "lr": 0.1, "tiny": 5e-324, "third": 1 / 3, "inf": float("inf"),
        "name": "run \u00e9\u4e2d", "flag": True, "nothing": None,
        "loader": {"epoch": 2, "batch": 5}, "history": [0.5, 0.25, [1, 2]], "pair": (1, "a"),
        "__dunder__": {"__tensor__": "looks like a tag but is user data"}, "np_float": np.float32(0.1),
        "np_double": np.float64(0.1), "np_int": np.int64(-3), "np_bool": np.bool_(True),
    }
    io.save_checkpoint(tmp_path / "c.safetensors", **meta)
    back = io.load_checkpoint(tmp_path / "c.safetensors")
    assert back == meta
    assert all(type(back[k]) is type(meta[k]) for k in meta)  # tuples stay tuples, NumPy scalars keep their dtype
    nan = io.load_checkpoint(_saved(tmp_path, value=float("nan")))["value"]
    assert nan != nan


def _saved(tmp_path, **meta):
    path = tmp_path / "meta.safetensors"
    io.save_checkpoint(path, **meta)
    return path


@pytest.mark.parametrize("value,what", [(object(), "object"), ({1, 2}, "set"), (gpunn.zeros(2), "Tensor"),
                                        (np.zeros(2), "ndarray"), ({"deep": [1, b"x"]}, "bytes")])
def test_meta_rejects_values_that_are_not_json(tmp_path, value, what):
    with pytest.raises(TypeError, match=f"'bad.*{what}"):
        io.save_checkpoint(tmp_path / "c.safetensors", epoch=1, bad=value)
    assert not (tmp_path / "c.safetensors").exists()


def test_generator_state_is_saved_and_restored(tmp_path):
    gpunn.manual_seed(123)
    gpunn.randn(7)
    io.save_checkpoint(tmp_path / "c.safetensors")
    expected = gpunn.randn(5).numpy()
    gpunn.manual_seed(999)
    assert not np.array_equal(gpunn.randn(5).numpy(), expected)  # control: the state really moved on
    io.load_checkpoint(tmp_path / "c.safetensors")
    assert np.array_equal(gpunn.randn(5).numpy(), expected)
    header = safetensors_format.read_metadata(tmp_path / "c.safetensors")
    saved = json.loads(header["rng"])["state"]
    assert saved["state"] > 2**64 or saved["inc"] > 2**64  # 128-bit integers kept whole


def _trained_state(seed, device="cpu"):
    """A model and an Adam optimizer with non-trivial state, after two steps on random data."""
    from gpunn import nn, optim

    gpunn.manual_seed(seed)
    model = nn.MLP([3, 5, 2], device=device)
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x, y = gpunn.randn(6, 3, device=device), gpunn.tensor([0, 1, 1, 0, 1, 0], device=device)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def _snapshot(model, optimizer, scheduler):
    """Every number of the training state, on the host, for exact comparison."""
    def host(value):
        if isinstance(value, gpunn.Tensor):
            return ("tensor", value.dtype.name, value.numpy().tobytes(), value.shape)
        if isinstance(value, dict):
            return {k: host(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(host(v) for v in value)
        return value
    return host({"model": dict(model.state_dict()), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict()})


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_round_trip_restores_everything(tmp_path, device):
    saved = _trained_state(1, device)
    io.save_checkpoint(tmp_path / "c.safetensors", *saved, epoch=4, loader={"epoch": 4, "batch": 2})
    fresh = _trained_state(2, device)
    assert _snapshot(*fresh) != _snapshot(*saved)  # control: the states differ before loading
    meta = io.load_checkpoint(tmp_path / "c.safetensors", *fresh)
    assert meta == {"epoch": 4, "loader": {"epoch": 4, "batch": 2}}
    assert _snapshot(*fresh) == _snapshot(*saved)
    for t in list(fresh[0].parameters()) + [v for s in fresh[1].state_dict()["state"].values()
                                            for v in s.values() if isinstance(v, gpunn.Tensor)]:
        assert t.device == gpunn.device(device)


def test_checkpoint_key_layout(tmp_path):
    io.save_checkpoint(tmp_path / "c.safetensors", *_trained_state(1))
    names = set(safetensors_format.load_file(tmp_path / "c.safetensors"))
    assert {"model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"} <= names
    assert {"optimizer.state.0.exp_avg", "optimizer.state.3.exp_avg_sq"} <= names
    assert all(n.startswith(("model.", "optimizer.state.")) for n in names)


def test_checkpoint_lands_on_the_requested_device(tmp_path):
    io.save_checkpoint(tmp_path / "c.safetensors", *_trained_state(1, "cpu"))
    model, optimizer, scheduler = _trained_state(2, "strict:1")
    io.load_checkpoint(tmp_path / "c.safetensors", model, optimizer, scheduler)
    tensors = [v for s in optimizer.state_dict()["state"].values() for v in s.values() if isinstance(v, gpunn.Tensor)]
    assert tensors and all(t.device == gpunn.device("strict:1") for t in tensors)
    assert _snapshot(model, optimizer, scheduler) == _snapshot(*_loaded_copy(tmp_path, "cpu"))


def _loaded_copy(tmp_path, device):
    state = _trained_state(3, device)
    io.load_checkpoint(tmp_path / "c.safetensors", *state)
    return state


def test_load_checkpoint_device_argument(tmp_path):
    from gpunn import nn, optim

    io.save_checkpoint(tmp_path / "c.safetensors", optimizer=_trained_state(1)[1], note="only the optimizer")
    model = nn.MLP([3, 5, 2], device="strict:1")
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    meta = io.load_checkpoint(tmp_path / "c.safetensors", optimizer=optimizer, device="strict:1")
    assert meta == {"note": "only the optimizer"}
    assert optimizer.state_dict()["state"][0]["exp_avg"].device == gpunn.device("strict:1")


def test_missing_part_is_named(tmp_path):
    model, optimizer, scheduler = _trained_state(1)
    io.save_checkpoint(tmp_path / "c.safetensors", model)
    with pytest.raises(ValueError, match="no optimizer state"):
        io.load_checkpoint(tmp_path / "c.safetensors", model, optimizer)


def test_wrong_architecture_names_the_keys_and_changes_nothing(tmp_path):
    from gpunn import nn, optim

    io.save_checkpoint(tmp_path / "c.safetensors", *_trained_state(1))
    gpunn.manual_seed(5)
    deeper = nn.MLP([3, 5, 5, 2])
    optimizer = optim.Adam(deeper.parameters(), lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    before = _snapshot(deeper, optimizer, scheduler)
    rng_before = gpunn.get_rng_state()
    with pytest.raises(nn.StateDictError, match=r"missing keys \['4.weight', '4.bias'\]"):
        io.load_checkpoint(tmp_path / "c.safetensors", deeper, optimizer, scheduler)
    assert _snapshot(deeper, optimizer, scheduler) == before
    assert gpunn.get_rng_state() == rng_before

    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Linear(3, 5), nn.Linear(5, 2)

    with pytest.raises(nn.StateDictError, match=r"missing keys \['hidden.weight'.*unexpected keys \['0.weight'"):
        io.load_checkpoint(tmp_path / "c.safetensors", Renamed())
    with pytest.raises(nn.StateDictShapeError, match="0.weight"):
        io.load_checkpoint(tmp_path / "c.safetensors", nn.MLP([3, 6, 2]))


class _Interrupted(Exception):
    pass


def _write_then_fail(limit):
    """A stand-in for safetensors_format._write_bytes that dies after `limit` bytes."""
    def write(fileobj, chunks):
        left = limit
        for chunk in chunks:
            data = bytes(memoryview(chunk).cast("B"))
            fileobj.write(data[:left])
            left -= len(data[:left])
            if left == 0:
                break
        raise _Interrupted(f"killed after {limit} bytes")
    return write


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    old = _trained_state(1)
    io.save_checkpoint(path, *old, step=10)
    expected = _snapshot(*_loaded_copy(tmp_path, "cpu"))
    new = _trained_state(7)
    io.save_checkpoint(tmp_path / "size.safetensors", *new, step=20)
    size = (tmp_path / "size.safetensors").stat().st_size
    os.unlink(tmp_path / "size.safetensors")
    header = int.from_bytes(path.read_bytes()[:8], "little")
    offsets = sorted({0, 1, 7, 8, 9, 8 + header // 2, 8 + header, 8 + header + 1, (size + header) // 2, size - 1})
    for limit in offsets:
        monkeypatch.setattr(safetensors_format, "_write_bytes", _write_then_fail(limit))
        with pytest.raises(_Interrupted):
            io.save_checkpoint(path, *new, step=20)
        monkeypatch.undo()
        state = _trained_state(3)
        assert io.load_checkpoint(path, *state) == {"step": 10}, limit
        assert _snapshot(*state) == expected, limit
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"], limit  # no temp files left


def test_a_truncated_checkpoint_is_rejected(tmp_path):
    """Negative control for the test above: the partial files an unsafe writer would leave
    behind do not load, so an intact previous file is what made that test pass."""
    path = tmp_path / "c.safetensors"
    io.save_checkpoint(path, *_trained_state(1), step=10)
    whole = path.read_bytes()
    header = int.from_bytes(whole[:8], "little")
    for cut in (0, 7, 9, 8 + header // 2, 8 + header + 1, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(SafetensorsError):
            io.load_checkpoint(path, *_trained_state(3))


def test_load_checkpoint_puts_the_model_back_when_the_optimizer_does_not_fit(tmp_path):
    gpunn.manual_seed(0)
    model = nn.MLP([3, 4, 2])
    opt = optim.Adam(model.parameters(), lr=0.1)
    model(gpunn.ones(2, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.safetensors"
    gpunn.save_checkpoint(path, model=model, optimizer=opt, epoch=1)

    gpunn.manual_seed(1)
    other = nn.MLP([3, 4, 2])
    before = {k: v.numpy().copy() for k, v in other.state_dict().items()}  # numpy() shares the storage
    wrong_opt = optim.Adam([other[0].weight], lr=0.1)  # one parameter: the saved groups do not fit
    with pytest.raises(ValueError):
        gpunn.load_checkpoint(path, model=other, optimizer=wrong_opt)
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[name], err_msg=name)
    # control: with a fitting optimizer the same file loads and changes the model
    meta = gpunn.load_checkpoint(path, model=other, optimizer=optim.Adam(other.parameters(), lr=0.1))
    assert meta["epoch"] == 1
    assert not np.array_equal(other[0].weight.numpy(), before["0.weight"])
