"""RMSprop (torch.optim.RMSprop), plain or centered, with momentum."""

from gpunn.optim import _checks
from gpunn.optim.optimizer import Optimizer
from gpunn.tensor import Tensor


class RMSprop(Optimizer):
    """PyTorch's algorithm, per parameter p with gradient g:

        g = -g if maximize;  g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2
        centered: ga = alpha * ga + (1 - alpha) * g;  avg = sqrt(v - ga^2) + eps,  else avg = sqrt(v) + eps
        momentum > 0: b = momentum * b + g / avg;  p = p - lr * b,   else p = p - lr * g / avg
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 maximize=False, fused=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults, fused=fused)

    def _check_group(self, group):
        _checks.number("RMSprop", "lr", group["lr"])
        _checks.number("RMSprop", "alpha", group["alpha"], 0.0, 1.0)
        _checks.number("RMSprop", "eps", group["eps"])
        _checks.number("RMSprop", "weight_decay", group["weight_decay"])
        _checks.number("RMSprop", "momentum", group["momentum"])

    def step(self, closure=None):
        loss = self._closure(closure)
        state = self.state
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
            maximize = group["maximize"]
            for p, g in self._with_grads(group):
                xp = p.device.xp
                entries = state[p]
                if not entries:
                    entries.update(step=0, square_avg=Tensor._wrap(xp.zeros_like(p._array), p.device))
                if momentum > 0 and "momentum_buffer" not in entries:
                    entries["momentum_buffer"] = Tensor._wrap(xp.zeros_like(p._array), p.device)
                if centered and "grad_avg" not in entries:
                    entries["grad_avg"] = Tensor._wrap(xp.zeros_like(p._array), p.device)
                entries["step"] += 1
                if maximize:
                    g = -g
                if weight_decay:
                    g = g + weight_decay * p._array
                v = entries["square_avg"]._array
                square = g * g
                square *= 1 - alpha
                v *= alpha
                v += square
                if centered:
                    ga = entries["grad_avg"]._array
                    ga *= alpha
                    ga += (1 - alpha) * g
                    avg = xp.sqrt(v - ga * ga)
                else:
                    avg = xp.sqrt(v)
                avg += eps
                if momentum > 0:
                    buf = entries["momentum_buffer"]._array
                    buf *= momentum
                    buf += g / avg
                    p._array -= lr * buf
                else:
                    update = g / avg
                    update *= lr
                    p._array -= update
        return loss
