r"""The ideal denoiser of a finite set, and exact projection / distance to that set.

For a finite training set K = {x_1, ..., x_n} and data drawn uniformly from K, the
minimiser of the training loss E ||eps_hat(x0 + sigma eps, sigma) - eps||^2 is known in
closed form (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models from an
Optimization Perspective", ICML, Sec. 3; docs/math.md §9):

    w_i(x, sigma) = softmax_i( -||x - x_i||^2 / (2 sigma^2) )
    x0_hat(x, sigma) = sum_i w_i x_i
    eps*(x, sigma)   = (x - x0_hat) / sigma

and with the pinned smoothed squared distance

    dist^2_K(x, sigma) = -2 sigma^2 log sum_i exp( -||x - x_i||^2 / (2 sigma^2) )

one has sigma * eps* = (1/2) grad_x dist^2_K(x, sigma) exactly; dist^2_K -> dist_K(x)^2
as sigma -> 0. (The pinned form has no -log n term, so dist^2_K <= dist_K(x)^2.)

Numerics (why the code looks the way it does)
---------------------------------------------
* Distances come from a GEMM: ||x - x_i||^2 = |x|^2 - 2 x.x_i + |x_i|^2. The |x|^2 term is
  constant per query and cancels in the softmax, so the hot loop only forms
  logits_i = (x.x_i - |x_i|^2 / 2) / sigma^2. This costs 2 N D B flops, and the weighted sum
  sum_i w_i x_i another 2 N D B (the "4 N D B" of the benchmark). Both GEMMs run on one augmented
  matrix A = [|x_i|^2 / 2, x_i, 1]: the queries [-1, x] / sigma^2 times A's first D + 1 columns give
  the logits with the shift and scale already applied, and the weights times A's last D + 1 columns
  give sum_i w_i x_i and sum_i w_i together, so what remains besides the GEMMs is max, shift,
  floor and exp (measured at ~0.9 of the time of the two GEMMs alone at N = 60000, D = 784;
  benchmarks/bench_ideal.py).
* The expansion cancels when x sits near a data point far from the origin. Two guards:
  the data (and queries) are recentred on the data mean (computed in float64), which
  removes a common offset; and the nearest candidate is refined exactly: its squared
  distance is recomputed as sum((x - x_top)^2) directly, so dist^2 and dist are >= 0 and
  exactly 0 on a data point. What remains is the float rounding of the GEMM itself,
  ~ eps_mach * R^2 in d^2 for data radius R about its mean.
* The set is streamed in chunks with an online log-sum-exp: running max m, running sum
  s = sum exp(logit - m) and running weighted sum acc = sum exp(logit - m) x_i are rescaled by
  exp(m_old - m_new) whenever the max grows. Memory is O(B x chunk_size), never O(B x N).
* Shifted logits are clamped at -80 before exp: float32 exp of arguments in about
  [-103, -87] returns subnormals, which x86 processes ~40x slower (docs/performance.md §2). Those weights
  are < 2e-35 relative to the top one and vanish in every sum.
* eps is formed as ((x - c) - (x0_hat - c)) / sigma in the recentred frame, so a query equal
  to a data point gives eps = 0 exactly even at sigma = 1e-6.

Everything is computed in the dtype of the stored data (float32 or float64); queries are
cast to it and results are returned in the query's dtype. No ``import numpy`` here: the
array module comes from :mod:`minidiff.backend`, so the same code runs on CuPy.
"""
from __future__ import annotations

from . import backend
from ._validate import check_array, check_positive_int, sigma_like, trusted_values, values_trusted

__all__ = ["IdealDenoiser", "project", "dist"]

_LOGIT_FLOOR = -80.0  # shifted logits below this are clamped (subnormal trap, see module doc)
_DEFAULT_CHUNK = 2048


def _as_data(data, name="data"):
    """Validate a finite set given as (N, D) or (N, C, H, W) (any (N, ...)); return (flat, item_shape)."""
    data = check_array(data, name)  # float32/float64, finite values
    if data.ndim < 2:
        raise ValueError(f"{name} must have shape (N, D) or (N, ...) with N >= 1; got shape {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0): the finite set K needs at least one point")
    item_shape = tuple(data.shape[1:])
    flat = data.reshape(data.shape[0], -1)  # (N, ...) -> (N, D)
    if flat.shape[1] == 0:
        raise ValueError(f"{name} items have zero size; got shape {tuple(data.shape)}")
    return flat, item_shape


def _checked_queries(x, sigma, item_shape, dtype):
    """(sigma as from ``sigma_like``, queries flattened to (B, D)), with the finiteness of ``x`` and
    the range of an array ``sigma`` checked in one device -> host sync together (none inside
    ``trusted_values()``): the per-call cost of validation on a GPU (docs/backends.md §1)."""
    with trusted_values():  # shapes and types here; the values below, in one sync
        sig = sigma_like(sigma, x)
        xf = _as_queries(x, item_shape, dtype, finite=False)
    if not values_trusted():
        xp = backend.get_xp(xf)
        ok = xp.isfinite(xf).all()
        if not isinstance(sig, float):
            ok = ok & (xp.isfinite(sig) & (sig > 0)).all()
        if not bool(ok):  # the one sync; the error path below may sync again to name the culprit
            check_array(x, "x")
            sigma_like(sigma, x)
    return sig, xf


def _as_queries(x, item_shape, dtype, name="x", finite=True):
    """Validate queries shaped (B, *item_shape); return them flattened to (B, D) in ``dtype``."""
    x = check_array(x, name, finite=finite)
    if tuple(x.shape[1:]) != item_shape or x.ndim != len(item_shape) + 1:
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, item_shape))}) to match the data items; "
            f"got shape {tuple(x.shape)}"
        )
    xp = backend.get_xp(x)
    return xp.asarray(x.reshape(x.shape[0], -1), dtype=dtype)  # (B, ...) -> (B, D)


class IdealDenoiser:
    r"""Exact minimiser of the denoising loss for data uniform on a finite set K.

    ``denoiser(x, sigma) -> eps_hat`` with ``eps_hat = (x - sum_i w_i x_i) / sigma`` and
    ``w = softmax(-||x - x_i||^2 / (2 sigma^2))`` (Permenter & Yuan 2024, Sec. 3; docs/math.md §9).

    Parameters
    ----------
    data : array (N, D) or (N, C, H, W) (any (N, ...)), float32 or float64, finite, N >= 1.
        Flattened internally. The computation dtype is the data's dtype.
    chunk_size : int >= 1
        Number of data points streamed per step; memory is O(batch x chunk_size).

    Queries ``x`` have shape (B, *data.shape[1:]); ``sigma`` is a float > 0 or an array
    of shape (B,) (one level per sample).
    """

    def __init__(self, data, chunk_size: int = _DEFAULT_CHUNK):
        flat, self.item_shape = _as_data(data)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        xp = backend.get_xp(flat)
        self.xp = xp
        self.dtype = flat.dtype
        self.n, self.dim = flat.shape
        # Recentre on the data mean (accumulated in float64, then cast once): removes a
        # common offset from the GEMM distance expansion.
        self.center = xp.mean(flat.astype("float64"), axis=0).astype(self.dtype)  # (D,)
        # One augmented matrix A = [|x_i - c|^2 / 2, x_i - c, 1] (N, D + 2), so that both GEMMs of the
        # scan carry their elementwise companions: [-1, x - c] / sigma^2 @ A[:, :D+1]^T is the logit
        # (x.x_i - |x_i|^2 / 2) / sigma^2, and w @ A[:, 1:] is [sum_i w_i (x_i - c), sum_i w_i].
        aug = xp.empty((self.n, self.dim + 2), dtype=self.dtype)
        aug[:, 1:-1] = flat - self.center  # recentred data
        aug[:, 0] = 0.5 * xp.sum(aug[:, 1:-1] * aug[:, 1:-1], axis=1)
        aug[:, -1] = 1.0
        self._aug = aug
        self.data = aug[:, 1:-1]  # (N, D), recentred (a view)
        self.half_sq = aug[:, 0]  # (N,) = |x_i - c|^2 / 2 (a view)

    # -- the streamed core -------------------------------------------------------------
    def _inv_var(self, sigma, B):
        """1 / sigma^2 as a Python float (scalar sigma) or a (B, 1) column of the data dtype."""
        xp = self.xp
        if isinstance(sigma, float):
            return 1.0 / (sigma * sigma)
        s = xp.asarray(sigma, dtype="float64").reshape(B, 1)  # (B, 1, ..., 1) -> (B, 1)
        return (1.0 / (s * s)).astype(self.dtype)

    def _queries(self, xc, inv_var):
        """[-1, x - c] / sigma^2, (B, D + 1): with A[:, :D+1] one GEMM gives the logits."""
        q = self.xp.empty((xc.shape[0], self.dim + 1), dtype=self.dtype)
        q[:, :1] = -1.0
        q[:, 1:] = xc
        q *= inv_var  # scalar or (B, 1)
        return q

    def _scan(self, xc, inv_var, want_top=False):
        """Online log-sum-exp over chunks of K for recentred queries xc (B, D).

        Returns (m, s, acc, top): running max logit (B,), sum exp(logit - m) (B,) >= 1,
        weighted sum acc = sum_i exp(logit_i - m) (x_i - c) (B, D), and (with ``want_top``) the
        index of the largest logit (the nearest point, up to GEMM rounding) (B,), else None.
        Per chunk: two GEMMs and four elementwise passes (max, shift, floor, exp); the sums
        s and acc both come out of the second GEMM through A's column of ones.
        """
        xp = self.xp
        B, D = xc.shape
        q = self._queries(xc, inv_var)  # (B, D + 1)
        m = xp.full((B,), -xp.inf, dtype=self.dtype)
        acc_s = xp.zeros((B, D + 1), dtype=self.dtype)  # [acc, s]
        top = xp.zeros((B,), dtype="int64") if want_top else None
        for start in range(0, self.n, self.chunk_size):
            Ac = self._aug[start:start + self.chunk_size]  # (C, D + 2)
            logits = q @ Ac[:, :D + 1].T  # (B, D+1) @ (D+1, C) -> (B, C): (x.x_i - |x_i|^2/2) / sigma^2
            if want_top:
                j = xp.argmax(logits, axis=1)  # (B,)
                m_chunk = xp.take_along_axis(logits, j[:, None], axis=1)[:, 0]
                top = xp.where(m_chunk > m, j + start, top)
            else:
                m_chunk = logits.max(axis=1)  # (B,)
            m_new = xp.maximum(m, m_chunk)
            rescale = xp.exp(m - m_new)  # (B,), 0 on the first chunk (exp(-inf))
            logits -= m_new[:, None]
            xp.maximum(logits, _LOGIT_FLOOR, out=logits)  # subnormal trap guard
            xp.exp(logits, out=logits)  # in place, stays in the data dtype
            acc_s *= rescale[:, None]
            acc_s += logits @ Ac[:, 1:]  # (B, C) @ (C, D+1) -> (B, D+1): [sum w (x_i - c), sum w]
            m = m_new
        return m, acc_s[:, D], acc_s[:, :D], top

    def _prepare(self, x, sigma):
        sig, xf = _checked_queries(x, sigma, self.item_shape, self.dtype)  # at most one sync
        xc = xf - self.center  # (B, D), recentred like the data
        return sig, xc, self._inv_var(sig, xf.shape[0])

    # -- public API --------------------------------------------------------------------
    def x0_hat(self, x, sigma):
        r"""Posterior mean E[x0 | x] = sum_i w_i x_i, shape like ``x``."""
        sig, xc, inv_var = self._prepare(x, sigma)
        _, s, acc, _ = self._scan(xc, inv_var)
        out = acc / s[:, None] + self.center  # (B, D)
        return out.reshape(x.shape).astype(x.dtype, copy=False)

    def __call__(self, x, sigma):
        r"""eps*(x, sigma) = (x - x0_hat(x, sigma)) / sigma, shape like ``x``."""
        sig, xc, inv_var = self._prepare(x, sigma)
        _, s, acc, _ = self._scan(xc, inv_var)
        resid = xc - acc / s[:, None]  # (x - c) - (x0_hat - c), (B, D)
        sig_col = sig if isinstance(sig, float) else sig.reshape(-1, 1)  # (B, 1)
        eps_hat = resid / sig_col
        return eps_hat.reshape(x.shape).astype(x.dtype, copy=False)

    def weights(self, x, sigma):
        r"""The softmax weights w_i(x, sigma), shape (B, N); rows sum to 1.

        This materialises a (B, N) array by definition; it is for inspection and tests.
        Computed chunk by chunk as exp(logit - m) / s with the (m, s) of the online pass.
        """
        xp = self.xp
        sig, xc, inv_var = self._prepare(x, sigma)
        m, s, _, _ = self._scan(xc, inv_var)
        w = xp.empty((xc.shape[0], self.n), dtype=self.dtype)
        q = self._queries(xc, inv_var)
        for start in range(0, self.n, self.chunk_size):
            Ac = self._aug[start:start + self.chunk_size]  # (C, D + 2)
            logits = q @ Ac[:, :self.dim + 1].T  # (B, D+1) @ (D+1, C) -> (B, C), as in _scan
            logits -= m[:, None]
            # below the floor the weight is < 2e-35 of the top one: report it as exactly 0
            w[:, start:start + Ac.shape[0]] = xp.where(logits < _LOGIT_FLOOR, 0.0, xp.exp(logits)) / s[:, None]
        return w.astype(x.dtype, copy=False)

    def smoothed_dist2(self, x, sigma):
        r"""dist^2_K(x, sigma) = -2 sigma^2 log sum_i exp(-||x - x_i||^2 / (2 sigma^2)), shape (B,).

        Evaluated as d2_top - 2 sigma^2 log s, where d2_top = ||x - x_top||^2 is recomputed
        exactly for the nearest candidate and s = sum_i exp(-(d2_i - d2_top) / (2 sigma^2)) >= 1
        comes from the online pass; hence dist^2_K <= dist_K^2 and -> dist_K^2 as sigma -> 0.
        """
        xp = self.xp
        sig, xc, inv_var = self._prepare(x, sigma)
        _, s, _, top = self._scan(xc, inv_var, want_top=True)
        diff = xc - self.data[top]  # (B, D), exact difference to the top candidate
        d2_top = xp.sum(diff * diff, axis=1)  # (B,)
        two_var = 2.0 * sig * sig if isinstance(sig, float) else 2.0 * (sig.reshape(-1) ** 2)
        return (d2_top - two_var * xp.log(s)).astype(x.dtype, copy=False)


def _nearest(xf, data, chunk_size):
    """Index of the nearest point of ``data`` (N, D) for each row of ``xf`` (B, D), and the
    exactly recomputed squared distance to it. Both already recentred by the caller."""
    xp = backend.get_xp(xf, data)
    B = xf.shape[0]
    best = xp.full((B,), xp.inf, dtype=data.dtype)
    idx = xp.zeros((B,), dtype="int64")
    rows = xp.arange(B)
    half_sq = 0.5 * xp.sum(data * data, axis=1)  # (N,)
    for start in range(0, data.shape[0], chunk_size):
        # ||x - x_i||^2 / 2 - |x|^2 / 2 = |x_i|^2 / 2 - x.x_i, minimised over i
        score = half_sq[start:start + chunk_size] - xf @ data[start:start + chunk_size].T  # (B, D) @ (D, C) -> (B, C)
        j = xp.argmin(score, axis=1)  # (B,)
        v = score[rows, j]
        better = v < best
        idx = xp.where(better, j + start, idx)
        best = xp.where(better, v, best)
    diff = xf - data[idx]  # (B, D) exact refinement of the chosen candidate
    return idx, xp.sum(diff * diff, axis=1)


def _prepare_set(x, data, chunk_size):
    flat, item_shape = _as_data(data)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    xf = _as_queries(x, item_shape, flat.dtype)
    xp = backend.get_xp(flat)
    center = xp.mean(flat.astype("float64"), axis=0).astype(flat.dtype)  # (D,)
    return xf - center, flat - center, chunk_size


def project(x, data, chunk_size: int = _DEFAULT_CHUNK):
    r"""Euclidean projection onto the finite set K: proj_K(x) = argmin_{x_i in K} ||x - x_i||.

    ``x`` (B, *item), ``data`` (N, *item). Returns the nearest data points, shape like ``x``
    (ties, and near-ties within GEMM rounding ~eps_mach * R^2 in d^2, go to one of them).
    Chunked over K: memory O(B x chunk_size).
    """
    xc, dc, chunk_size = _prepare_set(x, data, chunk_size)
    idx, _ = _nearest(xc, dc, chunk_size)
    flat = data.reshape(data.shape[0], -1)  # (N, ...) -> (N, D)
    return flat[idx].reshape(x.shape).astype(x.dtype, copy=False)  # exact copies of data rows


def dist(x, data, chunk_size: int = _DEFAULT_CHUNK):
    r"""dist_K(x) = min_i ||x - x_i||, shape (B,), recomputed exactly for the chosen point."""
    xc, dc, chunk_size = _prepare_set(x, data, chunk_size)
    _, d2 = _nearest(xc, dc, chunk_size)
    xp = backend.get_xp(d2)
    return xp.sqrt(d2).astype(x.dtype, copy=False)

