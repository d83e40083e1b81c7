"""PyTorch parity of small nn pieces: Unflatten / Tensor.unflatten, Sequential and ModuleList
editing (setitem, delitem, insert, pop, extend, +, +=, *), and nn.init's trunc_normal_,
orthogonal_, eye_ and dirac_.

Tests that name torch skip where it is not installed; each edit script runs on both libraries
and compares the children's names, the modules in each slot and the state_dict keys.
"""

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn as nn
from gpunn.errors import IndexOutOfRangeError, ShapeError

# --- Unflatten ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, sizes", [(1, (2, 3)), (-2, (2, -1)), (1, [6]), (0, (1, 2, -1)), (-1, (3, 1))])
def test_unflatten_shapes_and_values_match_torch(dim, sizes):
    torch = pytest.importorskip("torch")
    x = np.arange(36.0).reshape(2, 6, 3)
    ours = gpunn.tensor(x).unflatten(dim, sizes)
    theirs = torch.tensor(x).unflatten(dim, sizes)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    module_out = nn.Unflatten(dim, sizes)(gpunn.tensor(x))
    np.testing.assert_array_equal(module_out.numpy(), torch.nn.Unflatten(dim, sizes)(torch.tensor(x)).numpy())


def test_unflatten_of_an_empty_axis_matches_torch():
    torch = pytest.importorskip("torch")
    assert gpunn.zeros(2, 0).unflatten(1, (3, 0)).shape == tuple(torch.zeros(2, 0).unflatten(1, (3, 0)).shape)


@pytest.mark.parametrize("dim, sizes, error", [
    (1, (4, 2), ShapeError),             # 8 != 6
    (1, (-1, -1), ShapeError),           # two sizes to infer
    (1, (), ShapeError),                 # nothing to split into
    (3, (1,), IndexOutOfRangeError),     # a 3-d tensor has dims -3..2
    (-4, (1,), IndexOutOfRangeError),
    (1, 6, TypeError),                   # sizes must be a tuple
    (1, (2.0, 3), TypeError),
])
def test_unflatten_refuses_what_torch_refuses(dim, sizes, error):
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception):
        torch.zeros(2, 6, 3).unflatten(dim, sizes)
    with pytest.raises(error):
        gpunn.zeros(2, 6, 3).unflatten(dim, sizes)


def test_unflatten_of_zero_elements_with_an_inferred_size_is_refused():
    with pytest.raises(ShapeError, match="ambiguous"):
        gpunn.zeros(2, 0).unflatten(1, (0, -1))


def test_unflatten_module_repr_and_argument_checks_match_torch():
    torch = pytest.importorskip("torch")
    for size in [(2, 3), [2, 3]]:
        assert repr(nn.Unflatten(1, size)) == repr(torch.nn.Unflatten(1, size))
    for bad in [6, (2.0, 3)]:
        with pytest.raises(TypeError):
            torch.nn.Unflatten(1, bad)
        with pytest.raises(TypeError):
            nn.Unflatten(1, bad)


def test_unflatten_undoes_flatten_and_passes_gradients_back(device):
    x = gpunn.randn(4, 2, 3, 5, device=device, requires_grad=True)
    model = nn.Sequential(nn.Flatten(), nn.Unflatten(1, (2, 3, 5)))
    y = model(x)
    assert y.shape == x.shape and y.device is device
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    weights = gpunn.tensor(np.arange(120.0).reshape(4, 2, 3, 5), dtype="float32", device=device)
    (y * weights).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), weights.numpy())


def test_unflatten_gradient_is_checked_numerically():
    x = gpunn.tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True)
    assert gpunn.testing.gradcheck(lambda t: (t.unflatten(1, (2, 2)) ** 2).sum(), [x])


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
