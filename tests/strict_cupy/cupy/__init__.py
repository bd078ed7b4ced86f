"""A strict CPU stand-in for CuPy, for minidiff's own test suite only.

It is importable as ``cupy`` only when the test suite puts ``tests/strict_cupy`` first on
``sys.path`` (``MINIDIFF_STRICT_CUPY=1``, see tests/conftest.py and docs/backends.md §4). It wraps
NumPy, but keeps CuPy's rules, as documented by CuPy and read off its source:

- :class:`ndarray` is not a ``numpy.ndarray``. ``numpy.asarray(x)`` raises ``TypeError``
  because ``__array__`` refuses implicit conversion, as ``cupy.ndarray.__array__`` does
  ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` ...").
- Mixing with a ``numpy.ndarray`` in an operator, a ufunc or a function raises ``TypeError``
  (CuPy's kernels reject host arrays: "Unsupported type <class 'numpy.ndarray'>"). Python and
  NumPy scalars are accepted as scalars, as in CuPy.
- NumPy functions called on device arrays dispatch here through ``__array_ufunc__`` /
  ``__array_function__`` and return device arrays, as CuPy's do.
- Reductions and scalar indexing return 0-d device arrays, never Python or NumPy scalars.
- Every device -> host sync is counted: ``float()``, ``int()``, ``bool()``, ``.item()``,
  ``.get()``, ``.tolist()``, ``asnumpy``, ``repr``/``str``/``format``, and
  ``cuda.Device().synchronize()``. Every host -> device copy is counted: ``asarray``/``array``
  of host data (NumPy arrays, Python lists, Python scalars), host arrays used as an index or
  assigned into a device array.
- ``random.default_rng`` returns a :class:`random.Generator` with only the methods CuPy's
  Generator has (no ``normal``, ``choice``, ``permutation``, ``shuffle``, ``spawn``), and seeds
  it the way CuPy's cuRAND bit generators do: 32 bits of ``SeedSequence(seed)``.
- Floating-point overflow, invalid values and division by zero never warn (CuPy's kernels do not):
  importing the stand-in switches NumPy's warnings off for the test process.

The counters live in ``cupy._strict`` (``syncs``, ``h2d``, ``reset()``, ``log``).
"""
from __future__ import annotations

import functools
import traceback
import types as _types

import numpy as _np

_STRICT = True  # lets tests and minidiff's diagnostics recognise the stand-in
__version__ = "13.0.0+strict"


# ----------------------------------------------------------------------------- counters
class _Counter:
    """Counts device -> host syncs and host -> device copies; optionally records where."""

    def __init__(self):
        self.syncs = 0
        self.h2d = 0
        self.trace = False  # True: append (kind, what, stack) to ``log`` on every event
        self.log: list = []

    def reset(self):
        self.syncs = 0
        self.h2d = 0
        self.log = []

    def _event(self, kind, what):
        if self.trace:
            self.log.append((kind, what, "".join(traceback.format_stack(limit=8)[:-2])))

    def sync(self, what):
        self.syncs += 1
        self._event("sync", what)

    def copy_in(self, what):
        self.h2d += 1
        self._event("h2d", what)


_strict = _Counter()


# ----------------------------------------------------------------------------- wrapping
def _reject_host(x, where):
    raise TypeError(f"Unsupported type {type(x)} (strict CuPy stand-in: a numpy.ndarray was mixed "
                    f"with device arrays in {where}; copy it with cupy.asarray first)")


_PLAIN = frozenset({int, float, bool, type(None), str, slice, type(Ellipsis), complex})


def _unwrap(x, where):
    """Device arrays -> their NumPy storage; host arrays -> TypeError; containers recursively."""
    t = type(x)
    if t is ndarray:
        return x._a
    if t in _PLAIN:
        return x
    if t is list or t is tuple:
        return t([_unwrap(e, where) for e in x])
    if isinstance(x, _np.ndarray):
        _reject_host(x, where)
    return x


def _wrap(r):
    """NumPy results -> device arrays; NumPy scalars -> 0-d device arrays (CuPy never returns them)."""
    t = type(r)
    if t is _np.ndarray:
        out = object.__new__(ndarray)
        out._a = r
        return out
    if t in _PLAIN:
        return r
    if isinstance(r, _np.generic):
        out = object.__new__(ndarray)
        out._a = _np.asarray(r)
        return out
    if t is list or t is tuple:
        return t([_wrap(e) for e in r])
    if isinstance(r, tuple):  # NumPy's named results (linalg.eigh's EighResult, ...): CuPy returns a plain tuple
        return tuple(_wrap(e) for e in r)
    if isinstance(r, _np.ndarray):
        out = object.__new__(ndarray)
        out._a = r
        return out
    return r


def _call(f, name, args, kwargs):
    # floating-point warnings are off for the whole process (see the bottom of this module): CuPy's
    # kernels never warn on overflow, invalid values or division by zero
    a = [_unwrap(v, name) for v in args]
    if not kwargs:
        return _wrap(f(*a))
    out = kwargs.get("out")
    r = f(*a, **{k: _unwrap(v, name) for k, v in kwargs.items()})
    if type(out) is ndarray and r is out._a:
        return out
    if type(out) is tuple and type(r) is tuple:
        return tuple(o if type(o) is ndarray and ri is o._a else _wrap(ri) for o, ri in zip(out, r))
    return _wrap(r)


def _device_function(f, name):
    @functools.wraps(f)
    def g(*args, **kwargs):
        return _call(f, name, args, kwargs)

    return g


def _method(a, name):
    f = getattr(a, name)

    def g(*args, **kwargs):
        return _call(f, name, args, kwargs)

    return g


class ufunc:
    """A device ufunc: call, ``reduce``, ``accumulate``, ``outer``, ``at`` on device arrays only."""

    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout, self.nargs = uf.nin, uf.nout, uf.nargs

    def __call__(self, *args, **kwargs):
        return _call(self._uf, self.__name__, args, kwargs)

    def reduce(self, *args, **kwargs):
        return _call(self._uf.reduce, self.__name__ + ".reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return _call(self._uf.accumulate, self.__name__ + ".accumulate", args, kwargs)

    def outer(self, *args, **kwargs):
        return _call(self._uf.outer, self.__name__ + ".outer", args, kwargs)

    def at(self, *args, **kwargs):
        return _call(self._uf.at, self.__name__ + ".at", args, kwargs)

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"


def _index(key):
    """An index may hold device arrays; a host array or list in it is copied in (counted)."""
    t = type(key)
    if t is ndarray:
        return key._a
    if t is slice or t is int or key is None or key is Ellipsis:
        return key
    if t is tuple:
        return tuple([_index(k) for k in key])
    if isinstance(key, _np.ndarray) or t is list:
        _strict.copy_in("host array used as an index")
        return _np.asarray(key)
    return key


# ----------------------------------------------------------------------------- ndarray
class ndarray(_np.lib.mixins.NDArrayOperatorsMixin):
    """Device array: NumPy storage inside, CuPy's rules outside (see the module docstring)."""

    __slots__ = ("_a",)

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    # -- refused: implicit host conversion (cupy.ndarray.__array__ raises TypeError)
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # -- NumPy dispatch, as CuPy's __array_ufunc__ / __array_function__
    def __array_ufunc__(self, uf, method, *inputs, **kwargs):
        f = uf if method == "__call__" else getattr(uf, method)
        return _call(f, f"numpy.{uf.__name__}", inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        for t in types:
            if issubclass(t, _np.ndarray):
                _reject_host(_np.empty(0), f"numpy.{func.__name__}")
        name = func.__name__
        if func.__module__ in ("numpy", "numpy.linalg", "numpy.fft"):
            return _call(func, f"numpy.{name}", args, kwargs)
        return NotImplemented

    # -- syncs: every device -> host transfer of a value
    def get(self, stream=None, order="C", out=None, blocking=True):
        _strict.sync("ndarray.get")
        if out is not None:
            out[...] = self._a
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray; got {type(arr)}")
        _strict.copy_in("ndarray.set")
        self._a[...] = arr

    def item(self, *args):
        _strict.sync("ndarray.item")
        return self._a.item(*args)

    def tolist(self):
        _strict.sync("ndarray.tolist")
        return self._a.tolist()

    def tobytes(self, order="C"):
        _strict.sync("ndarray.tobytes")
        return self._a.tobytes(order)

    def __float__(self):
        _strict.sync("float(ndarray)")
        return float(self._a)

    def __int__(self):
        _strict.sync("int(ndarray)")
        return int(self._a)

    def __index__(self):
        _strict.sync("operator.index(ndarray)")
        return self._a.__index__()

    def __complex__(self):
        _strict.sync("complex(ndarray)")
        return complex(self._a)

    def __bool__(self):
        _strict.sync("bool(ndarray)")
        return bool(self._a)

    def __repr__(self):
        _strict.sync("repr(ndarray)")
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self):
        _strict.sync("str(ndarray)")
        return str(self._a)

    def __format__(self, spec):
        _strict.sync("format(ndarray)")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    # -- no sync: shape, dtype, views, indexing on the device
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base)

    @property
    def device(self):
        return cuda.Device(0)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield _wrap(self._a[i])

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray):
            _strict.copy_in("host array assigned into a device array")
        elif type(value) is ndarray:
            value = value._a
        self._a[_index(key)] = value

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    def __reduce__(self):
        # CuPy pickles a device array through a host copy; so does the stand-in (counted)
        _strict.sync("pickle(ndarray)")
        return (_unpickle, (self._a.copy(),))

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("strict CuPy stand-in: DLPack export is not modelled")

    # every other ndarray method (sum, mean, reshape, astype, ...) runs on the device
    def __getattr__(self, name):
        if name.startswith("__") or name in _HOST_METHODS:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        f = getattr(self._a, name)
        if not callable(f):
            return _wrap(f)
        return _method(self._a, name)


ndarray.__module__ = "cupy"
_HOST_METHODS = {"tofile", "dump", "dumps", "ctypes", "data", "getfield", "setfield", "byteswap",
                 "newbyteorder", "ptp", "itemset", "resize"}


def _unpickle(a):
    _strict.copy_in("unpickle(ndarray)")
    return _wrap(a)


# ----------------------------------------------------------------------------- host <-> device
def _contains_host(x):
    if isinstance(x, _np.ndarray):
        return True
    if type(x) in (list, tuple):
        return any(_contains_host(e) for e in x)
    return False


def _to_device(a, dtype, copy, order="K"):
    if type(a) is ndarray:
        if dtype is None or _np.dtype(dtype) == a.dtype:
            return _wrap(a._a.copy(order=order)) if copy else a
        return _wrap(a._a.astype(dtype, order=order))
    if type(a) in (list, tuple) and a and all(type(e) is ndarray for e in a):
        return _wrap(_np.array([e._a for e in a], dtype=dtype))  # device-side stack, as CuPy
    _strict.copy_in(f"asarray({type(a).__name__})")
    return _wrap(_np.array(a, dtype=dtype, order=order, copy=True))


def asarray(a, dtype=None, order=None, *, blocking=False):
    return _to_device(a, dtype, copy=False, order=order or "K")


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    out = _to_device(obj, dtype, copy=copy, order=order)
    if ndmin > out.ndim:
        out = out.reshape((1,) * (ndmin - out.ndim) + out.shape)
    return out


def asanyarray(a, dtype=None, order=None):
    return asarray(a, dtype, order)


def ascontiguousarray(a, dtype=None):
    if type(a) is not ndarray:
        a = asarray(a, dtype)
    return _wrap(_np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if type(a) is ndarray:
        return a.get(order=order, out=out)
    if out is not None:
        out[...] = a
        return out
    return _np.asarray(a, order=order)


def get_array_module(*args):
    for a in args:
        if type(a) is ndarray:
            import sys
            return sys.modules[__name__]
    return _np


def isscalar(x):
    return _np.isscalar(x)


# ----------------------------------------------------------------------------- the namespace
# Types, dtypes and constants are NumPy's own objects in CuPy too (cupy.float32 is numpy.float32).
_PASS_THROUGH = {"dtype", "finfo", "iinfo", "newaxis", "pi", "e", "inf", "nan", "euler_gamma",
                 "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "complex64", "complex128", "intp", "uintp",
                 "floating", "integer", "signedinteger", "unsignedinteger", "number", "inexact",
                 "complexfloating", "generic", "bool", "byte", "ubyte", "short", "ushort", "intc",
                 "uintc", "longlong", "ulonglong", "half", "single", "double", "cdouble", "csingle",
                 "result_type", "can_cast", "promote_types", "common_type", "ndim", "shape", "size",
                 "broadcast_shapes", "issubdtype", "min_scalar_type", "format_float_positional"}
# NumPy names CuPy does not have (or that only make sense on the host): refused, as CuPy would.
_NOT_IN_CUPY = {"save", "savez", "savez_compressed", "load", "loadtxt", "savetxt", "genfromtxt",
                "fromfile", "frombuffer", "memmap", "set_printoptions", "get_printoptions",
                "printoptions", "seterr", "geterr", "errstate", "testing", "ma", "char", "rec",
                "ctypeslib", "lib", "polynomial", "random", "linalg", "fft", "matrix", "asmatrix",
                "object_", "str_", "bytes_", "void", "datetime64", "timedelta64", "show_config",
                "info", "typing", "exceptions", "emath", "strings", "dtypes", "f2py"}
_cache: dict = {}


def __getattr__(name):
    if name in _cache:
        return _cache[name]
    if name.startswith("_") or name in _NOT_IN_CUPY or not hasattr(_np, name):
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    obj = getattr(_np, name)
    if isinstance(obj, _types.ModuleType):  # NumPy's submodules are host code; the stand-in has its own
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    if name in _PASS_THROUGH or isinstance(obj, type):
        val = obj
    elif isinstance(obj, _np.ufunc):
        val = ufunc(obj)
    elif callable(obj):
        val = _device_function(obj, name)
    else:
        val = obj  # a constant
    _cache[name] = val
    return val


# CuPy's kernels never warn on floating-point overflow, invalid values or division by zero; the
# stand-in runs them in NumPy, so it turns NumPy's warnings off for the (test) process that imports it
# (one global switch: a per-call errstate would triple the cost of every small operation).
_np.seterr(all="ignore")

from . import cuda, fft, lib, linalg, random  # noqa: E402  (submodules use the names above)

__all__ = ["ndarray", "asarray", "array", "asnumpy", "get_array_module", "cuda", "random", "linalg",
           "fft", "ufunc"]
