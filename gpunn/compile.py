"""Whole training steps as one callable, recorded into a CUDA graph where the device allows it.

`step = compile_step(model, loss_fn, optimizer)` then `loss = step(xb, yb)` runs forward, backward
and the optimizer update. On a CUDA device, after two eager warm-up calls (they create the
optimizer state and compile the kernels), the third call records the whole step into a CUDA graph
(one graph per batch shape; a shape seen for the first time runs eagerly once) and every later
call replays it: the batch is copied into the graph's static input buffers, the step's
scheduled scalars (learning rate, SGD's momentum, Adam's bias corrections and beta1) are uploaded, and one
launch does the rest, so the host cost no longer grows with the number of ops. Learning-rate schedules
keep working because those scalars live on the device and are rewritten before every replay;
changing another hyper-parameter records a new graph (and one that changes every few steps, such
as a weight-decay schedule, makes the step run eagerly for a while, with a warning).
Parameters and buffers rebound between calls (load_state_dict, copy_) are copied into the arrays
the graph reads; freezing or unfreezing parameters, or replacing a layer, parameter or buffer
(model[1] = nn.Tanh()), records a new graph, and forward hooks keep the step eager while they are
registered (they are Python, which a replay skips).

Where a graph cannot work it runs eagerly and says once why: other devices, an optimizer without
a fused update (or fused=False), an op that needs the host mid-step (dropout masks from the host
generator, a host sync, anomaly mode), or more than a few distinct batch shapes. The returned loss
is a detached tensor: reading it (`.item()`) is the only host sync.

The module itself is callable, so PyTorch code's `model = gpunn.compile(model)` works: it gives
the model back unchanged (gpunn runs eagerly) and says once where graph capture lives.
"""

import sys
import types
import warnings

from gpunn.autograd import _mode
from gpunn.nn.module import hook_edits, structure_edits
from gpunn.precision import get_float32_matmul_precision


class CompileWarning(UserWarning):
    """A compiled step fell back to eager execution (the message says why)."""


class CompiledStep:
    """`loss = step(xb, yb)`: one training step. `mode` is "graph" once a CUDA graph replays the
    step, else "eager"; `reason` says why it is eager (None while a capture is still possible)."""

    warmup = 2  # eager calls before capturing: they create optimizer state and compile kernels
    max_graphs = 4  # distinct (shape, dtype) signatures of the batch that get a graph each
    churn = (4, 64)  # graphs gone stale this many times within this many calls: eager for that many calls

    def __init__(self, model, loss_fn, optimizer, example_batch=None, *, max_grad_norm=None, return_output=False):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.max_grad_norm, self.return_output = max_grad_norm, return_output
        params = self._params = list(model.parameters())
        self.device = params[0].device if params else None
        if example_batch is not None:
            _check_example(example_batch, self.device)
        self.mode, self.reason = "eager", _why_not_capturable(self.device, optimizer)
        if self.reason is None and hasattr(model, "_not_capturable"):  # DistributedDataParallel over MPI
            self.reason = model._not_capturable()
        self._graphs = {}
        self._seen = set()
        self._not_ready = 0  # calls in a row whose optimizer state was not ready to be recorded
        self._stale_at = []  # the calls on which a graph went stale, lately
        self._eager_until = 0
        self._calls = 0
        self._said = self._said_reason = False

    def __call__(self, xb, yb):
        self._calls += 1
        if self.reason is None:
            key = (tuple(xb.shape), xb.dtype.name, tuple(yb.shape), yb.dtype.name, xb.device, yb.device)
            if self._calls > max(self.warmup, self._eager_until) and key in self._seen:
                graph = self._graph_for(key, xb, yb)
                if graph is not None:
                    return graph.replay(xb, yb)
            self._seen.add(key)  # every batch shape runs eagerly first: its kernels compile outside a capture
        if self.reason and not self._said_reason:  # (its own flag: earlier notes must not silence it)
            self._said_reason = True
            warnings.warn(f"compile_step runs eagerly: {self.reason}", CompileWarning, stacklevel=2)
        return self._eager(xb, yb)

    def _eager(self, xb, yb):
        output = self.model(xb)
        loss = self.loss_fn(output, yb)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            from gpunn.nn.utils import clip_grad_norm_

            clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        return (loss.detach(), output.detach()) if self.return_output else loss.detach()

    def _graph_for(self, key, xb, yb):
        """The graph for this batch signature, recorded now if new (None: run this call eagerly)."""
        graph = self._graphs.get(key)
        if graph is not None:
            if not graph.stale():
                return graph
            # what made it stale (hyper-parameters, state, layout, hooks) holds for every batch shape:
            # drop them all, one eager step first (it makes the state the new graphs will update)
            self._graphs.clear()
            times, window = self.churn
            self._stale_at = [c for c in self._stale_at if c > self._calls - window] + [self._calls]
            if len(self._stale_at) >= times:  # recording every few steps costs more than it saves
                self._eager_until = self._calls + window
                self._say_once(f"the graph went stale {times} times within {window} steps, so the next {window} "
                               "steps run eagerly: a hyper-parameter that is recorded into the graph (weight "
                               "decay, dampening, Adam's beta2 and eps) or the matmul precision keeps changing; "
                               "only the learning rate, SGD's momentum and Adam's beta1 are uploaded before each "
                               "replay")
            return None
        if graph is None and len(self._graphs) >= self.max_graphs:
            self._say_once(f"more than {self.max_graphs} batch shapes; this one runs eagerly")
            return None
        if not self.optimizer._ready_to_capture():
            self._not_ready += 1  # e.g. SGD's momentum buffers are not filled yet: one more eager step first
            if self._not_ready > self.warmup + 2:
                self.reason = ("the optimizer's state cannot take one fused update per group (a parameter that "
                               "never gets a gradient, or Adam parameters unfrozen after the others trained on, "
                               "whose step counts differ), so no step can be recorded")
                self.mode = "eager"
            return None
        self._not_ready = 0
        if xb.device is not self.device or yb.device is not self.device:
            self._say_once(f"the batch is on {xb.device}, not on the model's {self.device}; move it with .to()")
            return None
        if any(m._hooks is not None for m in self._modules()):
            self._say_once("the model has forward hooks, which are Python that a replayed graph would skip; "
                           "the step runs eagerly while they are registered")
            return None
        try:
            graph = self._graphs[key] = _Graph(self, xb, yb)
        except _CaptureFailed as failed:
            self.reason = f"the step could not be captured into a CUDA graph ({failed})"
            self._graphs.clear()
            self.mode = "eager"
            return None
        self.mode = "graph"
        return graph

    def _modules(self):
        """The modules a step calls: the model's, and the loss function's if it is a module."""
        yield from self.model.modules()
        if hasattr(self.loss_fn, "modules"):
            yield from self.loss_fn.modules()

    def tensors(self):
        """Every parameter and buffer of those modules, each once."""
        seen = set()
        for m in self._modules():
            for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
                if id(t) not in seen and t is not None:
                    seen.add(id(t))
                    yield t

    def _say_once(self, message):
        if not self._said:
            self._said = True
            warnings.warn(f"compile_step: {message}", CompileWarning, stacklevel=4)


class _CaptureFailed(Exception):
    pass


class _Graph:
    """One recorded step for one batch signature: static inputs, device scalars and the graph.

    The optimizer's param groups are read afresh at every use (load_state_dict replaces their
    dicts; a schedule changes their lr); the flat buffers are the graph's own."""

    def __init__(self, step, xb, yb):
        from gpunn.tensor import Tensor

        self.optimizer = step.optimizer  # not the step itself: no reference cycle keeps a graph alive
        dev = self.device = step.device
        xp = dev.xp
        with dev.scope:
            self.x = Tensor._wrap(xp.asarray(xb._array, copy=True), dev)
            self.y = Tensor._wrap(xp.asarray(yb._array, copy=True), dev)
        opt = self.optimizer
        self.flats = opt._flat_groups()
        i = opt._unrecordable_group(self.flats)
        if i is not None:
            raise _CaptureFailed(f"param group {i} has no flat buffer: build the optimizer with fused=True "
                                 "(the default on CUDA) over parameters of one device and dtype")
        names = opt._scheduled
        with dev.scope:  # (None for a group with nothing to update)
            self.scalars = [None if flat is None else xp.zeros((len(names),), dtype=flat.dtype) for flat in self.flats]
        self.uploaders = [None if values is None else dev.backend.uploader(values) for values in self.scalars]
        self.uploaded = [None] * len(self.scalars)  # the values on the device now, per group (only _upload writes them)
        # 0-d views into `values` (values[i] would be a copy on NumPy): uploads reach the graph
        device_scalars = [None if values is None else {name: xp.reshape(values[i:i + 1], ()) for i, name in
                                                      enumerate(names)} for values in self.scalars]
        hypers = opt._next_hypers()
        self.constants = self._constants(hypers)
        # every parameter and buffer the step reads, with the array the graph reads it from: a
        # replay copies values rebound since (load_state_dict, copy_) back into those arrays
        self.pinned = [(t, t._array) for t in step.tensors()]
        try:
            with dev.scope:
                self._upload(hypers)
                with opt._recording(device_scalars), _mode("recording", True):
                    self.graph, self.pool, self.result = dev.backend.capture(lambda: step._eager(self.x, self.y))
        except Exception as exc:
            raise _CaptureFailed(f"{type(exc).__name__}: {exc}") from exc
        self.recorded_state = opt._recorded_state()  # the state arrays the graph updates
        self.rebound = []
        self._copy_into = getattr(dev.backend, "copy_into", _assign)  # looked up once, used three times a call
        self._launched_once = False

    def _constants(self, hypers):
        """What the graph baked in: the hyper-parameters that are not uploaded (and whether each
        uploaded one is 0: an update may take another path for 0, as SGD without momentum does),
        the precision, the forward hooks (none: a hook added since must run, so the step goes back
        to eager), the modules' structure (a layer or parameter replaced since would not be in the
        graph), and which parameters are trainable (a replay keeps the gradients it recorded)."""
        scheduled = self.optimizer._scheduled
        trainable = tuple(p.requires_grad for group in self.optimizer.param_groups for p in group["params"])
        return [get_float32_matmul_precision(), hook_edits(), structure_edits(), trainable, len(hypers)] + [
            hyper and {k: v != 0 if k in scheduled else v for k, v in hyper.items()} for hyper in hypers]

    def stale(self):
        """True when the graph no longer describes the step (then capture again): the param groups
        or a baked-in hyper-parameter changed, or the optimizer state was replaced by one the next
        step would have to create or re-make (the graph only knows the buffers it recorded)."""
        opt = self.optimizer
        flats = opt._flat_groups()  # (passed on: this runs before every replay)
        if flats != self.flats or not opt._ready_to_capture(flats):
            return True
        self._next = opt._next_hypers(flats)  # computed once per call: replay() uploads these
        if self._constants(self._next) != self.constants:
            return True
        self.rebound = [(t, a) for t, a in self.pinned if t._array is not a]  # replay() copies these back
        if any(t._array.shape != a.shape or t._array.dtype != a.dtype or t.device is not self.device
               for t, a in self.rebound):
            return True  # a tensor the graph reads was replaced by one it cannot be copied into
        return any(now.keys() != then.keys() or any(now[k] is not then[k] for k in now)
                   for now, then in zip(opt._recorded_state(flats), self.recorded_state))

    def _upload(self, hypers):
        """Write this step's scheduled scalars (from `hypers`, one dict per group) to the device,
        where they changed: a constant learning rate costs no copy (a launch on a GPU) per step."""
        import numpy as np

        scheduled = self.optimizer._scheduled
        for i, (hyper, values, upload) in enumerate(zip(hypers, self.scalars, self.uploaders)):
            if upload is not None:
                now = tuple(hyper[name] for name in scheduled)
                if now != self.uploaded[i]:
                    upload(np.array(now, dtype=values.dtype))
                    self.uploaded[i] = now

    def replay(self, xb, yb):
        from gpunn.tensor import Tensor

        dev = self.device
        with dev.scope:
            if self._launched_once:  # the first launch is the captured call's own step, already counted
                self.optimizer._before_replay()
                for t, array in self.rebound:  # found by stale() just before; the optimizer's own
                    if t._array is not array:     # parameters are back in place already
                        array[...] = t._array
                        t._array = array
                self._upload(self._next)  # stale() computed them for this call
                self._copy_into(self.x._array, xb._array)
                self._copy_into(self.y._array, yb._array)
            dev.backend.replay(self.graph)
            if self._launched_once:
                self.optimizer._after_replay()
            self._launched_once = True
            if isinstance(self.result, tuple):  # (loss, output): copies, as the next replay overwrites both
                return tuple(Tensor._wrap(self._copy(t._array), dev) for t in self.result)
            return Tensor._wrap(self._copy(self.result._array), dev)

    def _copy(self, array):
        out = self.device.xp.empty_like(array)
        self._copy_into(out, array)
        return out


def _assign(dst, src):
    dst[...] = src


def _check_example(example_batch, device):
    """An (inputs, targets) pair of tensors on the model's device: checked now, so a misplaced
    batch fails at compile_step() with a clear message rather than inside the first step."""
    from gpunn.errors import DeviceError
    from gpunn.tensor import Tensor

    if not (isinstance(example_batch, (tuple, list)) and len(example_batch) == 2
            and all(isinstance(t, Tensor) for t in example_batch)):
        raise TypeError("compile_step: example_batch must be an (inputs, targets) pair of gpunn tensors, "
                        f"got {type(example_batch).__name__}; call compile_step(model, loss_fn, optimizer, "
                        "example_batch=(xb, yb))")
    for name, t in zip(("inputs", "targets"), example_batch):
        if device is not None and t.device is not device:
            raise DeviceError(f"compile_step: the example {name} are on {t.device} but the model is on {device}; "
                              f"move the batches with .to('{device}') (a DataLoader takes device=)")


def _why_not_capturable(device, optimizer):
    if device is None:
        return "the model has no parameters"
    if not hasattr(device.backend, "capture"):
        return f"CUDA graphs need a CUDA device and the model is on {device}"
    if getattr(optimizer, "fused", None) is False:
        return f"{type(optimizer).__name__} was built with fused=False; a graph needs the fused update"
    why = optimizer._not_capturable() if hasattr(optimizer, "_not_capturable") else (
        f"{type(optimizer).__name__} is not a gpunn optimizer")
    return why


def compile_step(model, loss_fn, optimizer, example_batch=None, *, max_grad_norm=None, return_output=False):
    """A training step for `model`, `loss_fn(output, target)` and `optimizer` (see module doc).

    `example_batch` (optional): an (inputs, targets) pair checked for its device only, at once;
    nothing is run on it (a step on it would train). `max_grad_norm` clips the gradients' total
    2-norm before the update (nn.utils.clip_grad_norm_, inside the graph); `return_output=True`
    makes a step return (loss, model output), both detached."""
    return CompiledStep(model, loss_fn, optimizer, example_batch, max_grad_norm=max_grad_norm,
                        return_output=return_output)


# --- gpunn.compile(model): torch.compile's call, answered honestly -------------------------------

_TORCH_COMPILE_OPTIONS = ("fullgraph", "dynamic", "backend", "mode", "options", "disable")
_noted = False


def compile_model(model=None, **options):
    """torch.compile's call: returns `model` itself (or, called without one, a decorator that does),
    so it trains exactly as before. gpunn has no tracing compiler; the first call says so once and
    points to compile_step, which records a whole training step into a CUDA graph."""
    global _noted
    unknown = sorted(set(options) - set(_TORCH_COMPILE_OPTIONS))
    if unknown:
        raise TypeError(f"gpunn.compile got an unexpected keyword argument {unknown[0]!r}")
    if model is None:
        return lambda fn: compile_model(fn, **options)
    if not callable(model):
        raise TypeError(f"gpunn.compile expects a Module or a function, got {type(model).__name__}; for a whole "
                        "training step use gpunn.compile_step(model, loss_fn, optimizer)")
    if not _noted:
        _noted = True
        warnings.warn("gpunn.compile(model) returns the model unchanged: gpunn runs eagerly. To record a whole "
                      "training step into a CUDA graph, use step = gpunn.compile_step(model, loss_fn, optimizer)",
                      CompileWarning, stacklevel=3)
    return model


class _CallableModule(types.ModuleType):
    """`gpunn.compile` is this module (so `from gpunn.compile import compile_step` works) and, as
    in PyTorch, a function: calling it is compile_model."""

    def __call__(self, model=None, **options):
        return compile_model(model, **options)


sys.modules[__name__].__class__ = _CallableModule
