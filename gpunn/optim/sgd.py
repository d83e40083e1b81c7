"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch.optim.SGD)."""

from gpunn.optim import _checks
from gpunn.optim.optimizer import Optimizer
from gpunn.updates import sgd_update
from gpunn.tensor import Tensor


class SGD(Optimizer):
    """PyTorch's algorithm, per parameter p with gradient g:

        g = -g if maximize;  g = g + weight_decay * p
        b = g (first step) or momentum * b + (1 - dampening) * g   (only if momentum != 0)
        g = g + momentum * b if nesterov else b
        p = p - lr * g

    fused=True keeps the parameters, gradients and momentum buffers in one flat buffer each and
    updates them in one pass (see gpunn.optim.flat); None (default) does so where the backend
    prefers it (CUDA); False updates parameter by parameter. All give the same numbers.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, nesterov=False, weight_decay=0, maximize=False,
                 fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, fused=fused)

    def _check_group(self, group):
        _checks.number("SGD", "lr", group["lr"])
        _checks.number("SGD", "momentum", group["momentum"])
        _checks.number("SGD", "dampening", group["dampening"])
        _checks.number("SGD", "weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening = 0; "
                             f"got momentum={group['momentum']}, dampening={group['dampening']}")

    _can_fuse = True

    def _param_step(self, group):
        hyper, momentum = [group[k] for k in _HYPER], group["momentum"]  # positional: no kwargs per parameter
        buf, first, device, update = None, False, None, None
        for p, g in self._with_grads(group):
            if momentum:
                entries = self.state[p]
                first = "momentum_buffer" not in entries
                if first:
                    entries["momentum_buffer"] = Tensor._wrap(p.device.xp.zeros_like(p._array), p.device)
                buf = entries["momentum_buffer"]._array
            if p.device is not device:
                device, update = p.device, _update(p.device)
            update(device.xp, p._array, g, buf, first, *hyper)

    def _flat_step(self, flat, group, scalars):
        flat.sync_params()
        if not flat.sync_grads():
            return False
        buf, first = None, False
        if group["momentum"]:
            entries = [self.state[p] for p in flat.params]
            first = not any("momentum_buffer" in e for e in entries)
            buf = flat.state("momentum_buffer", entries)
            if buf is None:
                return False
        with flat.device.scope:
            update = _update(flat.device)
            hyper = {**self._flat_hyper(flat, group), **(scalars or {})}
            update(flat.device.xp, flat.param, flat.grad, buf, first, **hyper)
        return True

    _scheduled = ("lr", "momentum")  # (a momentum schedule, e.g. OneCycleLR's, keeps a graph)

    def _warm_kernels(self, flat, group, scalars):
        p, g, buf = flat.scratch(3)
        with flat.device.scope:
            _update(flat.device)(flat.device.xp, p, g, buf if group["momentum"] else None, False,
                                 **{**_hyper(group), **scalars})

    def _state_ready(self, flat, group):
        return not group["momentum"] or all("momentum_buffer" in self.state[p] for p in flat.params)

    def _flat_hyper(self, flat, group):
        return _hyper(group)


def _update(device):
    """The device's fast sgd_update if it has one, else the generic one."""
    return device.fast_paths.get("sgd_update", sgd_update)


_HYPER = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize")  # sgd_update's order


def _hyper(group):
    return {k: group[k] for k in _HYPER}
