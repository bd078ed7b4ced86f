"""Array-backend switch: the same code runs on NumPy (CPU) or CuPy (GPU).

Every module that must run on both backends gets its array module here, never by
``import numpy`` directly::

    from minidiff import backend
    xp = backend.get_xp(x)          # module of x (numpy or cupy), or the default
    z = xp.exp(-x)

The default backend is read once from the environment variable ``MINIDIFF_BACKEND``
(``numpy`` or ``cupy``; unset means ``numpy``) and can be changed with
:func:`set_backend` or temporarily with the :func:`use_backend` context manager.

Host/device crossings are explicit: :func:`to_numpy` copies to the host (plotting,
saving, printing), :func:`asarray` copies to the current default backend.
"""
from __future__ import annotations

import contextlib
import os
import threading
from types import ModuleType

import numpy  # the host backend itself; the only module allowed to import it freely

__all__ = [
    "BACKENDS",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_xp",
    "is_cupy_array",
    "to_numpy",
    "asarray",
    "default_rng",
    "rng_xp",
    "cupy_available",
]

BACKENDS = ("numpy", "cupy")

_state = threading.local()
_cupy: ModuleType | None = None
_cupy_error: str | None = None


def _load_cupy() -> ModuleType:
    """Import CuPy and check that a GPU is visible; raise a clear error otherwise."""
    global _cupy, _cupy_error
    if _cupy is not None:
        return _cupy
    if _cupy_error is None:
        try:
            import cupy  # noqa: F401  (optional dependency)
        except Exception as exc:  # ImportError, or a broken CUDA install
            _cupy_error = (
                "the 'cupy' backend needs CuPy, which is not importable "
                f"({type(exc).__name__}: {exc}). Install it with "
                "`pip install -e \".[gpu]\"` (cupy-cuda12x) on a machine with an NVIDIA GPU."
            )
        else:
            try:
                n = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:
                n, why = 0, f"{type(exc).__name__}: {exc}"
            else:
                why = "no device reported"
            if n < 1:
                _cupy_error = (
                    f"the 'cupy' backend needs a visible CUDA GPU, but none was found ({why}). "
                    "Use MINIDIFF_BACKEND=numpy on this machine."
                )
            else:
                _cupy = cupy
                return cupy
    raise RuntimeError(_cupy_error)


def cupy_available() -> bool:
    """True when CuPy imports and at least one GPU is visible (never raises)."""
    try:
        _load_cupy()
    except RuntimeError:
        return False
    return True


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, one of {BACKENDS}; got {type(name).__name__}")
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {name!r}")
    return name


def _module(name: str) -> ModuleType:
    return numpy if name == "numpy" else _load_cupy()


def get_backend() -> str:
    """Name of the current default backend ('numpy' or 'cupy')."""
    name = getattr(_state, "name", None)
    if name is None:
        name = _check_name(os.environ.get("MINIDIFF_BACKEND", "numpy") or "numpy")
        _state.name = name
    return name


def set_backend(name: str) -> None:
    """Set the default backend for this thread. Raises if cupy is asked for but unusable."""
    name = _check_name(name)
    _module(name)  # fail now, with the install hint, rather than at first use
    _state.name = name


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: ``with use_backend('cupy'): ...`` restores the previous default after."""
    previous = get_backend()
    set_backend(name)
    try:
        yield _module(_state.name)
    finally:
        _state.name = previous


def is_cupy_array(a) -> bool:
    """True for a cupy.ndarray, decided without importing CuPy."""
    return type(a).__module__.split(".")[0] == "cupy"


def get_xp(*arrays) -> ModuleType:
    """Array module of the arguments: cupy if any argument is a CuPy array, else numpy
    if any is a NumPy array, else the default backend's module. Python scalars and
    ``None`` are ignored, so ``get_xp(x, sigma)`` works for a float ``sigma``."""
    saw_numpy = False
    for a in arrays:
        if is_cupy_array(a):
            return _load_cupy()
        if isinstance(a, (numpy.ndarray, numpy.generic)):
            saw_numpy = True
    if saw_numpy:
        return numpy
    return _module(get_backend())


def to_numpy(a):
    """Copy to a host NumPy array (a no-op for NumPy input). Use for plotting, saving, printing."""
    if is_cupy_array(a):
        return a.get()  # explicit device -> host copy
    return numpy.asarray(a)


def asarray(a, dtype=None, xp: ModuleType | None = None):
    """Array on the default backend (or on ``xp``), copying host<->device only when needed."""
    xp = _module(get_backend()) if xp is None else xp
    if xp is numpy and is_cupy_array(a):
        a = a.get()  # explicit device -> host copy
    return xp.asarray(a, dtype=dtype)


def default_rng(seed=None, xp: ModuleType | None = None):
    """A random Generator of the default backend (or of ``xp``).

    Only ``standard_normal``, ``random`` and ``integers`` are used in minidiff: both
    NumPy's and CuPy's Generators provide them. An existing Generator is returned as is.
    """
    if hasattr(seed, "standard_normal") and hasattr(seed, "integers"):
        return seed
    xp = _module(get_backend()) if xp is None else xp
    return xp.random.default_rng(seed)


def rng_xp(rng) -> ModuleType:
    """Array module a Generator draws on: cupy for ``cupy.random.Generator``, else numpy."""
    if not (hasattr(rng, "standard_normal") and hasattr(rng, "integers")):
        raise TypeError(f"rng must be a Generator from minidiff.backend.default_rng; got {type(rng).__name__}")
    return _load_cupy() if type(rng).__module__.split(".")[0] == "cupy" else numpy
