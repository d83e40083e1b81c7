"""The `gpunn` command: `gpunn train`, `gpunn info`, `gpunn bench`.

Errors never end in a traceback: every problem gpunn can name is printed as one line,
`gpunn: error: ...`, saying what to do. Exit status: 0 success, 1 a failure while running
(missing file, unusable device, damaged checkpoint), 2 a usage error (bad option or value),
130 stopped with Ctrl-C and 143 with SIGTERM (after saving a checkpoint to resume from).

`mpiexec -n N gpunn train ...` trains one model over N processes (gpunn.distributed): the launch is
detected, rank 0 alone prints and writes files, and any rank's error ends the whole job.
"""

import argparse
import datetime
import os
import platform
import signal
import sys
import warnings
from pathlib import Path

import gpunn
from gpunn import distributed as dist, threads
from gpunn.cli.common import (cpu_model, memory_bytes, non_negative_float, non_negative_int, numpy_build_blas,
                               positive_float, positive_int, thread_pools, version)
from gpunn.errors import GpunnError
from gpunn.cli.train import (ACTIVATIONS, CHECKPOINT, DATASETS, DEFAULT_LR, DTYPES, OPTIMIZERS, ConfigError, TrainConfig,
                         TrainingInterrupted, fit)

DEFAULTS = TrainConfig()
# the train options that are TrainConfig fields (the rest steer the command, not the run)
CONFIG_OPTIONS = ("dataset", "data_root", "download", "hidden", "activation", "optimizer", "lr", "momentum",
                  "weight_decay", "clip_norm", "epochs", "batch_size", "device", "seed", "restarts", "dtype",
                  "compile", "amp")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- option types of `gpunn train` (the shared ones are in gpunn.cli.common) ----------------------------


def momentum_value(text):
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def hidden_sizes(text):
    """'128,64' -> (128, 64); 'none' -> () (no hidden layer: softmax regression). An empty value is
    refused: it is more likely an unset shell variable than a request for no hidden layer."""
    if not text.strip():
        raise argparse.ArgumentTypeError("got an empty value; give widths such as 128,64, or 'none' for no hidden layer "
                                         "(softmax regression)")
    if text.strip().lower() == "none":
        return ()
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive layer widths such as 128,64, "
                                         f"got {text!r}")
    return tuple(int(p) for p in parts)


# --- the parser ----------------------------------------------------------------------------------------


def build_parser():
    parser = _Parser(prog="gpunn", description="gpunn: neural networks with backpropagation over the "
                                               "Python array API (NumPy on cpu, CuPy on cuda).")
    parser.add_argument("--version", action="version", version=f"gpunn {gpunn.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(commands)
    commands.add_parser("info", help="versions, BLAS and every device with its memory",
                        description="Print versions, the BLAS NumPy uses and every device gpunn can see.")
    _add_bench(commands)
    return parser


def _add_train(commands):
    d = DEFAULTS
    p = commands.add_parser(
        "train", help="train an MLP classifier (default: the digits set)",
        description="Train an MLP with softmax cross-entropy and report the held-out test loss and accuracy. "
                    "Writes config.json, metrics.csv, checkpoint.safetensors (after every epoch), "
                    "model.safetensors, summary.json and curves.png into --out. Ctrl-C saves a checkpoint "
                    "and prints how to resume.")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS,
                      help=f"the data set: the embedded 8x8 digits, MNIST / Fashion-MNIST from --data-root, "
                           f"or a synthetic 2-d set; digits and synthetic sets hold out a stratified "
                           f"{d.test_fraction * 100:.0f}%% test split (default: {d.dataset})")
    data.add_argument("--data-root", metavar="DIR",
                      help="folder holding the MNIST / Fashion-MNIST IDX files (needed by those data sets)")
    data.add_argument("--download", action="store_true", default=None,
                      help="fetch missing MNIST / Fashion-MNIST files into --data-root (needs the network)")
    model = p.add_argument_group("model")
    model.add_argument("--hidden", type=hidden_sizes, metavar="W1,W2,...",
                       help=f"hidden layer widths, comma-separated; 'none' for no hidden layer "
                            f"(default: {','.join(map(str, d.hidden))})")
    model.add_argument("--activation", choices=ACTIVATIONS, help=f"hidden-layer nonlinearity (default: {d.activation})")
    model.add_argument("--dtype", choices=DTYPES, help=f"floating-point type of weights and data (default: {d.dtype})")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help=f"update rule (default: {d.optimizer})")
    lrs = ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items())
    opt.add_argument("--lr", type=positive_float, help=f"learning rate, > 0 (default per optimizer: {lrs})")
    opt.add_argument("--momentum", type=momentum_value,
                     help="momentum in [0, 1), for sgd and rmsprop only (default: sgd 0.9, rmsprop 0)")
    opt.add_argument("--weight-decay", type=non_negative_float,
                     help="L2 penalty (decoupled for adamw), >= 0 (default: adamw 0.01, others 0)")
    opt.add_argument("--clip-norm", type=positive_float, metavar="MAX",
                     help="clip the gradients' total 2-norm to MAX before each step (default: no clipping)")
    opt.add_argument("--epochs", type=positive_int, help=f"passes over the training set (default: {d.epochs})")
    opt.add_argument("--batch-size", type=positive_int, help=f"samples per step (default: {d.batch_size})")
    opt.add_argument("--restarts", type=positive_int, metavar="N",
                     help="train N initializations (seeds SEED, SEED+1, ...) and keep the one with the lowest loss "
                          f"on a validation split ({d.val_fraction * 100:.0f}%% of the training set, carved out "
                          f"only when N > 1) (default: {d.restarts})")
    opt.add_argument("--seed", type=non_negative_int,
                     help=f"seed of the data split, initialization and shuffling (default: {d.seed})")
    run = p.add_argument_group("run")
    run.add_argument("--device", help=f"auto, cpu, cuda, cuda:N (also strict, strict:1 for testing) "
                                      f"(default: {d.device}: the first usable GPU, else cpu)")
    run.add_argument("--out", metavar="DIR",
                     help="folder for the run's files (default: runs/<date-time>). It must be new or hold no "
                          "earlier run's files; other files in it are left alone. To continue a run, use --resume")
    run.add_argument("--resume", metavar="CHECKPOINT",
                     help=f"continue the run that wrote CHECKPOINT (its {CHECKPOINT}, or its folder) with its saved "
                          "settings, in its folder; only --device, --data-root, --download and (single runs) "
                          "--epochs may differ")
    run.add_argument("--compile", action="store_true", default=None,
                     help="on CUDA, record each training step into a CUDA graph and replay it with one launch "
                          "(gpunn.compile_step; the default on CUDA); elsewhere the steps run as usual, with a note")
    run.add_argument("--no-compile", dest="compile", action="store_false",
                     help="run every step eagerly, also on CUDA")
    opt.add_argument("--amp", action="store_true", default=None,
                     help="mixed precision: float16 matrix products (gpunn.autocast) with dynamic loss scaling "
                          "(gpunn.amp.GradScaler); float32 weights")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (the bar goes to stderr, and only when stderr is a terminal)")
    run.add_argument("--threads", type=positive_int, metavar="N",
                     help="BLAS threads per process on the cpu (default: 1, never much slower than the best for "
                          "small models, and safe on a busy machine; more can help a large model on idle cores). "
                          "Under mpiexec each rank takes at most its share of the machine's cores")
    run.add_argument("--distributed", action="store_true",
                     help="train over the processes mpiexec started (detected without this flag): the global "
                          "batch --batch-size is split over the ranks; with --restarts, restart k runs on rank k mod N")
    run.add_argument("--dist-timeout", type=positive_float, metavar="SECONDS", default=1800.0,
                     help="under mpiexec, a collective that waits longer than this ends the job (default: 1800)")


def _add_bench(commands):
    try:
        from gpunn.cli import bench
    except ImportError as exc:
        p = commands.add_parser("bench", help="time training steps (not available in this installation)")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(bench_missing=str(exc))
        return
    p = commands.add_parser("bench", help="time whole training steps on each device against NumPy and PyTorch",
                            description=(bench.__doc__ or "").strip().splitlines()[0])
    bench.add_arguments(p)


# --- commands ------------------------------------------------------------------------------------------


def main(argv=None):
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit status."""
    if hasattr(signal, "SIGPIPE") and argv is None:  # `gpunn info | head` ends quietly, like other tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("choose a command: train, info or bench")
        if args.command == "train":
            if args.distributed or dist.launched() > 1:
                dist.init_process_group(timeout=args.dist_timeout)
            return _train(args)
        if args.command == "info":
            return _info()
        return _bench(args)
    except ConfigError as exc:
        return _fail(exc, 2)
    except (GpunnError, ValueError, OSError) as exc:
        return _fail(exc, 1)
    except MemoryError as exc:
        return _fail(f"out of memory ({exc or 'no details'}); try a smaller --batch-size or --hidden", 1)
    except KeyboardInterrupt:  # Ctrl-C before training began (while importing or loading): no traceback
        print("gpunn: interrupted", file=sys.stderr)
        return 130


_show_warning = warnings.showwarning


def _note(message, category, filename, lineno, file=None, line=None):
    """compile_step's fallback and the device 'auto' picked, during `gpunn train`, as one line each,
    `gpunn: note: ...`; other warnings as Python shows them."""
    from gpunn.compile import CompileWarning
    from gpunn.device import DeviceWarning

    if issubclass(category, (CompileWarning, DeviceWarning)):
        if not dist.is_initialized() or dist.get_rank() == 0:  # once per job, not once per rank
            print(f"gpunn: note: {message}", file=sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def _fail(exc, status):
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.abort(message, status)  # the other ranks would wait for this one in their next collective
    print(f"gpunn: error: {message}", file=sys.stderr)
    return status


def _train(args):
    distributed = dist.is_initialized()
    lead = not distributed or dist.get_rank() == 0  # the process that prints
    local_ranks = dist.get_local_world_size() if distributed else 1
    threads.set_num_threads(min(args.threads or 1, threads.share(local_ranks)))
    given = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    options = {"progress": not args.no_progress, "handle_sigint": True, "distributed": distributed}
    made = None  # the default folder this run created, removed again if the run ends before writing into it
    if args.resume is not None:
        checkpoint = Path(args.resume)
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        run = lambda: fit(given, out=args.out, resume=args.resume, **options)  # noqa: E731
    else:
        folder = Path(args.out) if args.out is not None else None
        if folder is None:
            made = folder = _fresh_folder() if lead else None
            if distributed:
                folder = Path(dist.broadcast_object(str(folder) if lead else None))
        run = lambda: fit(TrainConfig(**given), out=folder, **options)  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _note  # compile_step's fallback and device 'auto' are news, not tracebacks
            summary = run()
    except TrainingInterrupted as stop:
        return _interrupted(stop.checkpoint, stop.signum, lead)
    except KeyboardInterrupt:  # a second Ctrl-C: the last end-of-epoch checkpoint, if any, is intact
        return _interrupted(folder / CHECKPOINT if (folder / CHECKPOINT).is_file() else None, None, lead)
    finally:
        if made is not None and made.is_dir() and not any(made.iterdir()):
            made.rmdir()
    if lead:
        _print_summary(summary)
    return 0


def _fresh_folder():
    """A new runs/<date-time> folder, created atomically: runs started in the same second (a sweep
    launched with &) each get their own (-1, -2, ... appended), never a shared one."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = Path("runs") / stamp, 1
    Path("runs").mkdir(exist_ok=True)
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            folder, n = Path("runs") / f"{stamp}-{n}", n + 1


def _interrupted(checkpoint, signum, lead=True):
    """Exit status 130 after Ctrl-C, 143 after SIGTERM (128 + the signal, as shells report it)."""
    if lead and checkpoint is None:
        print("gpunn: interrupted before the first checkpoint was written; nothing to resume", file=sys.stderr)
    elif lead:
        print(f"gpunn: interrupted; resume with: gpunn train --resume {checkpoint}", file=sys.stderr)
    return 128 + (signum or signal.SIGINT)


def _print_summary(s):
    if len(s["restarts"]) > 1:
        print("restart  seed  val_loss  val_acc  test_loss  test_acc")
        for r in s["restarts"]:
            mark = "*" if r["restart"] == s["best_restart"] else " "
            print(f"{r['restart']:>6}{mark} {r['seed']:>5}  {r['val_loss']:8.4f}  {r['val_accuracy']:7.4f}  "
                  f"{r['test_loss']:9.4f}  {r['test_accuracy']:8.4f}")
        print(f"kept restart {s['best_restart']} (lowest validation loss)")
    print(f"device {s['device']} | {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''} | {s['seconds']:.1f} s | train loss {s['train_loss']:.4f} | "
          f"test loss {s['test_loss']:.4f} | test accuracy {s['test_accuracy']:.4f}")
    if "out" in s:
        print(f"files in {s['out']}")


def _bench(args):
    missing = getattr(args, "bench_missing", None)
    if missing is not None:
        print(f"gpunn: error: gpunn bench is not available in this installation ({missing})", file=sys.stderr)
        return 1
    from gpunn.cli import bench

    return bench.main(args)


# --- gpunn info ------------------------------------------------------------------------------------------


def _info():
    print(f"gpunn {gpunn.__version__} (Python {platform.python_version()}, {platform.platform()})")
    print("packages: " + ", ".join(f"{name} {_version(name)}" for name in
                                   ("numpy", "array-api-compat", "array-api-strict", "tqdm", "matplotlib",
                                    "torch")))
    cupy = next((f"{name} {version(name)}" for name in ("cupy-cuda12x", "cupy-cuda13x", "cupy") if version(name)),
                "not installed")
    print(f"cupy: {cupy}")
    print(f"BLAS: {_blas()}")
    print(f"threads: {gpunn.get_num_threads()} BLAS threads now; gpunn train uses 1 per process unless --threads N "
          f"(this process may run on {threads.cores()} cores)")
    print(f"distributed: {'mpi4py importable' if dist.is_available() else 'mpi4py not installed'}"
          f"{'' if dist.nccl_version() is None else f', NCCL {dist.nccl_version()}'}"
          " (mpiexec -n N gpunn train ...)")
    print("devices:")
    print(f"  cpu       {_cpu()}")
    reason = gpunn.cuda.why_unavailable()
    if reason is None:
        for i in range(gpunn.cuda.device_count()):
            print(f"  cuda:{i:<4} {gpunn.device(f'cuda:{i}').describe()}")
    else:
        print(f"  cuda      unavailable: {reason}")
    for spec in ("strict", "strict:1"):
        try:
            print(f"  {spec:<9} {gpunn.device(spec).describe()} (a test device)")
        except GpunnError as exc:
            print(f"  {spec:<9} unavailable: {exc}")
    return 0


def _version(dist):
    return version(dist) or "not installed"


def _blas():
    """The BLAS NumPy calls: threadpoolctl's view of the loaded library, else NumPy's build record."""
    found = [i for i in thread_pools() or () if i.get("user_api") == "blas"]
    if found:
        return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
                         f"{i.get('threading_layer', '?')} threading) {i.get('filepath')}" for i in found)
    blas = numpy_build_blas()
    if isinstance(blas, dict) and "blas" in blas:
        return f"{blas['blas'].get('name')} {blas['blas'].get('version')} (NumPy build configuration)"
    return "unknown (run python -c 'import numpy; numpy.show_config()')"


def _cpu():
    memory = memory_bytes()
    size = f", {memory / 2**30:.1f} GiB memory" if memory else ""
    return f"{cpu_model()}, {os.cpu_count()} logical cores{size}; {gpunn.device('cpu').describe()}"


if __name__ == "__main__":
    sys.exit(main())
