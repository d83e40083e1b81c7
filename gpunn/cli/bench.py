"""gpunn bench: time whole MLP training steps on each device against hand-written NumPy and PyTorch.

A step is forward, softmax cross-entropy, backward and a plain SGD update of an MLP on one fixed
batch that already lives on the device. For every model size and batch size it is timed on each
usable device next to two baselines built in the same process from the same weights and batch:

- numpy: the step written by hand in plain NumPy, the floor gpunn's CPU path is held to;
- torch: PyTorch eager (when `import torch` works), on the CPU and on CUDA when usable.

On CUDA devices two more contenders time the whole step captured into one CUDA graph:

- gpunn-graph: `gpunn.compile_step(model, cross_entropy, optimizer)`; where it cannot capture,
  it is still timed (eagerly) and its row's `note` gives compile_step's reason;
- torch-graph: PyTorch's documented whole-network capture (warm-up on a side stream, then
  `torch.cuda.graph`), replayed with the batch copied into its static inputs, as gpunn does.

There are no graph contenders on the CPU. Each row's `vs_torch` is its time over that of the
PyTorch contender of the same kind on the same device (gpunn/torch, gpunn-graph/torch-graph).
--tf32 lets gpunn and PyTorch use TF32 tensor cores for float32 products on CUDA.

All contenders of one configuration are timed alternately, repeat by repeat, so that clock and
cache drift hit each of them equally. A repeat times a block of consecutive steps between two
device synchronizations (long enough for the clock's resolution not to matter); the table gives
the median over repeats with the minimum and maximum. Two checks show that all contenders compute
the same thing: every first step's loss against a NumPy forward pass, and each graph contender's
loss at the end of the warm-up (by then a replay) against its eager sibling's.

Output: a table on stdout, and bench.csv, bench.json (with a description of the machine) and
bench.png in --out. CuPy and PyTorch are imported only when needed.
"""

import argparse
import contextlib
import csv
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import gpunn
from gpunn._files import atomic_write
from gpunn.cli.common import (cpu_model, non_negative_float, non_negative_int, numpy_build_blas, positive_float,
                               positive_int, thread_pools, version)
from gpunn.compile import CompileWarning
from gpunn.device import _parse as parse_device_spec
from gpunn.errors import DeviceError

DEFAULT_SIZES = "784-128-10,784-256-256-10,784-512-512-10,784-1024-1024-1024-10"
DEFAULT_BATCHES = "128,512"
QUICK_SIZES = "784-64-10,784-256-256-10"
QUICK_BATCHES = "64"
# At PyTorch's initialization the first loss is ln(classes) plus about 1e-4, so a looser check could
# not tell a wrong step from a right one; measured float32 differences are below 2e-7
FIRST_LOSS_RTOL = {"float32": 1e-5, "float64": 1e-10}
TF32_RTOL = 2e-4  # TF32 rounds float32 products' inputs to a 10-bit mantissa (2e-5 measured, worst case)
GRAPH_WARMUP = 3  # warm-up steps with graph contenders: gpunn-graph's last one is then a replay
TORCH_PEER = {"gpunn": "torch", "gpunn-graph": "torch-graph", "gpunn-amp": "torch-amp"}  # vs_torch: like with like
AMP_RTOL = 1e-2  # a first loss from float16 products (--amp) against the float32 NumPy forward pass
EAGER_SIBLING = {"gpunn-graph": "gpunn", "torch-graph": "torch"}  # must reach the same loss
SLOW_BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LIBRARIES = ("gpunn", "numpy", "array-api-compat", "array-api-strict", "torch", "cupy", "cupy-cuda12x",
             "cupy-cuda13x", "matplotlib")


# --- command line --------------------------------------------------------------------------------


def parse_sizes(text):
    """'784-256-256-10,784-1024x3-10' -> [(784, 256, 256, 10), (784, 1024, 1024, 1024, 10)]: layer
    widths per model; a width followed by xN stands for N layers of that width (the notation of
    BENCHMARKS.md)."""
    models = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            sizes = tuple(n for field in part.split("-") for n in _widths(field))
        except ValueError:
            sizes = ()
        if len(sizes) < 2 or min(sizes) < 1:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a model: give positive layer widths joined by '-', at least two, e.g. "
                f"784-256-256-10; WxN repeats width W N times (N >= 1), e.g. 784-1024x3-10")
        models.append(sizes)
    if not models:
        raise argparse.ArgumentTypeError("no model given; e.g. --sizes 784-256-256-10,784-1024x3-10")
    return models


def _widths(field):
    """'1024x3' -> [1024, 1024, 1024]; '256' -> [256]. ValueError when it is neither."""
    width, times = field.split("x") if "x" in field else (field, "1")
    if int(times) < 1:
        raise ValueError(f"{field!r} repeats a width {times} times")
    return [int(width)] * int(times)


def parse_batch_sizes(text):
    """'128,512' -> [128, 512]."""
    try:
        batches = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive batch sizes, e.g. 128,512")
    return batches


def parse_names(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_devices(text):
    """'cpu,cuda' -> ['cpu', 'cuda']. A name that is no device at all (a typo) is a usage error; a
    device that exists but cannot run here (cuda without a GPU) is skipped later, with a note."""
    specs = parse_names(text)
    if not specs:
        raise argparse.ArgumentTypeError("no device given; e.g. --devices cpu,cuda")
    for spec in specs:
        if spec.lower() != "auto":
            try:
                parse_device_spec(spec)
            except DeviceError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
    return specs


def parse_baselines(text):
    """'numpy,torch' -> ['numpy', 'torch']; 'none' -> []."""
    names = parse_names(text)
    unknown = sorted(set(names) - {"numpy", "torch", "none"})
    if unknown or not names:
        what = f"unknown baseline {', '.join(unknown)}" if unknown else "no baseline given"
        raise argparse.ArgumentTypeError(f"{what}; choose from numpy, torch, or none")
    return [name for name in names if name != "none"]


def add_arguments(parser):
    """The options of `gpunn bench` (shared by the CLI and `python -m gpunn.cli.bench`)."""
    parser.add_argument("--devices", type=parse_devices, default=parse_devices("cpu,cuda"),
                        help="devices to time gpunn on, comma-separated; unusable ones are skipped "
                             "with a note, and the run fails (exit 1) when none is usable (default: cpu,cuda)")
    parser.add_argument("--sizes", type=parse_sizes, default=None,
                        help=f"MLP layer widths joined by '-' (WxN: N layers of width W, e.g. 784-1024x3-10), "
                             f"comma-separated models (default: {DEFAULT_SIZES}; --quick: {QUICK_SIZES})")
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=None,
                        help=f"batch sizes (default: {DEFAULT_BATCHES}; --quick: {QUICK_BATCHES})")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--baselines", type=parse_baselines, default=parse_baselines("numpy,torch"),
                        help="baselines to time alongside gpunn: numpy, torch, or none (default: numpy,torch)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: small models, one batch size, few repeats")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed blocks per contender (default 10; --quick: 3)")
    parser.add_argument("--warmup", type=non_negative_int, default=None,
                        help="untimed steps per contender before timing (default 3; --quick: 1)")
    parser.add_argument("--block-ms", type=non_negative_float, default=None,
                        help="shortest timed block, in milliseconds (default 50; --quick: 10)")
    parser.add_argument("--lr", type=positive_float, default=0.01, help="SGD learning rate, > 0 (default 0.01)")
    parser.add_argument("--tf32", action="store_true",
                        help="TF32 tensor cores for float32 matrix products on CUDA, in gpunn and PyTorch "
                             "(set_float32_matmul_precision('high')); the loss checks then allow rtol "
                             f"{TF32_RTOL:g} on CUDA")
    parser.add_argument("--amp", action="store_true",
                        help="also time mixed precision (float16 autocast and a GradScaler) where the device has "
                             "float16: gpunn-amp against torch-amp, beside the float32 steps; first losses within "
                             f"rtol {AMP_RTOL:g}")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the batch")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="limit NumPy's BLAS and PyTorch to this many CPU threads (needs threadpoolctl; "
                             "default: as configured)")
    parser.add_argument("--out", default=None, help="output folder (default: bench-<timestamp>)")
    parser.add_argument("--no-plot", action="store_true", help="skip bench.png")
    return parser


def _settings(args):
    """The effective settings: --quick and the defaults filled in (the values were checked when
    the arguments were parsed)."""
    quick = args.quick
    repeats = args.repeats if args.repeats is not None else (3 if quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    block_ms = args.block_ms if args.block_ms is not None else (10.0 if quick else 50.0)
    return {
        "sizes": [list(s) for s in (args.sizes or parse_sizes(QUICK_SIZES if quick else DEFAULT_SIZES))],
        "batch_sizes": args.batch_sizes or parse_batch_sizes(QUICK_BATCHES if quick else DEFAULT_BATCHES),
        "devices": list(args.devices),
        "baselines": list(args.baselines),
        "dtype": args.dtype,
        "repeats": repeats,
        "warmup": warmup,
        "block_ms": block_ms,
        "lr": args.lr,
        "tf32": args.tf32,
        "amp": args.amp,
        "seed": args.seed,
        "quick": quick,
        "threads": args.threads,
    }


# --- the problem: weights and one batch, on the host ---------------------------------------------


def parameter_count(sizes):
    return sum(n_out * n_in + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def make_problem(sizes, batch, dtype="float32", seed=0):
    """Host weights [(W (out, in), b (out,)), ...] in PyTorch's default init, inputs and labels."""
    rng = np.random.default_rng(seed)
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        weights.append((rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype),
                        rng.uniform(-bound, bound, n_out).astype(dtype)))
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return weights, x, y


def reference_loss(weights, x, y):
    """The loss every contender's first step must report: a plain NumPy forward pass."""
    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    h = h - h.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(h).sum(axis=1)) - h[np.arange(len(y)), y]))


# --- contenders: one implementation of the step on one device ------------------------------------


class NumpyStep:
    """The training step written by hand in NumPy: what a careful user writes without a framework.

    Forward h = relu(h @ W.T + b) per layer (in place where it can be), the fused softmax
    cross-entropy gradient p - onehot, backward with transposed products, SGD in place.
    """

    impl, device = "numpy", "cpu"
    note = None  # why the contender does not run the way its name says (see GpunnGraphStep)

    def __init__(self, weights, x, y, lr):
        self.layers = [(w.copy(), b.copy()) for w, b in weights]
        self.x, self.y, self.lr = x, y, lr
        self.rows = np.arange(len(y))

    def step(self):
        acts = [self.x]
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            z = acts[-1] @ w.T
            z += b
            if i < last:
                np.maximum(z, 0, out=z)
            acts.append(z)
        logits = acts.pop()
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        total = p.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(total[:, 0]) - logits[self.rows, self.y])
        p /= total
        p[self.rows, self.y] -= 1
        g = p
        g /= len(self.y)
        for i in range(last, -1, -1):
            w, b = self.layers[i]
            h = acts[i]
            grad_w = g.T @ h
            grad_b = g.sum(axis=0)
            if i:
                g = g @ w
                g *= h > 0  # relu's gradient, read from its output
            grad_w *= self.lr
            w -= grad_w
            b -= self.lr * grad_b
        return loss

    def value(self, loss):
        return float(loss)

    def sync(self):
        pass

    def weights(self):
        return [(w.copy(), b.copy()) for w, b in self.layers]


class _ModelStep:
    """The step the README writes, in gpunn or PyTorch alike: loss, zero_grad, backward, update."""

    def step(self):
        loss = self.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def value(self, loss):
        return float(loss.item())


class GpunnStep(_ModelStep):
    """gpunn's step, the way the README writes it: nn.MLP, F.cross_entropy, optim.SGD."""

    impl = "gpunn"
    note = None

    def __init__(self, device, weights, x, y, lr):
        from gpunn import functional, nn, optim

        self.dev = gpunn.device(device)
        self.device = self.dev.spec
        sizes = [weights[0][0].shape[1]] + [w.shape[0] for w, _ in weights]
        self.model = nn.MLP(sizes, activation="relu").to(self.dev, weights[0][0].dtype.name)
        state = {}
        for k, (w, b) in enumerate(weights):  # Linear layers sit at 0, 2, 4, ... between the ReLUs
            state[f"{2 * k}.weight"], state[f"{2 * k}.bias"] = w, b
        self.model.load_state_dict(state)
        self.optimizer = optim.SGD(self.model.parameters(), lr=lr)
        self.cross_entropy = functional.cross_entropy
        self.x = gpunn.tensor(x, device=self.dev)
        self.y = gpunn.tensor(y, device=self.dev)

    def sync(self):
        self.dev.synchronize()

    def weights(self):
        state = self.model.state_dict()
        count = len(state) // 2
        return [(state[f"{2 * k}.weight"].numpy(), state[f"{2 * k}.bias"].numpy()) for k in range(count)]


class GpunnGraphStep(GpunnStep):
    """gpunn's step through `gpunn.compile_step`: two eager calls, a capture, then graph replays."""

    impl = "gpunn-graph"

    def __init__(self, device, weights, x, y, lr):
        super().__init__(device, weights, x, y, lr)
        self.compiled = gpunn.compile_step(self.model, self.cross_entropy, self.optimizer)

    def step(self):
        return self.compiled(self.x, self.y)

    @property
    def note(self):
        """None once the step replays a CUDA graph; else why it runs eagerly."""
        if self.compiled.mode == "graph":
            return None
        return f"ran eagerly: {self.compiled.reason or 'no graph captured yet'}"


class GpunnAmpStep(GpunnStep):
    """gpunn's step in mixed precision, as a PyTorch user writes it: the forward pass under
    autocast (float16 products, float32 loss), a GradScaler around backward and the update."""

    impl = "gpunn-amp"

    def __init__(self, device, weights, x, y, lr):
        super().__init__(device, weights, x, y, lr)
        self.scaler = gpunn.amp.GradScaler()

    def step(self):
        with gpunn.autocast(self.dev.type):
            loss = self.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss


class TorchStep(_ModelStep):
    """PyTorch eager with the same weights and batch: Sequential of Linear/ReLU, optim.SGD."""

    impl = "torch"
    note = None

    def __init__(self, torch, device, weights, x, y, lr):
        self.torch, self.device = torch, device
        layers = []
        for k, (w, b) in enumerate(weights):
            linear = torch.nn.Linear(w.shape[1], w.shape[0], device=device, dtype=getattr(torch, w.dtype.name))
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w))
                linear.bias.copy_(torch.from_numpy(b))
            layers.append(linear)
            if k < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.cross_entropy = torch.nn.functional.cross_entropy
        self.x = torch.from_numpy(x).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.is_cuda = device.startswith("cuda")

    def sync(self):
        if self.is_cuda:
            self.torch.cuda.synchronize(self.device)

    def weights(self):
        linears = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]
        return [(m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()) for m in linears]


class TorchGraphStep(TorchStep):
    """PyTorch's whole-network CUDA graph recipe: warm up on a side stream, capture forward,
    backward and SGD step once, then each step copies the batch into the static inputs and replays.

    The warm-up steps move the weights, so they are put back after the capture (copied into the
    same storage, which the graph keeps reading): the first replay is the first step, as for
    every other contender. If the capture fails the step stays eager and `note` says why.
    """

    impl = "torch-graph"
    side_stream_steps = 3  # eager steps before the capture, as in PyTorch's recipe

    def __init__(self, torch, device, weights, x, y, lr):
        super().__init__(torch, device, weights, x, y, lr)
        with torch.cuda.device(device):
            params = list(self.model.parameters())
            originals = [p.detach().clone() for p in params]
            self.static_x, self.static_y = self.x.clone(), self.y.clone()
            try:
                self.graph, self.static_loss = self._capture()
            except Exception as exc:  # a capture that fails must not end the whole bench run
                torch.cuda.set_stream(torch.cuda.default_stream(device))  # a failed capture can leave its stream current
                cause = exc.__context__ or exc  # torch.cuda.graph's exit may raise again, hiding the first error
                self.graph, self.note = None, f"ran eagerly: capture failed ({type(cause).__name__}: {cause})"
            torch.cuda.synchronize(device)
            with torch.no_grad():
                for p, original in zip(params, originals):
                    p.copy_(original)

    def _train(self):
        loss = self.cross_entropy(self.model(self.static_x), self.static_y)
        loss.backward()
        self.optimizer.step()
        return loss

    def _capture(self):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.side_stream_steps):
                self.optimizer.zero_grad(set_to_none=True)
                self._train()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the graph's gradients live in its private pool
        with torch.cuda.graph(graph):
            static_loss = self._train()
        return graph, static_loss

    def step(self):
        if self.graph is None:
            return super().step()
        self.static_x.copy_(self.x)
        self.static_y.copy_(self.y)
        self.graph.replay()
        return self.static_loss


class TorchAmpStep(TorchStep):
    """PyTorch's mixed-precision step: torch.autocast (float16) and torch.amp.GradScaler."""

    impl = "torch-amp"

    def __init__(self, torch, device, weights, x, y, lr):
        super().__init__(torch, device, weights, x, y, lr)
        self.kind = device.split(":")[0]
        self.scaler = torch.amp.GradScaler(self.kind)

    def step(self):
        with self.torch.autocast(self.kind, dtype=self.torch.float16):
            loss = self.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss


def torch_device(torch, dev):
    """The PyTorch device matching a gpunn device, or None where PyTorch cannot run there."""
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda" and torch.cuda.is_available() and dev.index < torch.cuda.device_count():
        return f"cuda:{dev.index}"
    return None


# --- timing --------------------------------------------------------------------------------------


def time_block(contender, steps):
    """Seconds per step over `steps` consecutive steps, between two device synchronizations."""
    contender.sync()
    start = time.perf_counter()
    for _ in range(steps):
        contender.step()
    contender.sync()
    return (time.perf_counter() - start) / steps


def measure(contenders, repeats, warmup, block_s):
    """Losses, and per-step times of `repeats` blocks per contender, taken in turn.

    The order rotates every repeat, so no contender always runs right after the same other one.
    Returns (first_losses, warm_losses, times, steps_per_block), each a list parallel to
    `contenders`; warm_losses are those of step 1 + warmup, the last untimed one.
    """
    first, warm = [], []
    for c in contenders:
        loss = c.step()
        first.append(c.value(loss))
        for _ in range(warmup):
            loss = c.step()
        warm.append(c.value(loss))
        c.sync()
    fastest = [min(time_block(c, 1) for _ in range(3)) for c in contenders]  # load spikes only slow a step down
    blocks = [min(10_000, max(1, math.ceil(block_s / max(t, 1e-9)))) for t in fastest]
    times = [[] for _ in contenders]
    n = len(contenders)
    for r in range(repeats):
        for i in [(r + j) % n for j in range(n)]:
            times[i].append(time_block(contenders[i], blocks[i]))
    return first, warm, times, blocks


def uses_tf32(dtype, device, tf32):
    """Whether --tf32 changes this contender's products: float32 on CUDA only."""
    return bool(tf32) and dtype == "float32" and device.startswith("cuda")


def loss_rtol(dtype, device, tf32=False):
    """How far two losses of the same step may differ: float32 rounding, or TF32's on CUDA."""
    return TF32_RTOL if uses_tf32(dtype, device, tf32) else FIRST_LOSS_RTOL[dtype]


def losses_agree(a, b, rtol):
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(abs(a), abs(b), 1e-30)


def limit_threads(n, torch=None):
    """Cap NumPy's BLAS (and PyTorch, if given) at n threads for the rest of the process.

    One thread per contender is far less disturbed by other busy processes than a BLAS pool whose
    threads wait for each other.
    """
    try:
        import threadpoolctl
    except ImportError:
        raise SystemExit("gpunn bench: error: --threads needs threadpoolctl: pip install threadpoolctl "
                         "(it comes with pip install 'gpunn[test]')") from None
    limit_threads.held = threadpoolctl.threadpool_limits(n)  # the limit lasts while this object lives
    if torch is not None:
        torch.set_num_threads(n)


# --- the run -------------------------------------------------------------------------------------


def usable_devices(specs):
    """(the usable Devices among `specs`, {spec: why it cannot be used} for the others)."""
    devices, skipped = [], {}
    for spec in specs:
        try:
            dev = gpunn.device(spec)
        except DeviceError as exc:
            reason = gpunn.cuda.why_unavailable() if spec.strip().lower().startswith("cuda") else None
            skipped[spec] = reason or str(exc)
            continue
        if dev not in devices:
            devices.append(dev)
    return devices, skipped


def import_torch():
    """(torch module or None, note saying why not)."""
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install
        return None, f"PyTorch baseline skipped: import torch failed ({exc})"
    return torch, None


def build_contenders(settings, devices, torch, weights, x, y):
    """gpunn on each device, the NumPy baseline, PyTorch where it runs; CUDA graphs on CUDA only."""
    lr = settings["lr"]
    contenders = []
    amp = settings.get("amp") and settings["dtype"] == "float32"  # (autocast leaves float64 alone)
    for dev in devices:
        contenders.append(GpunnStep(dev, weights, x, y, lr))
        if dev.type == "cuda":
            contenders.append(GpunnGraphStep(dev, weights, x, y, lr))
        if amp and dev.type in ("cpu", "cuda"):  # the devices with float16
            contenders.append(GpunnAmpStep(dev, weights, x, y, lr))
    if "numpy" in settings["baselines"]:
        contenders.append(NumpyStep(weights, x, y, lr))
    if torch is not None:
        for dev in devices:
            place = torch_device(torch, dev)
            if place is not None:
                contenders.append(TorchStep(torch, place, weights, x, y, lr))
            if place is not None and place.startswith("cuda"):
                contenders.append(TorchGraphStep(torch, place, weights, x, y, lr))
            if place is not None and amp:
                contenders.append(TorchAmpStep(torch, place, weights, x, y, lr))
    return contenders


def run_configuration(settings, devices, torch, sizes, batch):
    """Time one (model, batch) on every contender: result rows and loss checks."""
    gc.collect()  # the last configuration's graphs and pools go now, not inside a timed block
    weights, x, y = make_problem(sizes, batch, settings["dtype"], settings["seed"])
    contenders = build_contenders(settings, devices, torch, weights, x, y)
    if not contenders:
        return [], []
    warmup = settings["warmup"]
    if any(c.impl in EAGER_SIBLING for c in contenders):
        warmup = max(warmup, GRAPH_WARMUP)
    first, warm, times, blocks = measure(contenders, settings["repeats"], warmup, settings["block_ms"] / 1e3)
    model = "-".join(map(str, sizes))
    medians = {(c.impl, c.device): statistics.median(t) for c, t in zip(contenders, times)}
    rows = []
    for c, t, block in zip(contenders, times, blocks):
        median = medians[(c.impl, c.device)]
        gpunn_here = medians.get(("gpunn", c.device))
        rows.append({
            "model": model, "params": parameter_count(sizes), "batch": batch, "dtype": settings["dtype"],
            "device": c.device, "impl": c.impl,
            "median_ms": median * 1e3, "min_ms": min(t) * 1e3, "max_ms": max(t) * 1e3,
            "samples_per_s": batch / median, "repeats": len(t), "steps_per_repeat": block,
            "gpunn_over_this": gpunn_here / median if gpunn_here else None,
            "note": c.note,
        })
    add_torch_ratios(rows)
    checks = loss_checks(settings, contenders, first, warm, reference_loss(weights, x, y), 1 + warmup)
    return rows, [{"model": model, "batch": batch, **c} for c in checks]


def loss_checks(settings, contenders, first, warm, reference, warm_step):
    """Every first step's loss against the NumPy forward pass `reference`; each graph contender's
    loss at step `warm_step` (a replay by then) against its eager sibling's on the same device."""
    tf32, dtype = settings["tf32"], settings["dtype"]
    warm_of = {(c.impl, c.device): w for c, w in zip(contenders, warm)}
    checks = []

    def check(c, step, against, loss, expected, rtol=None):
        rtol = loss_rtol(dtype, c.device, tf32) if rtol is None else rtol
        if c.impl.endswith("-amp"):
            rtol = max(rtol, AMP_RTOL)
        checks.append({"impl": c.impl, "device": c.device, "step": step, "against": against, "loss": loss,
                       "expected": expected, "rtol": rtol, "tf32": uses_tf32(dtype, c.device, tf32),
                       "ok": losses_agree(loss, expected, rtol)})

    for c, loss in zip(contenders, first):
        check(c, 1, "numpy forward pass", loss, reference)
    for c, loss in zip(contenders, warm):
        sibling = EAGER_SIBLING.get(c.impl)
        if (sibling, c.device) in warm_of:  # the same products on both sides: float32's tolerance even with TF32
            check(c, warm_step, f"{sibling} on {c.device}", loss, warm_of[(sibling, c.device)],
                  rtol=FIRST_LOSS_RTOL[dtype])
    return checks


def add_torch_ratios(rows):
    """Set each row's `vs_torch`: its median over that of the PyTorch contender of the same kind
    (gpunn/torch, gpunn-graph/torch-graph) in the same configuration and device; None if none."""
    medians = {(r["model"], r["batch"], r["device"], r["impl"]): r["median_ms"] for r in rows}
    for r in rows:
        peer = medians.get((r["model"], r["batch"], r["device"], TORCH_PEER.get(r["impl"])))
        r["vs_torch"] = r["median_ms"] / peer if peer else None
    return rows


def speedups(rows):
    """gpunn's speed-up on each non-CPU device over gpunn on the CPU, per configuration."""
    cpu = {(r["model"], r["batch"]): r["median_ms"] for r in rows if r["impl"] == "gpunn" and r["device"] == "cpu"}
    found = []
    for r in rows:
        key = (r["model"], r["batch"])
        if r["impl"] == "gpunn" and r["device"] != "cpu" and key in cpu:
            found.append({"model": r["model"], "params": r["params"], "batch": r["batch"], "device": r["device"],
                          "cpu_ms": cpu[key], "device_ms": r["median_ms"], "speedup": cpu[key] / r["median_ms"]})
    return found


# --- the machine ---------------------------------------------------------------------------------


def slow_blas_settings():
    """The environment variables that make NumPy's OpenBLAS much slower, where they are set."""
    return {k: os.environ[k] for k in SLOW_BLAS_VARIABLES if k in os.environ}


def machine_info(devices, torch=None):
    """What the numbers depend on: hardware, library versions, BLAS, threads, GPUs, environment."""
    info = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "versions": {name: v for name in LIBRARIES if (v := version(name)) is not None},
        "environment": {k: os.environ[k] for k in SLOW_BLAS_VARIABLES + THREAD_VARIABLES if k in os.environ},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch is not None:
        info["versions"]["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    info["numpy_blas"] = numpy_build_blas()
    info["threadpools"] = thread_pools()
    info["gpus"] = {dev.spec: dev.describe() for dev in devices if dev.type == "cuda"}
    return info


# --- output --------------------------------------------------------------------------------------


def _ms(value):
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


TABLE_HEAD = (f"{'model':<26}{'params':>11}{'batch':>7}  {'device':<8}{'impl':<12}{'ms':>9}{'[min .. max]':>20}"
              f"{'samples/s':>12}{'numpy ms':>10}{'g/np':>7}{'torch ms':>10}{'vs torch':>9}{'vs cpu':>8}")


def table_lines(rows):
    """One line per gpunn contender (eager, and graph on CUDA) per (model, batch, device): its
    time, NumPy's (on the cpu), the time of PyTorch of the same kind and the ratio, the GPU
    speed-up over gpunn's cpu run. Where no gpunn contender ran, the baselines' own lines, so
    that what was timed is shown."""
    by_key = {(r["model"], r["batch"], r["device"], r["impl"]): r for r in rows}
    with_gpunn = {(r["model"], r["batch"]) for r in rows if r["impl"] in TORCH_PEER}
    lines = []
    for r in rows:
        model, batch, device, impl = r["model"], r["batch"], r["device"], r["impl"]
        if impl not in TORCH_PEER and (model, batch) in with_gpunn:
            continue
        numpy_row = by_key.get((model, batch, "cpu", "numpy")) if device == "cpu" and impl == "gpunn" else None
        torch_row = by_key.get((model, batch, device, TORCH_PEER.get(impl)))  # gpunn and torch both say "cuda:0"
        cpu_row = by_key.get((model, batch, "cpu", "gpunn")) if device != "cpu" and impl in TORCH_PEER else None
        spread = f"[{_ms(r['min_ms'])} .. {_ms(r['max_ms'])}]"
        cells = [f"{model:<26}{r['params']:>11,}{batch:>7}  {device:<8}{impl:<12}{_ms(r['median_ms']):>9}{spread:>20}"
                 f"{r['samples_per_s']:>12,.0f}"]
        if numpy_row:
            cells.append(f"{_ms(numpy_row['median_ms']):>10}{r['median_ms'] / numpy_row['median_ms']:>6.2f}x")
        else:
            cells.append(f"{'':>10}{'':>7}")
        if torch_row and r.get("vs_torch"):
            cells.append(f"{_ms(torch_row['median_ms']):>10}{r['vs_torch']:>8.2f}x")
        else:
            cells.append(f"{'':>10}{'':>9}")
        if cpu_row:
            cells.append(f"{cpu_row['median_ms'] / r['median_ms']:>7.1f}x")
        lines.append("".join(cells).rstrip())
    return lines


CSV_FIELDS = ("model", "params", "batch", "dtype", "device", "impl", "median_ms", "min_ms", "max_ms",
              "samples_per_s", "repeats", "steps_per_repeat", "gpunn_over_this", "vs_torch", "note")


def write_csv(rows, path):
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def write_json(report, path):
    with atomic_write(path, "w") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")


def plot(rows, speedup_rows, path):
    """Step time against model size per contender; gpunn/baseline ratios; GPU speed-up over CPU."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 3 if speedup_rows else 2
    fig = Figure(figsize=(6 * panels, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    batches = sorted({r["batch"] for r in rows})
    styles = ["-", "--", ":", "-."]
    series = sorted({(r["impl"], r["device"]) for r in rows})
    colors = {s: f"C{i}" for i, s in enumerate(series)}
    for b_i, batch in enumerate(batches):
        style = styles[b_i % len(styles)]
        for impl, device in series:
            pts = sorted((r["params"], r["median_ms"]) for r in rows
                         if r["impl"] == impl and r["device"] == device and r["batch"] == batch)
            if pts:
                axes[0].plot(*zip(*pts), style, marker="o", color=colors[(impl, device)],
                             label=f"{impl} {device}, batch {batch}")
            if impl in TORCH_PEER:  # gpunn against PyTorch of the same kind
                field, label = "vs_torch", f"{impl} / {TORCH_PEER[impl]} {device}, batch {batch}"
            elif impl == "numpy":
                field, label = "gpunn_over_this", f"gpunn / numpy, batch {batch}"
            else:
                continue
            ratio = sorted((r["params"], r[field]) for r in rows
                           if r["impl"] == impl and r["device"] == device and r["batch"] == batch and r[field])
            if ratio:
                axes[1].plot(*zip(*ratio), style, marker="o", color=colors[(impl, device)], label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="parameters", ylabel="ms per training step (median)",
                title="Training step time")
    axes[1].axhline(1.0, color="gray", lw=0.8)
    axes[1].set(xscale="log", xlabel="parameters", ylabel="gpunn time / baseline time (below 1: gpunn faster)",
                title="gpunn relative to the baselines (same device)")
    if speedup_rows:
        for b_i, batch in enumerate(batches):
            for device in sorted({s["device"] for s in speedup_rows}):
                pts = sorted((s["params"], s["speedup"]) for s in speedup_rows
                             if s["batch"] == batch and s["device"] == device)
                if pts:
                    axes[2].plot(*zip(*pts), styles[b_i % len(styles)], marker="o",
                                 label=f"gpunn {device}, batch {batch}")
        axes[2].axhline(1.0, color="gray", lw=0.8)
        axes[2].set(xscale="log", yscale="log", xlabel="parameters", ylabel="gpunn CPU time / GPU time",
                    title="GPU speed-up over CPU (above 1: GPU wins)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
    with atomic_write(path) as f:
        fig.savefig(f, format=Path(path).suffix[1:] or "png", dpi=110)


# --- entry point ---------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_conditions(tf32, torch=None):
    """While the sweep runs: TF32 float32 products on CUDA for gpunn and PyTorch if `tf32`, and
    compile_step's fallback warning silenced (the row's note says it); restored afterwards."""
    precisions = gpunn.get_float32_matmul_precision(), torch and torch.get_float32_matmul_precision()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompileWarning)
            if tf32:
                gpunn.set_float32_matmul_precision("high")
                if torch is not None:
                    torch.set_float32_matmul_precision("high")
            yield
    finally:
        gpunn.set_float32_matmul_precision(precisions[0])
        if torch is not None:
            torch.set_float32_matmul_precision(precisions[1])


def main(args):
    """Run the sweep described by parsed `args`: 0 when gpunn ran on some device and every loss
    check passed, else 1 (after printing and writing what was timed)."""
    settings = _settings(args)
    devices, skipped = usable_devices(settings["devices"])
    notes = [f"skipping device {spec}: {reason}" for spec, reason in skipped.items()]
    torch = None
    if "torch" in settings["baselines"]:
        torch, note = import_torch()
        if note:
            notes.append(note)
    if args.threads is not None:
        limit_threads(args.threads, torch)
    if not devices:
        notes.append("no usable gpunn device: only the baselines run")
    if settings["tf32"] and not any(d.type == "cuda" for d in devices):
        notes.append("--tf32 changes nothing here: TF32 is only used by float32 products on CUDA devices")
    slow = slow_blas_settings()
    if slow:
        notes.append(f"{' '.join(f'{k}={v}' for k, v in slow.items())} is set: NumPy's OpenBLAS (gpunn's CPU "
                     f"backend and the NumPy baseline) may run far below its speed; for representative numbers run "
                     f"env {' '.join(f'-u {k}' for k in slow)} gpunn bench ...")
    machine = machine_info(devices, torch)
    load = (machine["load_average"] or [0.0])[0]
    if load >= 0.5 * machine["cpus_usable"]:
        notes.append(f"the CPUs are busy before the run (load average {load:.1f} on {machine['cpus_usable']} CPUs): "
                     "other processes will disturb the timings")
    for note in notes:
        print(f"note: {note}")
    out = Path(args.out or f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpunn bench: {settings['dtype']}{' with TF32 products on CUDA' if settings['tf32'] else ''}, "
          f"{len(settings['sizes'])} model(s) x {len(settings['batch_sizes'])} "
          f"batch size(s) on {', '.join(d.spec for d in devices) or 'no gpunn device'}; "
          f"{machine['cpus_usable']} CPU(s); median of {settings['repeats']} repeats; g/np: gpunn's time / NumPy's, "
          f"vs torch: / PyTorch's of the same kind, eager or graph (below 1: gpunn is faster)")
    print(TABLE_HEAD)
    rows, checks = [], []
    started = time.perf_counter()
    with bench_conditions(settings["tf32"], torch):
        for sizes in settings["sizes"]:
            for batch in settings["batch_sizes"]:
                config_rows, config_checks = run_configuration(settings, devices, torch, sizes, batch)
                rows += config_rows
                checks += config_checks
                for line in table_lines(config_rows):
                    print(line, flush=True)
                for r in config_rows:
                    if r["note"]:
                        print(f"note: {r['impl']} on {r['device']} {r['note']}")
                for c in config_checks:
                    if not c["ok"]:
                        print(f"WARNING: {c['impl']} on {c['device']}: loss at step {c['step']} is {c['loss']:.9g}, "
                              f"the {c['against']} gives {c['expected']:.9g} (same weights and batch; "
                              f"rtol {c['rtol']:g}{', TF32' if c['tf32'] else ''})")
    fast = speedups(rows)
    report = {
        "gpunn_bench": 1,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2),
        "machine": machine,
        "settings": settings,
        "notes": notes,
        "results": rows,
        "loss_checks": checks,
        "loss_checks_ok": all(c["ok"] for c in checks),
        "speedups": fast,
    }
    write_csv(rows, out / "bench.csv")
    write_json(report, out / "bench.json")
    if not args.no_plot:
        plot(rows, fast, out / "bench.png")
    checked = f"{sum(c['ok'] for c in checks)}/{len(checks)} loss checks passed"
    print(f"{checked}; wrote {out / 'bench.csv'}, bench.json{'' if args.no_plot else ', bench.png'}")
    eager_graphs = [r for r in rows if r["impl"] in EAGER_SIBLING and r["note"]]
    for r in eager_graphs:  # a graph contender that never replayed a graph was not what was asked for
        print(f"WARNING: {r['impl']} on {r['device']} ({r['model']} @{r['batch']}) {r['note']}")
    if not devices:  # a benchmark of gpunn that never ran gpunn must not pass for one that did
        reasons = "; ".join(f"{spec}: {reason}" for spec, reason in skipped.items())
        print(f"gpunn bench: error: gpunn was timed on no device, only the baselines were; {reasons}; "
              f"choose a usable device, e.g. --devices cpu", file=sys.stderr)
        return 1
    return 0 if report["loss_checks_ok"] and not eager_graphs else 1


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gpunn.cli.bench", description=__doc__.split("\n\n")[0])
    return add_arguments(parser)


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
