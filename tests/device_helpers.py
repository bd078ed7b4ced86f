"""Helpers that let one test run on either backend (the device under MINIDIFF_BACKEND=cupy).

``D`` copies host data to the default backend, ``H`` copies anything back to a host NumPy array, and
``assert_close`` / ``assert_equal`` are NumPy's testing asserts applied to host copies (NumPy's
asserts cannot read device arrays: CuPy refuses implicit conversion).
"""
import numpy as np

from minidiff import backend


def D(a, dtype=None):
    """Host data -> an array on the default backend (an explicit host -> device copy)."""
    return backend.asarray(a, dtype=dtype)


def H(a):
    """Any array (host or device), list or scalar -> a host NumPy array."""
    return backend.to_numpy(a)


def assert_close(actual, desired, **kw):
    np.testing.assert_allclose(H(actual), H(desired), **kw)


def assert_equal(actual, desired, **kw):
    np.testing.assert_array_equal(H(actual), H(desired), **kw)


def on_backend(f):
    """``f`` (code under test) run on the default backend, called from the host: host array arguments
    are copied in, array results copied out (dicts, tuples and floats pass through), so a test written
    with host references checks what the device computed."""
    def g(*args, **kwargs):
        args = [D(a) if isinstance(a, np.ndarray) else a for a in args]
        out = f(*args, **{k: D(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
        if isinstance(out, tuple):
            return tuple(H(o) if hasattr(o, "shape") else o for o in out)
        return H(out) if hasattr(out, "shape") else out
    return g


class OnBackend:
    """An object or module whose callables are wrapped with :func:`on_backend` (attributes as they are)."""

    def __init__(self, obj):
        self._obj = obj

    def __call__(self, *args, **kwargs):
        return on_backend(self._obj)(*args, **kwargs)

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        return on_backend(value) if callable(value) and not isinstance(value, type) else value
