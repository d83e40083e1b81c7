"""cupy.random, faked: NumPy's legacy global generator, results on emulated device memory."""
import numpy as _np

from ._submodule import fill as _fill

_fill(globals(), _np.random)
