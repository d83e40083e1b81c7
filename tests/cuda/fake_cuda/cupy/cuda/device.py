"""cupy.cuda.device, faked."""
from . import Device  # noqa: F401
