"""`torch.utils.data`'s names, so `from gpunn.utils.data import DataLoader, TensorDataset` works
(the implementation lives in `gpunn.data`)."""

from gpunn.data import DataLoader, Dataset, TensorDataset, default_collate

__all__ = ["DataLoader", "Dataset", "TensorDataset", "default_collate"]
