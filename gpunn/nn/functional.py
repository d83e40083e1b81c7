"""torch.nn.functional's names for gpunn.functional (the same functions): every functional face
that gpunn.ops declares (see gpunn.functional.__all__)."""

from gpunn.functional import *  # noqa: F401,F403
from gpunn.functional import __all__  # noqa: F401
