"""cupy.cuda.stream, faked."""
from . import ExternalStream, Stream, get_current_stream  # noqa: F401
