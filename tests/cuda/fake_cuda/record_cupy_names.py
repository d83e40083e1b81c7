"""Print the public names of real CuPy's modules that the fake CuPy imitates (cupy_names.txt).

    python -P tests/cuda/fake_cuda/record_cupy_names.py > tests/cuda/fake_cuda/cupy_names.txt

Run with real CuPy installed (a GPU is not needed); -P keeps this folder, the fake, off the path.
"""

import importlib
import platform

import cupy

# the fake's modules; cupy_backends.cuda.libs.cublas is left out: it needs libcublas to import
MODULES = ("cupy", "cupy.cuda", "cupy.cuda.device", "cupy.cuda.runtime", "cupy.cuda.stream", "cupy.fft",
           "cupy.linalg", "cupy.random", "cupy._core", "cupy._core._routines_linalg", "cupyx")

if "fake" in cupy.__version__:
    raise SystemExit("this is the fake CuPy: run with real CuPy, without tests/cuda/fake_cuda on the path")
print(f"""# The public names of real CuPy that the fake CuPy (tests/cuda/fake_cuda) may expose: one line per name,
# "module name". The fake exposes nothing else (tests/cuda/test_fake_cuda.py checks it, and
# tests/cuda/test_cupy_contract.py checks this list against real CuPy on a GPU machine).
# Recorded from CuPy {cupy.__version__} (Python {platform.python_version()}) by record_cupy_names.py; CuPy
# imports without a GPU. cupy_backends.cuda.libs.cublas needs libcublas to import: the fake's exposes no name.""")
for name in MODULES:
    module = importlib.import_module(name)
    for attr in sorted(dir(module)):
        if not attr.startswith("_"):
            print(name, attr)
