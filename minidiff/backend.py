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
import math
import numbers
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
    "CounterRNG",
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


def _is_generator(rng) -> bool:
    return hasattr(rng, "standard_normal") and hasattr(rng, "integers")


def default_rng(seed=None, xp: ModuleType | None = None):
    """A random Generator drawing on ``xp`` (default: the default backend's module).

    ``seed``: ``None``, an int, or an existing Generator. An existing Generator is returned as
    is **only if it draws on the same backend as** ``xp``; a NumPy Generator for CuPy data (or the
    reverse) is a ``TypeError``, never a silent host/device mix (docs/backends.md §2). On CuPy an
    int seed keeps 32 bits (cuRAND's ``SeedSequence(seed).generate_state(1, uint32)``): seeds
    that differ only above them may draw the same numbers there.

    Only ``standard_normal``, ``random`` and ``integers`` are used in minidiff: NumPy's and
    CuPy's Generators, and :class:`CounterRNG`, all provide them.
    """
    xp = _module(get_backend()) if xp is None else xp
    if _is_generator(seed):
        have = rng_xp(seed)
        if have is not xp:
            raise TypeError(
                f"rng draws {have.__name__} arrays but the data lives on {xp.__name__}: pass a "
                f"generator of the data's backend (backend.default_rng(seed, xp=backend.get_xp(x))) "
                f"or an int seed")
        return seed
    if isinstance(seed, bool) or not (seed is None or isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be None, an int or a Generator from backend.default_rng; "
                        f"got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    return xp.random.default_rng(None if seed is None else int(seed))


def rng_xp(rng) -> ModuleType:
    """Array module a Generator draws on: cupy for ``cupy.random.Generator``, else numpy."""
    if not _is_generator(rng):
        raise TypeError(f"rng must be a Generator from minidiff.backend.default_rng; got {type(rng).__name__}")
    if isinstance(rng, CounterRNG):
        return rng.xp
    return _load_cupy() if type(rng).__module__.split(".")[0] == "cupy" else numpy


# ----------------------------------------------------------------------------- counter-based draws
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, SplitMix64's increment


def _splitmix64(z: int) -> int:
    """SplitMix64's output function on a Python int (host side, for keys)."""
    z = (z + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class CounterRNG:
    r"""Counter-based random numbers: draw ``j`` of stream ``(seed, step)`` is the pure function

    .. math:: u_j = \mathrm{mix}(k + (j+1)\,\gamma) \quad (\text{mod } 2^{64}),\qquad
              k = \mathrm{mix}(\mathrm{mix}(\mathrm{seed}) \oplus \mathrm{step}),

    with ``mix`` the SplitMix64 finaliser (Steele, Lea & Flood 2014) and ``gamma`` its odd
    increment, evaluated element-wise on ``xp`` arrays of 64-bit counters. Nothing is stored on
    the device: moving to another step (:meth:`at`) is a Python integer operation, so a training
    loop needs no new generator per step, a resumed run draws exactly the numbers of an
    uninterrupted one, and NumPy and CuPy draw the same integers (floats up to the last bits of
    ``log``/``cos``). See docs/backends.md §2.

    Methods (the Generator subset minidiff uses): ``random``, ``standard_normal`` (Box-Muller on
    two 53-bit uniforms) and ``integers`` (64-bit hash modulo the range; bias < range / 2^64).
    """

    def __init__(self, seed: int = 0, xp: ModuleType | None = None):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"CounterRNG seed must be an int >= 0; got {seed!r}")
        self.xp = _module(get_backend()) if xp is None else xp
        self.seed = int(seed) & _M64
        self.at(0)

    def at(self, step: int) -> "CounterRNG":
        """Move to stream ``step`` (its first draw); returns ``self``."""
        self.step = int(step)
        self._key = _splitmix64(_splitmix64(self.seed) ^ (self.step & _M64))
        self._offset = 0
        return self

    def _bits(self, n: int):
        """``n`` hashed 64-bit words (uint64 array on ``xp``), consuming ``n`` counters."""
        xp = self.xp
        u64 = xp.uint64
        z = xp.arange(self._offset + 1, self._offset + 1 + n, dtype=u64)
        self._offset += n
        z *= u64(_GOLDEN)
        z += u64(self._key)
        z ^= z >> u64(30)
        z *= u64(0xBF58476D1CE4E5B9)
        z ^= z >> u64(27)
        z *= u64(0x94D049BB133111EB)
        z ^= z >> u64(31)
        return z

    def random(self, size=None, dtype="float64"):
        """Uniform on [0, 1): the top 53 bits of each word times 2^-53."""
        shape = () if size is None else (size,) if isinstance(size, numbers.Integral) else tuple(size)
        n = math.prod(shape)
        u = (self._bits(n) >> self.xp.uint64(11)).astype(self.xp.float64) * (2.0 ** -53)
        return u.reshape(shape).astype(dtype, copy=False)

    def standard_normal(self, size=None, dtype="float64"):
        r"""N(0, 1) by Box-Muller: :math:`\sqrt{-2\ln u_1}\,(\cos 2\pi u_2, \sin 2\pi u_2)`, u_1 in (0, 1]."""
        xp = self.xp
        shape = () if size is None else (size,) if isinstance(size, numbers.Integral) else tuple(size)
        n = math.prod(shape)
        m = (n + 1) // 2
        b = self._bits(2 * m) >> xp.uint64(11)
        u1 = (b[:m] + xp.uint64(1)).astype(xp.float64) * (2.0 ** -53)  # (0, 1]: log is finite
        u2 = b[m:].astype(xp.float64) * (2.0 ** -53)
        r = xp.sqrt(-2.0 * xp.log(u1))
        theta = (2.0 * math.pi) * u2
        z = xp.concatenate([r * xp.cos(theta), r * xp.sin(theta)])[:n]
        return z.reshape(shape).astype(dtype, copy=False)

    def integers(self, low, high=None, size=None, dtype="int64"):
        """Integers in [low, high) (or [0, low) when ``high`` is None)."""
        lo, hi = (0, int(low)) if high is None else (int(low), int(high))
        if hi <= lo:
            raise ValueError(f"integers: need low < high; got [{lo}, {hi})")
        shape = () if size is None else (size,) if isinstance(size, numbers.Integral) else tuple(size)
        xp = self.xp
        k = self._bits(math.prod(shape)) % xp.uint64(hi - lo)
        return (k.astype(xp.int64) + lo).reshape(shape).astype(dtype, copy=False)

    def __repr__(self):
        return f"CounterRNG(seed={self.seed}, step={self.step}, xp={self.xp.__name__})"
