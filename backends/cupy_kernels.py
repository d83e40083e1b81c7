"""CUDA fast paths: the generic ops of gpunn.ops and gpunn.optim, fused into fewer kernels.

On a GPU a small model's step is bound by kernel launches (each costs the host 10-20 us), so
every override here does the generic version's arithmetic in fewer launches:

  linear, matmul        cuBLAS directly (cublas_gemm): no transpose copies, TF32 on request, bias
                        gradients as a product with a row of ones (written into the optimizer's slot)
  linear_act            the product, then bias and activation in one elementwise kernel
  relu/tanh/sigmoid     the backward rule in one elementwise kernel instead of two or three; after
  (ACTIVATIONS)         a linear layer (linear_act), with the bias gradient summed in the same kernel
  cross_entropy         loss, softmax-minus-one-hot residual and reduction in one kernel (small
                        batches) or three (large ones), instead of about twenty array ops
  sgd_update, adam_update
                        the whole (flat) optimizer update in one elementwise kernel

Each override falls back to the generic function for cases it does not cover (other dtypes or
ranks, amsgrad), so the generic path stays the reference; tests/cuda/test_gpu.py checks each override
against it.
"""

import cupy

from gpunn import ops
from gpunn.updates import adam_update, sgd_update
from gpunn.precision import get_float32_matmul_precision

from . import cublas_gemm

_FLOATS = (cupy.float32, cupy.float64)
_GEMM_FLOATS = (cupy.float16, *_FLOATS)  # float16 (autocast): cublasGemmEx, float32 accumulation


def _tf32():
    return get_float32_matmul_precision() == "high"


def _gemm_ok(*arrays):
    first = arrays[0].dtype
    return all(a.ndim == 2 and a.dtype == first for a in arrays) and first in _GEMM_FLOATS


# --- matrix products ---------------------------------------------------------------------------

def _rows(a):
    """A 2-D view of a C-contiguous batch (..., n) as (rows, n): linear on (batch, seq, features)
    inputs is one product too (and capturable, and under TF32). None where no view exists."""
    if a.ndim == 2:
        return a
    if a.ndim > 2 and a.flags.c_contiguous:
        return a.reshape(-1, a.shape[-1])
    return None


def _linear_forward(xp, x, w, b):
    x2 = _rows(x)
    if x2 is None or not _gemm_ok(x2, w):
        return ops.linear.forward(xp, x, w, b)
    if x.dtype == cupy.float16 and b is not None and b.dtype == x.dtype:
        y = _half_linear(x2, w, b)
    else:
        y = cublas_gemm.gemm(x2, w, trans_b=True, tf32=_tf32())
        if b is not None:
            y += b
    return y.reshape(x.shape[:-1] + (w.shape[0],))


def _half_linear(x2, w, b):
    """x2 @ w.T + b in float16 with the bias added inside the float32 accumulation (the product
    adds into rows of b: one rounding, as the generic reference and a cuBLASLt epilogue do)."""
    y = cupy.empty((x2.shape[0], w.shape[0]), dtype=x2.dtype)
    y[...] = b
    return cublas_gemm.gemm(x2, w, trans_b=True, out=y, accumulate=True)


def _linear_grad_x(xp, g, out, x, w, b):
    g2 = _rows(g)
    if g2 is None or not _gemm_ok(g2, w):
        return ops.linear.grads[0](xp, g, out, x, w, b)
    return cublas_gemm.gemm(g2, w, tf32=_tf32()).reshape(g.shape[:-1] + (w.shape[1],))


def _linear_grad_w(xp, g, out, x, w, b):
    g2, x2 = _rows(g), _rows(x)
    if g2 is None or x2 is None or not _gemm_ok(g2, x2):
        return ops.linear.grads[1](xp, g, out, x, w, b)
    return cublas_gemm.gemm(g2, x2, trans_a=True, tf32=_tf32())


def _linear_grad_w_into(xp, g, out, x, w, b, dest, accumulate):
    """The weight gradient's product written (or added: beta = 1) straight into its flat slot."""
    g2, x2 = _rows(g), _rows(x)
    if g2 is None or x2 is None or not (_gemm_ok(g2, x2) and dest.dtype == g.dtype and dest.flags.c_contiguous):
        return False
    cublas_gemm.gemm(g2, x2, trans_a=True, out=dest, accumulate=accumulate, tf32=_tf32())
    return True


_ones_rows = {}


def _ones_row(n, dtype):
    """A (1, n) row of ones: bias gradients as a product, ones @ g, instead of a reduction (cuBLAS
    sums the columns of a tall g in one call, and can add into a slot; not yet timed against a sum). One row per dtype and device,
    grown when a longer one is needed, sliced otherwise (a view, still C-contiguous); grown outside
    any capture, as compile_step runs every batch shape eagerly once first."""
    key = (dtype, cupy.cuda.runtime.getDevice())
    row = _ones_rows.get(key)
    if row is None or row.shape[1] < n:
        row = _ones_rows[key] = cupy.ones((1, max(n, 2 * (row.shape[1] if row is not None else 0))), dtype=dtype)
    return row[:, :n]


def _linear_grad_b(xp, g, out, x, w, b):
    g2 = _rows(g)
    if g2 is None or not _gemm_ok(g2):
        return ops.linear.grads[2](xp, g, out, x, w, b)
    return cublas_gemm.gemm(_ones_row(g2.shape[0], g.dtype), g2, tf32=False)[0]


def _linear_grad_b_into(xp, g, out, x, w, b, dest, accumulate):
    g2 = _rows(g)
    if g2 is None or not (_gemm_ok(g2) and dest.dtype == g.dtype and dest.flags.c_contiguous):
        return False
    cublas_gemm.gemm(_ones_row(g2.shape[0], g.dtype), g2, out=dest.reshape(1, -1), accumulate=accumulate, tf32=False)
    return True


def _matmul_forward(xp, x, y):
    if not _gemm_ok(x, y):
        return ops.matmul.forward(xp, x, y)
    return cublas_gemm.gemm(x, y, tf32=_tf32())


def _matmul_grad_x(xp, g, out, x, y):
    if not _gemm_ok(g, y, x):
        return ops.matmul.grads[0](xp, g, out, x, y)
    return cublas_gemm.gemm(g, y, trans_b=True, tf32=_tf32())


def _matmul_grad_y(xp, g, out, x, y):
    if not _gemm_ok(x, g, y):
        return ops.matmul.grads[1](xp, g, out, x, y)
    return cublas_gemm.gemm(x, g, trans_a=True, tf32=_tf32())


# --- bias + activation, and the activation rules ---------------------------------------------------

# The CUDA arithmetic of the table's fusable activations (gpunn.ops.ACTIVATIONS), written once here and
# read by every kernel below: the activation of s, and its gradient from the incoming gradient d and the
# output o, both as the generic rules in gpunn.ops compute them (relu: NaN propagates as in xp.maximum,
# and the gradient multiplies by the 0/1 mask; sigmoid: the overflow-free form). An activation of the
# table without an entry here runs its generic version, in linear_act and alone.
_ACT_CUDA = {
    "relu": ("(s > (T)0 || s != s) ? s : (T)0", "d * (o > (T)0 ? (T)1 : (T)0)"),
    "tanh": ("tanh(s)", "d * ((T)1 - o * o)"),
    "sigmoid": ("s >= (T)0 ? (T)1 / ((T)1 + exp(-s)) : exp(s) / ((T)1 + exp(s))", "d * o * ((T)1 - o)"),
}
_FUSED = [name for name in ops.ACTIVATIONS if name in _ACT_CUDA]

# y = act(y + b) in place on the fresh product, b broadcast along rows
_bias_act_kernels = {name: cupy.ElementwiseKernel("T b", "T y", f"T s = y + b; y = {_ACT_CUDA[name][0]}",
                                                  f"gpunn_bias_{name}") for name in _FUSED}
_grad_kernels = {name: cupy.ElementwiseKernel("T d, T o", "T gx", f"gx = {_ACT_CUDA[name][1]}", f"gpunn_{name}_grad")
                 for name in _FUSED}


def _linear_act_forward(xp, x, w, b, activation):
    """One product and one elementwise kernel (the generic: a product, a bias add, an activation)."""
    x2 = _rows(x)
    if (activation not in _bias_act_kernels or b is None or b.ndim != 1 or x2 is None or not _gemm_ok(x2, w)
            or b.dtype != x.dtype or x.dtype not in _FLOATS):
        return ops.ACTIVATIONS[activation].forward(xp, _linear_forward(xp, x, w, b))  # (float16: no fused kernel)
    y = cublas_gemm.gemm(x2, w, trans_b=True, tf32=_tf32())
    _bias_act_kernels[activation](b, y)
    return y.reshape(x.shape[:-1] + (w.shape[0],))


# The activation's backward and the bias gradient in one pass, for linear_act's backward (saving
# the bias gradient's own product, a cuBLAS call of 10-20 us host time): gp = g * act'(out) exactly
# as the kernels above compute it, and its column sums written into (or added to) the bias's slot.
# A block of 1024 threads covers 32 columns: lane = column (coalesced reads), warp = a stride-32 set of
# rows (with 256 threads, 8 sets, the captured 784-1024x3-10 step at batch 512 was 7% slower on an H100).
_ACT_BIAS_SOURCE = r"""
// act: the activation's position in _FUSED (the same for the whole launch, so the branch costs nothing)
extern "C" __global__ void NAME_run(const T* g, const T* out, long long n, long long f, int act, int accumulate,
                                    T* gp, T* db) {
    __shared__ T part[32][33];
    const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
    const long long col = (long long)blockIdx.x * 32 + lane;
    T sum = 0;
    if (col < f) {
        for (long long row = group; row < n; row += 32) {
            const long long k = row * f + col;
            const T d = g[k], o = out[k];
            T gk = 0;
            ACTIVATION_GRADIENTS
            gp[k] = gk;
            sum += gk;
        }
    }
    part[group][lane] = sum;
    __syncthreads();
    if (group == 0 && col < f) {
        T total = 0;
        for (int r = 0; r < 32; ++r) total += part[r][lane];
        db[col] = accumulate ? db[col] + total : total;
    }
}
""".replace("ACTIVATION_GRADIENTS", "\n            ".join(
    f"if (act == {code}) gk = {_ACT_CUDA[name][1]};" for code, name in enumerate(_FUSED)))
_ACT_CODES = {name: code for code, name in enumerate(_FUSED)}
_ACT_BIAS_MAX = 1 << 20  # elements of g: above this the pass is bandwidth-bound, and two launches read better


def _act_grad_and_bias_into(xp, g, out, x, w, b, dest, accumulate, activation):
    """linear_act's prepared gradient, with the bias gradient written into its slot in the same
    launch; None where that does not apply (then the two-step path runs)."""
    if (activation not in _ACT_CODES or b is None or g.ndim != 2 or g.shape != out.shape or g.dtype != out.dtype
            or g.dtype not in _FLOATS or dest.dtype != g.dtype or g.size > _ACT_BIAS_MAX
            or not (g.flags.c_contiguous and out.flags.c_contiguous and dest.flags.c_contiguous)):
        return None
    n, f = g.shape
    gp = cupy.empty((n, f), dtype=g.dtype)
    kernel = _raw_functions(_ACT_BIAS_SOURCE, "gpunn_act_bias", g.dtype, ("run",))["run"]
    kernel(((f + 31) // 32,), (1024,), (g, out, cupy.int64(n), cupy.int64(f), cupy.int32(_ACT_CODES[activation]),
                                      cupy.int32(accumulate), gp, dest))
    return gp


def _elementwise_rule(kernel, generic):
    def rule(xp, g, out, x):
        if g.shape != out.shape or g.dtype != out.dtype or g.dtype not in _FLOATS:
            return generic(xp, g, out, x)
        return kernel(g, out)
    return rule


# --- softmax cross-entropy ---------------------------------------------------------------------

_CE_SOURCE = r"""
// T is float or double (a typedef put in front). One warp per row of logits.

// (softmax(x) - onehot(t)) * s into r; returns the row's loss, log(sum(exp(x))) - x[t] (valid in
// every lane). An out-of-range label (checked on the host only on the cpu) gives a NaN loss: loud.
__device__ T ce_row(const T* x, T* r, long long t, long long c, T s, int lane) {
    T peak = x[0];
    for (long long j = lane; j < c; j += 32) peak = max(peak, x[j]);
    for (int o = 16; o > 0; o >>= 1) peak = max(peak, __shfl_xor_sync(0xffffffff, peak, o));
    T total = 0;
    for (long long j = lane; j < c; j += 32) total += exp(x[j] - peak);
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffff, total, o);
    for (long long j = lane; j < c; j += 32) r[j] = (exp(x[j] - peak) / total - (j == t ? (T)1 : (T)0)) * s;
    return (t >= 0 && t < c) ? log(total) - (x[t] - peak) : sqrt((T)-1);
}

// Small batches, in one launch: one block, its warps share the rows; then the block sums the
// losses and the kept rows, writes the loss, and scales the residual for a mean.
extern "C" __global__ void NAME_small(const T* logits, const long long* target, long long n, long long c,
                                      long long ignore_index, int mean, T* loss, T* residual) {
    __shared__ T part_loss[32];
    __shared__ T part_kept[32];
    __shared__ T scale;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    T my_loss = 0, my_kept = 0;
    for (long long row = warp; row < n; row += warps) {
        const long long t = target[row];
        const bool kept = t != ignore_index;
        const T l = ce_row(logits + row * c, residual + row * c, t, c, kept ? (T)1 : (T)0, lane);
        if (lane == 0 && kept) { my_loss += l; my_kept += 1; }
    }
    if (lane == 0) { part_loss[warp] = my_loss; part_kept[warp] = my_kept; }
    __syncthreads();
    if (threadIdx.x == 0) {
        T sum = 0, count = 0;
        for (int w = 0; w < warps; ++w) { sum += part_loss[w]; count += part_kept[w]; }
        loss[0] = mean ? sum / count : sum;  // a mean of nothing is NaN, as in PyTorch...
        scale = mean ? (count > 0 ? (T)1 / count : (T)0) : (T)1;  // ...with a gradient of 0
    }
    __syncthreads();
    if (mean) {
        const T s = scale;
        for (long long i = threadIdx.x; i < n * c; i += blockDim.x) residual[i] *= s;
    }
}

// Large batches: first the scale (1 / number of kept rows for a mean, else 1), by one block...
extern "C" __global__ void NAME_scale(const long long* target, long long n, long long ignore_index, int mean,
                                      T* scale) {
    __shared__ T part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    T kept = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) kept += target[i] != ignore_index ? (T)1 : (T)0;
    for (int o = 16; o > 0; o >>= 1) kept += __shfl_xor_sync(0xffffffff, kept, o);
    if (lane == 0) part[warp] = kept;
    __syncthreads();
    if (threadIdx.x == 0) {
        T count = 0;
        for (int w = 0; w < warps; ++w) count += part[w];
        scale[0] = mean ? (T)1 / count : (T)1;
    }
}

// ...then every row, one warp each across many blocks, already scaled (the loss is their sum).
extern "C" __global__ void NAME_rows(const T* logits, const long long* target, long long n, long long c,
                                     long long ignore_index, const T* scale, T* row_loss, T* residual) {
    const int lane = threadIdx.x & 31;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= n) return;  // whole warps: blockDim.x is a multiple of 32
    const long long t = target[row];
    const bool kept = t != ignore_index;
    // an ignored row has no gradient and adds 0 to the loss, or NaN when every row is ignored (a
    // mean of nothing: scale is 1 / 0), as in the generic forward and in PyTorch
    const T s = kept ? scale[0] : (T)0;
    const T l = ce_row(logits + row * c, residual + row * c, t, c, s, lane);
    if (lane == 0) row_loss[row] = kept ? l * s : (T)0 * scale[0];
}
"""
_raw_modules = {}
_CE_SMALL = 1 << 18  # up to this many logits: one block, one launch (small batches are launch-bound; to be tuned on a GPU)
_CE_THREADS = 512
_CE_ROW_THREADS = 256  # 8 rows per block for large batches


def _raw_functions(source, prefix, dtype, names):
    """{name: kernel} from a templated CUDA source (NAME -> prefix_f32/_f64, T -> float/double),
    compiled once per dtype."""
    key = (prefix, dtype)
    functions = _raw_modules.get(key)
    if functions is None:
        ctype, suffix = ("float", "f32") if dtype == cupy.float32 else ("double", "f64")
        module = cupy.RawModule(code=f"typedef {ctype} T;\n" + source.replace("NAME", f"{prefix}_{suffix}"))
        functions = _raw_modules[key] = {k: module.get_function(f"{prefix}_{suffix}_{k}") for k in names}
    return functions


def _ce_functions(dtype):
    """{"small", "scale", "rows"}: the cross-entropy kernels for float32 or float64."""
    return _raw_functions(_CE_SOURCE, "gpunn_ce", dtype, ("small", "scale", "rows"))


def _cross_entropy_forward(xp, logits, target, reduction="mean", ignore_index=-100):
    """Loss and residual (softmax - onehot, weighted as the reduction weighs each row, as the
    generic forward saves it) in one launch for small batches, three for large ones."""
    n, c = logits.shape
    if reduction == "none" or logits.dtype not in _FLOATS or n == 0 or c == 0:
        return ops.cross_entropy.forward(xp, logits, target, reduction=reduction, ignore_index=ignore_index)
    kernels = _ce_functions(logits.dtype)
    logits = cupy.ascontiguousarray(logits)
    target = cupy.ascontiguousarray(target.astype(cupy.int64, copy=False))
    residual = cupy.empty(logits.shape, dtype=logits.dtype)  # (empty_like costs the host twice as much)
    n_, c_, ignore, mean = cupy.int64(n), cupy.int64(c), cupy.int64(ignore_index), cupy.int32(reduction == "mean")
    if n * c <= _CE_SMALL:
        loss = cupy.empty((), dtype=logits.dtype)
        kernels["small"]((1,), (_CE_THREADS,), (logits, target, n_, c_, ignore, mean, loss, residual))
        return loss, residual
    scale = cupy.empty((1,), dtype=logits.dtype)
    row_loss = cupy.empty((n,), dtype=logits.dtype)
    kernels["scale"]((1,), (_CE_THREADS,), (target, n_, ignore, mean, scale))
    rows_per_block = _CE_ROW_THREADS // 32
    kernels["rows"](((n + rows_per_block - 1) // rows_per_block,), (_CE_ROW_THREADS,),
                    (logits, target, n_, c_, ignore, scale, row_loss, residual))
    return row_loss.sum(), residual


# --- optimizer updates -------------------------------------------------------------------------

# 1 - beta comes from the host in double precision, rounded once (as in the generic update and in
# PyTorch): in float32, 1 - (float)0.999 is off by 1.3e-5 relative, enough to drift a trajectory
_adam_kernel = cupy.ElementwiseKernel(
    "T g, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T step_size, T bias_correction2_sqrt, "
    "T weight_decay, T decay, T sign",
    "T p, T m, T v",
    """
    T d = sign * g;
    p = p * decay;
    d = d + weight_decay * p;
    m = m * beta1 + one_minus_beta1 * d;
    v = v * beta2 + d * d * one_minus_beta2;
    p = p - m / (sqrt(v) / bias_correction2_sqrt + eps) * step_size;
    """,
    "gpunn_adam_update")


def _adam_update(xp, p, g, m, v, v_max=None, *, beta1, beta2, eps, step_size, bias_correction2_sqrt,
                 weight_decay, decay, maximize, one_minus_beta1=None):
    """One kernel for the whole update. Branch-free in the hyper-parameters (a decay of 1 and a
    weight decay of 0 are applied as such), so they may be 0-d device arrays under graph capture."""
    if v_max is not None or p.dtype not in _FLOATS or g.dtype != p.dtype:
        return adam_update(xp, p, g, m, v, v_max, beta1=beta1, beta2=beta2, eps=eps, step_size=step_size,
                           bias_correction2_sqrt=bias_correction2_sqrt, weight_decay=weight_decay, decay=decay,
                           maximize=maximize, one_minus_beta1=one_minus_beta1)
    dt = p.dtype.type
    scalars = [s if hasattr(s, "shape") else dt(s) for s in
               (beta1, 1 - beta1 if one_minus_beta1 is None else one_minus_beta1, beta2, 1 - beta2, eps, step_size,
                bias_correction2_sqrt, weight_decay, decay, -1.0 if maximize else 1.0)]
    _adam_kernel(g, *scalars, p, m, v)


_sgd_momentum_kernel = cupy.ElementwiseKernel(
    "T g, T lr, T momentum, T dampening_keep, T weight_decay, T sign, bool nesterov",
    "T p, T buf",
    """
    T d = sign * g + weight_decay * p;
    buf = buf * momentum + dampening_keep * d;
    p = p - lr * (nesterov ? d + momentum * buf : buf);
    """,
    "gpunn_sgd_momentum_update")


_sgd_plain_kernel = cupy.ElementwiseKernel(
    "T g, T lr, T weight_decay, T sign", "T p", "p = p - lr * (sign * g + weight_decay * p)", "gpunn_sgd_update")


def _sgd_update(xp, p, g, buf, first, lr, momentum, dampening, nesterov, weight_decay, maximize):
    """One kernel per step, with or without momentum; the momentum buffer's first fill (a copy of
    the gradient, once) takes the generic function."""
    if first or p.dtype not in _FLOATS or g.dtype != p.dtype:
        return sgd_update(xp, p, g, buf, first, lr, momentum, dampening, nesterov, weight_decay, maximize)
    dt = p.dtype.type
    sign = dt(-1.0 if maximize else 1.0)
    if buf is None:
        _sgd_plain_kernel(g, *(s if hasattr(s, "shape") else dt(s) for s in (lr, weight_decay)), sign, p)
        return
    scalars = [s if hasattr(s, "shape") else dt(s) for s in (lr, momentum, 1 - dampening, weight_decay)]
    _sgd_momentum_kernel(g, *scalars, sign, bool(nesterov), p, buf)


def fast_paths():
    """{name: override} for the CuPy backend's Device.fast_paths."""
    linear = ops.linear.override(forward=_linear_forward, grads=(_linear_grad_x, _linear_grad_w, _linear_grad_b),
                                 into=(None, _linear_grad_w_into, _linear_grad_b_into))
    fast = {name: p.override(grads=(_elementwise_rule(_grad_kernels[name], p.grads[0]),))
            for name, p in ops.ACTIVATIONS.items() if name in _grad_kernels}
    return {
        "linear": linear,
        "linear_act": ops.linear_act_primitive(linear, {**ops.ACTIVATIONS, **fast}, forward=_linear_act_forward,
                                               prepare_into=_act_grad_and_bias_into),
        "matmul": ops.matmul.override(forward=_matmul_forward, grads=(_matmul_grad_x, _matmul_grad_y)),
        **fast,
        "cross_entropy": ops.cross_entropy.override(forward=_cross_entropy_forward),
        "adam_update": _adam_update,
        "sgd_update": _sgd_update,
    }
