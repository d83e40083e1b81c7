"""The per-dtype compute type of CuPy's products (gpunn sets TF32 here); recorded, not emulated."""

COMPUTE_TYPE_TBD, COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_PEDANTIC, COMPUTE_TYPE_FP16, COMPUTE_TYPE_FP32, \
    COMPUTE_TYPE_FP64, COMPUTE_TYPE_BF16, COMPUTE_TYPE_TF32 = range(8)
_compute_types = {}


def set_compute_type(dtype, compute_type):
    _compute_types[dtype] = compute_type
