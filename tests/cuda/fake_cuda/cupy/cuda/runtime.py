"""cupy.cuda.runtime, faked."""

from .. import _fake
from .._fake import CUDARuntimeError  # noqa: F401


def getDeviceCount():  # noqa: N802 (CUDA's name)
    return _fake.DEVICE_COUNT


def runtimeGetVersion():  # noqa: N802
    return 13000


def driverGetVersion():  # noqa: N802
    return 13000


def getDeviceProperties(index):  # noqa: N802
    return {"name": b"Fake CUDA device (NumPy on the CPU)", "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0,
            "multiProcessorCount": 132}


def deviceSynchronize():  # noqa: N802
    _fake.sync_point("cudaDeviceSynchronize")


def getDevice():  # noqa: N802
    return _fake.current_device()


def setDevice(index):  # noqa: N802
    _fake.set_current_device(index)
