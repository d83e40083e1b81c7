"""cuBLAS for the fake CuPy: cuda_emulation's stand-in library, its products launched (so recorded
while capturing), put in place of gpunn.backends.cublas_gemm's libcublas when that module loads."""

import importlib.abc
import sys

from cuda_emulation import EmulatedCublas

from . import _fake

_MODULE = "gpunn.backends.cublas_gemm"


class LaunchedCublas(EmulatedCublas):
    def gemm(self, dtype, args):
        if not _fake.capturing():
            _fake.counted("cublas gemm")
            return super().gemm(dtype, args)

        handle = args[0].value if hasattr(args[0], "value") else args[0]
        bound = self.handles.get(handle, {}).get("stream")
        if bound != _fake._capture["stream"].ptr:
            raise _fake.CaptureError(f"cuBLAS gemm queued on stream {bound:#x} while stream "
                                     f"{_fake._capture['stream'].ptr:#x} captures: it would not be in the graph")

        def replay():
            status = EmulatedCublas.gemm(self, dtype, args)
            if status:
                raise RuntimeError(f"cuBLAS gemm failed in a graph replay (status {status})")
        _fake.launch(replay, "cublas gemm")
        return 0


class _InstallOnImport(importlib.abc.MetaPathFinder):
    """Finds gpunn.backends.cublas_gemm as the other finders do, then points its _library here."""

    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                load = spec.loader.exec_module

                def exec_module(module):
                    load(module)
                    module._library = LaunchedCublas
                spec.loader.exec_module = exec_module
                return spec
        return None


def install():
    if _MODULE in sys.modules:
        sys.modules[_MODULE]._library, sys.modules[_MODULE]._lib = LaunchedCublas, None
    elif not any(isinstance(f, _InstallOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport())
