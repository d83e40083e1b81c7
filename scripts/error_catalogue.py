"""The catalogue of bad inputs and the errors gpunn answers them with.

Each entry triggers the fault for real. `python scripts/error_catalogue.py` prints the catalogue
as Markdown (docs/errors.md is made this way), and tests/docs/test_error_catalogue.py checks every
entry raises its documented type with a message naming what is wrong.
"""

import os
import pickle
import re
import sys
import tempfile

import numpy as np

import gpunn
from gpunn import functional as F, nn, optim
from gpunn.data import DataLoader


def _pickle_file():
    path = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
    with open(path, "wb") as f:
        pickle.dump({"w": np.ones(3)}, f)
    return gpunn.load(path)


def _truncated_checkpoint():
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "model.safetensors")
    gpunn.save(nn.Linear(4, 2).state_dict(), path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5)
    return gpunn.load(path)


def _second_backward():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()


def _inplace_in_graph():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    x += 1


def _nonfinite_grad():
    w = nn.Parameter(gpunn.tensor([1.0, 2.0]))
    w.grad = gpunn.tensor([float("inf"), 0.0])
    nn.utils.clip_grad_norm_([w], 1.0, error_if_nonfinite=True)


def _anomaly():
    x = gpunn.tensor([0.0, 1.0], requires_grad=True)
    with gpunn.detect_anomaly(), np.errstate(all="ignore"):
        (x.sqrt() * 0).sum().backward()


def _fused_on_strict():
    model = nn.Linear(2, 2).to("strict")
    opt = optim.SGD(model.parameters(), lr=0.1, fused=True)
    model(gpunn.ones(1, 2, device="strict")).sum().backward()
    opt.step()




def _mixed_devices():
    return gpunn.ones(3) + gpunn.ones(3, device="strict:1")


# --- issue 17: data, saving and consistency -------------------------------------------------------


def _model_moved_after_steps():
    model = nn.Linear(2, 2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(gpunn.ones(1, 2)).sum().backward()
    opt.step()
    model.to("strict")
    model(gpunn.ones(1, 2, device="strict")).sum().backward()
    opt.step()


def _other_optimizer_state():
    model = nn.Linear(2, 2)
    adam = optim.Adam(model.parameters())
    model(gpunn.ones(1, 2)).sum().backward()
    adam.step()
    optim.SGD(model.parameters(), lr=0.1).load_state_dict(adam.state_dict())


def _full_disk():
    from gpunn import safetensors_format

    def write(fileobj, chunks):
        raise OSError(28, os.strerror(28))

    real, safetensors_format._write_bytes = safetensors_format._write_bytes, write
    try:
        gpunn.save({"w": gpunn.ones(2)}, os.path.join(tempfile.mkdtemp(), "checkpoint.safetensors"))
    finally:
        safetensors_format._write_bytes = real


def _folder_as_file():
    folder = os.path.join(tempfile.mkdtemp(), "weights")
    os.mkdir(folder)
    gpunn.save({"w": gpunn.ones(2)}, folder)


def _hostile_structure():
    from gpunn import safetensors_format

    path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
    safetensors_format.save_file({}, path, {"gpunn.format": "gpunn.object/1",
                                            "gpunn.object": '{"__scalar__": ["V1000000000000", 5]}'})
    gpunn.load(path)


class _Squares(gpunn.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return gpunn.tensor([float(i)]), i


# name, what triggers it, documented exception type, phrases the message must contain
def _scaler_stepped_twice():
    w = gpunn.ones(2, requires_grad=True)
    opt, scaler = optim.SGD([w], lr=0.1), gpunn.amp.GradScaler()
    scaler.scale(w.sum()).backward()
    scaler.step(opt)
    scaler.step(opt)


CATALOGUE = [
    ("matrix product shapes", lambda: gpunn.ones(2, 3) @ gpunn.ones(4, 5), gpunn.ShapeError, ["matmul", "(2, 3)", "(4, 5)"]),
    ("broadcast shapes", lambda: gpunn.ones(2, 3) + gpunn.ones(4), gpunn.ShapeError, ["add", "(2, 3)", "(4,)"]),
    ("Linear input width", lambda: nn.Linear(3, 2)(gpunn.ones(5, 4)), gpunn.ShapeError, ["linear", "in_features"]),
    ("MLP input width", lambda: nn.MLP([3, 8, 2])(gpunn.ones(5, 4)), gpunn.ShapeError, ["Linear (fused with ReLU)", "in_features = 3"]),
    ("integer tensor where floats are needed", lambda: gpunn.tensor([1, 2]).exp(), gpunn.DTypeError, ["exp", "int64", ".float()"]),
    ("integer batch into a float model", lambda: nn.Linear(2, 2)(gpunn.tensor([[1, 2]])), gpunn.DTypeError, ["linear", "int64"]),
    ("float64 batch into a float32 model", lambda: nn.MLP([2, 4, 2])(gpunn.tensor(np.ones((3, 2)))), gpunn.DTypeError, ["Linear (fused with ReLU)", "float64", "x.float()", "DataLoader(..., dtype='float32')"]),
    ("gradient on a boolean tensor", lambda: gpunn.tensor([True], requires_grad=True), gpunn.DTypeError, ["floating-point", "bool"]),
    ("class label out of range", lambda: F.cross_entropy(gpunn.zeros(2, 3), gpunn.tensor([0, 3])), ValueError, ["cross_entropy", "[0, 3)", "3"]),
    ("float class labels", lambda: F.cross_entropy(gpunn.zeros(2, 3), gpunn.tensor([0.0, 1.0])), gpunn.DTypeError, ["integer", ".long()"]),
    ("empty batch", lambda: F.cross_entropy(gpunn.zeros(0, 3), gpunn.tensor(np.zeros(0, np.int64))), gpunn.ShapeError, ["empty batch"]),
    ("empty data set", lambda: DataLoader(np.zeros((0, 2)), np.zeros(0)), gpunn.ShapeError, ["empty"]),
    ("NaN in a data set", lambda: DataLoader(np.array([[0.0, 1.0], [np.nan, 2.0]]), check_finite=True), ValueError, ["row 1", "column 0"]),
    ("state dict from another architecture", lambda: nn.MLP([4, 8, 2]).load_state_dict(nn.MLP([4, 8, 8, 2]).state_dict()), ValueError, ["unexpected", "4.weight"]),
    ("state dict with a wrong shape", lambda: nn.Linear(4, 2).load_state_dict(nn.Linear(4, 3).state_dict()), gpunn.ShapeError, ["weight", "(3, 4)", "(2, 4)"]),
    ("optimizer given a non-leaf tensor", lambda: optim.SGD([gpunn.ones(3, requires_grad=True) * 2], lr=0.1), ValueError, ["leaf"]),
    ("unknown device", lambda: gpunn.device("tpu:0"), gpunn.DeviceError, ["tpu:0", "'cpu'"]),
    ("CUDA where it cannot work", lambda: gpunn.device("cuda:7"), gpunn.DeviceError, ["cuda:7", "cpu"]),
    ("fused optimizer on a device without views", _fused_on_strict, ValueError, ["fused=True", "strict", "fused=None"]),
    ("tensors on two devices", _mixed_devices, gpunn.DeviceError, ["add", "cpu", "strict:1", ".to("]),
    ("second backward through a freed graph", _second_backward, gpunn.GraphError, ["second time", "retain_graph=True"]),
    ("backward without any gradient", lambda: gpunn.ones(2).sum().backward(), gpunn.GraphError, ["requires_grad"]),
    ("in-place edit of a tensor in the graph", _inplace_in_graph, gpunn.GraphError, ["no_grad"]),
    ("non-finite gradients when clipping", _nonfinite_grad, FloatingPointError, ["inf"]),
    ("NaN made in backward (anomaly mode)", _anomaly, gpunn.AnomalyError, ["sqrt", "error_catalogue.py"]),
    ("a pickle where safetensors are expected", _pickle_file, ValueError, ["pickle"]),
    ("a truncated checkpoint", _truncated_checkpoint, ValueError, ["model.safetensors"]),
    # issue 17: data, saving and consistency
    ("model moved after its optimizer took steps", _model_moved_after_steps, gpunn.DeviceError,
     ["SGD", "strict", "cpu", "optimizer.load_state_dict(optimizer.state_dict())"]),
    ("optimizer state of another optimizer type", _other_optimizer_state, TypeError, ["SGD", "Adam", "betas"]),
    ("saving onto a full disk", _full_disk, OSError, ["checkpoint.safetensors", "No space left on device"]),
    ("a folder given as the file to save", _folder_as_file, OSError, ["is a folder", "model.safetensors"]),
    ("a damaged saved structure", _hostile_structure, ValueError, ["damaged", "NumPy scalar"]),
    ("DataLoader option gpunn lacks", lambda: DataLoader(_Squares(), sampler=[0, 1]), ValueError,
     ["sampler=", "shuffle=True"]),
    ("worker processes for a dataset", lambda: DataLoader(_Squares(), num_workers=4), ValueError,
     ["num_workers=4", "num_workers=0"]),
    ("argmax of an empty tensor", lambda: gpunn.zeros(0).argmax(), IndexError, ["argmax", "empty"]),
    ("random tensor of an impossible shape", lambda: gpunn.randn(10**6, 10**6), gpunn.OutOfMemoryError,
     ["randn", "(1000000, 1000000)"]),
    # issue 19: mixed precision
    ("autocast on a device without float16", lambda: gpunn.autocast("strict").__enter__(), gpunn.DTypeError,
     ["array-api-strict", "float16"]),
    ("autocast to a dtype the backend lacks", lambda: gpunn.autocast("cpu", dtype=gpunn.bfloat16).__enter__(),
     gpunn.DTypeError, ["NumPy", "bfloat16", "float16"]),
    ("GradScaler.step twice in one iteration", _scaler_stepped_twice, RuntimeError, ["step()", "update()"]),
]


def run(entry):
    """The exception an entry raises (None if it raised nothing)."""
    _, trigger, _, _ = entry
    try:
        trigger()
    except Exception as exc:  # the catalogue's point is to catch them all
        return exc
    return None


def markdown():
    lines = ["# Errors: what gpunn says when the input is wrong", "",
             "Every error derives from `gpunn.GpunnError` (except a few plain `ValueError`s for bad arguments) and from the",
             "built-in type a Python user would catch. Each message names what is wrong and, where there is one,",
             "the fix. The examples below are produced by `python scripts/error_catalogue.py`, which triggers each",
             "fault for real; `tests/docs/test_error_catalogue.py` keeps them true.", "",
             "An out-of-memory error in an op, a creation function or a backward rule is re-raised as",
             "`gpunn.OutOfMemoryError` (a `MemoryError`) naming the op, the size or shapes, and a hint",
             "(\"use a smaller batch or model\"); the memory pool stays usable for a smaller retry (checked by",
             "the `gpu` tests). Allocations inside the DataLoader and the optimizers are not converted yet.", "",
             "| fault | exception | example message |", "|---|---|---|"]
    for entry in CATALOGUE:
        exc = run(entry)
        text = str(exc).replace("|", "\\|").replace("\n", " ")
        text = re.sub(r"/tmp/[^/ ]+/", "/tmp/.../", text).replace(os.getcwd() + os.sep, "")
        lines.append(f"| {entry[0]} | `{type(exc).__name__}` | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
