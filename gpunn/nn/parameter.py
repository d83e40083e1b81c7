"""Parameter: a Tensor that a Module registers and an optimizer updates."""

from gpunn.tensor import Tensor, _counter_of, tensor


class Parameter(Tensor):
    """A leaf tensor with requires_grad=True that Modules collect in `parameters()`.

    `Parameter(t)` shares `t`'s data (like PyTorch), so a Module can adopt an existing tensor;
    any other data (NumPy arrays, lists) is copied onto the cpu device first.
    """

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if not isinstance(data, Tensor):
            data = tensor(data)
        self._array, self.device, self.grad, self._node = data._array, data.device, None, None
        self._grad_slot = self._base = self._hooks = None
        self._counter = _counter_of(data)  # shares the storage, so the version counter too
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)  # refuses integer data with a DTypeError

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
