"""`gpunn.compile(model)` behaves as torch.compile's call does for training code (the model back,
training as before), while `gpunn.compile` stays the module `compile_step` lives in."""

import warnings

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim
from gpunn.compile import CompileWarning, compile_step


def _train(compile_it):
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = optim.SGD(model.parameters(), lr=0.1)
    if compile_it:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompileWarning)
            model = gpunn.compile(model)
    x = gpunn.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_compiled_model_trains_as_the_model_does():
    assert _train(True) == _train(False)


def test_compile_returns_the_model_and_says_where_capture_lives(monkeypatch):
    import gpunn.compile as module

    monkeypatch.setattr(module, "_noted", False)
    model = nn.Linear(2, 2)
    with pytest.warns(CompileWarning, match=r"unchanged.*gpunn.compile_step\(model, loss_fn, optimizer\)"):
        assert gpunn.compile(model) is model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        assert gpunn.compile(model, mode="reduce-overhead", fullgraph=True) is model


def test_decorator_forms_and_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileWarning)

        @gpunn.compile
        def double(x):
            return x * 2

        @gpunn.compile(dynamic=True)
        def triple(x):
            return x * 3

    assert double(gpunn.ones(2)).tolist() == [2.0, 2.0] and triple(gpunn.ones(1)).tolist() == [3.0]
    with pytest.raises(TypeError, match="compile_step"):
        gpunn.compile(3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'modee'"):
        gpunn.compile(nn.Linear(1, 1), modee="max-autotune")


@pytest.mark.filterwarnings("ignore::gpunn.compile.CompileWarning")
def test_the_module_and_compile_step_still_work():
    import gpunn.compile as module

    assert module is gpunn.compile and module.compile_step is compile_step is gpunn.compile_step
    model = nn.Linear(2, 1)
    step = gpunn.compile_step(model, lambda out, y: (out - y).pow(2).mean(), optim.SGD(model.parameters(), lr=0.1))
    assert step(gpunn.ones(3, 2), gpunn.zeros(3, 1)).item() >= 0
