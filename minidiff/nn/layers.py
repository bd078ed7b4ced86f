r"""Layers with hand-written backward passes.

Each class keeps forward and backward side by side with the same names, so every derivative can be
read against one line of the forward. ``backward(dy)`` is a vector-Jacobian product: it returns the
gradient w.r.t. the input and accumulates (``+=``) the parameter gradients.

Image layout: the image layers (:class:`Conv2d`, :class:`GroupNorm`, :class:`Upsample`,
:class:`Downsample`, :class:`ResBlock`) take **channels-last** arrays ``(B, H, W, C)``. With C innermost,
an im2col patch is nine contiguous C-vectors and the convolution is one GEMM; NCHW im2col measured
~2.4x slower here (docs/performance.md §4). :class:`~minidiff.nn.models.UNetDenoiser` accepts the usual NCHW and
transposes once at entry and exit.

Initialisation: weights ~ N(0, 1/fan_in) (LeCun normal), biases zero, norms gamma = 1, beta = 0.
"""
from __future__ import annotations

import contextlib
import math

from .. import backend
from .._parallel import on_cpu
from .._validate import (
    MAX_SIZE,
    check_array, check_bool, check_choice, check_float_dtype, check_labels, check_positive_int, check_real, check_rng,
    sigma_like,
)
from .module import Module, Parameter

MAX_WIDTH = MAX_SIZE  # largest width/channel count accepted (see _validate.MAX_SIZE)

__all__ = [
    "Linear", "ReLU", "SiLU", "GELU", "Tanh", "LayerNorm", "GroupNorm", "Conv2d", "Upsample",
    "Downsample", "Embedding", "SigmaEmbedding", "ResBlock", "make_activation", "ACTIVATIONS",
]


def check_input(x, name: str, like=None, ndim=None, last=None):
    """Kept for code written against the old name: :func:`minidiff._validate.check_array` without the
    finiteness scan (layers run inside training loops, where a per-layer host sync would cost)."""
    return check_array(x, name, ndim, finite=False, like=like, last=last)


def _ignore_overflow(xp):
    """NumPy's errstate(over='ignore'); a no-op context for backends without errstate (CuPy never warns)."""
    errstate = getattr(xp, "errstate", None)
    return errstate(over="ignore") if errstate is not None else contextlib.nullcontext()


def _normal(rng, shape, std: float, dtype):
    return rng.standard_normal(shape, dtype=dtype) * float(std)


class Linear(Module):
    r"""Affine map on the last axis: ``y = x W + b`` with ``W`` of shape (in, out).

    Backward: ``dx = dy W^T``, ``dW += x^T dy`` (summed over all leading axes), ``db += sum dy``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype="float32", seed=None):
        self.in_features = check_positive_int(in_features, "in_features", maximum=MAX_WIDTH)
        self.out_features = check_positive_int(out_features, "out_features", maximum=MAX_WIDTH)
        dt = check_float_dtype(dtype)
        rng = check_rng(seed, "seed")
        self.W = Parameter(_normal(rng, (self.in_features, self.out_features), 1.0 / math.sqrt(in_features), dt))
        self.b = Parameter(backend.get_xp(self.W.data).zeros((self.out_features,), dtype=dt)) if check_bool(bias, "bias") else None
        self._x = None

    def forward(self, x):
        x = check_array(x, "x", like=self.W.data, last=self.in_features, finite=False)
        self._x = x
        # one 2-D GEMM over all leading axes (a 3-D @ 2-D matmul would run one small GEMM per batch row)
        y = x.reshape(-1, self.in_features) @ self.W.data  # (N, in) @ (in, out) -> (N, out)
        if self.b is not None:
            y += self.b.data
        return y.reshape(x.shape[:-1] + (self.out_features,))  # (N, out) -> (..., out)

    def backward(self, dy):
        x = self._x
        x2 = x.reshape(-1, self.in_features)  # (..., in) -> (N, in)
        dy2 = dy.reshape(-1, self.out_features)  # (..., out) -> (N, out)
        self.W.grad += x2.T @ dy2  # (in, N) @ (N, out) -> (in, out)
        if self.b is not None:
            self.b.grad += _sum_rows(dy2)[0]
        return (dy2 @ self.W.data.T).reshape(x.shape)  # (N, out) @ (out, in) -> (N, in) -> (..., in)


class ReLU(Module):
    r"""``y = max(x, 0)``; ``dx = dy * [x > 0]``."""

    def forward(self, x):
        x = check_array(x, "x", finite=False)
        self._x = x
        return backend.get_xp(x).maximum(x, 0.0)

    def backward(self, dy):
        return dy * (self._x > 0)


class SiLU(Module):
    r"""SiLU / swish (Elfwing et al. 2018; Ramachandran et al. 2017): ``y = x s(x)``, ``s = sigmoid(x)``.

    ``s = 1 / (1 + exp(-x))`` in place (exp is ~2x faster than tanh in NumPy float32). For x < -88
    (float32) ``exp(-x)`` overflows to inf and ``1 / inf = 0`` is the exact limit, so NumPy's overflow
    warning is silenced here (CuPy does not warn). Backward: ``dy/dx = s + x s (1 - s) = s (1 + x (1 - s))``.
    """

    def forward(self, x):
        x = check_array(x, "x", finite=False)
        xp = backend.get_xp(x)
        s = xp.negative(x)
        with _ignore_overflow(xp):
            xp.exp(s, out=s)
        s += 1.0
        xp.reciprocal(s, out=s)  # sigmoid(x)
        self._x, self._s = x, s
        return x * s

    def backward(self, dy):
        x, s = self._x, self._s
        t = 1.0 - s
        t *= x
        t += 1.0
        t *= s
        t *= dy  # dy * s (1 + x (1 - s))
        return t


class GELU(Module):
    r"""GELU, tanh form (Hendrycks & Gimpel 2016, Eq. in Sec. 2):
    ``y = x/2 (1 + tanh(u))``, ``u = c (x + a x^3)``, ``c = sqrt(2/pi)``, ``a = 0.044715``.

    Written with ``s = (1 + tanh(u)) / 2`` (the logistic sigmoid of 2u): ``y = x s``. Backward, from
    ``1 - tanh(u)^2 = 4 s (1 - s)`` and ``du/dx = c (1 + 3 a x^2)``:
    ``dy/dx = s + x s (1 - s) 2 c (1 + 3 a x^2) = s (1 + (1 - s) x 2c (1 + 3 a x^2))``; nine elementwise
    passes instead of twelve in the tanh form. The exact erf form is not offered: erf is ~40x slower than
    the tanh form on CPU (docs/performance.md §5). On NumPy both passes run over blocks of 128k elements,
    so that each block's passes stay in cache, in this thread: on the 2-core machine two threads ran them
    no faster (docs/performance.md §8).
    """

    _c = math.sqrt(2.0 / math.pi)
    _a = 0.044715
    _block = 1 << 17  # elements per block: 512 kB per float32 operand (fewer, larger blocks: each costs ~10 ufunc calls)

    def forward(self, x):
        x = check_array(x, "x", finite=False)
        xp = backend.get_xp(x)
        xf = xp.ascontiguousarray(x).reshape(-1)
        s, y = xp.empty_like(xf), xp.empty_like(xf)

        def block(j):
            sj, xj = s[j], xf[j]
            xp.multiply(xj, xj, out=sj)
            sj *= self._a * self._c
            sj += self._c
            sj *= xj  # u = c x + a c x^3
            xp.tanh(sj, out=sj)
            sj *= 0.5
            sj += 0.5  # s = (1 + tanh(u)) / 2
            xp.multiply(xj, sj, out=y[j])  # y = x s

        _in_blocks(xp, block, xf.size, self._block)
        self._x, self._s = xf, s
        return y.reshape(x.shape)

    def backward(self, dy):
        x, s = self._x, self._s
        xp = backend.get_xp(s)
        dyf = xp.ascontiguousarray(dy).reshape(-1)
        d = xp.empty_like(s)
        u = xp.empty((min(self._block, s.size) if on_cpu(xp) else s.size,), dtype=s.dtype)  # one block's temp

        def block(j):
            dj, xj, sj = d[j], x[j], s[j]
            uj = u[:j.stop - j.start]
            xp.multiply(xj, xj, out=dj)
            dj *= 6.0 * self._a * self._c
            dj += 2.0 * self._c
            dj *= xj  # x 2c (1 + 3 a x^2)
            xp.subtract(1.0, sj, out=uj)
            dj *= uj
            dj += 1.0
            dj *= sj  # s (1 + (1 - s) x 2c (1 + 3 a x^2))
            dj *= dyf[j]

        _in_blocks(xp, block, s.size, self._block)
        return d.reshape(dy.shape)


def _in_blocks(xp, fn, n, block):
    """``fn(slice)`` over ``range(n)`` in blocks of ``block`` on NumPy (cache-sized passes); one call over
    everything on CuPy, where a block loop would only add kernel launches."""
    step = block if on_cpu(xp) else max(n, 1)
    for i in range(0, n, step):
        fn(slice(i, min(i + step, n)))


class Tanh(Module):
    r"""``y = tanh(x)``; ``dx = dy (1 - y^2)``."""

    def forward(self, x):
        x = check_array(x, "x", finite=False)
        self._y = backend.get_xp(x).tanh(x)
        return self._y

    def backward(self, dy):
        return dy * (1.0 - self._y * self._y)


ACTIVATIONS = {"relu": ReLU, "silu": SiLU, "gelu": GELU, "tanh": Tanh}


def make_activation(name: str) -> Module:
    """A fresh activation module by name: one of ``ACTIVATIONS`` ('relu', 'silu', 'gelu', 'tanh')."""
    return ACTIVATIONS[check_choice(name, "activation", sorted(ACTIVATIONS))]()


def _normalize_last(x, eps):
    r"""``(xhat, inv_std)`` with ``xhat = (x - mu) / sqrt(var + eps)``, mean and variance over the last
    axis (Ba et al. 2016), ``inv_std`` kept as a length-1 last axis; the sums are GEMVs (:func:`_sum_last`).
    Shared by :class:`LayerNorm` and the DiT's ``AdaLayerNorm``."""
    n = x.shape[-1]
    xhat = x - _sum_last(x) * (1.0 / n)  # x - mu, normalised in place below
    inv_std = 1.0 / backend.get_xp(x).sqrt(_sum_last(xhat * xhat) * (1.0 / n) + eps)
    xhat *= inv_std
    return xhat, inv_std


def _norm_backward(dy, xhat, inv_std, gamma):
    r"""The LayerNorm VJP over the last axis (n elements). With ``g = dy * gamma`` (the gradient w.r.t.
    ``xhat``): ``dx = inv_std (g - mean(g) - xhat mean(g xhat))``."""
    n = xhat.shape[-1]
    g = dy * gamma
    mean_g = _sum_last(g) * (1.0 / n)
    mean_gx = _sum_last(g * xhat) * (1.0 / n)
    g -= mean_g
    g -= xhat * mean_gx
    g *= inv_std
    return g


class LayerNorm(Module):
    r"""Layer normalisation over the last axis (Ba et al. 2016):
    ``xhat = (x - mu) / sqrt(var + eps)``, ``y = gamma xhat + beta``.

    Backward: ``dgamma += sum dy xhat``, ``dbeta += sum dy``,
    ``dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps)`` with ``g = dy gamma``.
    """

    def __init__(self, dim: int, eps: float = 1e-5, dtype="float32"):
        self.dim = check_positive_int(dim, "dim", maximum=MAX_WIDTH)
        self.eps = check_real(eps, "eps", 0.0, 1.0, low_open=True)
        dt = check_float_dtype(dtype)
        xp = backend.get_xp()
        self.gamma = Parameter(xp.ones((self.dim,), dtype=dt))
        self.beta = Parameter(xp.zeros((self.dim,), dtype=dt))

    def forward(self, x):
        x = check_array(x, "x", like=self.gamma.data, last=self.dim, finite=False)
        xhat, inv_std = _normalize_last(x, self.eps)
        self._xhat, self._inv_std = xhat, inv_std
        y = xhat * self.gamma.data
        y += self.beta.data
        return y

    def backward(self, dy):
        xhat = self._xhat
        D = self.dim
        self.gamma.grad += _sum_rows((dy * xhat).reshape(-1, D))[0]  # sums over every leading axis
        self.beta.grad += _sum_rows(dy.reshape(-1, D))[0]
        return _norm_backward(dy, xhat, self._inv_std, self.gamma.data)


class GroupNorm(Module):
    r"""Group normalisation on channels-last images (Wu & He 2018): the C channels of ``x (B, H, W, C)``
    are split into ``groups`` groups; each (sample, group) is normalised over its H*W*C/groups values,
    then ``y = gamma xhat + beta`` per channel. Backward as in :class:`LayerNorm`, with the means over
    each (sample, group).
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5, dtype="float32"):
        self.groups = check_positive_int(groups, "groups", maximum=MAX_WIDTH)
        self.channels = check_positive_int(channels, "channels", maximum=MAX_WIDTH)
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.eps = check_real(eps, "eps", 0.0, 1.0, low_open=True)
        dt = check_float_dtype(dtype)
        xp = backend.get_xp()
        self.gamma = Parameter(xp.ones((self.channels,), dtype=dt))
        self.beta = Parameter(xp.zeros((self.channels,), dtype=dt))

    def _group_mean(self, s_bc, HW):
        """Per-(sample, group) means from per-channel sums ``s_bc (B, C)`` over HW pixels, broadcast back
        per channel: (B, C)."""
        xp = backend.get_xp(s_bc)
        B, C = s_bc.shape
        G = self.groups
        per_group = s_bc.reshape(B, G, C // G).sum(axis=2, keepdims=True)  # (B, G, 1)
        per_group *= 1.0 / (HW * (C // G))
        return xp.broadcast_to(per_group, (B, G, C // G)).reshape(B, C)  # (B, G, C/G) -> (B, C)

    def forward(self, x):
        x = check_array(x, "x", like=self.gamma.data, ndim=4, last=self.channels, finite=False)
        xp = backend.get_xp(x)
        B, H, W, C = x.shape
        x3 = x.reshape(B, H * W, C)  # (B, H, W, C) -> (B, HW, C)
        xc = x3 - self._group_mean(_sum_middle(x3), H * W)[:, None, :]  # x - mu
        sq = xc * xc
        inv_std = 1.0 / xp.sqrt(self._group_mean(_sum_middle(sq), H * W) + self.eps)  # (B, C), per group
        self._xc, self._inv_std = xc, inv_std  # xhat = xc * inv_std, never stored
        y = xp.multiply(xc, (inv_std * self.gamma.data)[:, None, :], out=sq)  # gamma xhat, in sq's memory
        y += self.beta.data
        return y.reshape(B, H, W, C)  # (B, HW, C) -> (B, H, W, C)

    def backward(self, dy):
        r"""``dx = r (g - mean(g) - xhat mean(g xhat))`` with ``g = gamma dy``, ``r = 1/sqrt(var + eps)``,
        ``xhat = r (x - mu)``, means over each (sample, group) (the :class:`LayerNorm` formula).

        Both means are combinations of two per-channel sums, ``T1 = sum_hw dy`` and
        ``T2 = sum_hw dy (x - mu)``, so per (b, c) the backward is affine in dy and x - mu:
        ``dx = A dy + Bc (x - mu) + Cc`` with ``A = r gamma``, ``Bc = -r^2 mean(g xhat)``,
        ``Cc = -r mean(g)``; and ``dgamma = sum_b r T2``, ``dbeta = sum_b T1``. That is four passes over
        the image instead of ten."""
        xp = backend.get_xp(dy)
        B, H, W, C = dy.shape
        xc, r, gamma = self._xc, self._inv_std, self.gamma.data
        dy3 = dy.reshape(B, H * W, C)  # (B, H, W, C) -> (B, HW, C)
        tmp = dy3 * xc
        T1, T2 = _sum_middle(dy3), _sum_middle(tmp)  # (B, C) each
        rT2 = r * T2  # per (b, c): sum_hw dy xhat
        self.gamma.grad += rT2.sum(axis=0)
        self.beta.grad += T1.sum(axis=0)
        mean_g = self._group_mean(gamma * T1, H * W)  # (B, C)
        mean_gx = self._group_mean(gamma * rT2, H * W)
        dx = dy3 * (r * gamma)[:, None, :]
        dx += xp.multiply(xc, (-r * r * mean_gx)[:, None, :], out=tmp)
        dx += (-r * mean_g)[:, None, :]
        return dx.reshape(B, H, W, C)


def _sum_middle(a3):
    """Sums of ``a3 (B, N, C)`` over its middle axis (pixels, tokens): (B, C), as a batched GEMV with a
    ones vector (BLAS, rather than NumPy's reduction over a non-innermost axis)."""
    xp = backend.get_xp(a3)
    return (xp.ones((1, a3.shape[1]), dtype=a3.dtype) @ a3)[:, 0, :]  # (1, HW) @ (B, HW, C) -> (B, 1, C)


def conv2d_reference(x, W, b, stride: int, padding: int):
    r"""The plain algorithm, for reading and for testing the fast path: the convolution as k*k shifted
    GEMMs, ``y = b + sum_{u, v} xpad[:, u::s, v::s, :] @ W[u, v]`` (each term a (B, Ho, Wo, C) slice times
    a (C, O) tap). ``x (B, H, W, C)``, ``W (k, k, C, O)``, ``b (O,)`` or None. Returns ``(B, Ho, Wo, O)``."""
    xp = backend.get_xp(x)
    B, H, Wd, C = x.shape
    k, s, p = W.shape[0], stride, padding
    Ho, Wo = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    xpad = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    y = xp.zeros((B, Ho, Wo, W.shape[3]), dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            y += xpad[:, u:u + s * (Ho - 1) + 1:s, v:v + s * (Wo - 1) + 1:s, :] @ W[u, v]  # (B,Ho,Wo,C) @ (C,O)
    return y if b is None else y + b


def conv2d_reference_backward(x, W, dy, stride: int, padding: int):
    r"""The plain backward of :func:`conv2d_reference`, tap by tap: ``dW[u, v] = sum xpad_uv^T dy`` and
    ``dxpad[:, u::s, v::s, :] += dy @ W[u, v]^T`` (then crop the padding); ``db = sum dy``.
    Returns ``(dx, dW, db)``."""
    xp = backend.get_xp(x)
    B, H, Wd, C = x.shape
    k, s, p = W.shape[0], stride, padding
    Ho, Wo = dy.shape[1], dy.shape[2]
    xpad = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    dxpad = xp.zeros_like(xpad)
    dW = xp.zeros_like(W)
    for u in range(k):
        for v in range(k):
            win = (slice(None), slice(u, u + s * (Ho - 1) + 1, s), slice(v, v + s * (Wo - 1) + 1, s))
            dW[u, v] = xpad[win].reshape(-1, C).T @ dy.reshape(-1, W.shape[3])  # (C, N) @ (N, O)
            dxpad[win] += dy @ W[u, v].T  # (B, Ho, Wo, O) @ (O, C)
    return dxpad[:, p:p + H, p:p + Wd, :], dW, dy.sum(axis=(0, 1, 2))


# -- work buffers --------------------------------------------------------------------------------------
# A fresh array of tens of MB costs a page fault per 4 kB page on every call (measured: building the
# im2col matrix of a 32-channel 28x28 batch-64 conv into a fresh array took 2-9x as long as into a reused
# one on the 2-core test machine). Transient buffers (padded inputs, the backward's patch matrix) come
# from this small pool; each is valid only until the next request for the same key, so none is ever
# returned to a caller or kept as a forward cache. Single-threaded use only.
_SCRATCH: dict = {}
_SCRATCH_MAX = 24  # buffers
_SCRATCH_BYTES = 1 << 30  # at most 1 GiB held between calls (large sampling batches)


def _scratch(xp, tag: str, shape, dtype, border: int = 0):
    """A zero-initialised work buffer for ``(tag, shape, dtype, border)``, reused across calls. Users that
    pad write only the interior, so a border of width ``border`` stays zero (it is part of the key).
    The least recently used buffers are dropped beyond ``_SCRATCH_MAX`` buffers or ``_SCRATCH_BYTES``
    (dropping only forgets the pool's reference: a caller still using the buffer keeps it alive)."""
    key = (tag, tuple(shape), str(dtype), xp.__name__, border)
    buf = _SCRATCH.pop(key, None)
    if buf is None:
        buf = xp.zeros(shape, dtype=dtype)
    while _SCRATCH and (len(_SCRATCH) >= _SCRATCH_MAX
                        or sum(b.nbytes for b in _SCRATCH.values()) + buf.nbytes > _SCRATCH_BYTES):
        _SCRATCH.pop(next(iter(_SCRATCH)))  # drop the least recently used
    if buf.nbytes <= _SCRATCH_BYTES:
        _SCRATCH[key] = buf  # most recently used last
    return buf


def _padded(x, p: int, tag: str):
    """``x (B, H, W, C)`` zero-padded by ``p`` on both spatial sides, C-contiguous (a pooled buffer)."""
    xp = backend.get_xp(x)
    if p == 0:
        return xp.ascontiguousarray(x)
    B, H, W, C = x.shape
    xpad = _scratch(xp, tag, (B, H + 2 * p, W + 2 * p, C), x.dtype, border=p)
    xpad[:, p:p + H, p:p + W, :] = x  # the border stays zero
    return xpad


def _im2col_into(out, xpad, k: int, s: int, Ho: int, Wo: int):
    r"""Fill ``out (B, Ho, Wo, k, k C)`` with the patches of a C-contiguous ``xpad (B, Hp, Wp, C)``:
    ``out[b, i, j, u, v C + c] = xpad[b, s i + u, s j + v, c]``.

    In channels-last memory the k taps of one patch row are k*C consecutive numbers, so (v, c) is a
    single stride-1 axis and the patches are a strided view of ``xpad`` (``as_strided``, no copy):
    the whole im2col is one copy with runs of kC (NumPy and CuPy both have ``lib.stride_tricks``). Where
    an array module lacks it, the same result comes from k*k strided slice copies."""
    xp = backend.get_xp(xpad)
    B, _, _, C = xpad.shape
    tricks = getattr(getattr(xp, "lib", None), "stride_tricks", None)
    if tricks is not None:
        sB, sH, sW, sC = xpad.strides
        xp.copyto(out, tricks.as_strided(xpad, (B, Ho, Wo, k, k * C), (sB, s * sH, s * sW, sH, sC)))
        return out
    for u in range(k):
        for v in range(k):
            out[:, :, :, u, v * C:(v + 1) * C] = xpad[:, u:u + s * (Ho - 1) + 1:s, v:v + s * (Wo - 1) + 1:s, :]
    return out


def _sum_last(a):
    """Sums over the last axis, kept as a length-1 axis, as a GEMV with a ones vector: on rows of 64
    float32 it took 0.065 ms against 0.34 for ``sum(axis=-1)`` (12544 rows, 2-core machine)."""
    ones = backend.get_xp(a).ones((a.shape[-1], 1), dtype=a.dtype)
    return (a.reshape(-1, a.shape[-1]) @ ones).reshape(a.shape[:-1] + (1,))  # (N, D) @ (D, 1) -> (..., 1)


def _sum_rows(a2):
    """Column sums of ``a2 (N, C)`` as a GEMV with a ones vector (~3x faster than ``sum(axis=0)``)."""
    return backend.get_xp(a2).ones((1, a2.shape[0]), dtype=a2.dtype) @ a2  # (1, N) @ (N, C) -> (1, C)


class Conv2d(Module):
    r"""2-D convolution (cross-correlation) on channels-last images, kernel 1x1 or 3x3, stride 1 or 2,
    zero padding ``padding`` (default ``kernel_size // 2``, "same" at stride 1).

    ``y[b, i, j, o] = b_o + sum_{u, v, c} xpad[b, s i + u, s j + v, c] W[u, v, c, o]``.

    The plain algorithm is k*k shifted GEMMs (:func:`conv2d_reference`). The fast path is im2col + one
    GEMM: ``cols (N, k k C)`` holds, for each output pixel, its k*k patch of C-vectors, copied in one call
    from a strided view of the padded input (:func:`_im2col_into`) into a buffer this layer reuses (it is the
    forward cache), and ``y = cols @ W.reshape(kkC, O)``: one GEMM with K = 9C instead of nine with K = C.
    Backward: ``dW += cols^T dy``, ``db += sum dy``. At stride 1, ``dx`` is the correlation of ``dy``
    (padded by k-1-p) with the spatially flipped, in/out-transposed kernel: a second im2col + GEMM. At
    stride 2, ``dcols = dy W^T`` is folded back into ``dxpad`` with k*k shifted strided slice-adds
    (col2im; no ``add.at``), then cropped. Tested against :func:`conv2d_reference_backward`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding=None, bias: bool = True, dtype="float32", seed=None):
        self.in_channels = check_positive_int(in_channels, "in_channels", maximum=MAX_WIDTH)
        self.out_channels = check_positive_int(out_channels, "out_channels", maximum=MAX_WIDTH)
        if check_positive_int(kernel_size, "kernel_size") not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3; got {kernel_size!r}")
        if check_positive_int(stride, "stride") not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        padding = kernel_size // 2 if padding is None else padding
        self.padding = check_positive_int(padding, "padding", minimum=0, maximum=kernel_size)
        self.kernel_size, self.stride = int(kernel_size), int(stride)
        dt = check_float_dtype(dtype)
        rng = check_rng(seed, "seed")
        k = self.kernel_size
        fan_in = k * k * self.in_channels
        self.W = Parameter(_normal(rng, (k, k, self.in_channels, self.out_channels), 1.0 / math.sqrt(fan_in), dt))
        self.b = Parameter(backend.get_xp(self.W.data).zeros((self.out_channels,), dtype=dt)) if check_bool(bias, "bias") else None
        self._colbuf = None

    def _out_size(self, n):
        return (n + 2 * self.padding - self.kernel_size) // self.stride + 1

    def _cols_buffer(self, xp, shape, dtype):
        """This layer's im2col buffer (the forward cache), reused while the input shape stays the same."""
        buf = self._colbuf
        if buf is None or buf.shape != shape or buf.dtype != dtype or backend.get_xp(buf) is not xp:
            buf = self._colbuf = xp.empty(shape, dtype=dtype)
        return buf

    def forward(self, x):
        x = check_array(x, "x", like=self.W.data, ndim=4, last=self.in_channels, finite=False)
        xp = backend.get_xp(x)
        B, H, W, C = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        Ho, Wo = self._out_size(H), self._out_size(W)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"input {H}x{W} is too small for kernel {k}, stride {s}, padding {p}")
        if k == 1 and s == 1 and p == 0:
            cols = x.reshape(B * H * W, C)  # (B, H, W, C) -> (N, C), no copy when x is contiguous
        else:
            cols = self._cols_buffer(xp, (B, Ho, Wo, k, k * C), x.dtype)
            _im2col_into(cols, _padded(x, p, "xpad"), k, s, Ho, Wo)  # the im2col copy
            cols = cols.reshape(B * Ho * Wo, k * k * C)  # (B, Ho, Wo, k, kC) -> (N, kkC), no copy
        self._cols, self._xshape = cols, x.shape
        y = cols @ self.W.data.reshape(k * k * C, self.out_channels)  # (N, kkC) @ (kkC, O) -> (N, O)
        if self.b is not None:
            y += self.b.data
        return y.reshape(B, Ho, Wo, self.out_channels)  # (N, O) -> (B, Ho, Wo, O)

    def backward(self, dy):
        xp = backend.get_xp(dy)
        B, H, W, C = self._xshape
        k, s, p = self.kernel_size, self.stride, self.padding
        Ho, Wo, O = dy.shape[1], dy.shape[2], self.out_channels
        cols = self._cols
        dy2 = dy.reshape(B * Ho * Wo, O)  # (B, Ho, Wo, O) -> (N, O)
        W2 = self.W.data.reshape(k * k * C, O)  # (k, k, C, O) -> (kkC, O)
        self.W.grad += (cols.T @ dy2).reshape(self.W.data.shape)  # (kkC, N) @ (N, O) -> (kkC, O)
        if self.b is not None:
            self.b.grad += _sum_rows(dy2)[0]
        if k == 1 and s == 1 and p == 0:
            return (dy2 @ W2.T).reshape(B, H, W, C)  # (N, O) @ (O, C) -> (N, C)
        if s == 1 and p <= k - 1:
            # dx is the full correlation of dy with the flipped kernel:
            # dx[b, a, c] = sum_{u', v', o} dypad[b, a + u', c' + v', o] W[k-1-u', k-1-v', c, o], dy padded by
            # k-1-p. One more im2col (one strided copy into a pooled buffer) + GEMM beats dcols + a nine-way
            # strided fold.
            dcols = _scratch(xp, "dcols", (B, H, W, k, k * O), dy.dtype)
            _im2col_into(dcols, _padded(dy, k - 1 - p, "dypad"), k, 1, H, W)
            W_flip = self.W.data[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * O, C)  # (k, k, O, C) -> (kkO, C)
            return (dcols.reshape(B * H * W, k * k * O) @ W_flip).reshape(B, H, W, C)  # (N_x, kkO) @ (kkO, C)
        dcols = (dy2 @ W2.T).reshape(B, Ho, Wo, k, k, C)  # (N, O) @ (O, kkC) -> (B, Ho, Wo, k, k, C)
        dxpad = xp.zeros((B, H + 2 * p, W + 2 * p, C), dtype=dy.dtype)
        for u in range(k):
            for v in range(k):
                dxpad[:, u:u + s * (Ho - 1) + 1:s, v:v + s * (Wo - 1) + 1:s, :] += dcols[:, :, :, u, v, :]
        if p:
            return xp.ascontiguousarray(dxpad[:, p:p + H, p:p + W, :])
        return dxpad


class Upsample(Module):
    r"""Nearest-neighbour 2x upsampling, channels-last: ``y[b, i, j] = x[b, i // 2, j // 2]``.
    Backward: ``dx[b, i, j] = sum of dy over the 2x2 block it was copied to``."""

    def forward(self, x):
        x = check_array(x, "x", ndim=4, finite=False)
        xp = backend.get_xp(x)
        B, H, W, C = x.shape
        y = xp.broadcast_to(x[:, :, None, :, None, :], (B, H, 2, W, 2, C))
        return y.reshape(B, 2 * H, 2 * W, C)  # (B, H, 2, W, 2, C) -> (B, 2H, 2W, C), one copy

    def backward(self, dy):
        B, H2, W2, C = dy.shape
        return dy.reshape(B, H2 // 2, 2, W2 // 2, 2, C).sum(axis=(2, 4))  # -> (B, H, W, C)


class Downsample(Module):
    r"""2x2 average pooling, channels-last: ``y[b, i, j] = mean of x over the block (2i..2i+1, 2j..2j+1)``.
    Backward: each input pixel receives ``dy / 4`` of its block. H and W must be even."""

    def forward(self, x):
        x = check_array(x, "x", ndim=4, finite=False)
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"Downsample needs even H and W; got shape {tuple(x.shape)}")
        y = x.reshape(B, H // 2, 2, W // 2, 2, C).sum(axis=(2, 4))  # (B, H, W, C) -> (B, H/2, W/2, C)
        y *= 0.25
        return y

    def backward(self, dy):
        xp = backend.get_xp(dy)
        B, H, W, C = dy.shape
        dx = xp.broadcast_to((dy * 0.25)[:, :, None, :, None, :], (B, H, 2, W, 2, C))
        return dx.reshape(B, 2 * H, 2 * W, C)  # (B, H, 2, W, 2, C) -> (B, 2H, 2W, C), one copy


class Embedding(Module):
    r"""Lookup table ``y = W[labels]`` for integer labels in ``[0, num_embeddings)``.

    For class conditioning with classifier-free guidance, build it with ``num_classes + 1`` rows: the
    last row is the learned NULL label (Ho & Salimans 2022). Backward: ``dW += onehot(labels)^T dy`` (a
    small GEMM rather than ``add.at``, identical on NumPy and CuPy); labels get no gradient (returns None).
    """

    def __init__(self, num_embeddings: int, dim: int, dtype="float32", seed=None):
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", maximum=MAX_WIDTH)
        self.dim = check_positive_int(dim, "dim", maximum=MAX_WIDTH)
        dt = check_float_dtype(dtype)
        rng = check_rng(seed, "seed")
        self.W = Parameter(_normal(rng, (self.num_embeddings, self.dim), 1.0, dt))

    def check_labels(self, labels, batch=None):
        """Integer labels of shape (B,) within [0, num_embeddings), checked before any indexing."""
        return check_labels(labels, "labels", self.num_embeddings, batch=batch, like=self.W.data)

    def forward(self, labels):
        self.check_labels(labels)
        self._labels = labels
        return self.W.data[labels]  # (B,) -> (B, dim)

    def backward(self, dy):
        xp = backend.get_xp(dy)
        onehot = (self._labels[:, None] == xp.arange(self.num_embeddings)[None, :]).astype(dy.dtype)
        self.W.grad += onehot.T @ dy  # (n, B) @ (B, dim) -> (n, dim)
        return None


class SigmaEmbedding(Module):
    r"""Sinusoidal features of the log noise level, with no parameters:

    ``u = log(sigma)``, ``e(sigma) = [sin(w_k u), cos(w_k u)]_{k=1..K}``, ``w_k`` geometric from
    ``min_frequency`` to ``max_frequency``.

    Injectivity: the lowest pair alone, (sin w_1 u, cos w_1 u), is injective in u on any interval of
    length < 2 pi / w_1. With the default w_1 = 1/4 that is 25.1 in log(sigma), i.e. sigma ratios up to
    ~8e10 (e.g. [1e-5, 1e5]); the range of every schedule in minidiff (~1e-3 .. ~2e4, ratio 2e7) fits.
    The higher frequencies (up to 8 rad per e-fold) resolve nearby sigmas. By contrast the 2-feature
    (sin, cos) of ``log(sigma)/2`` wraps once ``log(sigma_max / sigma_min) > 4 pi`` (a ratio ~2.9e5).

    Backward: ``de/du = [w_k cos(w_k u), -w_k sin(w_k u)]`` and ``du/dsigma = 1/sigma``; returns
    ``dsigma`` (B,) (the models do not differentiate through sigma; it is here for gradcheck).
    """

    def __init__(self, num_frequencies: int = 8, min_frequency: float = 0.25, max_frequency: float = 8.0,
                 dtype="float32"):
        self.num_frequencies = check_positive_int(num_frequencies, "num_frequencies", maximum=4096)
        min_frequency = check_real(min_frequency, "min_frequency", 0.0, 1e6, low_open=True)
        max_frequency = check_real(max_frequency, "max_frequency", min_frequency, 1e6)
        self.min_frequency, self.max_frequency = min_frequency, max_frequency
        self.dtype = check_float_dtype(dtype)
        self.dim = 2 * self.num_frequencies
        K = self.num_frequencies
        ratio = (self.max_frequency / self.min_frequency) ** (1.0 / (K - 1)) if K > 1 else 1.0
        self._freqs = [self.min_frequency * ratio ** k for k in range(K)]  # Python floats
        self._w_cache = {}  # (backend, dtype) -> the (K,) frequency array, built once per backend

    def _frequencies(self, xp, dtype):
        key = (xp.__name__, str(dtype))
        w = self._w_cache.get(key)
        if w is None:  # one host -> device copy per backend and dtype, not one per forward
            w = self._w_cache[key] = xp.asarray(self._freqs, dtype=dtype)
        return w

    def forward(self, sigma):
        """``sigma``: array (B,) of noise levels in [1e-15, 1e15] -> features (B, 2K)."""
        sigma = check_array(sigma, "sigma", ndim=1, finite=False)
        sigma_like(sigma, sigma)  # range check (one host sync); the models validate once and call embed
        return self.embed(sigma)

    def embed(self, sigma):
        """:meth:`forward` without the range check, for callers that validated ``sigma`` already."""
        xp = backend.get_xp(sigma)
        w = self._frequencies(xp, sigma.dtype)  # (K,)
        u = xp.log(sigma)
        wu = u[:, None] * w[None, :]  # (B, 1) * (1, K) -> (B, K)
        self._sigma, self._wu, self._w = sigma, wu, w
        return xp.concatenate([xp.sin(wu), xp.cos(wu)], axis=1)  # (B, 2K)

    def backward(self, de):
        xp = backend.get_xp(de)
        K = self.num_frequencies
        wu, w = self._wu, self._w
        du = (de[:, :K] * xp.cos(wu) - de[:, K:] * xp.sin(wu)) @ w  # (B, K) @ (K,) -> (B,)
        return du / self._sigma


class ResBlock(Module):
    r"""Residual block with a noise-embedding shift (Ho et al. 2020, App. B; Nichol & Dhariwal 2021):

    ``h = conv1(silu(gn1(x)))``; ``h = h + proj(e)[:, None, None, :]``; ``h = conv2(silu(gn2(h)))``;
    ``y = skip(x) + h`` with ``skip`` the identity when ``in_channels == out_channels`` else a 1x1 conv.
    ``e`` (B, emb_dim) is the already-activated embedding. Channels-last.

    ``forward(x, e) -> y``; ``backward(dy) -> (dx, de)`` by the chain rule through the same steps.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int = 8,
                 dtype="float32", seed=None):
        rng = check_rng(seed, "seed")
        self.gn1 = GroupNorm(groups, in_channels, dtype=dtype)
        self.act1 = SiLU()
        self.conv1 = Conv2d(in_channels, out_channels, 3, dtype=dtype, seed=rng)
        self.proj = Linear(emb_dim, out_channels, dtype=dtype, seed=rng)
        self.gn2 = GroupNorm(groups, out_channels, dtype=dtype)
        self.act2 = SiLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, dtype=dtype, seed=rng)
        self.skip = Conv2d(in_channels, out_channels, 1, dtype=dtype, seed=rng) if in_channels != out_channels else None

    def forward(self, x, e):
        h = self.conv1(self.act1(self.gn1(x)))
        h += self.proj(e)[:, None, None, :]  # (B, O) -> (B, 1, 1, O), added per channel
        h = self.conv2(self.act2(self.gn2(h)))
        h += x if self.skip is None else self.skip(x)
        return h

    def backward(self, dy):
        dh = self.gn2.backward(self.act2.backward(self.conv2.backward(dy)))
        de = self.proj.backward(dh.sum(axis=(1, 2)))  # (B, H, W, O) -> (B, O)
        dx = self.gn1.backward(self.act1.backward(self.conv1.backward(dh)))
        dx += dy if self.skip is None else self.skip.backward(dy)
        return dx, de
