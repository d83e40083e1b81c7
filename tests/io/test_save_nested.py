"""gpunn.save / gpunn.load of nested structures (PyTorch's training-state idiom), stored as
safetensors with the structure in the metadata, and loading of hostile structures."""

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim, safetensors_format


def _trained(steps=2, seed=0):
    gpunn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = gpunn.tensor(np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3))
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt, x


def _assert_same(a, b):
    """Equal structure, types and values (tensors compared by dtype, shape and values)."""
    same_kind = [isinstance(a, kind) and isinstance(b, kind) for kind in (gpunn.Tensor, dict)]  # (an OrderedDict
    assert type(a) is type(b) or any(same_kind), (a, b)  # comes back a dict)
    if isinstance(a, gpunn.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)


def test_training_state_round_trips(tmp_path):
    model, opt, _ = _trained()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "loss": [0.5, float("nan")],
             "name": "run", "best": None, "done": False, "shape": (2, 3), "big": 2**70, "lr": np.float32(0.1)}
    gpunn.save(state, tmp_path / "ckpt.pt")
    loaded = gpunn.load(tmp_path / "ckpt.pt")
    _assert_same(loaded, state)
    assert list(loaded["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys, as PyTorch keeps them
    assert isinstance(loaded["optimizer"]["param_groups"][0]["betas"], tuple)
    assert isinstance(loaded["lr"], np.float32)


def test_comparison_catches_a_changed_value(tmp_path):
    """Negative control for _assert_same: one changed tensor value, a tuple for a list, differ."""
    model, opt, _ = _trained()
    state = {"model": model.state_dict(), "epoch": 3}
    gpunn.save(state, tmp_path / "c.pt")
    loaded = gpunn.load(tmp_path / "c.pt")
    loaded["model"]["0.weight"] = loaded["model"]["0.weight"] + 1e-6
    with pytest.raises(AssertionError):
        _assert_same(loaded, state)
    with pytest.raises(AssertionError):
        _assert_same({"a": (1, 2)}, {"a": [1, 2]})


def test_a_resumed_run_continues_exactly(tmp_path):
    """PyTorch's idiom end to end: save model and optimizer, load them into fresh objects, and the
    next steps equal those of the run that never stopped."""
    model, opt, x = _trained(steps=2)
    gpunn.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2}, tmp_path / "c.pt")
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    fresh, fresh_opt, _ = _trained(steps=0, seed=1)
    checkpoint = gpunn.load(tmp_path / "c.pt")
    fresh.load_state_dict(checkpoint["model"])
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    assert checkpoint["epoch"] == 2
    for _ in range(2):
        fresh_opt.zero_grad()
        fresh(x).pow(2).mean().backward()
        fresh_opt.step()
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_the_file_is_plain_safetensors_with_named_tensors(tmp_path):
    model, opt, _ = _trained()
    gpunn.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.safetensors")
    arrays = safetensors_format.load_file(tmp_path / "c.safetensors")
    assert "model.0.weight" in arrays and "optimizer.state.0.exp_avg" in arrays
    np.testing.assert_array_equal(arrays["model.2.bias"], model.state_dict()["2.bias"].numpy())
    st = pytest.importorskip("safetensors.numpy")  # the reference reader agrees
    assert sorted(st.load_file(str(tmp_path / "c.safetensors"))) == sorted(arrays)


def test_flat_dicts_stay_plain_and_roots_may_be_lists_or_tensors(tmp_path, device):
    gpunn.save({"w": gpunn.ones(2)}, tmp_path / "flat.safetensors")
    assert safetensors_format.read_metadata(tmp_path / "flat.safetensors") == {}
    gpunn.save([gpunn.ones(2), 3], tmp_path / "list.pt")
    loaded = gpunn.load(tmp_path / "list.pt", map_location=device)
    assert loaded[1] == 3 and loaded[0].device == device
    gpunn.save(gpunn.arange(3), tmp_path / "t.pt")
    assert gpunn.load(tmp_path / "t.pt").tolist() == [0, 1, 2]


def test_reserved_metadata_and_clashing_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        gpunn.save({"a": [1]}, tmp_path / "x.pt", metadata={"gpunn.object": "{}"})
    with pytest.raises(ValueError, match="'a.b'"):
        gpunn.save({"a.b": gpunn.ones(1), "a": {"b": gpunn.ones(1)}}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def _hostile(tmp_path, structure, arrays=None):
    path = tmp_path / "hostile.safetensors"
    safetensors_format.save_file(arrays or {"w": np.ones(2, np.float32)}, path,
                                 {"gpunn.format": "gpunn.object/1", "gpunn.object": structure})
    return path


@pytest.mark.parametrize("structure,phrase", [
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"a":' * 300 + "1" + "}" * 300, "nested more than"),
    ('{"__scalar__": ["V1000000000000", 5]}', "NumPy scalar"),
    ('{"__scalar__": ["object", "os.system"]}', "NumPy scalar"),
    ('{"__scalar__": ["int8", 100000000000000000000]}', "NumPy scalar"),
    ('{"__tensor__": "missing"}', "does not hold"),
    ('{"__tensor__": ["w"]}', "does not hold"),
    ('{"__items__": [[["k"], 1]]}', "pairs"),
    ('{"__tuple__": "abc"}', "tuple"),
    ("[1, 2", "not valid JSON"),
])
def test_hostile_structures_are_refused(tmp_path, structure, phrase):
    with pytest.raises(ValueError, match=phrase):
        gpunn.load(_hostile(tmp_path, structure))


def test_a_benign_handmade_structure_loads_and_shares_repeated_tensors(tmp_path):
    """Control for the hostile cases: the same kind of file, well formed, loads; a tensor named a
    million times is one object, not a million copies."""
    loaded = gpunn.load(_hostile(tmp_path, '{"x": {"__scalar__": ["float32", 1.5]}, "w": {"__tensor__": "w"}}'))
    assert loaded["x"] == np.float32(1.5) and loaded["w"].tolist() == [1.0, 1.0]
    many = gpunn.load(_hostile(tmp_path, "[" + ",".join(['{"__tensor__": "w"}'] * 1_000_000) + "]"))
    assert len(many) == 1_000_000 and len({id(t) for t in many}) == 1
