r"""Sample-quality metrics for toy data sets, backend-agnostic and chunked.

- :func:`manifold_distance`: distance of samples to the true manifold of a data set.
- :func:`knn_distances`, :func:`memorization_rate`: nearest-training-neighbour distances and
  the share of samples that sit on a training point (d1 < ratio * d2).
- :func:`sliced_wasserstein`: SW_p with random directions, exact 1-D W_p per direction.
- :func:`mmd_rbf`: squared maximum mean discrepancy with a Gaussian kernel.
- :func:`precision_recall`: k-NN precision and recall (Kynkaenniemi et al. 2019).
- :func:`gaussian_fit`, :func:`frechet_distance`, :func:`feature_fid`: the Frechet distance between
  Gaussians fitted to features; :class:`GlyphFeatures` (a glyph classifier's penultimate layer) and
  :func:`glyph_fid`, the "glyph FID" of docs/quality.md §4 (not comparable to Inception FID).

Every pairwise computation streams over chunks, so memory is O(chunk x chunk) (plus the
inputs), never O(N x M). Items of any shape (N, ...) are flattened to (N, D). No
``import numpy``: the array module comes from :mod:`minidiff.backend`. Scalar results are
returned as Python floats (one explicit device -> host sync each, for reporting).
"""
from __future__ import annotations

import math

from . import backend
from ._validate import check_array, check_positive_int, check_real, check_rng

__all__ = ["manifold_distance", "knn", "knn_distances", "memorization_rate", "sliced_wasserstein",
           "mmd_rbf", "precision_recall", "gaussian_fit", "frechet_distance", "feature_fid", "GlyphFeatures",
           "glyph_fid"]

_CHUNK = 1024


def _flat(a, name):
    a = check_array(a, name)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1; got shape {tuple(a.shape)}")
    return a.reshape(a.shape[0], -1)  # (N, ...) -> (N, D)


def _pair(a, b, na, nb):
    a, b = _flat(a, na), _flat(b, nb)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{na} and {nb} must have the same item size; got {a.shape[1]} and {b.shape[1]}")
    xp = backend.get_xp(a, b)
    dt = xp.result_type(a.dtype, b.dtype)
    return xp.asarray(a, dtype=dt), xp.asarray(b, dtype=dt), xp


def _sq_dists(x, y, y_sq, xp):
    """||x_i - y_j||^2 by GEMM, clamped at 0: (B, D), (C, D) -> (B, C)."""
    d2 = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ y.T) + y_sq[None, :]  # (B, D) @ (D, C) -> (B, C)
    return xp.maximum(d2, 0.0, out=d2)


# ---------------------------------------------------------------------------------- manifold
def manifold_distance(x, dataset):
    """Distances of samples ``x`` to the true manifold of ``dataset`` (``dataset.distance``).

    Returns dict(mean, median, rms, q90, max) as floats. Raises NotImplementedError for data
    sets without a closed-form projection (``dataset.has_projection`` False).
    """
    from .datasets import Dataset, NoProjectionError, get_dataset  # host module, imported on use

    x = check_array(x, "x")
    if isinstance(dataset, str):
        dataset = get_dataset(dataset)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a minidiff data set or its name; got {type(dataset).__name__}")
    if not dataset.has_projection:
        raise NoProjectionError(f"data set {dataset.name!r} has no closed-form projection")
    d = dataset.distance(x)
    xp = backend.get_xp(d)
    return {"mean": float(d.mean()), "median": float(xp.median(d)), "rms": float(xp.sqrt((d * d).mean())),
            "q90": float(xp.quantile(d, 0.9)), "max": float(d.max())}


# ---------------------------------------------------------------------------------- k-NN
def knn_distances(x, ref, k=2, chunk_size=_CHUNK):
    """Sorted distances (B, k) from each row of ``x`` to its k nearest rows of ``ref``.

    Candidates are found by a chunked GEMM (both sets recentred on ``ref``'s mean), then the
    k distances are recomputed exactly from differences (so a sample equal to a training
    point gets d1 = 0 exactly). Near-ties within GEMM rounding may swap candidates.
    """
    return knn(x, ref, k, chunk_size)[0]


def knn(x, ref, k=2, chunk_size=_CHUNK):
    """k nearest rows of ``ref`` for each row of ``x``: (distances (B, k) ascending, indices (B, k)).
    Same algorithm as :func:`knn_distances` (chunked GEMM search, exact recomputation)."""
    x, ref, xp = _pair(x, ref, "x", "ref")
    k = check_positive_int(k, "k")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if k > ref.shape[0]:
        raise ValueError(f"k must be <= the number of reference points {ref.shape[0]}; got {k}")
    c = ref.mean(axis=0)
    xc, rc = x - c, ref - c
    r_sq = (rc * rc).sum(axis=1)  # (N,)
    out = xp.empty((x.shape[0], k), dtype=x.dtype)
    out_i = xp.empty((x.shape[0], k), dtype="int64")
    for qs in range(0, x.shape[0], chunk_size):
        q = xc[qs:qs + chunk_size]  # (b, D)
        best = xp.full((q.shape[0], k), xp.inf, dtype=x.dtype)
        best_i = xp.zeros((q.shape[0], k), dtype="int64")
        for rs in range(0, ref.shape[0], chunk_size):
            d2 = _sq_dists(q, rc[rs:rs + chunk_size], r_sq[rs:rs + chunk_size], xp)  # (b, C)
            cand = xp.concatenate([best, d2], axis=1)  # (b, k + C)
            cand_i = xp.concatenate([best_i, xp.broadcast_to(xp.arange(rs, rs + d2.shape[1]), d2.shape)], axis=1)
            sel = xp.argpartition(cand, k - 1, axis=1)[:, :k]  # (b, k) the k smallest, unordered
            best = xp.take_along_axis(cand, sel, axis=1)
            best_i = xp.take_along_axis(cand_i, sel, axis=1)
        diff = q[:, None, :] - rc[best_i]  # (b, k, D) exact differences to the chosen points
        d = xp.sqrt((diff * diff).sum(axis=2))  # (b, k)
        order = xp.argsort(d, axis=1)
        out[qs:qs + chunk_size] = xp.take_along_axis(d, order, axis=1)
        out_i[qs:qs + chunk_size] = xp.take_along_axis(best_i, order, axis=1)
    return out, out_i


def memorization_rate(samples, train, ratio=1.0 / 3.0, chunk_size=_CHUNK):
    """Share of samples whose nearest training point is much closer than the second nearest:
    d1 < ratio * d2 (default ratio 1/3). A sample copied from the training set has d1 = 0;
    a genuinely new sample in a densely covered region has d1 ~ d2. Needs >= 2 training points.
    """
    ratio = check_real(ratio, "ratio", 0.0, 1.0, low_open=True)
    d = knn_distances(samples, train, k=2, chunk_size=chunk_size)  # (B, 2)
    return float((d[:, 0] < ratio * d[:, 1]).mean())


# ---------------------------------------------------------------------------------- distributions
def _w_p_1d_sorted(a, b, p, xp):
    r"""Exact W_p^p between 1-D empirical measures, per column: a (Na, P), b (Nb, P) sorted.

    W_p^p = int_0^1 |F_a^{-1}(u) - F_b^{-1}(u)|^p du; both quantile functions are step
    functions, constant between the merged breakpoints {i/Na} U {j/Nb}.
    """
    na, nb = a.shape[0], b.shape[0]
    u = xp.sort(xp.concatenate([xp.arange(1, na + 1) / na, xp.arange(1, nb + 1) / nb]))  # (Na+Nb,)
    width = xp.diff(u, prepend=0.0)  # interval lengths (zeros at shared breakpoints)
    mid = u - 0.5 * width
    ia = xp.minimum((mid * na).astype("int64"), na - 1)  # quantile index on each interval
    ib = xp.minimum((mid * nb).astype("int64"), nb - 1)
    return (xp.abs(a[ia] - b[ib]) ** p * width[:, None].astype(a.dtype)).sum(axis=0)  # (P,)


def sliced_wasserstein(a, b, n_projections=128, rng=None, p=2, chunk_size=64):
    r"""Sliced Wasserstein distance SW_p(a, b) = (E_theta W_p^p(theta.a, theta.b))^(1/p).

    theta uniform on the unit sphere (``n_projections`` normalised Gaussian draws from
    ``rng``); each 1-D W_p is exact for empirical measures of any sizes. For a pure shift v:
    SW_p = |v| in 1-D, and SW_2 -> |v| / sqrt(D) as n_projections grows (E (theta.v)^2 = |v|^2/D).
    Directions are processed ``chunk_size`` at a time (memory O((Na + Nb) chunk_size)).
    """
    a, b, xp = _pair(a, b, "a", "b")
    n_projections = check_positive_int(n_projections, "n_projections")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2; got {p!r}")
    rng = check_rng(rng, xp=xp)
    theta = xp.asarray(rng.standard_normal((n_projections, a.shape[1])), dtype=a.dtype)  # (P, D)
    theta /= xp.sqrt((theta * theta).sum(axis=1, keepdims=True))
    total = 0.0
    for s in range(0, n_projections, chunk_size):
        th = theta[s:s + chunk_size]
        pa = xp.sort(a @ th.T, axis=0)  # (Na, D) @ (D, P) -> (Na, P)
        pb = xp.sort(b @ th.T, axis=0)
        total += float(_w_p_1d_sorted(pa, pb, p, xp).sum())
    return (total / n_projections) ** (1.0 / p)


def _median_bandwidth(a, b, xp, max_points=1000):
    """Median pairwise distance of (an evenly strided subsample of) the pooled set."""
    pooled = xp.concatenate([a, b], axis=0)
    step = max(1, pooled.shape[0] // max_points)
    z = pooled[::step][:max_points]
    d2 = _sq_dists(z, z, (z * z).sum(axis=1), xp)
    iu = xp.triu_indices(z.shape[0], k=1)
    if iu[0].shape[0] == 0:
        return 1.0
    h = float(xp.median(xp.sqrt(d2[iu])))
    return h if h > 0 else 1.0  # all points equal: any bandwidth gives MMD 0


def mmd_rbf(a, b, bandwidth=None, chunk_size=_CHUNK):
    r"""Squared MMD with k(x, y) = exp(-||x - y||^2 / (2 h^2)) (Gretton et al. 2012), biased
    (V-statistic) estimate: MMD^2 = mean k(a, a') + mean k(b, b') - 2 mean k(a, b) >= 0,
    exactly 0 (up to rounding) for identical sets. ``bandwidth`` h > 0, or None for the
    median heuristic (median pairwise distance of a pooled subsample of <= 1000 points)."""
    a, b, xp = _pair(a, b, "a", "b")
    if bandwidth is None:
        h = _median_bandwidth(a, b, xp)
    else:
        h = check_real(bandwidth, "bandwidth", 1e-150, 1e150)  # 1 / (2 h^2) stays a finite float
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    gamma = 1.0 / (2.0 * h * h)

    def mean_k(x, y):
        y_sq = (y * y).sum(axis=1)
        tot = 0.0
        for i in range(0, x.shape[0], chunk_size):
            for j in range(0, y.shape[0], chunk_size):
                d2 = _sq_dists(x[i:i + chunk_size], y[j:j + chunk_size], y_sq[j:j + chunk_size], xp)
                d2 *= -gamma
                tot += float(xp.exp(d2, out=d2).sum())
        return tot / (x.shape[0] * y.shape[0])

    return max(mean_k(a, a) + mean_k(b, b) - 2.0 * mean_k(a, b), 0.0)


def _covered(x, centres, radii, xp, chunk_size):
    """Boolean (B,): x_i lies in some ball B(centre_j, radius_j)."""
    c_sq = (centres * centres).sum(axis=1)
    r2 = radii * radii
    out = xp.zeros((x.shape[0],), dtype=bool)
    for i in range(0, x.shape[0], chunk_size):
        hit = xp.zeros((min(chunk_size, x.shape[0] - i),), dtype=bool)
        for j in range(0, centres.shape[0], chunk_size):
            d2 = _sq_dists(x[i:i + chunk_size], centres[j:j + chunk_size], c_sq[j:j + chunk_size], xp)
            hit |= (d2 <= r2[None, j:j + chunk_size]).any(axis=1)
        out[i:i + chunk_size] = hit
    return out


def precision_recall(real, fake, k=3, chunk_size=_CHUNK):
    r"""k-NN precision and recall (Kynkaenniemi et al. 2019, "Improved Precision and Recall").

    Each point's radius is the distance to its k-th nearest neighbour in its own set (itself
    excluded). precision = share of fake points inside some real ball; recall = share of real
    points inside some fake ball. Returns dict(precision, recall).
    """
    real, fake, xp = _pair(real, fake, "real", "fake")
    k = check_positive_int(k, "k")
    if k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k must be < the size of both sets ({real.shape[0]}, {fake.shape[0]}); got {k}")
    # k + 1 nearest within the set: the first is the point itself (distance 0)
    r_real = knn_distances(real, real, k=k + 1, chunk_size=chunk_size)[:, k]
    r_fake = knn_distances(fake, fake, k=k + 1, chunk_size=chunk_size)[:, k]
    precision = float(_covered(fake, real, r_real, xp, chunk_size).mean())
    recall = float(_covered(real, fake, r_fake, xp, chunk_size).mean())
    return {"precision": precision, "recall": recall}


# ----------------------------------------------------------------------------- Frechet distance
def gaussian_fit(features):
    r"""Mean and (unbiased, ``1/(n-1)``) covariance of ``features (n, d)`` (items of any shape are
    flattened): ``(mu (d,), C (d, d))``, float64."""
    f = _flat(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"features needs at least 2 rows to fit a covariance; got {f.shape[0]}")
    f = f.astype("float64")
    mu = f.mean(axis=0)
    fc = f - mu
    return mu, (fc.T @ fc) / (f.shape[0] - 1)  # (d, n) @ (n, d) -> (d, d)


def _psd_sqrt(C, xp):
    """Symmetric square root of a symmetric PSD matrix by eigendecomposition (negative rounding-level
    eigenvalues clipped to 0)."""
    w, V = xp.linalg.eigh((C + C.T) * 0.5)
    return (V * xp.sqrt(xp.maximum(w, 0.0))) @ V.T  # V diag(sqrt w) V^T


def frechet_distance(mu1, C1, mu2, C2):
    r"""Squared Frechet (2-Wasserstein) distance between ``N(mu1, C1)`` and ``N(mu2, C2)``
    (Dowson & Landau 1982; the FID of Heusel et al. 2017 applies it to network features):

        ``d^2 = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^{1/2} C2 C1^{1/2})^{1/2})``

    The cross term uses the symmetric form ``C1^{1/2} C2 C1^{1/2}`` (PSD, so its eigenvalues are real and
    >= 0 up to rounding; ``tr (C1 C2)^{1/2}`` equals it), computed with two symmetric eigendecompositions.
    Returns a Python float (>= 0 up to rounding). docs/quality.md §4.
    """
    mu1 = check_array(mu1, "mu1", ndim=1, min_size=1)
    d = mu1.shape[0]
    mu2 = check_array(mu2, "mu2", shape=(d,))
    C1 = check_array(C1, "C1", shape=(d, d))
    C2 = check_array(C2, "C2", shape=(d, d))
    xp = backend.get_xp(mu1, C1, mu2, C2)
    S1 = _psd_sqrt(C1, xp)
    M = S1 @ C2 @ S1
    w = xp.linalg.eigvalsh((M + M.T) * 0.5)
    cross = xp.sqrt(xp.maximum(w, 0.0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + xp.trace(C1) + xp.trace(C2) - 2.0 * cross)  # one host sync, for reporting


def feature_fid(real_features, fake_features):
    """:func:`frechet_distance` between Gaussians fitted to two feature sets (n, d) and (m, d)."""
    return frechet_distance(*gaussian_fit(real_features), *gaussian_fit(fake_features))


class GlyphFeatures:
    r"""The feature map of the glyph FID: the last hidden layer of a glyph classifier.

    ``GlyphFeatures.train(dataset="glyphs16")`` trains a hand-written classifier on clean glyphs (a
    :class:`~minidiff.nn.NoiseAwareClassifier` MLP evaluated at a fixed, negligible sigma = 1e-3, i.e. a
    plain clean-image classifier) with cross-entropy and Adam; ``features(x)`` returns its last hidden
    activations ``(n, hidden[-1])`` and ``accuracy(x, y)`` its accuracy. Any other classifier can be used
    by passing ``model`` (with the same ``linears``/``acts`` trunk). docs/quality.md §4.
    """

    SIGMA = 1e-3

    def __init__(self, model):
        self.model = model.eval()

    @classmethod
    def train(cls, dataset: str = "glyphs16", steps: int = 1500, batch_size: int = 128, hidden=(256, 128),
              lr: float = 2e-3, seed: int = 0):
        from . import datasets
        from .nn import Adam, NoiseAwareClassifier, cross_entropy, warmup_cosine_lr

        steps = check_positive_int(steps, "steps")
        ds = datasets.get_dataset(dataset)
        if not getattr(ds, "num_classes", None):
            raise ValueError(f"dataset {dataset!r} has no labels to train a glyph classifier on")
        D = int(math.prod(ds.shape))
        model = NoiseAwareClassifier(D, ds.num_classes, hidden=hidden, seed=seed)
        opt = Adam(model.parameters(), lr=lr)
        rng = backend.default_rng(seed)
        for step in range(steps):
            x, y = ds.sample(batch_size, rng, return_labels=True)
            logits = model(x.reshape(batch_size, D).astype("float32"), cls.SIGMA)
            _, d = cross_entropy(logits, y)
            model.zero_grad()
            model.backward(d)
            opt.lr = warmup_cosine_lr(step, steps, lr, warmup_steps=50, min_lr=lr * 0.01)
            opt.step()
        return cls(model)

    def _hidden(self, x):
        """The classifier's last hidden activations and its logits: ``(h (n, hidden[-1]), logits (n, K))``."""
        m = self.model
        x = x.reshape(x.shape[0], -1).astype(m.linears[0].W.data.dtype)  # (n, ...) -> (n, D)
        h = m._trunk_hidden(x, self.SIGMA)  # the trunk up to, not through, the last linear layer
        return h, m.linears[-1](h)

    def features(self, x, chunk_size: int = 2048):
        """Last hidden activations ``(n, hidden[-1])`` of images ``x (n, C, H, W)``, in chunks."""
        xp = backend.get_xp(x)
        return xp.concatenate([self._hidden(x[i:i + chunk_size])[0] for i in range(0, x.shape[0], chunk_size)])

    def predict(self, x):
        """Predicted labels (n,)."""
        return self._hidden(x)[1].argmax(axis=1)

    def confidence(self, x):
        """The classifier's softmax probability of its predicted label, (n,)."""
        xp = backend.get_xp(x)
        z = self._hidden(x)[1]
        z = z - z.max(axis=1, keepdims=True)
        p = xp.exp(z)
        return p.max(axis=1) / p.sum(axis=1)


def glyph_fid(real, fake, features: GlyphFeatures):
    r"""Glyph FID: :func:`feature_fid` of ``features.features(real)`` and ``features.features(fake)``, plus
    k-NN precision/recall (k = 3) in the same feature space. Returns ``dict(fid, precision, recall)``.

    Not comparable to Inception FID (Heusel et al. 2017): another feature network (a small glyph
    classifier), another data set, other sample sizes; it ranks samplers and models on glyphs only. Its
    finite-sample floor (real vs real at equal n) must be reported beside it (docs/quality.md §4).
    """
    fr, ff = features.features(real), features.features(fake)
    out = {"fid": feature_fid(fr, ff)}
    out.update(precision_recall(fr, ff, k=3))
    return out
