"""Modules, layers, initialisation and gradient clipping, with torch.nn's names."""

from gpunn.nn import functional, init, utils
from gpunn.nn.layers import (GELU, MLP, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding, Flatten, Identity,
                             LayerNorm, LeakyReLU, Linear, LogSoftmax, ModuleList, MSELoss, NLLLoss, ReLU, Sequential,
                             Sigmoid, Softmax, Tanh)
from gpunn.nn.module import IncompatibleKeys, Module, StateDictError, StateDictShapeError
from gpunn.nn.parameter import Parameter

__all__ = ["Module", "Parameter", "Linear", "Sequential", "ModuleList", "MLP", "ReLU", "LeakyReLU", "GELU", "Tanh",
           "Sigmoid", "Identity", "Flatten", "Dropout", "LayerNorm", "Embedding", "Softmax", "LogSoftmax",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss",
           "IncompatibleKeys", "StateDictError", "StateDictShapeError", "functional", "init", "utils"]
