"""cupy.lib.stride_tricks in the strict stand-in: ``as_strided`` and ``sliding_window_view`` return
device views of the same memory, as CuPy's do; host arrays are refused."""
import numpy as _np

from .. import _unwrap, _wrap


def as_strided(x, shape=None, strides=None):
    return _wrap(_np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape=shape, strides=strides))


def sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    return _wrap(_np.lib.stride_tricks.sliding_window_view(_unwrap(x, "sliding_window_view"), window_shape,
                                                          axis=axis, writeable=writeable))
