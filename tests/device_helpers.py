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
