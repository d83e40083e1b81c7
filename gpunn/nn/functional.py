"""torch.nn.functional's names for gpunn.functional (the same functions)."""

from gpunn.functional import (binary_cross_entropy_with_logits, cross_entropy, dropout, embedding, gelu, layer_norm,
                              leaky_relu, linear, log_softmax, mse_loss, nll_loss, relu, sigmoid, softmax, tanh)
from gpunn.functional import (batch_norm, binary_cross_entropy, cosine_similarity, huber_loss, l1_loss, normalize,
                              one_hot, smooth_l1_loss)  # issue 17

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm",
           "leaky_relu", "linear", "log_softmax", "mse_loss", "nll_loss", "relu", "sigmoid", "softmax", "tanh",
           "batch_norm", "binary_cross_entropy", "cosine_similarity", "huber_loss", "l1_loss", "normalize", "one_hot",
           "smooth_l1_loss"]
