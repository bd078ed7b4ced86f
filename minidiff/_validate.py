"""Input checks shared by every module: clear errors naming the argument and the allowed range."""
from __future__ import annotations

import contextlib
import numbers
import threading

from . import backend

__all__ = ["sigma_like", "check_array", "check_positive_int", "check_real", "check_float_dtype", "trusted_values",
           "values_trusted"]


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; TypeError for non-integers (bools included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def check_real(value, name: str) -> float:
    """``value`` as a finite Python float; TypeError for non-numbers (bools included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if value != value or abs(value) == float("inf"):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


def check_float_dtype(dtype, name: str = "dtype"):
    """Accept float32/float64 only (the two dtypes minidiff computes in)."""
    xp = backend.get_xp()
    try:
        dt = xp.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64; got {dtype!r}") from exc
    if dt not in (xp.dtype("float32"), xp.dtype("float64")):
        raise TypeError(f"{name} must be float32 or float64; got {dt}")
    return dt


def check_array(x, name: str, ndim=None, finite: bool = True):
    """Check that ``x`` is a floating array of the expected rank with finite values."""
    xp = backend.get_xp(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array (numpy or cupy); got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must have a floating dtype (float32 or float64); got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(f"{name} must have ndim in {allowed}; got shape {tuple(x.shape)}")
    if finite and not bool(xp.isfinite(x).all()):  # one host sync: input validation only
        raise ValueError(f"{name} contains NaN or inf")
    return x


def sigma_like(sigma, x, name: str = "sigma", allow_zero: bool = False):
    """Noise level(s) shaped to broadcast against ``x`` of shape (B, ...).

    ``sigma`` is a Python/NumPy scalar (one level for the whole batch) or an array of
    shape (B,) (one level per sample). Returns a Python float for a scalar, else an
    array of ``x.dtype`` with shape (B, 1, ..., 1). Values must be finite and > 0
    (>= 0 when ``allow_zero``).
    """
    xp = backend.get_xp(x)
    if isinstance(sigma, numbers.Real) or (hasattr(sigma, "ndim") and sigma.ndim == 0):
        s = float(sigma)
        if not (s == s and abs(s) != float("inf")) or s < 0 or (s == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be finite and {bound}; got {s}")
        return s
    if not hasattr(sigma, "shape"):
        raise TypeError(f"{name} must be a float or an array of shape (B,); got {type(sigma).__name__}")
    if sigma.ndim != 1 or sigma.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must be a float or have shape (B,) = ({x.shape[0]},); got shape {tuple(sigma.shape)}"
        )
    s = xp.asarray(sigma, dtype=x.dtype)
    bad = ~xp.isfinite(s) | (s < 0) if allow_zero else ~xp.isfinite(s) | (s <= 0)
    if not values_trusted() and bool(bad.any()):  # one host sync: input validation only
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"every {name} must be finite and {bound}")
    return s.reshape((x.shape[0],) + (1,) * (x.ndim - 1))  # (B,) -> (B, 1, ..., 1)


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
