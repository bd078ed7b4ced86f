r"""Non-parametric reversal of a point-cloud random walk (the experiment of the "Unit 10 –
Diffusion Models" lecture notes).

The forward random walk keeps every cloud: x^t = x^{t-1} + sigma_t w^t, t = 1..T, with
trajectory[t] the cloud at time t (trajectory[0] = the data). Because every intermediate
cloud is stored, the walk can be reversed without any model: from a point x at time t,

    N(x)   = points of cloud t-1 within ``radius`` of x   (or its ``k`` nearest)
    mu     = sum_{j in N(x)} w_j p_j / sum_j w_j,  w_j = 1 / max(||x - p_j||, 1e-12)
    x'     = mu + noise_scale * sigma_t * z,  z ~ N(0, I)

Cloud t-1 is on average closer to the data manifold than cloud t, so the local mean pulls
x toward the manifold, and the Gaussian sample makes the end points new points rather than
copies. ``noise_scale = 1`` re-injects exactly the forward step's sigma (the lecture notes' "small
covariance"); smaller values give tighter but less diverse end clouds.

Failure modes, documented and reported:

- radius too small: empty neighbourhoods. Fallback: the nearest point of cloud t-1 (the
  limit of the inverse-distance mean as the radius shrinks); ``n_empty[t-1]`` counts them.
- radius too large: the mean averages over a wide region and is pulled toward the cloud's
  centre (samples collapse inward and lose the manifold's shape). Radius queries are also
  capped at the ``max_neighbors`` nearest points inside the ball (for speed and memory).
- k too large: the same over-smoothing; k = 1 follows single points and reproduces the
  forward clouds' noise. k in 5..20 works on the toy sets.
- a query that coincides with a cloud point: that point gets weight 1e12 and dominates.

Neighbour search: on the CPU (NumPy arrays) scipy's ``cKDTree``, one tree per step — this
module is host code on that path and imports numpy/scipy; on the GPU (CuPy arrays, or
``method="brute"``) a chunked brute-force GEMM search (:func:`minidiff.metrics.knn`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy  # host code: the cKDTree path and the host copy of the sigmas

from . import backend
from ._validate import SIGMA_MAX, SIGMA_MIN, check_array, check_choice, check_host_1d, check_positive_int, check_real, check_rng
from .metrics import knn

__all__ = ["Reversal", "reverse_point_clouds"]

_DIST_FLOOR = 1e-12  # inverse-distance weights use max(d, 1e-12)


@dataclass
class Reversal:
    """Result of :func:`reverse_point_clouds`."""

    path: object  # (T+1, M, D): path[T] = x_start, path[0] = the reversed end cloud
    n_empty: object  # (T,) host int array: empty neighbourhoods at the step from t to t-1, index t-1


def _neighbours(x, cloud, k, radius, max_neighbors, method, chunk_size):
    """(d, idx) of shape (M, k'): distances (inf where no neighbour) and indices into ``cloud``."""
    xp = backend.get_xp(x, cloud)
    kk = k if k is not None else min(max_neighbors, cloud.shape[0])
    if method == "kdtree":
        from scipy.spatial import cKDTree

        tree = cKDTree(cloud)
        ub = numpy.inf if radius is None else radius
        d, idx = tree.query(x, k=kk, distance_upper_bound=ub)
        d, idx = d.reshape(x.shape[0], kk), idx.reshape(x.shape[0], kk)  # k = 1 returns (M,)
        idx = numpy.where(numpy.isfinite(d), idx, 0)  # missing neighbours come back as index N
        return d, idx
    d, idx = knn(x, cloud, k=kk, chunk_size=chunk_size)
    if radius is not None:
        d = xp.where(d <= radius, d, xp.inf)
    return d, idx


def reverse_point_clouds(trajectory, sigmas, x_start=None, *, k=None, radius=None, max_neighbors=32,
                         noise_scale=1.0, rng=None, method="auto", chunk_size=1024):
    r"""Reverse a stored forward random walk by local inverse-distance means plus Gaussian noise.

    Parameters
    ----------
    trajectory : array (T+1, N, D), trajectory[0] the data, trajectory[t] the cloud after step t
        (as from ``minidiff.forward.random_walk``). Every step must be kept.
    sigmas : sequence or array (T,), > 0: the forward step sizes sigma_1..sigma_T.
    x_start : array (M, D) or None: starting points at time T (default: a copy of trajectory[T]).
    k : int, the number of nearest neighbours (default min(8, N) when ``radius`` is None).
    radius : float > 0, use the points of cloud t-1 within this radius instead (exclusive with k).
    max_neighbors : cap on the neighbours used in radius mode.
    noise_scale : float >= 0, the Gaussian sample has std noise_scale * sigma_t.
    rng : seed or Generator (``backend.default_rng``).
    method : "auto" (cKDTree for NumPy arrays, brute force for CuPy), "kdtree" or "brute".

    Returns
    -------
    Reversal(path (T+1, M, D), n_empty (T,) ints). path[t] is the reversed cloud at time t.
    """
    trajectory = check_array(trajectory, "trajectory", ndim=3)
    T = trajectory.shape[0] - 1
    if T < 1 or trajectory.shape[1] == 0:
        raise ValueError(f"trajectory must have shape (T+1, N, D) with T >= 1, N >= 1; got {tuple(trajectory.shape)}")
    N, D = trajectory.shape[1], trajectory.shape[2]
    xp = backend.get_xp(trajectory)
    sig = check_host_1d(sigmas, "sigmas", SIGMA_MIN, SIGMA_MAX)  # host copy of T scalars
    if sig.shape != (T,):
        raise ValueError(f"sigmas must have shape (T,) = ({T},) to match trajectory; got {sig.shape}")
    if k is not None and radius is not None:
        raise ValueError("give either k or radius, not both")
    if radius is None:
        k = check_positive_int(min(8, N) if k is None else k, "k")
        if k > N:
            raise ValueError(f"k must be <= the cloud size N = {N}; got {k}")
    else:
        radius = check_real(radius, "radius", 0.0, low_open=True)
        max_neighbors = check_positive_int(max_neighbors, "max_neighbors")
    noise_scale = check_real(noise_scale, "noise_scale", 0.0, 1e6)
    method = check_choice(method, "method", ("auto", "kdtree", "brute"))
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if method == "auto":
        method = "brute" if backend.is_cupy_array(trajectory) else "kdtree"
    if method == "kdtree" and backend.is_cupy_array(trajectory):
        raise ValueError("method='kdtree' needs NumPy arrays (cKDTree runs on the host); use 'brute'")
    if x_start is None:
        x = trajectory[T].copy()
    else:
        x_start = check_array(x_start, "x_start", ndim=2)
        if x_start.shape[1] != D:
            raise ValueError(f"x_start must have shape (M, {D}); got {tuple(x_start.shape)}")
        x = xp.asarray(x_start, dtype=trajectory.dtype).copy()
    rng = check_rng(rng, xp=xp)

    path = xp.empty((T + 1,) + x.shape, dtype=trajectory.dtype)
    path[T] = x
    n_empty = numpy.zeros(T, dtype=numpy.int64)
    rows = xp.arange(x.shape[0])
    for t in range(T, 0, -1):
        cloud = trajectory[t - 1]  # (N, D)
        d, idx = _neighbours(x, cloud, k, radius, max_neighbors, method, chunk_size)  # (M, k')
        d, idx = xp.asarray(d, dtype=x.dtype), xp.asarray(idx)
        w = 1.0 / xp.maximum(d, _DIST_FLOOR)  # (M, k'); 0 where d = inf (no neighbour)
        wsum = w.sum(axis=1)  # (M,)
        mu = (w[:, :, None] * cloud[idx]).sum(axis=1) / xp.where(wsum > 0, wsum, 1.0)[:, None]  # (M, D)
        empty = wsum == 0
        n = int(empty.sum())  # one host sync per step: the reported count
        if n:
            _, nearest = _neighbours(x[empty], cloud, 1, None, 1, method, chunk_size)  # fallback
            mu[rows[empty]] = cloud[xp.asarray(nearest)[:, 0]]
        n_empty[t - 1] = n
        x = mu + (noise_scale * float(sig[t - 1])) * rng.standard_normal(x.shape, dtype=x.dtype)
        path[t - 1] = x
    return Reversal(path=path, n_empty=n_empty)
