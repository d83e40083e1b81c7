"""cupy.ElementwiseKernel and RawModule functions for the fake CuPy: the emulated kernels of
cuda_emulation, called with fake arrays, each call one launch (recorded while capturing)."""

import re
import types

import numpy as np

from cuda_emulation import EmulatedElementwise

from . import _fake

_DTYPE_NAMES = {"bool": np.bool_, "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
                "uint8": np.uint8, "uint32": np.uint32, "uint64": np.uint64, "float16": np.float16,
                "float32": np.float32, "float64": np.float64}
_CTYPES = {np.dtype(np.bool_): "bool", np.dtype(np.int8): "signed char", np.dtype(np.int16): "short",
           np.dtype(np.int32): "int", np.dtype(np.int64): "long long", np.dtype(np.uint8): "unsigned char",
           np.dtype(np.uint32): "unsigned int", np.dtype(np.uint64): "unsigned long long",
           np.dtype(np.float16): "half", np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _parameters(spec, is_const):
    """CuPy's parameter list syntax: "T x, float32 y, raw T z"."""
    params = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        words = words[1:] if raw else words
        if len(words) != 2 or not re.fullmatch(r"\w+", words[1]):
            raise ValueError(f"bad kernel parameter {part!r}")
        type_name, name = words
        dtype = _DTYPE_NAMES.get(type_name)
        params.append(types.SimpleNamespace(name=name, raw=raw, is_const=is_const, dtype=dtype,
                                            ctype=_CTYPES[np.dtype(dtype)] if dtype is not None else type_name))
    return params


class Kernel:
    """What cuda_emulation's EmulatedElementwise reads from a kernel (CuPy's own attribute names)."""

    def __init__(self, in_params, out_params, operation, name, preamble):
        self.in_params, self.out_params = _parameters(in_params, True), _parameters(out_params, False)
        self.operation, self.name, self.preamble = operation, name, preamble
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self._emulated = EmulatedElementwise(self)

    def _decide_params_type(self, in_dtypes, out_dtypes):
        """CuPy's rule: each placeholder type is bound by the arrays passed for it (all must agree);
        scalars take the bound type; outputs not passed take their placeholder's."""
        bound = {}
        for params, dtypes in ((self.in_params, in_dtypes), (self.out_params, out_dtypes)):
            for p, dt in zip(params, dtypes):
                if dt is None:
                    continue
                if p.dtype is not None:  # a fixed type takes arrays of exactly that type
                    if np.dtype(dt) != np.dtype(p.dtype):
                        raise TypeError(f"Type is mismatched. {self.name} {p.name} {dt} {np.dtype(p.dtype)}")
                elif bound.setdefault(p.ctype, np.dtype(dt)) != np.dtype(dt):
                    raise TypeError(f"Type is mismatched. {self.name} {p.name} {dt} {bound[p.ctype]}")
        def resolve(p):
            if p.dtype is not None:
                return np.dtype(p.dtype)
            if p.ctype not in bound:
                raise TypeError(f"Cannot determine the type {p.ctype} of {self.name}'s parameter {p.name}")
            return bound[p.ctype]
        in_types = tuple(resolve(p) for p in self.in_params)
        out_types = tuple(resolve(p) for p in self.out_params)
        return in_types, out_types, types.SimpleNamespace(_pairs=tuple(bound.items()))

    def __call__(self, *args):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"{self.name} takes {self.nin} or {self.nargs} arguments, got {len(args)}")
        raw = [_fake.unwrap(a) for a in args]
        ins, outs = raw[:self.nin], raw[self.nin:]
        arrays = [a for a in raw if isinstance(a, np.ndarray)]
        device = next((a._device for a in args if isinstance(a, _fake.ndarray)), None)
        _, out_types, _ = self._decide_params_type(
            tuple(a.dtype if isinstance(a, np.ndarray) else None for a in ins), tuple(o.dtype for o in outs))
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        fresh = [_fake.wrap(_fake.poisoned(shape, t), device) for t in out_types[len(outs):]]
        outs = outs + [f._a for f in fresh]
        _fake.launch(lambda: self._emulated(*ins, *outs), self.name)
        results = list(args[self.nin:]) + fresh
        return results[0] if self.nout == 1 else tuple(results)


class RawFunction:
    """A RawModule function: kernel(grid, block, args), fake arrays passed as device pointers."""

    def __init__(self, emulated):
        self.emulated = emulated

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        raw = tuple(_fake.unwrap(a) for a in args)
        if any(type(a) is np.ndarray for a in raw):
            raise TypeError("a NumPy array passed to a CUDA kernel: pass device arrays")
        _fake.launch(lambda: self.emulated(grid, block, raw, shared_mem=shared_mem), self.emulated.name, stream)


