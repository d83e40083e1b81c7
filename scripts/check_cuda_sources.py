"""Compile every CUDA kernel of backends/cupy_kernels.py with NVRTC, for sm_90, without a GPU.

    python scripts/check_cuda_sources.py [--arch 90]

A kernel with a typo would otherwise first fail on the GPU machine, where minutes are scarce.
Needs CuPy and NVRTC (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12), but no driver. It uses
CuPy internals (the code generator of ElementwiseKernel, and NVRTC's compile call with the arch
given, which CuPy would otherwise read from the current device), so it is a developer's check,
not a test. Every elementwise kernel is compiled once with float32 arrays for its `T` arguments
and once with float32 scalars for them (how optimizer updates are called eagerly); raw kernels
once per dtype. Exit status 1 if any kernel fails to compile.
"""

import argparse
import sys

import cupy
import numpy as np
from cupy._core import _carray, _kernel, _scalar, core
from cupy.cuda import compiler

from gpunn.backends import cupy_kernels


def nvrtc(source, options, arch):
    """Compile `source` for sm_`arch`; CuPy's own helper would ask the (absent) device for it."""
    program = compiler._NVRTCProgram(source, "kernel.cu", method="cubin")
    program.compile((f"-arch=sm_{arch}", *options))


def elementwise_source(kernel, scalar_ts):
    """The full CUDA source CuPy generates for `kernel` with float32 for T (arrays, or scalars
    where scalar_ts and the argument is an input other than the first)."""
    ins = kernel.params[:kernel.nin]
    in_types = []
    for i, p in enumerate(ins):
        if p.dtype is not None:
            in_types.append(None)  # a fixed-type scalar such as `bool nesterov`
        else:
            in_types.append(None if scalar_ts and i > 0 else np.float32)
    _, out_types, type_map = kernel._decide_params_type(tuple(in_types), (np.float32,) * kernel.nout)
    array, scalar, indexer = 1, 3, 2  # CuPy's _ArgKind: NDARRAY, SCALAR, INDEXER
    infos = []
    for p, t in zip(ins, in_types):
        if t is None:
            infos.append(_kernel._ArgInfo(scalar, _scalar.CScalar, p.dtype or np.float32, 0, True, True))
        else:
            infos.append(_kernel._ArgInfo(array, cupy.ndarray, t, 1, True, True))
    infos += [_kernel._ArgInfo(array, cupy.ndarray, t, 1, True, True) for t in out_types]
    infos.append(_kernel._ArgInfo(indexer, _carray.Indexer, None, 1, True, True))
    code = _kernel._get_elementwise_kernel_code(tuple(infos), type_map, kernel.params, kernel.operation,
                                                kernel.name, kernel.preamble)
    return "#include <cupy/carray.cuh>\n" + code


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90", help="compute capability to compile for (default 90: H100/H200)")
    args = parser.parse_args(argv)
    cupy_options = tuple(core.assemble_cupy_compiler_options(()))
    failures = 0
    checks = []
    for name in dir(cupy_kernels):
        found = getattr(cupy_kernels, name)
        for kernel in found.values() if isinstance(found, dict) else [found]:  # kernels, and tables of them
            if isinstance(kernel, cupy.ElementwiseKernel):
                checks.append((f"{kernel.name} (arrays)", lambda k=kernel: elementwise_source(k, False),
                               cupy_options))
                checks.append((f"{kernel.name} (scalars)", lambda k=kernel: elementwise_source(k, True),
                               cupy_options))
    for ctype, dtype in (("float", "f32"), ("double", "f64")):
        source = f"typedef {ctype} T;\n" + cupy_kernels._CE_SOURCE.replace("NAME", f"gpunn_ce_{dtype}")
        checks.append((f"gpunn_ce_{dtype} (small, scale, rows)", lambda s=source: s, ("-std=c++17",)))
        source = f"typedef {ctype} T;\n" + cupy_kernels._ACT_BIAS_SOURCE.replace("NAME", f"gpunn_act_bias_{dtype}")
        label = f"gpunn_act_bias_{dtype} ({', '.join(cupy_kernels._FUSED)})"
        checks.append((label, lambda s=source: s, ("-std=c++17",)))
    for label, make, options in checks:
        try:
            nvrtc(make(), options, args.arch)
            print(f"ok    {label}")
        except compiler.CompileException as exc:
            failures += 1
            print(f"FAIL  {label}\n{exc}")
    print(f"{len(checks) - failures} of {len(checks)} kernels compile for sm_{args.arch}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
