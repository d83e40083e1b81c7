"""Optimizer: parameter groups, per-parameter state and PyTorch's state_dict layout.

Subclasses write their update once, on raw arrays with in-place operators, so it records nothing
in the graph, allocates little and never asks the host for a value. The base class runs it per
parameter (the reference path) or, with `fused`, once per parameter group over flat buffers
(`gpunn.optim.flat`): `_param_step(group)` and `_flat_step(flat, group, scalars)`. State tensors (momentum
buffers, moment estimates) live on their parameter's device; step counters are Python ints.
"""

import inspect
from collections import defaultdict
from contextlib import contextmanager

from gpunn.autograd import Version, enable_grad
from gpunn.errors import DeviceError, DTypeError
from gpunn.optim.flat import FlatGroup, supports_flat
from gpunn.tensor import Tensor


class Optimizer:
    """Base class: `Optimizer(params, defaults)`; params are tensors or dicts {"params": [...], ...}."""

    _can_fuse = False  # subclasses with a _flat_step set this

    def __init__(self, params, defaults, fused=None):
        if fused not in (None, True, False):
            raise ValueError(f"{type(self).__name__}: fused must be None, True or False, got {fused!r}")
        if fused and not self._can_fuse:
            raise ValueError(f"{type(self).__name__} has no fused implementation; leave fused=None")
        self.fused = fused
        self._flat = {}  # param group index -> FlatGroup, or None for the per-parameter path
        self._device_scalars = None  # per group {name: 0-d device array} while compile_step records
        self._all_frozen = set()  # indices of groups that would be fused but have no trainable parameter
        self._checked_arrays = {}  # param -> the array _follow_params last found its state to fit
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)  # param -> {name: value}, filled by the first step()
        self.param_groups = []
        name = type(self).__name__
        if isinstance(params, (Tensor, dict)) or not hasattr(params, "__iter__"):
            raise TypeError(f"{name}: params must be an iterable of tensors or of dicts, got {type(params).__name__}; "
                            "pass model.parameters() or [tensor] or [{'params': ..., 'lr': ...}]")
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list; pass model.parameters() of a model "
                             "that has parameters (was the generator already consumed?)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # --- groups --------------------------------------------------------------------------------

    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyper-parameters (missing ones from the defaults)."""
        name = type(self).__name__
        index = len(self.param_groups)
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: param group {index} is a {type(param_group).__name__}; pass either only tensors "
                            "or only dicts like {'params': [...], 'lr': 0.1}")
        if "params" not in param_group:
            raise ValueError(f"{name}: param group {index} has no 'params' key")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: param group {index} gives its params as a set, whose order changes between "
                            "runs; use a list")
        else:
            params = list(params)
        if not params:
            raise ValueError(f"{name}: param group {index} has an empty params list")
        for i, p in enumerate(params):
            _check_param(name, p, index, i)
        seen = {id(p): (g, i) for g, group in enumerate(self.param_groups) for i, p in enumerate(group["params"])}
        for i, p in enumerate(params):
            where = seen.get(id(p))
            if where is not None:
                raise ValueError(f"{name}: parameter {i} of group {index} is the same tensor as parameter {where[1]} "
                                 f"of group {where[0]}; each parameter may appear only once")
            seen[id(p)] = (index, i)
        if self.fused and _fuse_problem(params):  # at once, as PyTorch does, not at the first step
            raise ValueError(f"{name}(fused=True): param group {index} cannot be fused: {_fuse_problem(params)}; "
                             "pass fused=None to fall back to the per-parameter path")
        group = dict(param_group)
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        for key, value in group.items():  # NumPy scalars would not mix with every backend's arrays
            if hasattr(value, "item") and getattr(value, "shape", None) == () and not isinstance(value, Tensor):
                group[key] = value.item()
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Validate a group's hyper-parameters (subclasses raise ValueError naming the argument)."""

    # --- stepping ------------------------------------------------------------------------------

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() if given."""
        loss = None if closure is None else self._closure(closure)
        for index, group in enumerate(self.param_groups):
            flat = self._flat_group(index, group)
            scalars = self._device_scalars[index] if self._device_scalars is not None else None
            if flat is None:
                self._follow_params(index, group)
            if flat is None or not self._flat_step(flat, group, scalars):
                if scalars is not None:
                    raise RuntimeError(f"param group {index} cannot take the fused update this step (a parameter "
                                       "without a gradient, or state that differs between parameters), and the "
                                       "per-parameter path would bake this step's learning rate into the graph; "
                                       "give every parameter a gradient each step, or leave unused ones out of "
                                       "the optimizer")
                self._param_step(group)
            for p in group["params"]:  # updated in place: graphs that saved the old values will refuse them
                counter = p._counter  # (p._bump(), inline: a call per parameter per step)
                if counter is None:
                    p._counter = Version(1)
                else:
                    counter.n += 1
        return loss

    def _follow_params(self, index, group):
        """Keep each parameter's state where the parameter is now, on both paths alike: a model cast
        after steps (model.double()) casts its state to the new floating dtype; a model moved to
        another device after steps is refused, naming the fix (the state would otherwise stay behind)."""
        if not self.state:  # no state yet (or none at all: plain SGD): nothing to follow
            return
        checked = self._checked_arrays
        for i, p in enumerate(group["params"]):
            if checked.get(p) is p._array:  # the same array as at the last check: neither moved nor cast
                continue
            entries = self.state.get(p)
            for key, value in (entries or {}).items():
                if not isinstance(value, Tensor) or (value.device is p.device and value._array.dtype == p._array.dtype):
                    continue
                if value.device is not p.device:
                    raise DeviceError(
                        f"{type(self).__name__}: parameter {i} of group {index} is on {p.device} now, but its state "
                        f"{key!r} is still on {value.device}: the model was moved after the optimizer took steps. "
                        f"Move the model before building the optimizer, or bring the state along with "
                        f"optimizer.load_state_dict(optimizer.state_dict())")
                if value.dtype.is_floating_point and p.dtype.is_floating_point:
                    with p.device.scope:  # the same tensor, as Module.to casts a parameter: a state_dict()
                        value._array = p.device.xp.astype(value._array, p._array.dtype)  # taken before sees it
            if entries:  # (a parameter without state yet has nothing to follow: check it again next time)
                checked[p] = p._array

    def _param_step(self, group):
        """The reference path: update each parameter of `group` that has a gradient."""
        raise NotImplementedError

    def _flat_step(self, flat, group, scalars):
        """Update the whole group at once; return False to ask for the per-parameter path.
        `scalars` (None outside a recording) replace the host floats named in `_scheduled`."""
        return False

    # --- compile_step's protocol: all that gpunn.compile uses of an optimizer --------------------
    # A recorded step runs every group's fused update with 0-d device arrays in place of the host
    # floats named in `_scheduled` (uploaded before each replay); the rest is baked into the graph.
    # A group whose parameters are all frozen has no FlatGroup (None in the lists below) and is
    # left out. Subclasses give the per-group parts: _flat_hyper, _state_ready, _warm_kernels,
    # _after_replay.

    _scheduled = ()  # hyper-parameter names that may change every step: device scalars in a graph

    def _not_capturable(self):
        """Why a step with this optimizer can never be captured into a CUDA graph, or None."""
        if not self._can_fuse:
            return f"{type(self).__name__} has no fused update; use SGD, Adam or AdamW"
        return None

    def _flat_groups(self):
        """Each param group's FlatGroup (None for a per-parameter group), or None while some group
        has not taken its first step (its buffers are made then)."""
        if any(i not in self._flat for i in range(len(self.param_groups))):
            return None
        return [self._flat[i] for i in range(len(self.param_groups))]

    def _unrecordable_group(self, flats):
        """The index of a group that updates parameter by parameter (no graph can record that), or
        None. A group with nothing to update (all frozen) does not count."""
        for i, flat in enumerate(flats):
            if flat is None and i not in self._all_frozen:
                return i
        return None

    def _ready_to_capture(self, flats=None):
        """False while the next step would lay out buffers (the first step, or parameters frozen or
        unfrozen since), or create or first fill state: a graph recorded then would replay that
        creation (zeroing the state) or first fill on every step, or update the old layout."""
        flats = self._flat_groups() if flats is None else flats
        if flats is None or any(self._relayout(i, group) for i, group in enumerate(self.param_groups)):
            return False
        return all(flat is None or self._state_ready(flat, group) for flat, group in zip(flats, self.param_groups))

    def _next_hypers(self, flats=None):
        """Each group's update scalars for its next step, as host floats."""
        flats = self._flat_groups() if flats is None else flats
        return [None if flat is None else self._flat_hyper(flat, group) for flat, group in zip(flats, self.param_groups)]

    def _recorded_state(self, flats=None):
        """The state buffers a recorded step updates: a graph is stale once these are replaced."""
        return [{} if flat is None else dict(flat.buffers) for flat in (self._flat_groups() if flats is None else flats)]

    @contextmanager
    def _recording(self, scalars):
        """Steps inside use `scalars` (per group, {name in _scheduled: 0-d device array}). On entry
        each update runs once on scratch arrays, so its kernels are compiled before a capture
        starts; if the body fails, the host-side state (step counters) is put back as it was."""
        flats = [flat for flat in self._flat_groups() if flat is not None]
        kept = {p: {k: v for k, v in self.state[p].items() if not isinstance(v, Tensor)}
                for flat in flats for p in flat.params}
        for flat, group, values in zip(self._flat_groups(), self.param_groups, scalars):
            if flat is not None:
                self._warm_kernels(flat, group, values)
        self._device_scalars = scalars
        try:
            yield
        except BaseException:
            for p, numbers in kept.items():
                entries = self.state[p]
                for k in [k for k, v in entries.items() if not isinstance(v, Tensor) and k not in numbers]:
                    del entries[k]
                entries.update(numbers)
            raise
        finally:
            self._device_scalars = None

    def _before_replay(self):
        """Copy whatever was rebound since the last step (parameters, loaded state) into the
        buffers a replay reads and writes."""
        for flat in self._flat_groups():
            if flat is not None:
                flat.sync_params()
                flat.sync_state([self.state[p] for p in flat.params])

    def _after_replay(self):
        """The host-side bookkeeping of a step that a replay did (e.g. Adam's step counters)."""

    def _flat_hyper(self, flat, group):
        """The update's scalars for the group's next step (host floats)."""
        raise NotImplementedError

    def _state_ready(self, flat, group):
        """True when the group's next step neither creates nor first fills state."""
        return True

    def _warm_kernels(self, flat, group, scalars):
        """Run the group's update once on scratch arrays with `scalars` (0-d device arrays)."""

    def _flat_group(self, index, group):
        """The group's FlatGroup, made on first use, when fused allows it (None means per-parameter:
        the default on backends without views, and for groups mixing devices or dtypes)."""
        if index in self._flat and not self._relayout(index, group):
            return self._flat[index]
        self._follow_params(index, group)  # (a cast or moved model: its state follows, or an error)
        params = group["params"]
        problem = _fuse_problem(params)
        if self.fused and problem:  # (checked when the group was added; the model may have moved since)
            raise ValueError(f"{type(self).__name__}(fused=True): param group {index} cannot be fused: {problem}; "
                             "pass fused=None to fall back to the per-parameter path")
        device = params[0].device
        wanted = self.fused if self.fused is not None else getattr(device.backend, "fuse_by_default", False)
        updated = _updated(params)
        if wanted and not updated:
            self._all_frozen.add(index)  # per-parameter (nothing to update) until one is unfrozen
        else:
            self._all_frozen.discard(index)
        flat = self._flat[index] = FlatGroup(updated) if wanted and not problem and updated else None
        return flat

    def _relayout(self, index, group):
        """True when the group's buffers no longer hold exactly the parameters a step updates (some
        were frozen or unfrozen since they were laid out): the next step lays them out again."""
        flat = self._flat[index]
        if flat is None:
            return index in self._all_frozen and bool(_updated(group["params"]))
        return not flat.holds_exactly(_updated(group["params"])) or flat.moved()

    @staticmethod
    def _closure(closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    @staticmethod
    def _with_grads(group):
        """(param, gradient array) for each parameter of `group` that has a gradient, with the
        parameter's device current while the caller updates it (CuPy needs that; others no-op)."""
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            ctx = p.device.ctx
            if ctx is None:  # not `with p.device.scope:`, two calls more per parameter on the cpu
                yield p, grad._array
            else:
                with ctx:
                    yield p, grad._array

    def zero_grad(self, set_to_none=True):
        for index, group in enumerate(self.param_groups):
            flat = self._flat.get(index)
            if flat is not None and not set_to_none:
                flat.zero_grads()  # one fill, not one per parameter
                if len(flat.params) == len(group["params"]):
                    continue  # it holds them all
            for p in group["params"]:
                if flat is not None and not set_to_none and flat.holds(p):
                    continue
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    # --- saving --------------------------------------------------------------------------------

    def state_dict(self):
        """{"state": {index: {name: tensor or number}}, "param_groups": [{..., "params": [indices]}]}.

        Parameters are numbered across groups in order, as in PyTorch. State tensors are the live
        state, as in PyTorch, on the per-parameter and the fused path alike: later steps change them
        (save them, or copy before training on).
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, entries in self.state.items():
            i = index.get(id(p))
            if i is not None and entries:
                state[i] = dict(entries)
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by `state_dict()` (copies, on every path: PyTorch
        keeps the given tensors, so two optimizers loaded from one state would share it; tensors
        are moved and cast to each parameter's device and floating dtype)."""
        name = type(self).__name__
        try:
            saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups' "
                             "(from Optimizer.state_dict())") from None
        self._refuse_foreign(saved_groups)
        ours = [len(g["params"]) for g in self.param_groups]
        theirs = [len(g["params"]) for g in saved_groups]
        if ours != theirs:
            raise ValueError(f"{name}.load_state_dict: the saved state has parameter groups of sizes {theirs}, this "
                             f"optimizer has {ours}; build the optimizer over the same parameters, in the same "
                             "groups and order, as the one that was saved")
        params = [p for g in self.param_groups for p in g["params"]]
        state = defaultdict(dict)
        for key, entries in saved_state.items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {key} but there are only "
                                 f"{len(params)} parameters")
            state[params[i]] = {k: _restore(k, v, params[i]) for k, v in entries.items()}
        groups = []
        for ours_group, saved in zip(self.param_groups, saved_groups):
            group = dict(ours_group)
            group.update({k: v for k, v in saved.items() if k != "params"})
            if isinstance(group.get("betas"), list):
                group["betas"] = tuple(group["betas"])
            self._check_group(group)
            groups.append(group)
        self.param_groups[:] = groups
        self._checked_arrays = {}
        self.state = state  # flat buffers re-pack these at the next step (FlatGroup.state), into
        for flat in self._flat.values():  # new buffers: tensors of an earlier state_dict() keep the old
            if flat is not None:  # values, as the per-parameter path's do
                flat.buffers.clear()

    def _refuse_foreign(self, saved_groups):
        """Refuse the state of another optimizer type: its groups hold hyper-parameters that only
        other optimizers have (Adam's betas in an SGD's state). Keys no optimizer takes as an
        argument (a scheduler's initial_lr, the user's own) are not evidence either way."""
        known = {cls: _hyper_names(cls) for cls in _optimizer_types()}
        ours = _hyper_names(type(self))
        saved = {k for g in saved_groups if isinstance(g, dict) for k in g} & set().union(*known.values())
        if saved <= ours:
            return
        types = [cls.__name__ for cls, names in known.items() if saved <= names] or ["another optimizer"]
        raise TypeError(f"{type(self).__name__}.load_state_dict: this state was saved from {' or '.join(types)} "
                        f"(it has {', '.join(sorted(saved - ours))}), not from {type(self).__name__}; load it into "
                        f"the same optimizer type it was saved from, or build a fresh {type(self).__name__}")

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {group[k]}" for k in sorted(group) if k != "params")
        lines.append(")")
        return "\n".join(lines)


def _hyper_names(cls):
    """The hyper-parameters an optimizer type takes (its constructor's arguments but params and fused)."""
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self", "params", "fused"}


def _optimizer_types():
    """Every Optimizer subclass defined so far (gpunn's and the user's)."""
    found, todo = [], list(Optimizer.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _updated(params):
    """The parameters a step updates, as in PyTorch: those that require grad, and any other that
    still has a gradient (frozen after a zero_grad(set_to_none=False), say)."""
    return [p for p in params if p.requires_grad or p.grad is not None]


def _fuse_problem(params):
    """Why these parameters cannot share flat buffers, or None."""
    first = params[0]
    if not all(p.device is first.device and p._array.dtype == first._array.dtype for p in params):
        return "its parameters mix devices or dtypes"
    if not supports_flat(first.device):
        return f"device {first.device} keeps no views of one buffer (use cpu or cuda)"
    return None


def _check_param(owner, p, group, i):
    where = f"{owner}: parameter {i} of group {group}"
    if not isinstance(p, Tensor):
        raise TypeError(f"{where} is a {type(p).__name__}, not a gpunn.Tensor; pass model.parameters()")
    if not p.dtype.is_floating_point:
        raise DTypeError(f"{where} has dtype {p.dtype}; only floating-point tensors can be optimized: "
                         "create it with dtype='float32'")
    if p._node is not None:
        raise ValueError(f"{where} is not a leaf: it was computed by '{p.grad_fn}' and gets no .grad of its own; "
                         "optimize the tensor it was computed from, or use t.detach().requires_grad_()")


def _restore(key, value, param):
    """A saved state entry for `param`: numbers as they are ('step' as an int), arrays as copies
    on the parameter's device, floating ones in its dtype."""
    if key == "step":
        return int(value.item() if isinstance(value, Tensor) else value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    dev = param.device
    array = value._array if isinstance(value, Tensor) else value
    with dev.scope:
        moved = dev.put(array)
        xp = dev.xp
        if xp.isdtype(moved.dtype, "real floating") and moved.dtype != param._array.dtype:
            moved = xp.astype(moved, param._array.dtype)
        elif moved is array:
            moved = xp.asarray(moved, copy=True)
    return Tensor._wrap(moved, dev)
