"""gpunn.random: one seeded host generator, so a seed gives the same numbers on every device;
its state round trips; PyTorch's signatures (randint's high and size, rand_like) and errors."""

import numpy as np
import pytest

import gpunn
from helpers import assert_close, to_device

HOST_DEVICES = ["cpu", "strict", "strict:1"]


def test_randint_takes_pytorchs_high_and_size():
    gpunn.manual_seed(0)
    a = gpunn.randint(10, (3,))
    gpunn.manual_seed(0)
    b = gpunn.randint(0, 10, (3,))
    assert a.shape == (3,) and a.numpy().tolist() == b.numpy().tolist()
    assert ((a.numpy() >= 0) & (a.numpy() < 10)).all()


@pytest.mark.parametrize("fn", [gpunn.randn, gpunn.rand])
def test_random_tensors_of_an_impossible_shape(fn):
    with pytest.raises(gpunn.OutOfMemoryError, match=r"ran out of memory drawing shape \(1000000, 1000000\)"):
        fn(10**6, 10**6)
    with pytest.raises(gpunn.OutOfMemoryError, match="larger than any array"):
        fn(10**10, 10**10)
    with pytest.raises(gpunn.ShapeError, match="non-negative"):
        fn(2, -1)
    assert fn((2, 3)).shape == (2, 3) and fn(0).shape == (0,)  # control: possible shapes still work


@pytest.mark.parametrize("draw", [lambda d: gpunn.randn(3, 2, device=d), lambda d: gpunn.rand(4, device=d),
                                  lambda d: gpunn.randint(0, 100, size=(5,), device=d),
                                  lambda d: gpunn.randperm(6, device=d)])
def test_manual_seed_gives_the_same_values_on_every_device(draw):
    values = []
    for spec in HOST_DEVICES:
        gpunn.manual_seed(123)
        values.append(draw(spec).numpy())
    for other in values[1:]:
        np.testing.assert_array_equal(values[0], other)
    gpunn.manual_seed(124)
    assert not np.array_equal(draw("cpu").numpy(), values[0])  # negative control: the seed matters


def test_rng_state_round_trip():
    gpunn.manual_seed(5)
    state = gpunn.get_rng_state()
    first = gpunn.randn(3).numpy()
    gpunn.set_rng_state(state)
    np.testing.assert_array_equal(gpunn.randn(3, device="strict:1").numpy(), first)


def test_rand_like_and_randn_like(device):
    x = to_device(np.zeros((3, 2)), device)
    gpunn.manual_seed(5)
    a, b = gpunn.rand_like(x), gpunn.randn_like(x, dtype="float32")
    assert a.shape == b.shape == (3, 2) and a.device == b.device == device
    assert a.dtype == gpunn.float64 and b.dtype == gpunn.float32
    host = a.numpy()
    assert ((host >= 0) & (host < 1)).all() and len(np.unique(host)) == 6
    gpunn.manual_seed(5)
    assert_close(gpunn.rand_like(x), host)  # one seed, the same numbers
    assert gpunn.randn_like(x, requires_grad=True).requires_grad
