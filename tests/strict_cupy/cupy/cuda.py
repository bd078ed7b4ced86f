"""cupy.cuda in the strict stand-in: one pretend device; synchronising is counted as a sync."""
import time as _time
from types import SimpleNamespace as _NS

from . import _strict


def _device_count():
    return 1


def _properties(device=0):
    return {"name": b"strict CuPy stand-in (CPU)", "totalGlobalMem": 0, "multiProcessorCount": 1}


runtime = _NS(getDeviceCount=_device_count, getDeviceProperties=_properties, is_hip=False,
              runtimeGetVersion=lambda: 12000, deviceSynchronize=lambda: _strict.sync("deviceSynchronize"))


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError("cudaErrorInvalidDevice: the strict stand-in has one device (0)")

    def synchronize(self):
        _strict.sync("Device.synchronize")

    def use(self):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    def __init__(self, null=False, non_blocking=False):
        pass

    def synchronize(self):
        _strict.sync("Stream.synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)


def get_current_stream():
    return Stream.null


def get_device_id():
    return 0


class Event:
    """Records host wall time (the stand-in runs synchronously)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._t = None

    def record(self, stream=None):
        self._t = _time.perf_counter()

    def synchronize(self):
        _strict.sync("Event.synchronize")


def get_elapsed_time(start, end):
    """Milliseconds between two recorded events, as cupy.cuda.get_elapsed_time."""
    return (end._t - start._t) * 1e3
