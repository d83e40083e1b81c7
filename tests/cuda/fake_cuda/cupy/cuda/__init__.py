"""cupy.cuda, faked: devices, streams, events, CUDA graphs (recorded launches) and memory pools."""

import contextlib
import itertools as _itertools

from .. import _fake
from . import runtime  # noqa: F401
from .runtime import CUDARuntimeError as _CUDARuntimeError

_stream_ids = _itertools.count(0x5000)


class Device:
    """A fake CUDA device: a context manager that makes it current (per thread), as CuPy's."""

    def __init__(self, device=None):
        if isinstance(device, Device):
            device = device.id
        self.id = _fake.current_device() if device is None else int(device)
        if not 0 <= self.id < _fake.DEVICE_COUNT:
            raise _CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._previous = []

    def __enter__(self):
        self._previous.append(_fake.current_device())
        _fake.set_current_device(self.id)
        return self

    def __exit__(self, *exc):
        _fake.set_current_device(self._previous.pop())

    def use(self):
        _fake.set_current_device(self.id)

    def synchronize(self):
        _fake.sync_point("Device.synchronize")

    @property
    def mem_info(self):
        return 78 * 2**30, 80 * 2**30

    @property
    def compute_capability(self):
        return "90"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("fake cuda device", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        pass  # launches run at once here: everything recorded is done

    done = property(lambda self: True)


class Graph:
    """A captured CUDA graph: the recorded launches, run in order by each launch() (a replay)."""

    def __init__(self, launches):
        self.launches = launches

    def upload(self, stream=None):
        pass

    def launch(self, stream=None):
        if _fake.capturing():
            raise _fake.CaptureError("a graph cannot be launched while a stream is capturing")
        for run in self.launches:
            run()


class Stream:
    """A fake stream: work runs at once, in order, unless the stream is capturing a graph."""

    def __init__(self, null=False, non_blocking=False, ptr=None):
        self.ptr = 0 if null else next(_stream_ids) if ptr is None else ptr
        self.device_id = _fake.current_device()
        self._captured = None

    def __enter__(self):
        _fake.stream_stack().append(self)
        return self

    def __exit__(self, *exc):
        _fake.stream_stack().pop()

    def use(self):
        stack = _fake.stream_stack()
        stack[:] = stack[:-1] + [self] if stack else [self]
        return self

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def synchronize(self):
        _fake.sync_point("Stream.synchronize")

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise _CUDARuntimeError("cudaErrorStreamCaptureUnsupported: the default stream cannot capture")
        if get_current_stream() is not self:
            raise RuntimeError("the fake CuPy captures only on the current stream; enter the stream first")
        self._captured = []
        self._capture = _fake.capture_into(self._captured, self)
        self._capture.__enter__()

    def is_capturing(self):
        return self._captured is not None

    def end_capture(self):
        if self._captured is None:
            raise _CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        self._capture.__exit__(None, None, None)
        graph, self._captured = Graph(self._captured), None
        return graph

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return hash(self.ptr)


class ExternalStream(Stream):
    def __init__(self, ptr, device_id=-1):
        super().__init__(ptr=ptr)


Stream.null = Stream(null=True)


def get_current_stream(device_id=None):
    stack = _fake.stream_stack()
    return stack[-1] if stack else Stream.null


class MemoryPool:
    def __init__(self, allocator=None):
        self.malloc = lambda nbytes: None

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass


@contextlib.contextmanager
def using_allocator(allocator=None):
    yield


def get_device_id():
    return _fake.current_device()


class memory:  # noqa: N801 (CuPy's module name)
    class OutOfMemoryError(MemoryError):
        pass

    MemoryPool = MemoryPool
