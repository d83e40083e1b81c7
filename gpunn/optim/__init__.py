"""Optimizers and learning-rate schedulers with torch.optim's names and update rules."""

from gpunn.optim import lr_scheduler
from gpunn.optim.adagrad import Adagrad
from gpunn.optim.adam import Adam, AdamW
from gpunn.optim.optimizer import Optimizer
from gpunn.optim.rmsprop import RMSprop
from gpunn.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
