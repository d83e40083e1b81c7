"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch.optim.SGD)."""

from gpunn.optim import _checks
from gpunn.optim.optimizer import Optimizer
from gpunn.tensor import Tensor


class SGD(Optimizer):
    """PyTorch's algorithm, per parameter p with gradient g:

        g = -g if maximize;  g = g + weight_decay * p
        b = g (first step) or momentum * b + (1 - dampening) * g   (only if momentum != 0)
        g = g + momentum * b if nesterov else b
        p = p - lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, nesterov=False, weight_decay=0, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        _checks.number("SGD", "lr", group["lr"])
        _checks.number("SGD", "momentum", group["momentum"])
        _checks.number("SGD", "dampening", group["dampening"])
        _checks.number("SGD", "weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening = 0; "
                             f"got momentum={group['momentum']}, dampening={group['dampening']}")

    def step(self, closure=None):
        loss = self._closure(closure)
        state = self.state
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            dampening, nesterov, maximize = group["dampening"], group["nesterov"], group["maximize"]
            for p, g in self._with_grads(group):
                if maximize:
                    g = -g
                if weight_decay:
                    g = g + weight_decay * p.data
                if momentum:
                    entries = state[p]
                    buf_t = entries.get("momentum_buffer")
                    if buf_t is None:
                        buf = p.device.xp.asarray(g, copy=True)
                        entries["momentum_buffer"] = Tensor._wrap(buf, p.device)
                    else:
                        buf = buf_t.data
                        buf *= momentum
                        buf += g if dampening == 0 else (1 - dampening) * g
                    g = g + momentum * buf if nesterov else buf
                p.data -= lr * g
        return loss
