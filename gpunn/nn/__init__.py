"""Modules, layers, initialisation and gradient clipping, with torch.nn's names."""

from gpunn.nn import functional, init, layers, parallel, utils
from gpunn.nn.layers import (MLP, BatchNorm1d, Embedding, Flatten, Identity, LayerNorm, Linear, ModuleDict, ModuleList,
                             ParameterList, Sequential, Unflatten)
from gpunn.nn.module import IncompatibleKeys, Module, RemovableHandle, StateDictError, StateDictShapeError
from gpunn.nn.parameter import Parameter

globals().update((name, getattr(layers, name)) for name in layers.MODULE_FACES)  # the ops' modules: ReLU, MSELoss, ...

__all__ = ["Module", "Parameter", "Linear", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "MLP",
           "Identity", "Flatten", "Unflatten", "LayerNorm", "Embedding", "BatchNorm1d", "IncompatibleKeys",
           "RemovableHandle", "StateDictError", "StateDictShapeError", "functional", "init", "utils", "parallel",
           *layers.MODULE_FACES]
