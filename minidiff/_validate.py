"""Input checks shared by every module: one validator per kind of argument.

The contract (README, "Bad input"): a wrong argument raises ``TypeError`` (wrong kind: a bool or a
string where a number is meant, an int array where floats are meant, float16, complex) or
``ValueError`` (right kind, wrong value: NaN/inf, out of range, wrong shape), and the message names the
argument and what is allowed. Validators never modify their input; the ones that return an array
return the input itself or, for a big-endian array, a native-endian copy.

The families and their validators:

- real scalar ............ :func:`check_real` (bounds in the message; NumPy scalars of any real dtype)
- integer ................ :func:`check_int` / :func:`check_positive_int` (bools refused; huge values refused)
- float dtype ............ :func:`check_float_dtype` (float32/float64 only)
- finite float array ..... :func:`check_array` (float32/float64, rank/shape/last axis, optional ``like``)
- 1-D grid of numbers .... :func:`check_host_1d` (sigmas, betas, alpha_bars: host float64, bounds)
- noise level(s) ......... :func:`sigma_like` (a scalar or one per sample, finite and > 0)
- class labels ........... :func:`check_labels` (integer array (B,), within [0, num_classes))
- random generator ....... :func:`check_rng`
- one of a few names ..... :func:`check_choice`
- files .................. :func:`check_path_write`, :func:`check_path_read`
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading

from . import backend

__all__ = ["sigma_like", "check_array", "check_int", "check_positive_int", "check_real", "check_float_dtype",
           "check_labels", "check_rng", "check_choice", "check_callable", "check_bool", "check_path_write",
           "check_path_read", "check_host_1d", "MissingFileError", "trusted_values", "values_trusted"]

_host = backend.get_xp(backend.to_numpy(0.0))  # NumPy, reached through the backend module

# Range of noise levels accepted by sigma_like: sigma^2 and 1/sigma^2 stay finite and normal in float32.
SIGMA_MIN, SIGMA_MAX = 1e-15, 1e15
# Largest layer size accepted (widths, channels, heads, vocabulary, sequence length, depth): a
# 2**16 x 2**16 float32 weight is already 16 GB, and a larger request is a mistake, not a model.
MAX_SIZE = 2**16
# Largest integer argument accepted: beyond it int64 arithmetic (NumPy, CuPy) overflows.
INT_MAX = 2**62


class MissingFileError(FileNotFoundError, ValueError):
    """A file argument names a file that does not exist (both a FileNotFoundError and a ValueError,
    so the contract "bad input -> ValueError/TypeError" holds for it too)."""


def _range_text(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return "finite"
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_real(value, name: str, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite Python float within the optional bounds.

    Accepts Python ints/floats, NumPy/CuPy scalars and 0-d arrays of a real dtype (np.float32(0.01)
    included). TypeError for bools, strings, complex and anything else; ValueError for NaN, inf, values
    too large for a float, and values outside ``[low, high]`` (open ends with ``low_open``/``high_open``).
    """
    rng_text = _range_text(low, high, low_open, high_open)
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0 and value.dtype.kind in "iuf":
        value = value.item()  # NumPy/CuPy 0-d array or scalar of a real dtype -> Python number (host)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number ({rng_text}); got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite real number ({rng_text}); got a value too large for a float")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number ({rng_text}); got {v}")
    if low is not None and (v < low or (low_open and v == low)) or \
            high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {rng_text}; got {v:g}")
    return v


def check_int(value, name: str, minimum: int | None = 0, maximum: int | None = None) -> int:
    """``value`` as a Python int in ``[minimum, maximum]`` (``maximum`` defaults to 2**62).

    Accepts Python and NumPy integers; TypeError for bools, floats (even 3.0) and anything else.
    """
    hi = INT_MAX if maximum is None else maximum
    want = f"an integer in [{minimum}, {hi}]" if minimum is not None else f"an integer <= {hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {want}; got {type(value).__name__}")
    v = int(value)
    if (minimum is not None and v < minimum) or v > hi:
        raise ValueError(f"{name} must be {want}; got {v}")
    return v


def check_positive_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int >= ``minimum`` (1 by default; pass 0 for a non-negative int)."""
    return check_int(value, name, minimum=minimum, maximum=maximum)


def check_bool(value, name: str) -> bool:
    """A Python or NumPy bool (not 0/1, not a string)."""
    if type(value).__name__ not in ("bool", "bool_"):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__}")
    return bool(value)


def check_choice(value, name: str, choices) -> str:
    """``value`` as one of the strings ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}; got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_callable(value, name: str):
    """A callable (a denoiser, a model)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable; got {type(value).__name__}")
    return value


def check_float_dtype(dtype, name: str = "dtype"):
    """The dtype as ``xp.dtype``; float32/float64 only (float16 overflows above 65504, so the
    sigmas and squared norms minidiff computes turn into inf)."""
    xp = _host  # dtypes are NumPy dtypes on both backends: no need to touch (or import) CuPy
    if isinstance(dtype, bool) or dtype is None:
        raise TypeError(f"{name} must be float32 or float64; got {dtype!r}")
    try:
        dt = xp.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be float32 or float64; got {dtype!r}") from exc
    if dt == xp.dtype("float16"):
        raise TypeError(f"{name} float16 is not supported (it overflows above 65504); use float32 or float64")
    if dt not in (xp.dtype("float32"), xp.dtype("float64")):
        raise TypeError(f"{name} must be float32 or float64; got {dt}")
    return dt


def check_array(x, name: str, ndim=None, finite: bool = True, *, like=None, last=None, shape=None,
                min_size: int = 0):
    """``x`` as a float32/float64 array (NumPy or CuPy) of the expected rank and shape.

    - TypeError: not an array; an int, bool, complex, string, object or float16 array; a backend or
      dtype that differs from ``like`` (a parameter array).
    - ValueError: rank not in ``ndim``; last axis not ``last``; shape not ``shape`` (None entries are
      free); fewer than ``min_size`` elements; NaN/inf when ``finite`` (one host sync: set
      ``finite=False`` inside training loops).

    Big-endian float arrays are accepted and returned as a native-endian copy; otherwise ``x`` itself
    is returned (never modified).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or not hasattr(x, "ndim"):
        raise TypeError(f"{name} must be an array of float32/float64 (numpy or cupy); got {type(x).__name__}")
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must have dtype float32 or float64; got {x.dtype}")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))  # big-endian file data -> native copy
    if like is not None:
        if backend.is_cupy_array(x) != backend.is_cupy_array(like):
            where = "cupy" if backend.is_cupy_array(like) else "numpy"
            raise TypeError(f"{name} must be a {where} array like the parameters; got {type(x).__module__}")
        if x.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the parameters are {like.dtype}; "
                            "cast the input or build the module with a matching dtype")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = allowed[0] if len(allowed) == 1 else f"one of {allowed}"
            raise ValueError(f"{name} must have {want} dimensions; got shape {tuple(x.shape)}")
    if last is not None and (x.ndim == 0 or x.shape[-1] != last):
        raise ValueError(f"{name} must have last dimension {last}; got shape {tuple(x.shape)}")
    if shape is not None and (x.ndim != len(shape) or any(s is not None and s != k for s, k in zip(shape, x.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}; got {tuple(x.shape)}")
    if x.size < min_size:
        raise ValueError(f"{name} must hold at least {min_size} value(s); got shape {tuple(x.shape)}")
    if finite and x.size and not bool(backend.get_xp(x).isfinite(x).all()):  # one host sync: validation only
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_host_1d(values, name: str, low=None, high=None, *, low_open: bool = False, high_open: bool = False,
                  min_len: int = 1):
    """A 1-D grid of real numbers (list, NumPy or CuPy array) as a host float64 NumPy array with at least
    ``min_len`` entries, all finite and within the optional bounds. Lists may hold ints; arrays must
    be float32/float64 (bool, int, string, complex, object and float16 arrays are a TypeError). The input is not modified."""
    if isinstance(values, (str, bytes, numbers.Number)) or values is None:
        raise TypeError(f"{name} must be a 1-D array of real numbers; got {type(values).__name__}")
    try:
        host = backend.to_numpy(values)  # the one host copy of the grid (device -> host if CuPy)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D array of real numbers; got {type(values).__name__}") from exc
    # a list of Python ints is fine ([1, 2, 4]); an int array is refused like everywhere else
    allowed = "iuf" if isinstance(values, (list, tuple)) else "f"
    if host.dtype.kind not in allowed or host.dtype.itemsize < 4 and host.dtype.kind == "f":
        raise TypeError(f"{name} must hold real numbers (a float32/float64 array or a list); got dtype {host.dtype}")
    if host.ndim != 1 or host.shape[0] < min_len:
        raise ValueError(f"{name} must be 1-D with at least {min_len} entries; got shape {tuple(host.shape)}")
    host = host.astype("float64")  # a copy: callers may not change the user's array
    if not bool(backend.get_xp(host).isfinite(host).all()):
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = host.min(), host.max()
    if low is not None and (lo < low or (low_open and lo == low)) or \
            high is not None and (hi > high or (high_open and hi == high)):
        raise ValueError(f"{name} must be {_range_text(low, high, low_open, high_open)}; "
                         f"got min {lo:.6g}, max {hi:.6g}")
    return host


def sigma_like(sigma, x, name: str = "sigma", allow_zero: bool = False, low: float = None, high: float = None):
    """Noise level(s) shaped to broadcast against ``x`` of shape (B, ...).

    ``sigma`` is a real scalar (one level for the whole batch) or a real array of shape (B,) (one
    level per sample). Returns a Python float for a scalar, else an array of ``x.dtype`` with shape
    (B, 1, ..., 1). Values must lie in ``[low, high]`` (default ``[SIGMA_MIN, SIGMA_MAX]`` =
    [1e-15, 1e15]: sigma^2 and 1/sigma^2 stay finite and normal even in float32), or be 0 when
    ``allow_zero``. Bools, strings and complex values are a TypeError; NaN/inf a ValueError.
    """
    low = SIGMA_MIN if low is None else low
    high = SIGMA_MAX if high is None else high
    want = f"in [{low:g}, {high:g}]" + (" or 0" if allow_zero else "")
    if sigma is None or isinstance(sigma, (bool, numbers.Number, str)) or getattr(sigma, "ndim", None) == 0:
        s = check_real(sigma, name)
        if not (low <= s <= high or (allow_zero and s == 0.0)):
            raise ValueError(f"{name} must be {want}; got {s:g}")
        return s
    if not hasattr(sigma, "shape") or not hasattr(sigma, "dtype"):
        raise TypeError(f"{name} must be a float or an array of shape (B,); got {type(sigma).__name__}")
    if sigma.dtype.kind not in "iuf" or sigma.dtype == "float16":
        raise TypeError(f"{name} must hold real numbers (float32/float64); got dtype {sigma.dtype}")
    if getattr(x, "ndim", 0) < 1 or sigma.ndim != 1 or sigma.shape[0] != x.shape[0]:
        B = x.shape[0] if getattr(x, "ndim", 0) else "B"
        raise ValueError(f"{name} must be a float or have shape (B,) = ({B},); got shape {tuple(sigma.shape)}")
    if backend.is_cupy_array(sigma) != backend.is_cupy_array(x):
        raise TypeError(f"{name} must live on the same backend (numpy/cupy) as x")
    xp = backend.get_xp(x)
    s64 = xp.asarray(sigma, dtype="float64")  # bounds checked before the cast (1e300 -> float32 is inf)
    ok = (s64 >= low) & (s64 <= high)
    if allow_zero:
        ok |= s64 == 0
    if not values_trusted() and not bool(ok.all()):  # one host sync: validation only (NaN fails both)
        raise ValueError(f"every {name} must be {want}")
    s = xp.asarray(sigma, dtype=x.dtype)
    return s.reshape((x.shape[0],) + (1,) * (x.ndim - 1))  # (B,) -> (B, 1, ..., 1)


def check_labels(y, name: str, num_classes: int, batch: int | None = None, like=None, values: bool = True):
    """Class labels: an integer array of shape (B,) (B = ``batch`` when given) with values in
    ``[0, num_classes)``, on the same backend as ``like``. Checked before any indexing (CuPy wraps
    out-of-range indices silently). The range costs one host sync (min and max together); it is
    skipped with ``values=False`` (a caller that checks it later) or inside :func:`trusted_values`."""
    if not hasattr(y, "dtype") or not hasattr(y, "shape"):
        raise TypeError(f"{name} must be an integer array of shape (B,); got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array of shape (B,); got dtype {y.dtype}")
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        want = "(B,)" if batch is None else f"({batch},)"
        raise ValueError(f"{name} must have shape {want}; got {tuple(y.shape)}")
    if like is not None and backend.is_cupy_array(y) != backend.is_cupy_array(like):
        raise TypeError(f"{name} must live on the same backend (numpy/cupy) as the parameters")
    if values and y.size and not values_trusted():
        xp = backend.get_xp(y)
        lo, hi = (int(v) for v in backend.to_numpy(xp.stack([y.min(), y.max()])))  # one host sync
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes - 1}]; got range [{lo}, {hi}]")
    return y


def check_rng(rng, name: str = "rng", xp=None, allow_seed: bool = True):
    """A random Generator: an existing one (``minidiff.backend.default_rng``) is returned as is; with
    ``allow_seed``, None or an integer seed >= 0 makes a new one on ``xp`` (default backend). TypeError
    for anything else (bools, floats, strings)."""
    if all(callable(getattr(rng, m, None)) for m in ("standard_normal", "integers", "random")):
        # with ``xp``: a generator of the other backend is a TypeError, never a host/device mix
        return rng if xp is None else backend.default_rng(rng, xp=xp)
    if allow_seed and (rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool))):
        return backend.default_rng(None if rng is None else check_int(rng, name), xp=xp)
    what = "a Generator (minidiff.backend.default_rng(seed))" + (", an integer seed or None" if allow_seed else "")
    raise TypeError(f"{name} must be {what}; got {type(rng).__name__}")


def _as_path(path, name: str) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike); got {type(path).__name__}")
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"{name} must be a text path; got {type(p).__name__}")
    if not p or "\0" in p:
        raise ValueError(f"{name} must be a non-empty path without NUL characters; got {p!r}")
    return p


def check_path_write(path, name: str = "path", create_parent: bool = True) -> str:
    """A file path that can be written: not a directory; its parent folder exists (created when
    ``create_parent``) and is writable. Returns it as a str. Checked before any work is done."""
    p = _as_path(path, name)
    if os.path.isdir(p):
        raise ValueError(f"{name} {p!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        up = parent
        while up and not os.path.exists(up):
            up = os.path.dirname(up)
        if up and not os.path.isdir(up):
            raise ValueError(f"{name} {p!r} cannot be created: {up!r} is a file, not a folder")
        if not create_parent:
            raise ValueError(f"{name} {p!r}: folder {parent!r} does not exist")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{name} {p!r}: cannot create folder {parent!r} ({exc.strerror})") from exc
    if not os.access(parent, os.W_OK) or (os.path.exists(p) and not os.access(p, os.W_OK)):
        raise ValueError(f"{name} {p!r} is not writable")
    return p


def check_path_read(path, name: str = "path") -> str:
    """An existing, readable regular file. Returns it as a str; a missing file is a
    :class:`MissingFileError` (both FileNotFoundError and ValueError)."""
    p = _as_path(path, name)
    if not os.path.exists(p):
        raise MissingFileError(f"{name} {p!r} does not exist")
    if os.path.isdir(p):
        raise ValueError(f"{name} {p!r} is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{name} {p!r} is not readable")
    return p


# ----------------------------------------------------------------------------- trusted values
_trust = threading.local()


@contextlib.contextmanager
def trusted_values():
    """Inside this block, skip the value checks that cost a device -> host sync (finite, in range):
    for arrays that minidiff's own loops produced from inputs they checked once (the training
    step's sigmas and labels). Shape, dtype and backend checks still run. docs/backends.md §1."""
    previous = getattr(_trust, "on", False)
    _trust.on = True
    try:
        yield
    finally:
        _trust.on = previous


def values_trusted() -> bool:
    """True inside :func:`trusted_values`."""
    return getattr(_trust, "on", False)
