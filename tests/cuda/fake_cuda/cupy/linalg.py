"""cupy.linalg, faked: NumPy's, on emulated device memory."""
import numpy as _np

from ._submodule import fill as _fill

_fill(globals(), _np.linalg)
