"""array-api-strict: a backend that accepts only the standard, with two devices.

It runs the whole suite to prove the generic code uses nothing outside the array API, and its
second device ("strict:1") exercises every rule about data living on one device.
"""

import numpy as np
import array_api_strict as xp

from . import Backend


class StrictBackend(Backend):
    name = "strict"
    xp = xp
    fast_paths = {}
    chain_layers = True  # nn.Sequential runs consecutive Linear layers as one node (ops.linear_chain)

    def native_device(self, index):
        if index not in (0, 1):
            raise ValueError(f"the strict backend has devices strict and strict:1, not strict:{index}")
        return xp.Device("CPU_DEVICE") if index == 0 else xp.Device("device1")

    def device_count(self):
        return 2

    def to_host(self, array):
        return np.array(np.from_dlpack(array), copy=True)

    def from_host(self, host, native):
        # a copy, as a real transfer makes (an alias would let in-place updates leak across devices);
        # np.ascontiguousarray would turn 0-d into 1-d
        return xp.asarray(np.array(host, order="C", copy=True), device=native)

    def synchronize(self, native):
        pass

    def shares_memory(self, a, b):
        # array-api-strict's arrays hold NumPy arrays, and its views share their memory (the
        # standard leaves aliasing unspecified; this backend's behaviour is NumPy's)
        return np.may_share_memory(a._array, b._array)

    def describe(self, native):
        return f"array-api-strict {xp.__version__} ({native})"


BACKEND = StrictBackend()
