"""compile_step's bookkeeping, checked on the cpu against an emulated CUDA graph.

A real CUDA graph records the array work of one step and replays it: no Python runs on replay, the
arrays keep the addresses they had when recorded, and the scalars that change per step come from
device buffers that compile_step rewrites before each launch. EmulatedGraph below keeps exactly
that contract with NumPy: recording runs the step and then undoes its array effects (nothing
executes while recording), and a replay redoes the array work with the recorded scalar buffers
while undoing the Python-side bookkeeping (step counters) that a real replay would never do.
So these tests check what compile_step itself must get right (uploads, step counters, input
copies, recapture on changed hyper-parameters, rollback after a failed capture) without a GPU;
tests/cuda/test_gpu.py checks the real graphs. At the end: gpunn.compile(model), torch.compile's
call for training code.
"""

import warnings

import numpy as np
import pytest

import gpunn
import gpunn.functional as F
import gpunn.nn as nn
import gpunn.optim as optim
from gpunn.compile import CompileWarning, compile_step

STEPS = 12


class EmulatedGraph:
    def __init__(self, run, optimizer):
        self.run, self.optimizer = run, optimizer
        self.flats = optimizer._flat_groups()
        self.scalars = optimizer._device_scalars  # what the recorded updates read
        # the arrays the recorded step reads its parameters from (those of the optimizer's groups)
        self.reads = [(p, p._array) for group in optimizer.param_groups for p in group["params"]]

    def arrays(self):
        return [a for f in self.flats if f is not None for a in (f.param, f.grad, *f.buffers.values())]

    def replay(self, output):
        steps = {id(p): e.get("step") for p, e in self.optimizer.state.items()}
        assert all(p._array is array for p, array in self.reads), \
            "a parameter was rebound since the capture and not copied back: a replay would read its old array"
        self.optimizer._device_scalars = self.scalars
        try:
            loss = self.run()
        finally:
            self.optimizer._device_scalars = None
        flats = self.optimizer._flat_groups()  # a real replay runs no Python: it cannot lay buffers out anew
        assert flats is not None and all(a is b for a, b in zip(flats, self.flats)), \
            "the replayed step laid out the optimizer's buffers anew: the graph should have gone stale"
        for p, e in self.optimizer.state.items():  # a replay runs no Python: undo its bookkeeping
            if steps.get(id(p)) is not None:
                e["step"] = steps[id(p)]
        for static, fresh in zip(output if isinstance(output, tuple) else (output,),
                                 loss if isinstance(loss, tuple) else (loss,)):
            static._array[...] = fresh._array  # the graph's outputs live at fixed addresses


class EmulatedBackend:
    """capture/replay/uploader for the cpu backend, with the CUDA graph contract (module doc)."""

    def __init__(self, optimizer, fail_with=None):
        self.optimizer, self.fail_with, self.captures = optimizer, fail_with, 0

    def capture(self, run):
        graph = EmulatedGraph(run, self.optimizer)
        before = [(a, a.copy()) for a in graph.arrays()]
        result = run()
        for array, saved in before:  # recording executes nothing
            array[...] = saved
        after = graph.arrays()
        assert len(after) == len(before) and all(a is b for a, (b, _) in zip(after, before)), \
            "optimizer state was created while recording: every replay would re-create it"
        if self.fail_with is not None:
            raise self.fail_with
        self.captures += 1
        graph.output = result
        return graph, None, result

    def replay(self, graph):
        graph.replay(graph.output)

    def uploader(self, array):
        def upload(host):
            array[...] = host
        return upload


@pytest.fixture
def emulate(monkeypatch):
    """Give the cpu backend an emulated capture for one optimizer; returns it."""
    backend = gpunn.device("cpu").backend

    def install(optimizer, fail_with=None):
        emulated = EmulatedBackend(optimizer, fail_with)
        monkeypatch.setattr(type(backend), "fuse_by_default", True)  # as on CUDA
        for name in ("capture", "replay", "uploader"):
            monkeypatch.setattr(type(backend), name, lambda self, *a, _n=name: getattr(emulated, _n)(*a),
                                raising=False)
        return emulated

    return install


def batches(shapes=(32, 32, 32, 20)):
    rng = np.random.default_rng(0)
    return [(gpunn.tensor(rng.standard_normal((n, 6)).astype(np.float32)), gpunn.tensor(rng.integers(0, 3, n)))
            for n in shapes]


OPTIMIZERS = {
    "sgd": lambda params: optim.SGD(params, lr=0.1, fused=True),
    "sgd-momentum": lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, fused=True),
    "adam": lambda params: optim.Adam(params, lr=1e-2, fused=True),
    "adamw": lambda params: optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=True),
}


def step_lr(opt):
    return optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)


def train(make_optimizer, compiled, emulate=None, steps=STEPS, hook=None, data=None, make_model=None,
          make_scheduler=step_lr):
    """Losses and final parameters of `steps` steps, compiled or by hand, with a schedule
    (StepLR unless another is given)."""
    gpunn.manual_seed(0)
    model = make_model() if make_model is not None else nn.MLP([6, 16, 3])
    opt = make_optimizer(model.parameters())
    scheduler = make_scheduler(opt)
    backend = emulate(opt) if emulate is not None else None
    step = gpunn.compile_step(model, F.cross_entropy, opt) if compiled else None
    data = data or batches()
    losses = []
    for k in range(steps):
        x, y = data[k % len(data)]
        if hook is not None:
            hook(k, model, opt)
        if step is not None:
            loss = step(x, y)
        else:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
        scheduler.step()
    return losses, [p.numpy() for p in model.parameters()], step, opt, backend


def assert_same_run(losses, params, ref_losses, ref_params):
    """A compiled run and its eager reference: the same losses and final parameters."""
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for a, b in zip(params, ref_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_replayed_steps_equal_eager_steps(emulate, name):
    losses, params, step, opt, backend = train(OPTIMIZERS[name], True, emulate)
    ref_losses, ref_params, *_ = train(OPTIMIZERS[name], False)
    assert step.mode == "graph" and step.reason is None
    assert backend.captures == 2  # one graph per batch shape (32 and 20)
    assert_same_run(losses, params, ref_losses, ref_params)
    assert all(e.get("step", STEPS) == STEPS for e in opt.state.values())


def test_replay_without_host_bookkeeping_is_caught(emulate, monkeypatch):
    """Negative control: if replays did not advance Adam's step counters, the bias corrections
    would go stale and the comparison above fails."""
    monkeypatch.setattr(optim.Adam, "_after_replay", lambda self: None)
    losses, params, *_ = train(OPTIMIZERS["adam"], True, emulate)
    _, ref_params, *_ = train(OPTIMIZERS["adam"], False)
    assert not all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(params, ref_params))


def test_a_changed_hyper_parameter_records_a_new_graph(emulate):
    def change(k, model, opt):
        if k == 6:
            opt.param_groups[0]["weight_decay"] = 0.05

    losses, params, step, _, backend = train(OPTIMIZERS["adam"], True, emulate, hook=change, data=batches((32,)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["adam"], False, hook=change, data=batches((32,)))
    assert backend.captures == 2
    assert_same_run(losses, params, ref_losses, ref_params)


@pytest.mark.parametrize("at", [2, 6], ids=["before-the-first-graph", "between-replays"])
@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_a_param_group_added_late_is_followed(emulate, name, at):
    """add_param_group before or after the first graph: one eager step builds the new group's
    buffers and state, then a graph updates both groups (the new one at its own learning rate)."""
    def head_only(params):
        return OPTIMIZERS[name](list(params)[:2])

    def add(k, model, opt):
        if k == at:
            opt.add_param_group({"params": list(model.parameters())[2:], "lr": 0.05})

    losses, params, step, _, backend = train(head_only, True, emulate, hook=add, data=batches((32,)))
    ref_losses, ref_params, *_ = train(head_only, False, hook=add, data=batches((32,)))
    assert step.mode == "graph" and step.reason is None and backend.captures == (2 if at == 6 else 1)
    assert_same_run(losses, params, ref_losses, ref_params)


def test_a_hyper_parameter_changed_every_step_runs_eagerly_after_a_few_recaptures(emulate):
    """Recording a new graph each step costs more than it saves: after `churn` stale graphs the
    step says so once and runs eagerly for a while, with the same numbers."""
    def schedule(k, model, opt):
        opt.param_groups[0]["weight_decay"] = 1e-4 * k  # recorded into the graph (lr, momentum are uploaded)

    steps = 40
    with pytest.warns(CompileWarning, match="went stale 4 times"):
        losses, params, step, _, backend = train(OPTIMIZERS["sgd-momentum"], True, emulate, steps=steps,
                                                 hook=schedule, data=batches((32,)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["sgd-momentum"], False, steps=steps, hook=schedule,
                                       data=batches((32,)))
    assert backend.captures == 4 and step._eager_until > steps
    assert_same_run(losses, params, ref_losses, ref_params)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_frozen_parameters_stay_out_of_the_recorded_step(emulate, name):
    def frozen_mlp():
        model = nn.MLP([6, 16, 3])
        for p in list(model.parameters())[:2]:
            p.requires_grad = False
        return model

    losses, params, step, *_ = train(OPTIMIZERS[name], True, emulate, make_model=frozen_mlp)
    ref_losses, ref_params, *_ = train(OPTIMIZERS[name], False, make_model=frozen_mlp)
    assert step.mode == "graph" and step.reason is None
    assert_same_run(losses, params, ref_losses, ref_params)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_parameters_frozen_or_unfrozen_between_replays_make_the_graph_stale(emulate, name):
    """A real replay would keep updating the layout it recorded: frozen weights would train on."""
    def toggle(k, model, opt):
        first = list(model.parameters())[:2]
        if k in (5, 9):
            for p in first:
                p.requires_grad = k == 9  # the usual idiom: the gradient handed out at capture stays

    if name == "adam":  # unfrozen, they count their own steps: the per-parameter path, and no graph
        with pytest.warns(CompileWarning, match="step counts differ"):
            losses, params, step, _, backend = train(OPTIMIZERS[name], True, emulate, steps=20, hook=toggle,
                                                     data=batches((32,)))
        assert step.mode == "eager" and backend.captures == 2
    else:
        losses, params, step, _, backend = train(OPTIMIZERS[name], True, emulate, steps=20, hook=toggle,
                                                 data=batches((32,)))
        assert step.mode == "graph" and backend.captures == 3
    ref_losses, ref_params, *_ = train(OPTIMIZERS[name], False, steps=20, hook=toggle, data=batches((32,)))
    assert_same_run(losses, params, ref_losses, ref_params)


def test_forward_hooks_keep_the_step_eager_while_registered(emulate):
    """A hook is Python that a replay would skip: each must run on every step, and a graph comes
    back once they are removed (a hook added after capture makes the graph stale)."""
    def run(compiled):
        calls, handles = [], []

        def halve(module, args, output):
            calls.append(1)
            return output * 0.5

        def hook(k, model, opt):
            if k == 4:
                handles.append(model.register_forward_hook(halve))
            if k == 8:
                handles.pop().remove()

        out = train(OPTIMIZERS["sgd-momentum"], compiled, emulate if compiled else None, steps=14, hook=hook,
                    data=batches((32,)))
        return out, len(calls)

    with pytest.warns(CompileWarning, match="forward hooks"):
        (losses, params, step, _, backend), calls = run(True)
    (ref_losses, ref_params, *_), ref_calls = run(False)
    assert calls == ref_calls == 4  # steps 4 to 7, each ran its hook
    assert step.mode == "graph" and backend.captures == 2  # before the hook, and after its removal
    assert_same_run(losses, params, ref_losses, ref_params)


@pytest.mark.parametrize("name", ["sgd-momentum", "adamw"])
def test_a_frozen_backbone_group_is_left_out_of_the_recorded_step(emulate, name):
    """Fine-tuning: a group of frozen parameters has nothing to update, so the graph records the
    others; unfreezing it makes the graph stale, and the next one updates both groups."""
    def backbone_and_head(params):
        params = list(params)
        for p in params[:2]:
            p.requires_grad = False
        return OPTIMIZERS[name]([{"params": params[:2], "lr": 0.01}, {"params": params[2:]}])

    def unfreeze(k, model, opt):
        backbone = list(model.parameters())[:2]
        if k == 5:  # frozen weights edited between replays (an EMA teacher, a checkpoint load)
            with gpunn.no_grad():
                for p in backbone:
                    p.copy_(p * 0.5)
        if k == 7:
            for p in backbone:
                p.requires_grad = True

    losses, params, step, _, backend = train(backbone_and_head, True, emulate, steps=16, hook=unfreeze,
                                             data=batches((32,)))
    ref_losses, ref_params, *_ = train(backbone_and_head, False, steps=16, hook=unfreeze, data=batches((32,)))
    assert step.mode == "graph" and step.reason is None and backend.captures == 2
    assert_same_run(losses, params, ref_losses, ref_params)


def test_one_change_with_several_batch_shapes_is_no_churn(emulate, recwarn):
    """Freezing once makes every batch shape's graph stale at once: that counts as one event, so
    the step keeps its graphs instead of running eagerly under a warning about hyper-parameters."""
    def freeze(k, model, opt):
        if k == 8:
            for p in list(model.parameters())[:2]:
                p.requires_grad = False

    losses, params, step, _, backend = train(OPTIMIZERS["sgd-momentum"], True, emulate, steps=24, hook=freeze,
                                             data=batches((32, 24, 16, 8)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["sgd-momentum"], False, steps=24, hook=freeze,
                                       data=batches((32, 24, 16, 8)))
    assert not [w for w in recwarn if issubclass(w.category, CompileWarning)]
    assert step.mode == "graph" and step._eager_until == 0 and backend.captures == 8
    assert_same_run(losses, params, ref_losses, ref_params)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "adamw"])
def test_one_cycle_momentum_keeps_the_graph(emulate, recwarn, name):
    """OneCycleLR changes the lr and the momentum (SGD's momentum, Adam's beta1) every step: all are
    uploaded, so one graph serves the whole cycle with the eager numbers; SGD's momentum reaching
    0 would record a new one."""
    def one_cycle(opt):
        return optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2 if name.startswith("sgd") else 0.02, total_steps=30)

    momenta = []

    def record(k, model, opt):
        group = opt.param_groups[0]
        momenta.append(group["momentum"] if "momentum" in group else group["betas"][0])

    run = dict(steps=30, data=batches((32,)), make_scheduler=one_cycle, hook=record)
    losses, params, step, opt, backend = train(OPTIMIZERS[name], True, emulate, **run)
    ref_losses, ref_params, *_ = train(OPTIMIZERS[name], False, **run)
    assert len(set(momenta)) > 20  # it did cycle
    assert not [w for w in recwarn if issubclass(w.category, CompileWarning)]
    assert step.mode == "graph" and backend.captures == 1
    assert_same_run(losses, params, ref_losses, ref_params)


@pytest.mark.parametrize("edit", ["activation", "layer", "parameter"])
def test_a_model_edited_between_replays_records_a_new_graph(emulate, recwarn, edit):
    """A replay runs the layers recorded: replacing one (model[1] = Tanh(), a new Linear) or
    reassigning a parameter between calls makes the graph stale (module registries count their
    edits), and the run equals eager."""
    def change(k, model, opt):
        if k != 6:
            return
        if edit == "activation":
            model[1] = nn.Tanh()
        elif edit == "layer":
            gpunn.manual_seed(1)
            model[2] = nn.Linear(16, 3)  # its parameters are not the optimizer's: they stay as made
        else:
            model[2].bias = nn.Parameter(gpunn.zeros(3))

    losses, params, step, _, backend = train(OPTIMIZERS["sgd-momentum"], True, emulate, hook=change,
                                             data=batches((32,)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["sgd-momentum"], False, hook=change, data=batches((32,)))
    assert_same_run(losses, params, ref_losses, ref_params)
    if edit == "activation":
        assert step.mode == "graph" and backend.captures == 2
    else:  # the optimizer's old parameters get no gradient now: eager from here on, saying why
        assert step.mode == "eager" and "without a gradient" in step.reason
        assert [w for w in recwarn if issubclass(w.category, CompileWarning) and "without a gradient" in str(w.message)]


def test_scheduled_values_are_uploaded_only_when_they_change(emulate, monkeypatch):
    """Each upload is a copy (a launch on a GPU): a step whose learning rate did not change since
    the last replay uploads nothing, and one whose rate changed uploads it (the StepLR run equals
    the eager one). Adam's bias corrections change every step, so it uploads every step."""
    uploads = []
    install = emulate

    def counting(opt):
        backend = install(opt)
        plain = backend.uploader
        backend.uploader = lambda array: (lambda host: (uploads.append(host.copy()), plain(array)(host)))
        return backend

    def every_third(opt):
        return optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    run = dict(make_scheduler=every_third, data=batches((32,)))
    losses, params, step, _, _ = train(OPTIMIZERS["sgd-momentum"], True, counting, **run)
    ref_losses, ref_params, *_ = train(OPTIMIZERS["sgd-momentum"], False, **run)
    assert step.mode == "graph"
    assert_same_run(losses, params, ref_losses, ref_params)
    lrs = [u[0] for u in uploads]
    assert len(lrs) == STEPS // 3 and lrs == sorted(set(lrs), reverse=True), lrs  # one upload per rate
    uploads.clear()
    _, _, step, _, _ = train(OPTIMIZERS["adam"], True, counting, **run)
    assert step.mode == "graph" and len(uploads) >= STEPS - 2  # every recorded step (not the eager warm-up)
    assert all(not np.array_equal(a, b) for a, b in zip(uploads, uploads[1:]))


def test_a_scheduled_value_reaching_zero_records_a_new_graph(emulate):
    """SGD without momentum keeps no buffer: momentum set to 0 (or back) changes the update's path."""
    def switch(k, model, opt):
        if k in (6, 10):
            opt.param_groups[0]["momentum"] = 0.0 if k == 6 else 0.9

    losses, params, step, _, backend = train(OPTIMIZERS["sgd-momentum"], True, emulate, steps=16, hook=switch,
                                             data=batches((32,)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["sgd-momentum"], False, steps=16, hook=switch, data=batches((32,)))
    assert step.mode == "graph" and backend.captures == 3
    assert_same_run(losses, params, ref_losses, ref_params)


def test_parameters_loaded_between_replays_are_used(emulate):
    gpunn.manual_seed(7)
    other = {k: v.clone() for k, v in nn.MLP([6, 16, 3]).state_dict().items()}

    def load(k, model, opt):
        if k == 5:
            model.load_state_dict(other)  # rebinds every parameter's array

    losses, params, step, *_ = train(OPTIMIZERS["sgd-momentum"], True, emulate, hook=load)
    ref_losses, ref_params, *_ = train(OPTIMIZERS["sgd-momentum"], False, hook=load)
    assert step.mode == "graph"
    assert_same_run(losses, params, ref_losses, ref_params)


def test_a_failed_capture_runs_eagerly_says_why_and_restores_step_counts(emulate):
    failure = RuntimeError("the current stream is capturing, so H2D/D2H transfers are disallowed")
    with pytest.warns(CompileWarning, match="could not be captured.*H2D"):
        losses, params, step, opt, _ = train(OPTIMIZERS["adam"], True, lambda o: emulate(o, failure))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["adam"], False)
    assert step.mode == "eager" and "H2D" in step.reason
    assert losses == ref_losses
    for a, b in zip(params, ref_params):
        assert np.array_equal(a, b)
    assert all(e["step"] == STEPS for e in opt.state.values())


def test_on_the_cpu_compile_step_runs_eagerly_and_says_why():
    model = nn.MLP([6, 16, 3])
    step = gpunn.compile_step(model, F.cross_entropy, optim.Adam(model.parameters(), fused=True))
    x, y = batches()[0]
    with pytest.warns(CompileWarning, match="CUDA graphs need a CUDA device"):
        for _ in range(4):
            step(x, y)
    assert step.mode == "eager"


def test_capture_needs_a_fused_update(emulate):
    """With a capturing backend the remaining reasons come from the optimizer."""
    model = nn.MLP([6, 16, 3])
    emulate(None)
    reasons = {
        "fused=False": optim.SGD(model.parameters(), lr=0.1, fused=False),
        "amsgrad": optim.Adam(model.parameters(), amsgrad=True),
        "no fused update": optim.RMSprop(model.parameters()),
    }
    for phrase, opt in reasons.items():
        assert phrase in gpunn.compile_step(model, F.cross_entropy, opt).reason
    assert gpunn.compile_step(model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1, fused=True)).reason is None


@pytest.mark.parametrize("at", [2, 6], ids=["before-the-first-graph", "between-replays"])
@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_optimizer_state_reset_between_replays_is_followed(emulate, name, at):
    """Loading an empty optimizer state restarts momentum / moments; the graph must not keep
    updating the old buffers, nor replay a first step forever (SGD fills its buffer then)."""
    def reset(k, model, opt):
        if k == at:
            opt.load_state_dict({"state": {}, "param_groups": opt.state_dict()["param_groups"]})

    losses, params, step, _, backend = train(OPTIMIZERS[name], True, emulate, hook=reset, data=batches((32,)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS[name], False, hook=reset, data=batches((32,)))
    assert step.mode == "graph" and backend.captures == (2 if at == 6 else 1)
    assert_same_run(losses, params, ref_losses, ref_params)


def test_capturing_a_step_that_creates_state_is_caught(emulate, monkeypatch):
    """Negative control for the test above: without the readiness check a reset just before the
    first capture gets recorded, state creation included, and the emulated capture refuses it."""
    monkeypatch.setattr(optim.Adam, "_state_ready", lambda self, flat, group: True)

    def reset(k, model, opt):
        if k == 2:
            opt.load_state_dict({"state": {}, "param_groups": opt.state_dict()["param_groups"]})

    with pytest.warns(CompileWarning, match="created while recording"):
        _, _, step, _, _ = train(OPTIMIZERS["adam"], True, emulate, hook=reset, data=batches((32,)))
    assert step.mode == "eager"


def test_optimizer_state_loaded_between_replays_is_followed(emulate):
    """load_state_dict replaces the param-group dicts: replays must read the new ones (the lr a
    scheduler keeps changing), not the dicts the graph was recorded with."""
    snapshot = {}

    def save_then_load(k, model, opt):
        if k == 4:
            snapshot["state"] = opt.state_dict()
            snapshot["state"] = {"state": {i: {n: (v.clone() if isinstance(v, gpunn.Tensor) else v)
                                               for n, v in e.items()} for i, e in snapshot["state"]["state"].items()},
                                 "param_groups": [dict(g) for g in snapshot["state"]["param_groups"]]}
        if k == 7:
            opt.load_state_dict(snapshot["state"])

    losses, params, step, _, _ = train(OPTIMIZERS["adam"], True, emulate, hook=save_then_load, steps=16,
                                       data=batches((32,)))
    ref_losses, ref_params, *_ = train(OPTIMIZERS["adam"], False, hook=save_then_load, steps=16, data=batches((32,)))
    assert step.mode == "graph"
    assert_same_run(losses, params, ref_losses, ref_params)


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.MLP([6, 16, 3]), nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x)


@pytest.mark.parametrize("name, phrase", [("sgd", "cannot take the fused update"), ("adam", "cannot take one fused update")])
def test_a_parameter_without_gradient_keeps_the_step_eager_and_says_why(emulate, name, phrase):
    """The per-parameter fallback would bake host values into a graph: it is refused, with a reason."""
    with pytest.warns(CompileWarning, match=phrase):
        losses, params, step, *_ = train(OPTIMIZERS[name], True, emulate, steps=10, make_model=WithUnused)
    ref_losses, ref_params, *_ = train(OPTIMIZERS[name], False, steps=10, make_model=WithUnused)
    assert step.mode == "eager" and phrase in step.reason
    assert losses == ref_losses
    for a, b in zip(params, ref_params):
        assert np.array_equal(a, b)


def test_example_batch_is_checked_at_once():
    model = nn.MLP([6, 16, 3])
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = batches()[0]
    assert gpunn.compile_step(model, F.cross_entropy, opt, (x, y)).reason  # accepted (eager on the cpu)
    with pytest.raises(gpunn.DeviceError, match="strict.*model is on cpu"):
        gpunn.compile_step(model, F.cross_entropy, opt, (x.to("strict"), y.to("strict")))
    with pytest.raises(TypeError, match="pair"):
        gpunn.compile_step(model, F.cross_entropy, opt, x)


def test_clipping_and_outputs_inside_the_step(emulate):
    """max_grad_norm clips inside the recorded step and return_output hands back the model's
    output, both as the same steps by hand do."""
    def run(compiled, clip):
        gpunn.manual_seed(0)
        model = nn.MLP([6, 16, 3])
        opt = optim.Adam(model.parameters(), lr=0.05, fused=True)
        emulate(opt)
        step = gpunn.compile_step(model, F.cross_entropy, opt, max_grad_norm=clip, return_output=True)
        losses, outputs = [], []
        for k in range(8):
            x, y = batches((32,))[0]
            if compiled:
                loss, out = step(x, y)
            else:
                out = model(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad()
                loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
            losses.append(loss)  # read after the loop: each step must hand back its own copies
            outputs.append(out)
        assert not compiled or step.mode == "graph"
        return [l.item() for l in losses], [o.numpy() for o in outputs] + [p.numpy() for p in model.parameters()]

    (l1, a1), (l2, a2) = run(True, 0.1), run(False, 0.1)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(a1, a2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    _, unclipped = run(False, None)
    assert not np.allclose(unclipped[-1], a2[-1], rtol=1e-3)  # negative control: the clipping mattered


def test_gpunn_train_compile_records_its_steps_and_matches_the_eager_run(emulate, monkeypatch, tmp_path):
    """`gpunn train --compile` (TrainConfig.compile) trains through compile_step, clipping inside
    the step and reading accuracy from the returned outputs: the same metrics as without it."""
    from gpunn.cli.train import TrainConfig, fit

    made = []
    original = gpunn.compile.CompiledStep.__init__

    def init(self, model, loss_fn, optimizer, *args, **kwargs):
        emulate(optimizer)  # first: the step decides at once whether the device can capture
        original(self, model, loss_fn, optimizer, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(gpunn.compile.CompiledStep, "__init__", init)
    config = dict(dataset="xor", hidden=(8,), epochs=3, batch_size=16, device="cpu", clip_norm=0.5)
    runs = {}
    for compiled in (True, False):
        runs[compiled] = fit(TrainConfig(**config, compile=compiled), out=tmp_path / str(compiled))
    assert len(made) == 1 and made[0].mode == "graph"
    a, b = runs[True], runs[False]
    for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy"):  # the last from returned outputs
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5)


# --- compile_step over any model and optimizer objects --------------------------------------------


def test_compile_step_eager_on_cpu_matches_manual_step():
    gpunn.manual_seed(0)
    w = gpunn.randn(3, 2, requires_grad=True)

    class Model:
        def parameters(self):
            return [w]

        def __call__(self, x):
            return x @ w

    class SGD:
        def zero_grad(self):
            w.grad = None

        def step(self):
            with gpunn.no_grad():
                w._array = w._array - 0.1 * w.grad._array

    x = gpunn.randn(5, 3)
    y = gpunn.randn(5, 2)
    before = w.numpy()
    step = gpunn.compile_step(Model(), gpunn.functional.mse_loss, SGD())
    assert step.mode == "eager" and "cpu" in step.reason
    with pytest.warns(gpunn.compile.CompileWarning):
        loss = step(x, y)
    expected_grad = 2 * x.numpy().T @ (x.numpy() @ before - y.numpy()) / 10
    np.testing.assert_allclose(w.numpy(), before - 0.1 * expected_grad, rtol=1e-5)
    assert not loss.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(x, y)  # says why only once


# --- gpunn.compile(model): torch.compile's call for training code ---------------------------------
# The model comes back and trains as before, while `gpunn.compile` stays the module compile_step
# lives in.


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
