"""Adam and AdamW (torch.optim.Adam / AdamW), with amsgrad and maximize."""

import math

from gpunn.optim import _checks
from gpunn.optim.optimizer import Optimizer
from gpunn.updates import adam_update
from gpunn.tensor import Tensor


class Adam(Optimizer):
    """PyTorch's algorithm, per parameter p with gradient g at step t = 1, 2, ...:

        g = -g if maximize;  g = g + weight_decay * p          (AdamW instead: p = p * (1 - lr * wd))
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v) if amsgrad (then used in place of v)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    fused: as for SGD (one flat buffer per state and one pass per group; None: where the backend
    prefers it).
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
                 fused=None):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults, fused=fused)

    def _check_group(self, group):
        owner = type(self).__name__
        _checks.number(owner, "lr", group["lr"])
        _checks.number(owner, "eps", group["eps"])
        _checks.number(owner, "weight_decay", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        _checks.number(owner, "betas[0]", betas[0], 0.0, 1.0, high_open=True)
        _checks.number(owner, "betas[1]", betas[1], 0.0, 1.0, high_open=True)

    _can_fuse = True

    def _param_step(self, group):
        names = _names(group)
        for p, g in self._with_grads(group):
            entries = self.state[p]
            entries.setdefault("step", 0)  # first, as in PyTorch's state_dict
            xp = p.device.xp
            for name in names:
                if name not in entries:
                    entries[name] = Tensor._wrap(xp.zeros_like(p._array), p.device)
            entries["step"] = t = entries["step"] + 1
            update = _update(p.device)
            update(xp, p._array, g, *(entries[n]._array for n in names), **self._hyper(group, t))

    def _flat_step(self, flat, group, scalars):
        flat.sync_params()
        if not flat.sync_grads():
            return False
        entries = [self.state[p] for p in flat.params]
        steps = {e.setdefault("step", 0) for e in entries}
        if len(steps) != 1:
            return False
        buffers = [flat.state(n, entries) for n in _names(group)]
        if any(b is None for b in buffers):
            return False
        hyper = {**self._flat_hyper(flat, group), **(scalars or {})}
        with flat.device.scope:
            _update(flat.device)(flat.device.xp, flat.param, flat.grad, *buffers, **hyper)
        for e in entries:  # after the update: a failed one (out of memory) leaves the count as it was
            e["step"] += 1
        return True

    # beta1 too: OneCycleLR cycles it every step (cycle_momentum, its default)
    _scheduled = ("step_size", "bias_correction2_sqrt", "decay", "beta1", "one_minus_beta1")

    def _flat_hyper(self, flat, group):
        return self._hyper(group, self.state[flat.params[0]].get("step", 0) + 1)

    def _warm_kernels(self, flat, group, scalars):
        scratch = flat.scratch(2 + len(_names(group)))
        with flat.device.scope:
            _update(flat.device)(flat.device.xp, *scratch, **{**self._hyper(group, 1), **scalars})

    def _state_ready(self, flat, group):
        # every moment buffer, and one step count for the group: the fused kernel takes one bias
        # correction (parameters unfrozen after the others trained on have their own count)
        needed, state = set(_names(group)), self.state
        step = state[flat.params[0]].get("step")
        return all(state[p].keys() >= needed and state[p].get("step") == step for p in flat.params)

    def _after_replay(self):
        for flat in self._flat_groups():
            for p in flat.params if flat is not None else ():
                self.state[p]["step"] += 1

    def _not_capturable(self):
        if any(group["amsgrad"] for group in self.param_groups):
            return (f"{type(self).__name__}(amsgrad=True) keeps a running maximum that the fused kernel does not "
                    "cover; use amsgrad=False for a recorded step")
        return super()._not_capturable()

    def _hyper(self, group, t):
        """The update's scalars at step t: bias corrections folded in on the host, as Python floats."""
        lr, (beta1, beta2) = group["lr"], group["betas"]
        return dict(beta1=beta1, one_minus_beta1=1 - beta1, beta2=beta2, eps=group["eps"],
                    step_size=lr / (1 - beta1 ** t),
                    bias_correction2_sqrt=math.sqrt(1 - beta2 ** t),
                    weight_decay=0 if self._decoupled else group["weight_decay"],
                    decay=1 - lr * group["weight_decay"] if self._decoupled else 1,
                    maximize=group["maximize"])


def _update(device):
    """The device's fast adam_update if it has one, else the generic one."""
    return device.fast_paths.get("adam_update", adam_update)


def _names(group):
    return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")


class AdamW(Adam):
    """Adam with decoupled weight decay: p = p * (1 - lr * weight_decay) before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, fused=fused)
