"""PyTorch's `torch.utils` names that gpunn has: `gpunn.utils.data`."""

from gpunn.utils import data

__all__ = ["data"]
