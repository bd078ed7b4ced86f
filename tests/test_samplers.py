"""Tests for minidiff.samplers: identities between the samplers, exact cases, convergence orders,
statistical checks with CLT-justified bounds, and input validation (docs/math.md §1, §3, §6-§9)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_helpers import D as DV  # host data -> the run's backend (the device under the stand-in)
from minidiff import backend
from minidiff import samplers
from minidiff.samplers import (
    CountingDenoiser, ddim_vp, ddpm_ancestral_vp, denoise_once, iter_sample, sample,
)

# ---------------------------------------------------------------- helpers and strategies


def vp_schedule(T=1000):
    """Linear betas (docs/math.md §2), inline so this file does not depend on schedules.py."""
    betas = np.linspace(1e-4, 0.02, T)
    return np.exp(np.cumsum(np.log1p(-betas)))  # inclusive cumprod, in logs


def make_vp_model(seed, D, T=1000):
    """A random nonlinear deterministic eps model eps(x_t, t) in VP space."""
    r = np.random.default_rng(seed)
    W1 = DV(r.standard_normal((D, 16))) / math.sqrt(D)  # on the run's backend, like x
    W2 = DV(r.standard_normal((16, D))) / 4
    phase = DV(r.standard_normal(16))

    def eps_vp(x, t):
        h = np.tanh(x @ W1 + np.sin(3.0 * t / T + phase))  # (B, D) @ (D, 16) -> (B, 16)
        return h @ W2 + 0.1 * x                            # (B, 16) @ (16, D) -> (B, D)
    return eps_vp


def ve_from_vp(eps_vp, ab, ts):
    """The same model in sigma space: eps_ve(x, sigma_t) = eps_vp(sqrt(ab_t) x, t)."""
    sig = np.sqrt((1 - ab[ts]) / ab[ts])
    lookup = {float(s): int(t) for s, t in zip(sig, ts)}

    def eps_ve(x, sigma):
        t = lookup[sigma]
        return eps_vp(math.sqrt(ab[t]) * x, t)
    return eps_ve, [float(s) for s in sig] + [0.0]


def point_denoiser(x0):
    """Exact ideal denoiser of the single point x0: eps = (x - x0) / sigma (docs/math.md §9)."""
    return lambda x, sigma: (x - x0) / sigma


def gaussian_denoiser(m, c):
    """Exact eps for data N(m, c^2 I): eps_hat(x, s) = s (x - m) / (c^2 + s^2)."""
    return lambda x, sigma: sigma * (x - m) / (c * c + sigma * sigma)


def gaussian_ode(x, m, c, s, s_next):
    """Exact probability-flow ODE solution x(s') from x at s for data N(m, c^2 I)."""
    return m + (x - m) * math.sqrt((c * c + s_next * s_next) / (c * c + s * s))


# strictly decreasing, log-scaled grids in [1e-2, 1e2], built by construction (sorted distinct
# integer exponents in thousandths), optionally ending in 0
sigma_grids = st.builds(
    lambda ks, zero: [10.0 ** (k / 1000) for k in sorted(ks, reverse=True)] + ([0.0] if zero else []),
    st.sets(st.integers(-2000, 2000), min_size=2, max_size=15),
    st.booleans(),
)
timestep_grids = st.builds(
    lambda ts: np.array(sorted(ts, reverse=True)),
    st.sets(st.integers(0, 999), min_size=2, max_size=25),
)
FAMILY_METHODS = ("family", "ddim", "ddpm", "gradient_estimation", "euler")
ALL_METHODS = samplers.METHODS


# ---------------------------------------------------------------- VP references == sigma-space family

@given(ts=timestep_grids, seed=st.integers(0, 2**16))
def test_ddim_equals_vp_reference(ts, seed):
    ab = vp_schedule()
    eps_vp = make_vp_model(seed, D=3)
    eps_ve, sigmas = ve_from_vp(eps_vp, ab, ts)
    x_T = DV(np.random.default_rng(seed + 1).standard_normal((4, 3)))
    ref = ddim_vp(eps_vp, ab, ts, x_T, eta=0.0)
    for kw in ({"method": "ddim"}, {"method": "family", "gamma": 1.0, "mu": 0.0}):
        out = sample(eps_ve, sigmas, x_T / math.sqrt(ab[ts[0]]), **kw)
        # the last VP step goes to ab = 1, where x_vp = x_ve. Both are float64 and O(1) at the end;
        # intermediate x_ve reach |x| ~ sigma_max ~ 160, so each step's rounding is ~160 * 1e-16
        # and 25 steps stay far below 1e-10.
        assert np.max(np.abs(out - ref)) < 1e-10


@given(ts=timestep_grids, seed=st.integers(0, 2**16))
def test_ddpm_equals_vp_reference_with_same_noise(ts, seed):
    ab = vp_schedule()
    eps_vp = make_vp_model(seed, D=3)
    eps_ve, sigmas = ve_from_vp(eps_vp, ab, ts)
    r = np.random.default_rng(seed + 1)
    x_T = DV(r.standard_normal((4, 3)))
    noise = [DV(r.standard_normal((4, 3))) for _ in range(len(ts) - 1)]
    ref = ddpm_ancestral_vp(eps_vp, ab, ts, x_T, noise=noise)
    ref_eta1 = ddim_vp(eps_vp, ab, ts, x_T, eta=1.0, noise=noise)
    out = sample(eps_ve, sigmas, x_T / math.sqrt(ab[ts[0]]), method="ddpm", noise=noise)
    out_family = sample(eps_ve, sigmas, x_T / math.sqrt(ab[ts[0]]), method="family", gamma=1.0, mu=0.5,
                        noise=noise)
    # same reasoning as the DDIM test; the noise terms are O(1) in VP space
    assert np.max(np.abs(out - ref)) < 1e-10
    assert np.max(np.abs(out_family - ref)) < 1e-10
    assert np.max(np.abs(ref_eta1 - ref)) < 1e-10  # Song et al. eta = 1 is Ho et al. Alg. 2


# ---------------------------------------------------------------- identities inside the family

@given(sigmas=sigma_grids, seed=st.integers(0, 2**16))
def test_gamma_one_is_ddim_and_euler(sigmas, seed):
    eps = make_vp_model(seed, D=2)
    den = lambda x, s: eps(x, s)  # noqa: E731  (any deterministic function of (x, sigma))
    x = DV(np.random.default_rng(seed).standard_normal((3, 2))) * sigmas[0]
    a = sample(den, sigmas, x, method="family", gamma=1.0)
    for m in ("ddim", "euler"):
        assert np.array_equal(sample(den, sigmas, x, method=m), a)  # same arithmetic, bitwise


@given(sigmas=sigma_grids, seed=st.integers(0, 2**16), gamma=st.floats(0.1, 5.0))
def test_first_gradient_estimation_step_is_ddim(sigmas, seed, gamma):
    eps = make_vp_model(seed, D=2)
    x = DV(np.random.default_rng(seed).standard_normal((3, 2))) * sigmas[0]
    ddim = next(iter_sample(eps, sigmas, x, method="ddim"))
    for kw in ({"method": "gradient_estimation"}, {"method": "family", "gamma": gamma}):
        first = next(iter_sample(eps, sigmas, x, **kw))
        assert np.array_equal(first.x, ddim.x)  # eps_bar = eps_0 on the first step, bitwise


@given(sigmas=sigma_grids, gamma=st.floats(0.1, 5.0), seed=st.integers(0, 2**16))
def test_constant_model_makes_every_gamma_equal(sigmas, gamma, seed):
    c = DV(np.random.default_rng(seed).standard_normal((3, 2)))
    den = lambda x, s: c  # noqa: E731
    x = DV(np.zeros((3, 2)))
    a = sample(den, sigmas, x, method="ddim")
    b = sample(den, sigmas, x, method="family", gamma=gamma)
    # gamma c + (1 - gamma) c = c up to rounding ~ 5 * 1e-16 * |c| per step, times sigma_max <= 100
    assert np.max(np.abs(a - b)) < 1e-10


# ---------------------------------------------------------------- single data point, exact denoiser

@given(sigmas=sigma_grids, seed=st.integers(0, 2**16))
def test_single_point_ddim_contracts_by_sigma_ratio(sigmas, seed):
    r = np.random.default_rng(seed)
    x0 = DV(r.standard_normal((1, 3)))
    x = x0 + sigmas[0] * DV(r.standard_normal((5, 3)))
    prev, s = x, sigmas[0]
    for state in iter_sample(point_denoiser(x0), sigmas, x, method="ddim"):
        expected = (state.sigma / s) * (prev - x0)
        # a few roundings of O(|x|) numbers, |x| <= 100 * ~5
        assert np.max(np.abs((state.x - x0) - expected)) < 1e-12 * (1 + np.max(np.abs(prev - x0)))
        assert np.max(np.abs(state.x0_hat - x0)) < 1e-12 * (1 + np.max(np.abs(prev)))
        prev, s = state.x, state.sigma


@given(sigmas=sigma_grids, gamma=st.floats(0.1, 5.0), seed=st.integers(0, 2**16))
def test_single_point_every_gamma_same_path(sigmas, gamma, seed):
    r = np.random.default_rng(seed)
    x0 = DV(r.standard_normal((1, 3)))
    x = x0 + sigmas[0] * DV(r.standard_normal((5, 3)))
    den = point_denoiser(x0)
    for a, b in zip(iter_sample(den, sigmas, x, method="ddim"),
                    iter_sample(den, sigmas, x, method="family", gamma=gamma)):
        # eps_i = eps_{i-1} exactly in exact arithmetic; rounding ~ gamma * 1e-16 * |x - x0| / s
        # per step, amplified by s at most: relative 1e-11 is generous
        assert np.max(np.abs(a.x - b.x)) < 1e-11 * (1 + np.max(np.abs(x)))


@pytest.mark.parametrize("mu", [0.0, 0.25, 0.5, 0.75, 0.95])
def test_single_point_marginal_stays_gaussian(mu):
    """For any mu the marginal after each step is exactly N(x0, s'^2 I) (docs/math.md §8)."""
    r = np.random.default_rng(1234)
    n, D = 20000, 2
    x0 = DV(np.array([[0.3, -1.2]]))
    sigmas = list(np.geomspace(20.0, 0.05, 8))
    x = x0 + sigmas[0] * DV(r.standard_normal((n, D)))
    for state in iter_sample(point_denoiser(x0), sigmas, x, method="family", gamma=1.0, mu=mu,
                             rng=backend.default_rng(4321)):  # not the seed of x
        z = ((state.x - x0) / state.sigma).ravel()  # should be N(0, 1), N = n * D draws
        N = z.size
        # CLT: mean has sd 1/sqrt(N); the sample variance has sd sqrt(2/N). 5 sd bounds over
        # 5 x 7 x 2 checks: a false alarm has probability < 1e-5 (and the seed is fixed).
        assert abs(z.mean()) < 5 / math.sqrt(N)
        assert abs(z.var() - 1.0) < 5 * math.sqrt(2 / N)


# ---------------------------------------------------------------- Gaussian data: convergence orders

@pytest.mark.parametrize("method,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order_on_gaussian_data(method, order):
    m, c = 0.7, 0.5
    den = gaussian_denoiser(m, c)
    x = DV(np.random.default_rng(0).standard_normal((8, 2))) * 10.0 + m
    s_max, s_min = 10.0, 0.05
    exact = gaussian_ode(x, m, c, s_max, s_min)
    ns = [16, 32, 64, 128]
    errs = [float(np.max(np.abs(sample(den, np.geomspace(s_max, s_min, n + 1), x, method=method) - exact)))
            for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    # asymptotic order p gives slope p; +-0.25 leaves room for pre-asymptotic curvature at 16 steps
    assert abs(slope - order) < 0.25, (errs, slope)


def _gaussian_moment_check(xs, m, c):
    z = xs.ravel()
    N = z.size
    return z.mean() - m, z.var() - c * c, N


@pytest.mark.parametrize("method", ["ddpm", "reverse_sde"])
def test_stochastic_samplers_match_gaussian_moments(method):
    m, c = 0.7, 0.5
    r = np.random.default_rng(7)
    n, D = 20000, 2
    sigmas = list(np.geomspace(80.0, 1e-3, 400)) + [0.0]
    x = m + sigmas[0] * DV(r.standard_normal((n, D)))
    out = sample(gaussian_denoiser(m, c), sigmas, x, method=method, rng=backend.default_rng(17))  # not the seed of x
    dm, dv, N = _gaussian_moment_check(out, m, c)
    # Exact sampler: mean sd c/sqrt(N), variance sd c^2 sqrt(2/N) (CLT); 5 sd. The grid adds a
    # deterministic bias: the last step returns x0_hat at s = 1e-3 (variance shrinks by
    # c^2/(c^2 + s^2), ~4e-6 relative) and 400 log steps (ratio 0.972 per step) leave a first-order
    # discretisation bias, < 4 % of c^2 by the variance recursion in the next test.
    assert abs(dm) < 5 * c / math.sqrt(N)
    assert abs(dv) < 5 * c * c * math.sqrt(2 / N) + 0.04 * c * c


@pytest.mark.parametrize("method", ["ddpm", "reverse_sde"])
def test_stochastic_samplers_follow_exact_variance_recursion(method):
    """On Gaussian data every step is affine: x' - m = k (x - m) + e w, so Var' = k^2 Var + e^2.
    The recursion, written here from docs/math.md §8 independently of the sampler, must match the
    sampler's empirical variance, and it must approach c^2 (the discretisation bias bound)."""
    m, c = 0.7, 0.5
    sigmas = list(np.geomspace(80.0, 1e-3, 400)) + [0.0]
    var = sigmas[0] ** 2  # x starts at m + s0 z
    for s, sn in zip(sigmas[:-1], sigmas[1:]):
        g = s / (c * c + s * s)  # eps_hat = g (x - m)
        if sn == 0:
            k, e2 = 1 - s * g, 0.0
        elif method == "ddpm":
            sp = sn * sn / s
            k, e2 = 1 - (s - sp) * g, sn * sn - sp * sp
        else:
            k, e2 = 1 + 2 * (sn - s) * g, 2 * s * (s - sn)
        var = k * k * var + e2
    # first-order bias: the recursion gives -2.8 % (DDPM) / +1.4 % (SDE) of c^2 at 400 steps and
    # halves with each doubling of the steps (checked offline from 100 to 1600 steps)
    assert abs(var - c * c) < 0.04 * c * c
    r = np.random.default_rng(8)
    n = 40000
    x = m + sigmas[0] * DV(r.standard_normal((n, 1)))
    out = sample(gaussian_denoiser(m, c), sigmas, x, method=method, rng=backend.default_rng(18))  # not the seed of x
    assert abs(out.var() - var) < 5 * var * math.sqrt(2 / n)  # CLT, 5 sd


# ---------------------------------------------------------------- NFE, states, replay, dtype

@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("zero", [True, False])
def test_nfe_counts_and_states(method, zero):
    sigmas = list(np.geomspace(10.0, 0.1, 6)) + ([0.0] if zero else [])
    n = len(sigmas) - 1
    den = CountingDenoiser(gaussian_denoiser(0.0, 1.0))
    x = DV(np.random.default_rng(0).standard_normal((4, 2))) * 10
    states = list(iter_sample(den, sigmas, x, method=method, rng=0))
    assert [s.step for s in states] == list(range(1, n + 1))
    assert [s.sigma for s in states] == sigmas[1:]
    expected_nfe = (2 * n - (1 if zero else 0)) if method == "heun" else n
    assert states[-1].nfe == den.calls == expected_nfe
    assert den.samples == 4 * expected_nfe


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_backend_preserved(method, dtype, xp):
    sigmas = [10.0, 3.0, 1.0, 0.3, 0.0]
    x = xp.asarray(DV(np.random.default_rng(0).standard_normal((4, 2))) * 10, dtype=dtype)
    for state in iter_sample(gaussian_denoiser(0.0, 1.0), sigmas, x, method=method, rng=0):
        assert state.x.dtype == dtype and state.x0_hat.dtype == dtype
        assert backend.get_xp(state.x) is xp
        assert isinstance(state.sigma, float)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_batched_equals_per_sample(method):
    """A row-wise denoiser: sampling the batch equals sampling each row alone (deterministic
    methods; stochastic ones get their per-row noise sliced from the batch draws)."""
    sigmas = [20.0, 5.0, 1.0, 0.2, 0.0]
    eps = make_vp_model(3, D=2)
    r = np.random.default_rng(1)
    x = DV(r.standard_normal((5, 2))) * 20
    n_noisy = 3 if method in ("ddpm", "reverse_sde") else 0
    noise = [DV(r.standard_normal((5, 2))) for _ in range(n_noisy)]
    full = sample(eps, sigmas, x, method=method, noise=noise)
    for i in range(5):
        one = sample(eps, sigmas, x[i:i + 1], method=method, noise=[w[i:i + 1] for w in noise])
        assert np.max(np.abs(one - full[i:i + 1])) < 1e-12  # GEMM blocking may reorder sums


def test_noise_replays_rng_run():
    sigmas = list(np.geomspace(10.0, 0.1, 5)) + [0.0]
    x = DV(np.random.default_rng(0).standard_normal((4, 2))) * 10
    den = gaussian_denoiser(0.5, 1.0)
    a = sample(den, sigmas, x, method="ddpm", rng=backend.default_rng(42))
    g = backend.default_rng(42)
    noise = [g.standard_normal(x.shape) for _ in range(4)]  # 4 steps to sigma' > 0
    b = sample(den, sigmas, x, method="ddpm", noise=noise)
    assert np.array_equal(a, b)
    c = sample(den, sigmas, x, method="ddpm", rng=backend.default_rng(43))
    assert not np.array_equal(a, c)


def test_final_noise_adds_a_last_state():
    sigmas = [10.0, 1.0, 0.0]
    x = DV(np.random.default_rng(0).standard_normal((4, 2))) * 10
    den = gaussian_denoiser(0.5, 1.0)
    w = DV(np.random.default_rng(1).standard_normal((4, 2)))
    states = list(iter_sample(den, sigmas, x, method="ddim", noise=[w], final_noise=0.05))
    assert len(states) == 3 and states[-1].step == 3 and states[-1].nfe == 2
    assert states[-1].sigma == pytest.approx(0.05)
    assert np.max(np.abs(states[-1].x - (states[-2].x + 0.05 * w))) < 1e-15


def test_final_step_ddim_returns_x0_hat_and_avoids_extrapolation():
    sigmas = [10.0, 3.0, 1.0, 0.0]
    eps = make_vp_model(0, D=2)
    x = DV(np.random.default_rng(0).standard_normal((4, 2))) * 10
    plain = list(iter_sample(eps, sigmas, x, method="gradient_estimation"))
    safe = list(iter_sample(eps, sigmas, x, method="gradient_estimation", final_step="ddim"))
    for a, b in zip(plain[:-1], safe[:-1]):
        assert np.array_equal(a.x, b.x)  # identical until the last step
    assert np.max(np.abs(safe[-1].x - safe[-1].x0_hat)) < 1e-12  # last step to 0 returns x0_hat
    assert np.max(np.abs(plain[-1].x - safe[-1].x)) > 1e-6  # the option does change something


def test_denoise_once():
    x0 = DV(np.array([[1.0, -2.0, 0.5]]))
    r = np.random.default_rng(0)
    sig = DV(np.array([0.1, 1.0, 10.0]))
    x = x0 + sig[:, None] * DV(r.standard_normal((3, 3)))
    den = point_denoiser(x0)
    # one level per sample: the single-point ideal denoiser recovers x0 exactly (up to rounding)
    assert np.max(np.abs(denoise_once(lambda x, s: (x - x0) / s[:, None], x, sig) - x0)) < 1e-12
    for i in range(3):  # metamorphic: per-sample sigma == one call per row with a float sigma
        one = denoise_once(den, x[i:i + 1], float(sig[i]))
        assert np.max(np.abs(one - x0)) < 1e-12
    # on two points, one step from large sigma lands near their mean, not on either point
    two = DV(np.array([[-1.0, 0.0], [1.0, 0.0]]))

    def ideal2(x, s):
        d = -((x[:, None, :] - two[None]) ** 2).sum(-1) / (2 * s * s)  # (B, 1, D) - (1, 2, D) -> (B, 2)
        w = np.exp(d - d.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        return (x - w @ two) / s  # (B, 2) @ (2, D) -> (B, D)
    est = denoise_once(ideal2, DV(r.standard_normal((100, 2))) * 50, 50.0)
    assert np.max(np.abs(est[:, 0])) < 0.5  # weights ~1/2 each: x0_hat ~ (0, 0)


# ---------------------------------------------------------------- bad input

GOOD = [10.0, 1.0, 0.0]


def _x():
    return np.zeros((2, 3))


def _den(x, s):
    return x * 0.1


@pytest.mark.parametrize("kwargs,exc,word", [
    ({"sigmas": [1.0, 1.0, 0.0]}, ValueError, "sigmas"),
    ({"sigmas": [1.0, 2.0]}, ValueError, "sigmas"),
    ({"sigmas": [1.0, -0.5]}, ValueError, "sigmas"),
    ({"sigmas": [1.0, 0.0, 0.0]}, ValueError, "sigmas"),
    ({"sigmas": [1.0]}, ValueError, "sigmas"),
    ({"sigmas": [1.0, float("nan")]}, ValueError, "sigmas"),
    ({"sigmas": [[1.0, 0.5]]}, ValueError, "sigmas"),
    ({"method": "family", "mu": 1.0}, ValueError, "mu"),
    ({"method": "family", "mu": -0.1}, ValueError, "mu"),
    ({"method": "family", "gamma": 0.0}, ValueError, "gamma"),
    ({"method": "family", "gamma": -1.0}, ValueError, "gamma"),
    ({"method": "family", "gamma": "2"}, TypeError, "gamma"),
    ({"method": "ddim", "gamma": 2.0}, ValueError, "gamma"),
    ({"method": "heun", "mu": 0.5}, ValueError, "mu"),
    ({"method": "nope"}, ValueError, "method"),
    ({"method": 3}, TypeError, "method"),
    ({"method": "ddpm", "noise": [np.zeros((2, 3))] * 2}, ValueError, "noise"),
    ({"method": "ddim", "noise": [np.zeros((2, 3))]}, ValueError, "noise"),
    ({"method": "ddpm", "noise": [np.zeros((2, 2))]}, ValueError, "noise"),
    ({"method": "ddpm", "noise": np.zeros((1, 2, 3))}, TypeError, "noise"),
    ({"x": np.zeros((2, 3), dtype=np.int64)}, TypeError, "x"),
    ({"x": np.full((2, 3), np.nan)}, ValueError, "x"),
    ({"denoiser": lambda x, s: x[:, :2]}, ValueError, "denoiser"),
    ({"denoiser": 3}, TypeError, "denoiser"),
    ({"final_step": "euler"}, ValueError, "final_step"),
    ({"method": "heun", "final_step": "ddim"}, ValueError, "final_step"),
    ({"final_noise": -1.0}, ValueError, "final_noise"),
])
def test_bad_input(kwargs, exc, word):
    args = {"denoiser": _den, "sigmas": GOOD, "x": _x()}
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        sample(args.pop("denoiser"), args.pop("sigmas"), args.pop("x"), **args)


def test_bad_vp_input():
    ab = vp_schedule(10)
    x = np.zeros((2, 3))
    eps = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="timesteps"):
        ddim_vp(eps, ab, np.array([3, 5]), x)
    with pytest.raises(ValueError, match="timesteps"):
        ddpm_ancestral_vp(eps, ab, np.array([12, 5]), x)
    with pytest.raises(ValueError, match="noise"):
        ddpm_ancestral_vp(eps, ab, np.array([9, 5, 0]), x, noise=[x])
    with pytest.raises(ValueError, match="eta"):
        ddim_vp(eps, ab, np.array([9, 5]), x, eta=1.5)


# ---------------------------------------------------------------- GPU: same numbers as NumPy

@pytest.mark.gpu
@pytest.mark.parametrize("method", ALL_METHODS)
def test_cupy_matches_numpy(method):
    import cupy
    sigmas = cupy.asarray([10.0, 3.0, 1.0, 0.3, 0.0])  # a device grid is accepted (copied once)
    r = np.random.default_rng(0)
    x = r.standard_normal((16, 2)) * 10  # host arrays: this test compares NumPy with CuPy itself
    n_noisy = 3 if method in ("ddpm", "reverse_sde") else 0
    noise = [r.standard_normal((16, 2)) for _ in range(n_noisy)]
    den = gaussian_denoiser(0.5, 0.7)
    a = sample(den, backend.to_numpy(sigmas), x, method=method, noise=noise)
    b = sample(den, sigmas, cupy.asarray(x), method=method, noise=[cupy.asarray(w) for w in noise])
    assert np.max(np.abs(a - b.get())) < 1e-12
