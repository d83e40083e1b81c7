"""The float32 matrix-product precision switch (torch.set_float32_matmul_precision).

Kept apart from everything else so that backends can read it without importing the core: it
imports nothing at module level, and tells a loaded CUDA backend when the setting changes.
"""

_PRECISIONS = ("highest", "high")
_matmul_precision = "highest"


def set_float32_matmul_precision(precision):
    """"highest" (default, as in PyTorch) keeps full float32 products; "high" lets CUDA devices use
    TF32 tensor cores for float32 matrix products (10-bit mantissa inputs, float32 accumulation).
    Never affects the CPU."""
    global _matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"float32 matmul precision must be one of {_PRECISIONS}, not {precision!r}")
    _matmul_precision = precision
    from gpunn import backends

    cuda = backends.loaded().get("cuda")
    if cuda is not None:  # gpunn's own products read the setting; CuPy's own are told
        cuda.set_tf32(precision == "high")


def get_float32_matmul_precision():
    return _matmul_precision
