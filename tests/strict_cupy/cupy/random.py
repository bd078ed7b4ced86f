"""cupy.random in the strict stand-in: the Generator API with CuPy's methods only.

CuPy's bit generators (XORWOW, MRG32k3a, Philox4x3210) seed cuRAND with 32 bits:
``numpy.random.SeedSequence(seed).generate_state(1, numpy.uint32)[0]``; the stand-in does the
same, so two seeds that agree in those 32 bits draw the same numbers here too. The stream of
numbers is NumPy's PCG64 keyed by that 32-bit value, not cuRAND's: tests must never compare
device draws with NumPy draws number by number.
"""
import numpy as _np

from . import _strict, _unwrap, _wrap, ndarray


class BitGenerator:
    def __init__(self, seed=None):
        if type(seed) is ndarray:
            _strict.sync("BitGenerator(seed=device array)")
            seed = seed._a
        self._seed_seq = seed if isinstance(seed, _np.random.SeedSequence) else _np.random.SeedSequence(seed)
        self._seed = self._seed_seq.generate_state(1, _np.uint32)[0]
        self._np = _np.random.Generator(_np.random.PCG64(int(self._seed)))


class XORWOW(BitGenerator):
    pass


class MRG32k3a(BitGenerator):
    pass


class Philox4x3210(BitGenerator):
    pass


def _size(size):
    return () if size is None else size


def _scalar_arg(v, name):
    if type(v) is ndarray:
        return v._a
    if type(v) in (float, int):
        return v
    raise TypeError(f"{name} is required to be a cupy.ndarray or a scalar")


class Generator:
    """The methods of cupy.random.Generator (CuPy 13); results are always device arrays."""

    def __init__(self, bit_generator):
        self.bit_generator = bit_generator
        self._g = bit_generator._np

    def random(self, size=None, dtype=_np.float64, out=None):
        r = self._g.random(_size(size), dtype=_np.float64).astype(dtype)
        return _fill(out, r)

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        if _np.dtype(dtype).char not in "fd":
            raise TypeError(f"Unsupported dtype {_np.dtype(dtype).name} for standard_normal")
        return _fill(out, self._g.standard_normal(_size(size), dtype=dtype))

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        # CuPy converts the bounds with int(): a device bound is a sync
        low, high = int(low), (None if high is None else int(high))
        return _wrap(_np.asarray(self._g.integers(low, high, size=_size(size), dtype=dtype,
                                                  endpoint=endpoint)))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        low, high = _unwrap(low, "uniform"), _unwrap(high, "uniform")
        if size is None:
            size = _np.broadcast(low, high).shape
        return _wrap(_np.asarray(self._g.uniform(low, high, size)).astype(dtype))

    def standard_exponential(self, size=None, dtype=_np.float64, method="inv", out=None):
        if method == "zig":
            raise NotImplementedError("Ziggurat method is not supported")
        return _fill(out, self._g.standard_exponential(_size(size)).astype(dtype))

    def exponential(self, scale=1.0, size=None):
        return self.standard_exponential(size) * scale

    def standard_gamma(self, shape, size=None, dtype=_np.float64, out=None):
        shape = _scalar_arg(shape, "shape")
        return _fill(out, _np.asarray(self._g.standard_gamma(shape, size)).astype(dtype))

    def gamma(self, shape, scale=1.0, size=None):
        return _wrap(_np.asarray(self._g.gamma(_scalar_arg(shape, "shape"), _scalar_arg(scale, "scale"), size)))

    def beta(self, a, b, size=None, dtype=_np.float64):
        return _wrap(_np.asarray(self._g.beta(_scalar_arg(a, "a"), _scalar_arg(b, "b"), size)).astype(dtype))

    def chisquare(self, df, size=None):
        return _wrap(_np.asarray(self._g.chisquare(_scalar_arg(df, "df"), size)))

    def dirichlet(self, alpha, size=None):
        return _wrap(_np.asarray(self._g.dirichlet(_scalar_arg(alpha, "alpha"), size)))

    def f(self, dfnum, dfden, size=None):
        return _wrap(_np.asarray(self._g.f(_scalar_arg(dfnum, "dfnum"), _scalar_arg(dfden, "dfden"), size)))

    def geometric(self, p, size=None):
        return _wrap(_np.asarray(self._g.geometric(_scalar_arg(p, "p"), size)))

    def hypergeometric(self, ngood, nbad, nsample, size=None):
        return _wrap(_np.asarray(self._g.hypergeometric(
            _scalar_arg(ngood, "ngood"), _scalar_arg(nbad, "nbad"), _scalar_arg(nsample, "nsample"), size)))

    def logseries(self, p, size=None):
        return _wrap(_np.asarray(self._g.logseries(_scalar_arg(p, "p"), size)))

    def poisson(self, lam=1.0, size=None):
        return _wrap(_np.asarray(self._g.poisson(_scalar_arg(lam, "lam"), size)))

    def power(self, a, size=None):
        return _wrap(_np.asarray(self._g.power(_scalar_arg(a, "a"), size)))

    def binomial(self, n, p, size=None):
        return _wrap(_np.asarray(self._g.binomial(_scalar_arg(n, "n"), _scalar_arg(p, "p"), size)))


def _fill(out, r):
    if out is None:
        return _wrap(_np.asarray(r))
    if type(out) is not ndarray:
        raise TypeError(f"out must be a cupy.ndarray; got {type(out)}")
    if out.dtype != r.dtype or out.shape != _np.shape(r):
        raise ValueError("Supplied output array has the wrong type or shape")
    out._a[...] = r
    return out


def default_rng(seed=None):
    """A Generator on the default bit generator (XORWOW), as cupy.random.default_rng."""
    return Generator(XORWOW(seed))
