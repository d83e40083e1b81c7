"""What every example shares: its command line, and saving a figure where --out says.

Each example runs as `python examples/NAME.py [--device cpu|cuda|auto|strict] [--seed N]
[--out DIR] [--quick]`; --quick makes it small enough to finish in seconds (used by the tests).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to files only: the examples run headless
import matplotlib.pyplot as plt  # noqa: E402

import gpunn  # noqa: E402


def parse_args(doc, name, add_arguments=None):
    """Parse the shared flags (and any an example adds); seed gpunn; create the output folder.

    Returns the argparse namespace with `device` already a gpunn.Device and `out` a Path.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="gpunn device: cpu, cuda, cuda:N, auto, strict (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=Path(__file__).resolve().parent / "out" / name,
                        help=f"folder for the figures (default examples/out/{name})")
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in seconds")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    try:
        args.device = gpunn.device(args.device)
    except gpunn.DeviceError as exc:
        parser.error(str(exc))  # a usage message, not a traceback
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    gpunn.manual_seed(args.seed)
    return args


def save(fig, args, filename):
    """Write `fig` as a PNG into the --out folder and say where."""
    path = args.out / filename
    fig.savefig(path, dpi=80, bbox_inches="tight")  # small PNGs: they are committed
    plt.close(fig)
    print(f"wrote {path}")
    return path
