"""Modules, layers, initialisation and gradient clipping, with torch.nn's names."""

from gpunn.nn import functional, init, parallel, utils
from gpunn.nn.layers import (GELU, MLP, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding, Flatten, Identity,
                             LayerNorm, LeakyReLU, Linear, LogSoftmax, ModuleDict, ModuleList, MSELoss, NLLLoss,
                             ParameterList, ReLU, Sequential, Sigmoid, Softmax, Tanh, Unflatten)
from gpunn.nn.layers import BatchNorm1d, BCELoss, CosineSimilarity, HuberLoss, L1Loss, SmoothL1Loss  # issue 17
from gpunn.nn.module import IncompatibleKeys, Module, RemovableHandle, StateDictError, StateDictShapeError
from gpunn.nn.parameter import Parameter

__all__ = ["Module", "Parameter", "Linear", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "MLP", "ReLU",
           "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Identity", "Flatten", "Unflatten", "Dropout", "LayerNorm",
           "Embedding", "Softmax", "LogSoftmax", "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss",
           "IncompatibleKeys", "RemovableHandle", "StateDictError", "StateDictShapeError", "functional", "init",
           "utils", "BatchNorm1d", "BCELoss", "CosineSimilarity", "HuberLoss", "L1Loss", "SmoothL1Loss",
           "parallel"]
