"""torch.nn.functional's names for gpunn.functional (the same functions)."""

from gpunn.functional import (binary_cross_entropy_with_logits, cross_entropy, dropout, embedding, gelu, layer_norm,
                              leaky_relu, linear, log_softmax, mse_loss, nll_loss, relu, sigmoid, softmax, tanh)

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm",
           "leaky_relu", "linear", "log_softmax", "mse_loss", "nll_loss", "relu", "sigmoid", "softmax", "tanh"]
