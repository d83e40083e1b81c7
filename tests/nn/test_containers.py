"""nn.Sequential, ModuleList, ModuleDict and ParameterList as containers: registration, the names
they give, and editing (setitem, delitem, insert, pop, extend, +, +=, *).

Each edit script runs on both libraries where torch is installed and compares the children's
names, the modules in each slot and the state_dict keys.
"""


import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from helpers import rng


def _torch():
    return pytest.importorskip("torch")


# --- Sequential and ModuleList editing ------------------------------------------------------


def _build(lib, kind):
    layers = [lib.nn.Linear(1, i + 1) for i in range(5)]  # out_features tells the entries apart
    return lib.nn.Sequential(*layers) if kind == "Sequential" else lib.nn.ModuleList(layers)


def _outcome(lib, kind, edit):
    """Run `edit` on a fresh 5-entry container: (result type or error type, slots, state_dict keys)."""
    container = _build(lib, kind)
    try:
        result = type(edit(container, lib.nn)).__name__
    except (IndexError, TypeError, ValueError) as exc:
        result = "IndexError" if isinstance(exc, IndexError) else type(exc).__name__
    except AssertionError:  # torch's Sequential.insert asserts on a non-Module
        result = "TypeError"
    slots = [(name, getattr(m, "out_features", type(m).__name__)) for name, m in container._modules.items()]
    return result, slots, list(container.state_dict())


EDITS = {
    "set 1": lambda s, nn: s.__setitem__(1, nn.ReLU()),
    "set -1": lambda s, nn: s.__setitem__(-1, nn.Linear(1, 9)),
    "set 5": lambda s, nn: s.__setitem__(5, nn.ReLU()),
    "set -6": lambda s, nn: s.__setitem__(-6, nn.ReLU()),
    "set non-module": lambda s, nn: s.__setitem__(0, 3),
    "set slice": lambda s, nn: s.__setitem__(slice(0, 2), [nn.ReLU()]),
    "del 1": lambda s, nn: s.__delitem__(1),
    "del -1": lambda s, nn: s.__delitem__(-1),
    "del 5": lambda s, nn: s.__delitem__(5),
    "del -6": lambda s, nn: s.__delitem__(-6),
    "del 1:3": lambda s, nn: s.__delitem__(slice(1, 3)),
    "del ::2": lambda s, nn: s.__delitem__(slice(None, None, 2)),
    "del ::-1": lambda s, nn: s.__delitem__(slice(None, None, -1)),
    "del 9:": lambda s, nn: s.__delitem__(slice(9, None)),
    "pop 0": lambda s, nn: s.pop(0),
    "pop -1": lambda s, nn: s.pop(-1),
    "pop 5": lambda s, nn: s.pop(5),
    "pop -6": lambda s, nn: s.pop(-6),
    "pop 1:3": lambda s, nn: s.pop(slice(1, 3)),
    "append": lambda s, nn: s.append(nn.ReLU()),
    "append non-module": lambda s, nn: s.append(3),
    "extend": lambda s, nn: s.extend([nn.ReLU(), nn.Linear(2, 9)]),
    "extend a module": lambda s, nn: s.extend(nn.ReLU()),
    "get 5": lambda s, nn: s[5],
    "get -6": lambda s, nn: s[-6],
    "get -5": lambda s, nn: s[-5],
    "+ list": lambda s, nn: s + [nn.ReLU()],
    "+= list": lambda s, nn: s.__iadd__([nn.ReLU()]),
    "* 2": lambda s, nn: s * 2,
    "* 0": lambda s, nn: s * 0,
    **{f"insert {i}": (lambda i: lambda s, nn: s.insert(i, nn.ReLU()))(i) for i in (0, 2, 5, -1, -5, -6, 7)},
}
# torch's ModuleList.insert (not Sequential's) mishandles these: a gap "7" in the names past the
# end, a KeyError half-way through for negatives; gpunn's checks them as Sequential.insert does
TORCH_MODULELIST_INSERT_BUGS = {"insert -1", "insert -5", "insert -6", "insert 7"}


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_container_edits_match_torch(kind, edit):
    torch = pytest.importorskip("torch")
    if kind == "ModuleList" and edit in TORCH_MODULELIST_INSERT_BUGS:
        pytest.skip("torch's ModuleList.insert is broken for this index (see TORCH_MODULELIST_INSERT_BUGS)")
    assert _outcome(gpunn, kind, EDITS[edit]) == _outcome(torch, kind, EDITS[edit])


def test_container_comparison_catches_a_wrong_renumbering():
    """Negative control: a delete that kept the old names would not match torch's keys."""
    torch = pytest.importorskip("torch")

    def delete_keeping_names(s, nn):
        del s._modules["1"]

    assert _outcome(gpunn, "Sequential", delete_keeping_names) != _outcome(torch, "Sequential", EDITS["del 1"])


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
def test_modulelist_insert_checks_its_index_like_a_list(kind):
    for index, expected in [(-1, [1, 2, 3, 4, "ReLU", 5]), (-5, ["ReLU", 1, 2, 3, 4, 5]), (5, [1, 2, 3, 4, 5, "ReLU"])]:
        _, slots, _ = _outcome(gpunn, kind, EDITS[f"insert {index}"])
        assert [m for _, m in slots] == expected
        assert [name for name, _ in slots] == [str(i) for i in range(6)]
    for index in (-6, 7):
        with pytest.raises(IndexError, match="out of range"):
            _build(gpunn, kind).insert(index, nn.ReLU())


def test_modulelist_insert_returns_none_and_sequential_insert_returns_itself():
    seq, lst = _build(gpunn, "Sequential"), _build(gpunn, "ModuleList")
    assert seq.insert(0, nn.ReLU()) is seq
    assert lst.insert(0, nn.ReLU()) is None


def test_named_sequential_edits_match_torch():
    """Replacing an entry keeps its name; deleting, popping and concatenating renumber from "0"."""
    torch = pytest.importorskip("torch")
    from collections import OrderedDict

    def named(lib):
        return lib.nn.Sequential(OrderedDict(a=lib.nn.Linear(1, 1), b=lib.nn.ReLU(), c=lib.nn.Linear(1, 2)))

    for edit in [lambda s, nn: s.__setitem__(1, nn.Tanh()), lambda s, nn: s.__delitem__(1),
                 lambda s, nn: s.pop(0), lambda s, nn: s.append(nn.Tanh())]:
        ours, theirs = named(gpunn), named(torch)
        edit(ours, nn), edit(theirs, torch.nn)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert list(ours._modules) == list(theirs._modules)
    assert list((named(gpunn) + named(gpunn))._modules) == list((named(torch) + named(torch))._modules)


def test_sequential_concatenation_shares_the_modules():
    torch = pytest.importorskip("torch")
    a, b = _build(gpunn, "Sequential"), nn.Sequential(nn.ReLU())
    both = a + b
    assert type(both) is nn.Sequential and len(both) == 6 and both[0] is a[0] and both[5] is b[0]
    assert len(a) == 5  # + makes a new container
    twice = a * 2
    assert twice[5] is a[0] and len(list(twice.parameters())) == 10  # shared: listed once
    a *= 3
    assert len(a) == 15 and list(a._modules) == [str(i) for i in range(15)]
    for lib in (gpunn, torch):  # a ModuleList is no Sequential in torch, so + refuses it in both
        with pytest.raises(ValueError):
            _build(lib, "Sequential") + _build(lib, "ModuleList")
        with pytest.raises(ValueError):
            seq = _build(lib, "Sequential")
            seq += [lib.nn.ReLU()]
        with pytest.raises(TypeError):
            _build(lib, "ModuleList") * 2


def test_modulelist_concatenation_takes_any_iterable_of_modules():
    lst = _build(gpunn, "ModuleList")
    combined = lst + (m for m in [nn.ReLU(), nn.Tanh()])
    assert type(combined) is nn.ModuleList and list(combined._modules) == [str(i) for i in range(7)]
    lst += nn.Sequential(nn.ReLU())
    assert len(lst) == 6 and type(lst[5]) is nn.ReLU


def test_extend_with_a_non_module_adds_nothing():
    lst = _build(gpunn, "ModuleList")
    with pytest.raises(TypeError, match="entry 1 is a int"):
        lst.extend([nn.ReLU(), 3])
    assert len(lst) == 5


def test_edited_sequential_runs_and_trains_the_remaining_layers(device):
    model = nn.Sequential(nn.Linear(3, 4, device=device), nn.Tanh(), nn.Linear(4, 4, device=device), nn.ReLU())
    model[1] = nn.ReLU()
    del model[2:]
    model.append(nn.Linear(4, 2, device=device))
    model.insert(2, nn.Identity())
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Identity", "Linear"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    x = gpunn.randn(5, 3, device=device)
    expected = model[3](model[0](x).relu())
    out = model(x)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device is device for p in model.parameters())


# --- Module containers -----------------------------------------------------------------------------


def test_module_dict_names_and_methods():
    gpunn.manual_seed(0)
    d = nn.ModuleDict({"enc": nn.Linear(3, 4), "dec": nn.Linear(4, 3)})
    d["act"] = nn.ReLU()
    d.update([("head", nn.Linear(3, 1))])
    assert list(d) == ["enc", "dec", "act", "head"] and len(d) == 4 and "dec" in d and "x" not in d
    assert list(d.state_dict()) == ["enc.weight", "enc.bias", "dec.weight", "dec.bias", "head.weight", "head.bias"]
    assert [name for name, _ in d.items()] == list(d.keys())
    head = d.pop("head")
    assert isinstance(head, nn.Linear) and "head" not in d and len(list(d.parameters())) == 4
    with pytest.raises(TypeError, match="not a Module"):
        d["bad"] = 3
    with pytest.raises(TypeError, match="no forward"):
        d(gpunn.ones(1))
    d.clear()
    assert len(d) == 0 and not list(d.parameters())


def test_module_dict_refuses_a_key_that_would_hide_an_attribute():
    with pytest.raises(KeyError, match="training"):
        nn.ModuleDict({"training": nn.Linear(2, 2)})
    with pytest.raises(KeyError, match="forward"):
        nn.Sequential().add_module("forward", nn.Linear(2, 2))
    with pytest.raises(KeyError, match="weight"):
        nn.Linear(2, 2).add_module("weight", nn.ReLU())  # a parameter's name, as in PyTorch
    d = nn.ModuleDict({"enc": nn.Linear(2, 2)})
    d["enc"] = nn.Linear(2, 3)  # replacing an entry is fine
    assert d["enc"].weight.shape == (3, 2) and d.training is True


def test_module_dict_state_dict_matches_torch():
    torch = _torch()

    def build(lib):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = lib.nn.ModuleDict({"b": lib.nn.Linear(2, 3), "a": lib.nn.Linear(3, 1)})
                self.scales = lib.nn.ParameterList([lib.nn.Parameter(lib.ones(3)), lib.ones(1)])

            def forward(self, x):
                return self.blocks["a"](self.blocks["b"](x) * self.scales[0]) * self.scales[1]
        return Net()

    ours, theirs = build(gpunn), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: gpunn.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    host = rng(20).normal(size=(4, 2)).astype(np.float32)
    out, out_t = ours(gpunn.tensor(host)), theirs(torch.tensor(host))
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-6)
    out.sum().backward()
    out_t.sum().backward()
    np.testing.assert_allclose(ours.scales[0].grad.numpy(), theirs.scales[0].grad.numpy(), rtol=1e-5)
    assert repr(ours.scales) == repr(theirs.scales).replace("torch.", "gpunn.")


def test_parameter_list():
    plist = nn.ParameterList([gpunn.ones(2)])
    plist.append(nn.Parameter(gpunn.zeros(3)))
    plist += [gpunn.full((1,), 2.0)]
    assert len(plist) == 3 and [name for name, _ in plist.named_parameters()] == ["0", "1", "2"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in plist)
    assert plist[-1].tolist() == [2.0] and len(plist[1:]) == 2 and plist[1:][0] is plist[1]
    plist[0] = gpunn.full((2,), 5.0)
    assert plist[0].tolist() == [5.0, 5.0] and len(plist) == 3
    with pytest.raises(IndexError):
        plist[3] = gpunn.ones(1)
    with pytest.raises(gpunn.DTypeError):
        plist.append(gpunn.tensor([1, 2]))  # integers cannot be parameters


def test_module_list_registers_its_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 3), nn.Linear(3, 1)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["layers.0.weight", "layers.0.bias",
                                                     "layers.1.weight", "layers.1.bias"]
    assert net(gpunn.ones(4, 2)).shape == (4, 1)
    with pytest.raises(TypeError, match="no forward"):
        net.layers(gpunn.ones(1, 2))
