"""Adagrad (torch.optim.Adagrad): per-coordinate steps shrinking with the summed squared gradients."""

from gpunn.optim import _checks
from gpunn.optim.optimizer import Optimizer
from gpunn.tensor import Tensor


class Adagrad(Optimizer):
    """PyTorch's algorithm, per parameter p with gradient g at step t = 1, 2, ...:

        g = -g if maximize;  g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g^2          (s starts at initial_accumulator_value)
        p = p - clr * g / (sqrt(s) + eps)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 maximize=False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults, fused=fused)

    def _check_group(self, group):
        for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            _checks.number("Adagrad", name, group[name])

    def step(self, closure=None):
        loss = self._closure(closure)
        state = self.state
        for group in self.param_groups:
            lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
            weight_decay, maximize = group["weight_decay"], group["maximize"]
            initial = group["initial_accumulator_value"]
            for p, g in self._with_grads(group):
                entries = state[p]
                if not entries:
                    entries.update(step=0, sum=Tensor._wrap(p.device.xp.full_like(p._array, initial), p.device))
                entries["step"] = t = entries["step"] + 1
                if maximize:
                    g = -g
                if weight_decay:
                    g = g + weight_decay * p._array
                s = entries["sum"]._array
                s += g * g
                std = p.device.xp.sqrt(s)
                std += eps
                update = g / std
                update *= lr / (1 + (t - 1) * lr_decay)
                p._array -= update
        return loss
