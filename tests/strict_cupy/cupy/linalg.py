"""cupy.linalg in the strict stand-in: NumPy's linalg on device arrays, host arrays refused."""
import numpy as _np

from . import _device_function

_cache: dict = {}


def __getattr__(name):
    if name.startswith("_") or not callable(getattr(_np.linalg, name, None)) or isinstance(
            getattr(_np.linalg, name), type):
        raise AttributeError(f"module 'cupy.linalg' has no attribute {name!r}")
    if name not in _cache:
        _cache[name] = _device_function(getattr(_np.linalg, name), f"linalg.{name}")
    return _cache[name]
