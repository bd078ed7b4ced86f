"""Schedule identities (docs/math.md §1-§2), property-based over wide parameter ranges.

Tolerances: everything is float64 host math. Products/sums of T <= 2000 terms carry
relative errors of order T * 1e-16 ~ 1e-13; we allow 1e-10 relative, far above rounding
and far below any formula error (a wrong convention is off by >= 1e-4 relative).
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minidiff import backend
from minidiff.schedules import (
    Schedule, ScheduleWarning, alpha_bars, alpha_bars_from_sigmas, betas_from_alpha_bars,
    cosine_betas, karras_sigmas, linear_betas, log_linear_sigmas, log_snr, scaled_linear_betas,
    sigmas_from_alpha_bars, sigmas_from_betas, timesteps,
)

RTOL = 1e-10

Ts = st.integers(min_value=2, max_value=2000)
# beta ranges built by construction (start < end), log-scaled over five decades
log_beta = st.floats(min_value=math.log(1e-6), max_value=math.log(0.5))


@st.composite
def beta_ranges(draw):
    a, b = draw(log_beta), draw(log_beta)
    lo, hi = sorted((a, b))
    return math.exp(lo), math.exp(hi) * 1.0001 if lo == hi else math.exp(hi)


@st.composite
def sigma_ranges(draw):
    lo = draw(st.floats(min_value=math.log(1e-6), max_value=math.log(1e3)))
    span = draw(st.floats(min_value=1e-3, max_value=math.log(1e9)))
    return math.exp(lo), math.exp(lo + span)


@st.composite
def beta_arrays(draw):
    T = draw(st.integers(min_value=1, max_value=500))
    logs = draw(st.lists(log_beta, min_size=T, max_size=T))
    return np.exp(np.array(logs))


# ----------------------------------------------------------------------------- reference values
@pytest.mark.parametrize(
    "betas, s0, s_last",
    [
        (linear_betas(1000), 0.0100005, 157.40728),
        # a scaled-linear reference computed with the linear range (1e-4, 0.02)
        (scaled_linear_betas(1000, 1e-4, 0.02), 0.0100005, 36.911912),
        (cosine_betas(1000), 0.0064254128, 20291.17),
    ],
)
def test_reference_sigmas(betas, s0, s_last):
    sig = sigmas_from_betas(betas)
    # the reference values are printed to 5-8 significant digits: compare at that precision
    assert sig[0] == pytest.approx(s0, rel=5e-7)
    assert sig[-1] == pytest.approx(s_last, rel=5e-7)


def test_reference_stable_diffusion_defaults():
    # SD's range (0.00085, 0.012): sigma_0 = sqrt(b0 / (1 - b0)) exactly (one factor)
    sig = sigmas_from_betas(scaled_linear_betas(1000))
    assert sig[0] == pytest.approx(math.sqrt(0.00085 / (1 - 0.00085)), rel=RTOL)
    assert 14.0 < sig[-1] < 15.0  # 14.6146 computed independently in float64


def test_linear_endpoints_and_cosine_clipping():
    b = linear_betas(1000)
    assert b[0] == 1e-4 and b[-1] == 0.02
    c = cosine_betas(1000)
    assert np.sum(c >= 0.999) == 1 and c[-1] == 0.999  # only the last beta is clipped


# ----------------------------------------------------------------------------- identities
@given(Ts, beta_ranges())
def test_linear_and_scaled_linear_are_monotone_in_range(T, rng_):
    lo, hi = rng_
    for b in (linear_betas(T, lo, hi), scaled_linear_betas(T, lo, hi)):
        assert b.shape == (T,)
        assert np.all(np.diff(b) >= 0)
        assert b[0] == pytest.approx(lo, rel=RTOL) and b[-1] == pytest.approx(hi, rel=RTOL)
    # scaled-linear: sqrt(beta) is affine in t
    r = np.sqrt(scaled_linear_betas(T, lo, hi))
    if T > 2:
        np.testing.assert_allclose(np.diff(r, 2), 0.0, atol=RTOL * r.max())


@given(beta_arrays())
def test_alpha_bar_is_cumprod_and_inverts(betas):
    ab = alpha_bars(betas)
    np.testing.assert_allclose(ab, np.cumprod(1.0 - betas), rtol=RTOL)
    assert np.all(np.diff(ab) < 0) and np.all(ab > 0) and np.all(ab < 1)
    np.testing.assert_allclose(betas_from_alpha_bars(ab), betas, rtol=1e-8)
    # 1e-8: beta = 1 - ab_t/ab_{t-1} recovers beta with absolute error ~1e-16 / ab; relative
    # error on beta >= 1e-6 is then <= 1e-10 * (1/ab) -- generous bound for ab down to ~1e-2


@given(beta_arrays())
def test_sigma_alpha_bar_round_trip(betas):
    ab = alpha_bars(betas)
    sig = sigmas_from_alpha_bars(ab)
    np.testing.assert_allclose(sig, sigmas_from_betas(betas), rtol=1e-9)
    np.testing.assert_allclose(alpha_bars_from_sigmas(sig), ab, rtol=RTOL)
    assert np.all(np.diff(sig) > 0)
    # log SNR = -2 log sigma, decreasing
    np.testing.assert_allclose(log_snr(ab), -2.0 * np.log(sig), rtol=1e-9, atol=1e-9)


@given(st.integers(min_value=1, max_value=4000), st.floats(min_value=0.0, max_value=0.1))
def test_cosine_telescopes_and_clips(T, s):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    b = cosine_betas(T, s=s)
    assert np.all(b > 0) and np.all(b <= 0.999)
    unclipped = b < 0.999
    ab = alpha_bars(b)
    t = np.arange(T)
    # telescoping: ab_t = f((t+1)/T) / f(0) wherever no earlier beta was clipped
    first_clip = np.argmax(~unclipped) if not unclipped.all() else T
    ok = t < first_clip
    np.testing.assert_allclose(ab[ok], f((t[ok] + 1) / T) / f(0.0), rtol=1e-9)
    assert np.all(np.diff(b[unclipped]) >= -1e-15)  # cosine betas increase with t


@given(st.integers(min_value=2, max_value=2000), sigma_ranges())
def test_log_linear_constant_ratio(n, rng_):
    lo, hi = rng_
    g = log_linear_sigmas(n, lo, hi)
    assert g.shape == (n,) and g[0] == hi and g[-1] == lo
    assert np.all(np.diff(g) < 0)
    ratios = g[1:] / g[:-1]
    np.testing.assert_allclose(ratios, (lo / hi) ** (1.0 / (n - 1)), rtol=1e-9)


@given(st.integers(min_value=2, max_value=2000), sigma_ranges(), st.floats(min_value=0.5, max_value=20.0))
def test_karras_root_is_affine(n, rng_, rho):
    lo, hi = rng_
    g = karras_sigmas(n, lo, hi, rho)
    assert g.shape == (n,) and g[0] == hi and g[-1] == lo
    assert np.all(np.diff(g) < 0)
    r = g ** (1.0 / rho)
    if n > 2:
        np.testing.assert_allclose(np.diff(r, 2), 0.0, atol=1e-9 * r.max())


# ----------------------------------------------------------------------------- timesteps
def test_timestep_reference_grids():
    np.testing.assert_array_equal(timesteps(50, 1000, "leading")[:3], [980, 960, 940])
    assert timesteps(50, 1000, "leading")[-1] == 0
    np.testing.assert_array_equal(timesteps(50, 1000, "trailing")[:3], [999, 979, 959])
    assert timesteps(50, 1000, "trailing")[-1] == 19
    # regression: arange(300, 0, -300/7) has 8 entries from float rounding; we must give 7
    np.testing.assert_array_equal(timesteps(7, 300, "trailing"), [299, 256, 213, 170, 128, 85, 42])
    lin = timesteps(50, 1000, "linspace")
    assert lin[0] == 999 and lin[-1] == 0


@given(st.data())
def test_timesteps_properties(data):
    T = data.draw(st.integers(min_value=1, max_value=3000))
    n = data.draw(st.integers(min_value=1, max_value=T))
    for spacing in ("leading", "trailing", "linspace"):
        ts = timesteps(n, T, spacing)
        assert ts.shape == (n,)
        assert ts.min() >= 0 and ts.max() <= T - 1
        assert np.all(np.diff(ts) < 0), spacing  # strictly descending, no duplicates
    assert timesteps(n, T, "trailing")[0] == T - 1
    assert timesteps(n, T, "leading")[-1] == 0


# ----------------------------------------------------------------------------- Schedule
@given(st.sampled_from(["linear", "cosine", "scaled_linear", "log_linear", "karras"]),
       st.integers(min_value=1, max_value=200),
       st.sampled_from(["leading", "trailing", "linspace", "log_linear", "karras"]))
def test_sampling_grids_are_decreasing(name, steps, spacing):
    sch = Schedule.from_name(name, T=300)
    steps = min(steps, sch.T)
    g = sch.sampling_sigmas(steps, spacing=spacing)
    assert g.shape == (steps + 1,) and g[-1] == 0.0
    assert np.all(np.diff(g) < 0)
    assert g[0] <= sch.sigma_max * (1 + 1e-12) and g[-2] >= sch.sigma_min * (1 - 1e-12)
    assert sch.sampling_sigmas(steps, spacing=spacing, final_zero=False).shape == (steps,)


def test_sample_sigmas_draws_from_grid_uniformly():
    sch = Schedule.linear(T=10)
    rng = backend.default_rng(0)
    s = backend.to_numpy(sch.sample_sigmas(20000, rng, dtype="float64"))
    idx = np.searchsorted(sch.sigmas, s)
    np.testing.assert_array_equal(sch.sigmas[idx], s)  # every draw is a grid value
    counts = np.bincount(idx, minlength=10)
    # each count ~ Binomial(20000, 0.1): mean 2000, sd 42.4; 5 sd bound
    assert np.all(np.abs(counts - 2000) < 5 * 42.5)
    assert sch.sample_sigmas(4, rng).dtype == np.float32


@pytest.mark.parametrize("make", [Schedule.linear, Schedule.cosine])
def test_t1000_reaches_standard_normal_and_short_schedule_is_flagged(make):
    sch = make(T=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kl = sch.check_terminal_noise(data_rms=1.0)
    assert kl == pytest.approx(1.0 / (2.0 * sch.sigma_max**2), rel=1e-12) and kl < 1e-4
    # VP view: the terminal marginal of standardised data is N(0, 1) up to sqrt(ab_T) of signal
    assert math.sqrt(sch.alpha_bars[-1]) < 0.01
    short = Schedule.linear(T=50)
    assert short.alpha_bars[-1] == pytest.approx(0.60, abs=0.01)  # docs/math.md §2: ab_T = 0.6030
    with pytest.warns(ScheduleWarning, match="does not dominate"):
        short.check_terminal_noise(data_rms=1.0)


def test_terminal_kl_bound_holds_for_gaussian_data():
    # data N(0, c^2 I_D): p_T = N(0, (c^2 + s^2) I) exactly, and its KL to N(0, s^2 I) is
    # D/2 (r - 1 - log r), r = (c^2 + s^2)/s^2, which the bound D c^2 / (2 s^2) must dominate
    sch = Schedule.log_linear(0.01, 5.0)
    for c in (0.1, 1.0, 3.0):
        for D in (1, 10, 784):
            r = (c * c + 25.0) / 25.0
            exact = D / 2 * (r - 1 - math.log(r))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ScheduleWarning)
                bound = sch.check_terminal_noise(data_rms=c * math.sqrt(D))
            assert exact <= bound * (1 + 1e-12)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: linear_betas(0), ValueError, "T must be"),
        (lambda: linear_betas(-5), ValueError, "T must be"),
        (lambda: linear_betas(10.0), TypeError, "T must be"),
        (lambda: linear_betas(True), TypeError, "T must be"),
        (lambda: linear_betas(10, 0.0, 0.02), ValueError, "beta_start"),
        (lambda: linear_betas(10, 1e-4, 1.0), ValueError, "beta_end"),
        (lambda: scaled_linear_betas(10, -1e-3, 0.02), ValueError, "beta_start"),
        (lambda: cosine_betas(10, max_beta=1.0), ValueError, "max_beta"),
        (lambda: alpha_bars(np.array([0.1, 1.2])), ValueError, "betas"),
        (lambda: alpha_bars(np.array([1, 2])), TypeError, "betas"),
        (lambda: alpha_bars(np.array([0.1, np.nan])), ValueError, "NaN"),
        (lambda: betas_from_alpha_bars(np.array([0.5, 0.6])), ValueError, "decreasing"),
        (lambda: log_linear_sigmas(10, 5.0, 1.0), ValueError, "sigma_min"),
        (lambda: log_linear_sigmas(10, 0.0, 1.0), ValueError, "sigma_min"),
        (lambda: karras_sigmas(10, 1.0, 1.0), ValueError, "sigma_min"),
        (lambda: karras_sigmas(1, 0.1, 1.0), ValueError, "n must be"),
        (lambda: karras_sigmas(10, 0.1, 1.0, rho=0.0), ValueError, "rho"),
        (lambda: timesteps(10, 1000, "middle"), ValueError, "spacing"),
        (lambda: timesteps(2000, 1000), ValueError, "n_steps"),
        (lambda: timesteps(10, 1000, "leading", offset=100), ValueError, "offset"),
        (lambda: Schedule(np.array([3.0, 2.0, 1.0])), ValueError, "increasing"),
        (lambda: Schedule(np.array([1, 2, 3])), TypeError, "sigmas"),
        (lambda: Schedule.linear().sampling_sigmas(10, spacing="cubic"), ValueError, "spacing"),
        (lambda: Schedule.linear().sampling_sigmas(0), ValueError, "steps"),
        (lambda: Schedule.from_name("quadratic"), ValueError, "schedule name"),
        (lambda: Schedule.linear().check_terminal_noise(-1.0), ValueError, "data_rms"),
        (lambda: Schedule.linear().check_terminal_noise(1.0, max_kl=0.0), ValueError, "max_kl"),
        (lambda: Schedule.linear().sample_sigmas(3, rng=42), TypeError, "rng"),
    ],
)
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
