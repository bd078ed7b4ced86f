"""Tests for minidiff.ideal: the properties of docs/math.md §9, numerics at the extremes, bad input.

Reference values come from a direct float64 implementation written here (explicit differences
x - x_i, no GEMM expansion, no chunking), never from the code under test.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from device_helpers import D, OnBackend, on_backend
from minidiff import ideal


def IdealDenoiser(data, *args, **kwargs):  # noqa: N802  (stands for the class under test)
    return OnBackend(ideal.IdealDenoiser(D(data) if isinstance(data, np.ndarray) else data, *args, **kwargs))


# the class and functions under test, run on the run's backend and seen from the host (device_helpers)
project, dist = on_backend(ideal.project), on_backend(ideal.dist)

log_sigma = st.floats(min_value=-3.0, max_value=3.0)  # sigma = 10**log_sigma in [1e-3, 1e3]
seeds = st.integers(0, 2**31 - 1)


def ref_weights(x, K, sigma):
    """Direct float64 softmax of -||x - x_i||^2 / (2 sigma^2); x (B, D), K (N, D), sigma scalar or (B,)."""
    x, K = np.asarray(x, np.float64), np.asarray(K, np.float64)
    s = np.broadcast_to(np.asarray(sigma, np.float64), (x.shape[0],))[:, None]
    d2 = ((x[:, None, :] - K[None, :, :]) ** 2).sum(-1)  # (B, N)
    logits = -d2 / (2 * s**2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True), d2, logits


def ref_eps(x, K, sigma):
    w, _, _ = ref_weights(x, K, sigma)
    s = np.broadcast_to(np.asarray(sigma, np.float64), (x.shape[0],))[:, None]
    return (x - w @ K) / s


def ref_dist2(x, K, sigma):
    _, _, logits = ref_weights(x, K, sigma)
    m = logits.max(1)
    return -2 * sigma**2 * (m + np.log(np.exp(logits - m[:, None]).sum(1)))


def cloud(seed, n=12, d=3, b=5, scale=1.0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, d)), scale * rng.standard_normal((b, d))


# ---------------------------------------------------------------------------------- basics
@given(seed=seeds, ls=log_sigma)
def test_weights_match_reference_and_sum_to_one(seed, ls):
    K, x = cloud(seed)
    sigma = 10.0**ls
    w = IdealDenoiser(K, chunk_size=5).weights(x, sigma)
    w_ref, _, _ = ref_weights(x, K, sigma)
    assert w.min() >= 0.0
    # float64 softmax of O(1e6) logits at sigma = 1e-3: rounding ~1e-16 relative per weight,
    # and weights below exp(-80) relative are reported as 0 (differences < 2e-35)
    assert np.abs(w.sum(1) - 1.0).max() < 1e-12
    assert np.abs(w - w_ref).max() < 1e-9


@given(seed=seeds, ls=log_sigma)
def test_eps_and_x0_hat_match_reference(seed, ls):
    K, x = cloud(seed)
    sigma = 10.0**ls
    den = IdealDenoiser(K, chunk_size=4)
    eps = den(x, sigma)
    e_ref = ref_eps(x, K, sigma)
    # eps = (x - x0_hat)/sigma: an absolute error ~1e-15 in x0_hat (|x| ~ 3) becomes
    # ~1e-12 in eps at sigma = 1e-3; compare relative to |x|/sigma
    assert np.abs(eps - e_ref).max() <= 1e-11 * (1 + np.abs(x).max() / sigma)
    assert np.abs(den.x0_hat(x, sigma) - (x - sigma * e_ref)).max() < 1e-11


@given(seed=seeds, ls=log_sigma)
def test_x0_hat_in_convex_hull(seed, ls):
    K, x = cloud(seed, n=8, d=3, b=6, scale=3.0)
    x0 = IdealDenoiser(K).x0_hat(x, 10.0**ls)
    # necessary condition for hull membership: every projection onto a direction u lies in
    # [min_i u.x_i, max_i u.x_i]; 1e-9 covers float64 rounding of |x| ~ 10 quantities
    u = np.random.default_rng(1).standard_normal((64, 3))
    pk, px = K @ u.T, x0 @ u.T  # (N, 64), (B, 64)
    assert (px >= pk.min(0) - 1e-9).all() and (px <= pk.max(0) + 1e-9).all()


@given(seed=seeds, ls=st.floats(-6.0, 6.0))
def test_single_point_is_exact(seed, ls):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((1, 4))
    x = rng.standard_normal((3, 4))
    sigma = 10.0**ls
    eps = IdealDenoiser(K)(x, sigma)
    # |K| = 1: eps = (x - x_1)/sigma; only one rounding of the subtraction and the division
    expect = (x - K) / sigma
    assert np.abs(eps - expect).max() <= 1e-14 * np.abs(expect).max() + 1e-300


# ---------------------------------------------------------------------------------- equivariances
@given(seed=seeds, ls=st.floats(-1.0, 1.0))
def test_permutation_invariance(seed, ls):
    K, x = cloud(seed)
    perm = np.random.default_rng(seed).permutation(len(K))
    a = IdealDenoiser(K, chunk_size=5)(x, 10.0**ls)
    b = IdealDenoiser(K[perm], chunk_size=5)(x, 10.0**ls)
    assert np.abs(a - b).max() < 1e-11  # only summation order differs


@given(seed=seeds, ls=st.floats(-1.0, 1.0))
def test_translation_rotation_scaling_equivariance(seed, ls):
    rng = np.random.default_rng(seed)
    K, x = cloud(seed)
    sigma = 10.0**ls
    base = IdealDenoiser(K)(x, sigma)
    t = 5.0 * rng.standard_normal(3)
    assert np.abs(IdealDenoiser(K + t)(x + t, sigma) - base).max() < 1e-9  # eps is translation-invariant
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert np.abs(IdealDenoiser(K @ Q)(x @ Q, sigma) - base @ Q).max() < 1e-9  # eps rotates with x
    c = 10.0 ** rng.uniform(-2, 2)
    # scaling x, K and sigma by c leaves eps (a unit-free noise estimate) unchanged
    assert np.abs(IdealDenoiser(c * K)(c * x, c * sigma) - base).max() < 1e-9


# ---------------------------------------------------------------------------------- sigma limits
def test_large_sigma_gives_the_mean_and_small_sigma_the_nearest_point():
    K, x = cloud(3, n=20, d=3, b=8)
    den = IdealDenoiser(K)
    # sigma = 1e6: w_i = softmax(-d2_i / 2e12) deviates from 1/N by ~ d2 / 2e12 ~ 1e-11
    assert np.abs(den.x0_hat(x, 1e6) - K.mean(0)).max() < 1e-9
    d2 = ((x[:, None] - K[None]) ** 2).sum(-1)
    nearest = K[d2.argmin(1)]
    # sigma = 1e-4: the runner-up weight is exp(-gap / 2e-8), zero unless gap < 1e-6 (checked)
    srt = np.sort(d2, 1)
    assert (srt[:, 1] - srt[:, 0]).min() > 1e-3
    # ... up to the rounding of recentring ((x_i - c) + c: a few ulp of |x_i| ~ 2)
    assert np.abs(den.x0_hat(x, 1e-4) - nearest).max() < 1e-14
    assert np.abs(project(x, K) - nearest).max() == 0.0
    assert np.abs(dist(x, K) - np.sqrt(d2.min(1))).max() < 1e-12


@given(seed=seeds, ls=log_sigma)
def test_smoothed_dist2_formula_and_limit(seed, ls):
    K, x = cloud(seed)
    sigma = 10.0**ls
    den = IdealDenoiser(K, chunk_size=3)
    got = den.smoothed_dist2(x, sigma)
    ref = ref_dist2(x, K, sigma)
    # both are d2_min - 2 sigma^2 log(s); rounding ~1e-15 of d2 plus 1e-15 * 2 sigma^2 log N
    assert np.abs(got - ref).max() <= 1e-12 * (1 + np.abs(ref).max())
    d2min = ((x[:, None] - K[None]) ** 2).sum(-1).min(1)
    assert (got <= d2min + 1e-12).all()  # pinned form: dist^2_K(x, sigma) <= dist_K(x)^2


def test_smoothed_dist2_tends_to_squared_distance():
    K, x = cloud(4)
    d2min = ((x[:, None] - K[None]) ** 2).sum(-1).min(1)
    gaps = []
    for sigma in (1e-1, 1e-2, 1e-3):
        gaps.append(np.abs(IdealDenoiser(K).smoothed_dist2(x, sigma) - d2min).max())
    # the gap is 2 sigma^2 log(1 + sum_{i != top} exp(-delta_i/2sigma^2)) -> 0 faster than sigma^2
    assert gaps[-1] < 1e-12 and gaps[0] >= gaps[1] >= gaps[2]


# ---------------------------------------------------------------------------------- derivatives
@given(seed=seeds, ls=st.floats(-0.5, 0.7))
def test_gradient_identity_by_central_differences(seed, ls):
    """sigma * eps*(x, sigma) = (1/2) grad_x dist^2_K(x, sigma) (Permenter & Yuan 2024, Sec. 3)."""
    K, x = cloud(seed, n=10, d=3, b=4)
    sigma = 10.0**ls
    den = IdealDenoiser(K)
    h = 1e-5 * max(sigma, 1.0)
    grad = np.zeros_like(x)
    for j in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, j] = h
        grad[:, j] = (den.smoothed_dist2(x + e, sigma) - den.smoothed_dist2(x - e, sigma)) / (2 * h)
    lhs = sigma * den(x, sigma)
    # central differences: truncation O(h^2 |f'''|) ~ 1e-10 / sigma, rounding ~1e-16 * |f| / h ~ 1e-10
    assert np.abs(0.5 * grad - lhs).max() < 1e-6 * (1 + np.abs(lhs).max())


@given(seed=seeds, ls=st.floats(-0.5, 0.7))
def test_jacobian_is_symmetric_psd_covariance(seed, ls):
    """d x0_hat / dx = Cov_w(x_i) / sigma^2 (docs/math.md §9)."""
    K, x = cloud(seed, n=10, d=3, b=1)
    sigma = 10.0**ls
    den = IdealDenoiser(K)
    h = 1e-6
    J = np.zeros((3, 3))
    for j in range(3):
        e = np.zeros_like(x)
        e[0, j] = h
        J[:, j] = (den.x0_hat(x + e, sigma) - den.x0_hat(x - e, sigma))[0] / (2 * h)
    w, _, _ = ref_weights(x, K, sigma)
    mu = w[0] @ K
    cov = (w[0][:, None] * (K - mu)).T @ (K - mu) / sigma**2
    # FD error: rounding 1e-16/h ~ 1e-10 times |x0_hat| plus truncation h^2 |d3 x0_hat| tiny
    scale = 1 + np.abs(cov).max()
    assert np.abs(J - cov).max() < 1e-6 * scale
    assert np.abs(J - J.T).max() < 2e-6 * scale
    assert np.linalg.eigvalsh(0.5 * (J + J.T)).min() > -2e-6 * scale


# ---------------------------------------------------------------------------------- metamorphic
@given(seed=seeds, chunk=st.integers(1, 40))
def test_chunked_equals_unchunked(seed, chunk):
    K, x = cloud(seed, n=33, d=4, b=6)
    for sigma in (0.05, 0.7, 20.0):
        a = IdealDenoiser(K, chunk_size=chunk)
        b = IdealDenoiser(K, chunk_size=10_000)
        # online log-sum-exp reorders sums only: float64 rounding ~1e-15 relative, /sigma for eps
        assert np.abs(a(x, sigma) - b(x, sigma)).max() < 1e-12 / sigma
        assert np.abs(a.smoothed_dist2(x, sigma) - b.smoothed_dist2(x, sigma)).max() < 1e-11
    assert np.abs(dist(x, K, chunk_size=chunk) - dist(x, K)).max() == 0.0  # same exact refinement
    assert np.array_equal(project(x, K, chunk_size=chunk), project(x, K))


@given(seed=seeds)
def test_batched_sigma_equals_per_sample(seed):
    K, x = cloud(seed, b=6)
    sigmas = 10.0 ** np.random.default_rng(seed).uniform(-2, 2, 6)
    den = IdealDenoiser(K, chunk_size=5)
    batched = den(x, sigmas)
    single = np.stack([den(x[i:i + 1], float(sigmas[i]))[0] for i in range(6)])
    assert np.abs(batched - single).max() <= 1e-12 * (1 + np.abs(single).max())
    d_b = den.smoothed_dist2(x, sigmas)
    d_s = np.array([den.smoothed_dist2(x[i:i + 1], float(sigmas[i]))[0] for i in range(6)])
    assert np.abs(d_b - d_s).max() <= 1e-12 * (1 + np.abs(d_s).max())


def test_float32_agrees_with_float64():
    K, x = cloud(7, n=200, d=8, b=16)
    for sigma in (0.3, 1.0, 10.0):
        e64 = ref_eps(x, K, sigma)
        e32 = IdealDenoiser(K.astype(np.float32))(x.astype(np.float32), sigma)
        assert e32.dtype == np.float32
        # float32 rounding (6e-8) of d2 ~ 30 scaled by 1/2sigma^2 perturbs logits by ~1e-5 at
        # sigma = 0.3; weights move by that relative amount, eps by ~|K|/sigma times it
        assert np.abs(e32 - e64).max() < 2e-4 * (1 + np.abs(e64).max())


def test_image_shaped_data():
    rng = np.random.default_rng(0)
    K = rng.standard_normal((9, 1, 4, 4))
    x = rng.standard_normal((3, 1, 4, 4))
    den = IdealDenoiser(K, chunk_size=4)
    eps = den(x, 0.8)
    assert eps.shape == x.shape
    flat = ref_eps(x.reshape(3, -1), K.reshape(9, -1), 0.8)
    assert np.abs(eps.reshape(3, -1) - flat).max() < 1e-12
    assert project(x, K).shape == x.shape and dist(x, K).shape == (3,)


# ---------------------------------------------------------------------------------- extremes
@given(ls=st.floats(-6.0, 6.0), dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(["offset", "spread"]))
def test_extreme_sigma_and_norms_on_a_data_point(ls, dtype, kind):
    rng = np.random.default_rng(0)
    if kind == "offset":  # a unit cluster 1e4 away from the origin
        K = 1e4 * np.ones(6) / np.sqrt(6) + rng.standard_normal((50, 6))
    else:  # points spread with norms ~1e4
        K = 1e4 * rng.standard_normal((50, 6)) / np.sqrt(6)
    K = K.astype(dtype)
    x = K[[3, 17, 40]].copy()  # queries sitting exactly on data points
    sigma = 10.0**ls
    den = IdealDenoiser(K, chunk_size=16)
    eps, x0 = den(x, sigma), den.x0_hat(x, sigma)
    d2 = den.smoothed_dist2(x, sigma)
    for a in (eps, x0, d2):
        assert np.isfinite(a).all()
    assert (dist(x, K) == 0).all()  # exact refinement of the nearest candidate
    assert np.array_equal(project(x, K), x)
    assert (d2 <= 0 + 1e-30).all()  # on a data point dist^2_K(x, sigma) <= dist_K^2 = 0
    if sigma <= 1e-2:
        # nearest gap in d2 is >= ~0.1 (offset) so the runner-up weight is < exp(-0.1/2e-4):
        # eps is 0 up to rounding of the recentred residual
        assert np.abs(eps).max() <= 1e-3
        assert np.array_equal(x0, x) or np.abs(x0 - x).max() <= 4 * np.finfo(dtype).eps * 1e4


def test_logit_clamp_changes_nothing(monkeypatch):
    """Clamping shifted logits at -80 (subnormal trap) must not change the result."""
    rng = np.random.default_rng(5)
    K = rng.standard_normal((400, 16)).astype(np.float32)
    x = (K[:20] + 0.5 * rng.standard_normal((20, 16))).astype(np.float32)
    sigma = 0.6  # d2 spans ~[4, 100]: shifted logits reach -140, many fall in [-103, -80]
    den = IdealDenoiser(K, chunk_size=64)
    clamped = den(x, sigma)
    _, _, logits = ref_weights(x, K, sigma)
    shifted = logits - logits.max(1, keepdims=True)
    assert ((shifted < -80) & (shifted > -103)).sum() > 100  # the test exercises the clamp
    monkeypatch.setattr(ideal, "_LOGIT_FLOOR", -np.inf)
    unclamped = den(x, sigma)
    # dropped mass < N * exp(-80) ~ 7e-33 relative: identical in float32
    assert np.abs(clamped - unclamped).max() <= 1e-6 * np.abs(unclamped).max()


# ---------------------------------------------------------------------------------- the loss
def test_ideal_denoiser_minimises_the_training_loss():
    """E ||eps_hat(x0 + sigma eps) - eps||^2 with x0 uniform on K is minimised by eps*."""
    rng = np.random.default_rng(11)
    K = rng.standard_normal((16, 2))
    M, sigma = 40_000, 0.7
    x0 = K[rng.integers(0, 16, M)]
    eps = rng.standard_normal((M, 2))
    x = x0 + sigma * eps
    den = IdealDenoiser(K)
    e_star = den(x, sigma)

    def loss(e):
        return ((e - eps) ** 2).sum(1).mean()

    base = loss(e_star)
    # perturbations of size 0.2 raise the loss by E|delta|^2 >= 0.04 (per sample); the cross term
    # 2 E[delta.(eps* - eps)] has mean 0 and MC std ~ 2*0.2*1/sqrt(4e4) = 0.002 << 0.04
    for delta in (np.array([0.2, 0.0]), np.array([0.0, -0.2])):
        assert loss(e_star + delta) > base + 0.02
    assert loss(1.2 * e_star) > base and loss(0.8 * e_star) > base
    assert loss((x - project(x, K)) / sigma) > base + 0.02  # projecting is worse at this sigma
    # the MC-optimal scale lambda* = E[eps.eps*] / E|eps*|^2 along eps_hat = lambda eps* is ~1
    lam = (eps * e_star).sum() / (e_star * e_star).sum()
    assert abs(lam - 1.0) < 0.03  # MC std of lambda* ~ 1/sqrt(M) * O(1) ~ 0.005


# ---------------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    K = np.zeros((4, 3))
    with pytest.raises(ValueError, match="data"):
        IdealDenoiser(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="data"):
        IdealDenoiser(np.zeros(3))
    bad = K.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="data"):
        IdealDenoiser(bad)
    with pytest.raises(TypeError, match="data"):
        IdealDenoiser(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="chunk_size"):
        IdealDenoiser(K, chunk_size=0)
    den = IdealDenoiser(K)
    with pytest.raises(ValueError, match="x"):
        den(np.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match="x"):
        den(np.zeros(3), 1.0)
    for s in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            den(np.zeros((2, 3)), s)
    with pytest.raises(ValueError, match="sigma"):
        den(np.zeros((2, 3)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigma"):
        den(np.zeros((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="x"):
        project(np.zeros((2, 5)), K)
    with pytest.raises(ValueError, match="data"):
        dist(np.zeros((2, 3)), np.zeros((0, 3)))

