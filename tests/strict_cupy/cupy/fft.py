"""cupy.fft in the strict stand-in: NumPy's fft on device arrays, host arrays refused."""
import numpy as _np

from . import _device_function

_cache: dict = {}


def __getattr__(name):
    if name.startswith("_") or not callable(getattr(_np.fft, name, None)):
        raise AttributeError(f"module 'cupy.fft' has no attribute {name!r}")
    if name not in _cache:
        _cache[name] = _device_function(getattr(_np.fft, name), f"fft.{name}")
    return _cache[name]
