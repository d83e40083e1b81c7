"""gpunn: neural networks and backpropagation over the Python array API.

One computation graph, written once against the array API standard, runs on NumPy (device "cpu")
or CuPy (device "cuda"); "strict" runs array-api-strict to prove the code stays standard.
"""

__version__ = "0.1.0"


def _source_checkout_backends():
    """In a source checkout (not installed) `backends/` sits beside `gpunn/`, not inside it, so
    `gpunn.backends` is loaded from there; an installed gpunn has it inside and skips this."""
    import importlib.util
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(os.path.dirname(here), "backends", "__init__.py")
    if os.path.isdir(os.path.join(here, "backends")) or not os.path.exists(source):
        return
    spec = importlib.util.spec_from_file_location(__name__ + ".backends", source,
                                                  submodule_search_locations=[os.path.dirname(source)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_source_checkout_backends()

from gpunn import cuda
from gpunn.autograd import detect_anomaly, enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from gpunn.device import Device, DeviceWarning, device
from gpunn.dtypes import bfloat16, bool_, dtype, float16, float32, float64, int8, int16, int32, int64, uint8
from gpunn.dtypes import bool_ as bool, float32 as float, float64 as double, int64 as long  # PyTorch's aliases
from gpunn.errors import (AnomalyError, DeviceError, DTypeError, GpunnError, GraphError, OutOfMemoryError,
                          ShapeError)
from gpunn.random import get_rng_state, manual_seed, rand, randint, randn, randperm, set_rng_state
from gpunn.tensor import (Tensor, arange, empty, eye, from_dlpack, from_numpy, full, full_like, linspace, ones,
                          ones_like, tensor, zeros, zeros_like)
from gpunn.ops_api import *  # the ops' top-level functions, as gpunn.ops declares them (exp, sum, where, ...)
from gpunn.ops_api import is_tensor
from gpunn.tensor import apply
from gpunn.random import rand_like, randn_like
from gpunn.compile import compile_step
from gpunn.precision import get_float32_matmul_precision, set_float32_matmul_precision
from gpunn.io import load, load_checkpoint, save, save_checkpoint
from gpunn import data, datasets, functional, nn, optim, testing, viz
from gpunn import distributed  # imports mpi4py only when a process group starts
from gpunn.threads import get_num_threads, set_num_threads
from gpunn import utils  # gpunn.utils.data: torch.utils.data's names
from gpunn import amp
from gpunn.amp import autocast, get_autocast_dtype, is_autocast_enabled
