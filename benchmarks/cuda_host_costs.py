"""Where an eager CUDA step's host time goes: the cost per call of each thing a step does.

A small model's eager step on a GPU is bound by the host (bench: 784-256-256-10 at batch 128 takes
the GPU well under 0.1 ms captured, the host about 0.5 ms eagerly). This times, per call, the
pieces that step is made of (CuPy allocations and kernel launches, the cuBLAS products through
ctypes, gpunn's phases), next to what PyTorch pays for the same operations in the same process.

    python benchmarks/cuda_host_costs.py            # on a GPU machine

Each figure is the wall time of many back-to-back calls, then one synchronization, over the
number of calls (us per call; the arrays are small, so the GPU keeps up and this is host time).
"""

import argparse
import ctypes
import statistics
import time

import numpy as np

import gpunn


def per_call(fn, calls, repeats, sync):
    """Median over repeats of the us per call of `calls` back-to-back calls."""
    for _ in range(50):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import cupy

    from gpunn.backends import cublas_gemm, cupy_kernels

    sync = cupy.cuda.Device().synchronize
    rows = []

    def time_it(group, name, fn, calls=args.calls):
        try:
            us = per_call(fn, calls, args.repeats, sync)
        except Exception as error:  # a candidate that does not work here is a finding too
            rows.append((group, name, float("nan"), f"{type(error).__name__}: {error}"[:90]))
            return
        rows.append((group, name, us, ""))

    rng = np.random.default_rng(0)
    f32 = cupy.float32
    x = cupy.asarray(rng.standard_normal((128, 784)), dtype=f32)
    w = cupy.asarray(rng.standard_normal((256, 784)), dtype=f32)
    b = cupy.asarray(rng.standard_normal(256), dtype=f32)
    y = cupy.asarray(rng.standard_normal((128, 256)), dtype=f32)
    g = cupy.asarray(rng.standard_normal((128, 256)), dtype=f32)
    flat = cupy.asarray(rng.standard_normal(269_322), dtype=f32)
    flat_g = cupy.asarray(rng.standard_normal(269_322), dtype=f32)

    # attribute reads and runtime queries gpunn's wrappers make
    time_it("attr", "a.flags.c_contiguous", lambda: x.flags.c_contiguous)
    time_it("attr", "a._c_contiguous", lambda: x._c_contiguous)
    time_it("attr", "a.shape", lambda: x.shape)
    time_it("attr", "a.data.ptr", lambda: x.data.ptr)
    time_it("attr", "runtime.getDevice()", cupy.cuda.runtime.getDevice)
    time_it("attr", "get_current_stream().ptr", lambda: cupy.cuda.get_current_stream().ptr)
    device = cupy.cuda.Device(0)

    def enter_device():
        with device:
            pass

    time_it("attr", "with cupy.cuda.Device(0): pass", enter_device)

    # allocation and views
    time_it("alloc", "cupy.empty((128,256))", lambda: cupy.empty((128, 256), dtype=f32))
    time_it("alloc", "cupy.empty_like(y)", lambda: cupy.empty_like(y))
    time_it("alloc", "y.reshape(128, 256)", lambda: y.reshape(128, 256))

    # kernel launches
    bias_relu = cupy_kernels._bias_act_kernels["relu"]
    time_it("launch", "ElementwiseKernel bias_relu", lambda: bias_relu(b, y))
    time_it("launch", "ElementwiseKernel relu_grad", lambda: cupy_kernels._grad_kernels["relu"](g, y))
    time_it("launch", "cupy y += b", lambda: y.__iadd__(b))
    lr = np.float32(1e-9)
    time_it("launch", "ElementwiseKernel sgd (flat)",
            lambda: cupy_kernels._sgd_plain_kernel(flat_g, lr, np.float32(0), np.float32(1), flat))
    try:
        raw = cupy.RawKernel(r"""
        extern "C" __global__ void bias_relu(const float* b, float* y, long long n, long long f) {
            long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) { float s = y[i] + b[i % f]; y[i] = (s > 0.f || s != s) ? s : 0.f; }
        }""", "bias_relu")
        n_, f_ = np.int64(y.size), np.int64(256)
        grid = ((y.size + 255) // 256,)
        time_it("launch", "RawKernel bias_relu", lambda: raw(grid, (256,), (b, y, n_, f_)))
        time_it("launch", "RawKernel bias_relu (ptr ints)",
                lambda: raw(grid, (256,), (b.data.ptr, y.data.ptr, n_, f_)))
    except AttributeError as error:  # the fake CuPy (tests/cuda/fake_cuda) has no RawKernel
        rows.append(("launch", "RawKernel bias_relu", float("nan"), str(error)))

    # cuBLAS products (128x784 @ 784x256 as in the first layer)
    out = cupy.empty((128, 256), dtype=f32)
    time_it("gemm", "cublas_gemm.gemm (alloc)", lambda: cublas_gemm.gemm(x, w, trans_b=True))
    time_it("gemm", "cublas_gemm.gemm (out=)", lambda: cublas_gemm.gemm(x, w, trans_b=True, out=out))
    handle = cublas_gemm._handle()
    handle.bind(False)
    one, zero = cublas_gemm._ONE_ZERO[np.dtype(np.float32)]
    sgemm = handle.lib.cublasSgemm_v2
    hp, wp, xp_, op = handle.ptr, w.data.ptr, x.data.ptr, out.data.ptr
    time_it("gemm", "ctypes cublasSgemm_v2 alone", lambda: sgemm(hp, 1, 0, 256, 128, 784, one, wp, 784, xp_, 784,
                                                                  zero, op, 256))
    small, small_out = cupy.ones((4, 4), dtype=f32), cupy.empty((4, 4), dtype=f32)
    sp, so = small.data.ptr, small_out.data.ptr
    time_it("gemm", "ctypes cublasSgemm_v2 4x4x4", lambda: sgemm(hp, 0, 0, 4, 4, 4, one, sp, 4, sp, 4, zero, so, 4))
    set_math = handle.lib.cublasSetMathMode
    time_it("gemm", "ctypes cublasSetMathMode (no work)", lambda: set_math(hp, 0))
    handle.math = None
    try:
        from cupy_backends.cuda.libs import cublas as cy

        time_it("gemm", "CuPy cython cublas.sgemm", lambda: cy.sgemm(hp, 1, 0, 256, 128, 784, one, wp, 784, xp_, 784,
                                                                     zero, op, 256))
    except ImportError as error:
        rows.append(("gemm", "CuPy cython cublas.sgemm", float("nan"), str(error)))
    handle.stream = None  # CuPy's wrapper set the stream itself: let gpunn re-bind

    # PyTorch, same shapes, same process
    try:
        import torch

        tx, tw, tb = (torch.as_tensor(cupy.asnumpy(a), device="cuda") for a in (x, w, b))
        ty = torch.as_tensor(cupy.asnumpy(y), device="cuda")
        tsync = torch.cuda.synchronize
        for name, fn in (("torch.mm(x, w.t())", lambda: torch.mm(tx, tw.t())),
                         ("torch.addmm(b, x, w.t())", lambda: torch.addmm(tb, tx, tw.t())),
                         ("torch.relu(y)", lambda: torch.relu(ty)),
                         ("torch.empty(128, 256)", lambda: torch.empty(128, 256, device="cuda"))):
            rows.append(("torch", name, per_call(fn, args.calls, args.repeats, tsync), ""))
    except (ImportError, AssertionError, RuntimeError) as error:  # no torch, or a torch without CUDA
        rows.append(("torch", "-", float("nan"), str(error)[:90]))

    # gpunn's eager step, phase by phase (host time; the GPU keeps up at this size)
    from gpunn import functional as F, nn, optim

    gpunn.manual_seed(0)
    model = nn.MLP([784, 256, 256, 10], activation="relu").to("cuda")
    opt = optim.SGD(model.parameters(), lr=1e-3)
    tx_ = gpunn.tensor(cupy.asnumpy(x), device="cuda")
    ty_ = gpunn.tensor(rng.integers(0, 10, 128), device="cuda")
    phases = {"forward": 0.0, "loss": 0.0, "zero_grad": 0.0, "backward": 0.0, "step": 0.0}
    steps = 1000
    for i in range(steps + 50):
        t0 = time.perf_counter()
        out_ = model(tx_)
        t1 = time.perf_counter()
        loss = F.cross_entropy(out_, ty_)
        t2 = time.perf_counter()
        opt.zero_grad()
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if i >= 50:
            for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                phases[k] += dt
        if i % 100 == 0:
            sync()
    for k, total in phases.items():
        rows.append(("step", k, total / steps * 1e6, ""))
    rows.append(("step", "total", sum(phases.values()) / steps * 1e6, ""))

    print(f"{'group':7} {'what':40} {'us/call':>9}  note")
    for group, name, us, note in rows:
        print(f"{group:7} {name:40} {us:9.2f}  {note}")


if __name__ == "__main__":
    main()
