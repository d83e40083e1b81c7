"""Imported by gpunn's cublas_gemm for its side effect (loading libcublas); the fake CuPy's cuBLAS
is cuda_emulation's stand-in, installed by cupy/_cublas.py."""
