"""Adam and AdamW (torch.optim.Adam / AdamW), with amsgrad and maximize."""

import math

from gpunn.optim import _checks
from gpunn.optim.optimizer import Optimizer
from gpunn.tensor import Tensor


class Adam(Optimizer):
    """PyTorch's algorithm, per parameter p with gradient g at step t = 1, 2, ...:

        g = -g if maximize;  g = g + weight_decay * p          (AdamW instead: p = p * (1 - lr * wd))
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v) if amsgrad (then used in place of v)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

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

    def step(self, closure=None):
        loss = self._closure(closure)
        state = self.state
        decoupled = self._decoupled
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            weight_decay, amsgrad, maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
            for p, g in self._with_grads(group):
                xp = p.device.xp
                entries = state[p]
                if not entries:
                    entries.update(_fresh_state(p, amsgrad))
                elif amsgrad and "max_exp_avg_sq" not in entries:
                    entries["max_exp_avg_sq"] = Tensor._wrap(xp.zeros_like(p.data), p.device)
                entries["step"] = t = entries["step"] + 1
                if maximize:
                    g = -g
                if weight_decay:
                    if decoupled:
                        p.data *= 1 - lr * weight_decay
                    else:
                        g = g + weight_decay * p.data
                m, v = entries["exp_avg"].data, entries["exp_avg_sq"].data
                m *= beta1
                m += (1 - beta1) * g
                square = g * g
                square *= 1 - beta2
                v *= beta2
                v += square
                if amsgrad:
                    v = entries["max_exp_avg_sq"].data = xp.maximum(entries["max_exp_avg_sq"].data, v)
                denom = xp.sqrt(v)
                denom /= math.sqrt(1 - beta2 ** t)
                denom += eps
                update = m / denom
                update *= lr / (1 - beta1 ** t)
                p.data -= update
        return loss


def _fresh_state(p, amsgrad):
    xp = p.device.xp
    entries = {"step": 0,
               "exp_avg": Tensor._wrap(xp.zeros_like(p.data), p.device),
               "exp_avg_sq": Tensor._wrap(xp.zeros_like(p.data), p.device)}
    if amsgrad:
        entries["max_exp_avg_sq"] = Tensor._wrap(xp.zeros_like(p.data), p.device)
    return entries


class AdamW(Adam):
    """Adam with decoupled weight decay: p = p * (1 - lr * weight_decay) before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)
