"""Forward processes, VE<->VP bridge, parametrisation round trips and the DDPM posterior
(docs/math.md §1 and §3).

float64 identities are checked at 1e-10 relative (a few roundings of O(1) quantities);
statistical checks use fixed seeds and CLT bounds stated next to each assertion.
"""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from device_helpers import D, H, assert_close, assert_equal
from minidiff import backend
from minidiff.forward import (
    add_noise_ve, add_noise_vp, ddpm_posterior, eps_from_score, eps_from_v, eps_from_x0,
    random_walk, random_walk_marginal_std, score_from_eps, v_from_eps, ve_to_vp, vp_chain,
    vp_chain_marginal, vp_to_ve, x0_from_eps, x0_from_v,
)
from minidiff.schedules import alpha_bars, cosine_betas, linear_betas, timesteps

log_sigma = st.floats(min_value=math.log(1e-4), max_value=math.log(1e4))
# alpha_bar in (0, 1) built from log(sigma): ab = 1/(1 + sigma^2), never exactly 0 or 1
alpha_bar_st = log_sigma.map(lambda ls: 1.0 / (1.0 + math.exp(2 * ls)))


def _data(seed, shape=(7, 3)):
    rng = np.random.default_rng(seed)  # host draws, copied to the run's backend
    return D(rng.standard_normal(shape)), D(rng.standard_normal(shape))


@given(st.integers(0, 2**31), log_sigma)
def test_ve_vp_bridge_round_trip(seed, ls):
    x0, eps = _data(seed)
    sigma = math.exp(ls)
    ab = 1.0 / (1.0 + sigma * sigma)
    x_ve = add_noise_ve(x0, sigma, eps)
    x_vp = add_noise_vp(x0, ab, eps)
    # same eps, same marginal: x_ve = x_vp / sqrt(ab) and x_vp = x_ve / sqrt(1 + sigma^2)
    assert_close(vp_to_ve(x_vp, ab), x_ve, rtol=1e-10, atol=1e-10 * (1 + sigma))
    assert_close(ve_to_vp(x_ve, sigma), x_vp, rtol=1e-10, atol=1e-12)


@given(st.integers(0, 2**31), log_sigma)
def test_eps_x0_score_round_trips(seed, ls):
    x0, eps = _data(seed)
    sigma = math.exp(ls)
    x = add_noise_ve(x0, sigma, eps)
    assert_close(x0_from_eps(x, sigma, eps), x0, atol=1e-10 * (1 + sigma))
    assert_close(eps_from_x0(x, sigma, x0), eps, atol=1e-10 * (1 + 1 / sigma))
    assert_close(eps_from_score(score_from_eps(eps, sigma), sigma), eps, rtol=1e-12)


@given(st.integers(0, 2**31), alpha_bar_st)
def test_v_parametrisation_round_trips(seed, ab):
    x0, eps = _data(seed)
    x_t = add_noise_vp(x0, ab, eps)
    v = v_from_eps(x0, eps, ab)
    assert_close(eps_from_v(x_t, v, ab), eps, atol=1e-10)
    assert_close(x0_from_v(x_t, v, ab), x0, atol=1e-10)


def test_per_sample_sigma_equals_per_sample_calls():
    x0, eps = _data(3, (5, 4))
    sig = D(np.geomspace(1e-3, 1e3, 5))
    batched = add_noise_ve(x0, sig, eps)
    for i in range(5):
        assert_equal(batched[i], add_noise_ve(x0[i:i + 1], sig[i], eps[i:i + 1])[0])
    ab = 1 / (1 + sig**2)
    b2 = add_noise_vp(x0, ab, eps)
    for i in range(5):
        assert_close(b2[i], add_noise_vp(x0[i:i + 1], ab[i], eps[i:i + 1])[0], rtol=1e-15)


# ----------------------------------------------------------------------------- posterior
@st.composite
def alpha_bar_pairs(draw):
    """(ab_t, ab_prev) with ab_t < ab_prev <= 1, built by ordering two draws."""
    a, b = draw(alpha_bar_st), draw(alpha_bar_st)
    if a == b:
        b = 1.0
    return min(a, b), max(a, b)


@given(alpha_bar_pairs())
def test_posterior_identities(pair):
    ab_t, ab_p = pair
    c0, ct, var = ddpm_posterior(ab_t, ab_p)
    # mean of q(x_prev | x0) is sqrt(ab_prev) x0 and its variance 1 - ab_prev (marginalising x_t)
    assert c0 + ct * math.sqrt(ab_t) == pytest.approx(math.sqrt(ab_p), rel=1e-10, abs=1e-15)
    assert ct**2 * (1 - ab_t) + var == pytest.approx(1 - ab_p, rel=1e-9, abs=1e-15)
    beta_prime = 1 - ab_t / ab_p
    assert -1e-15 <= var <= beta_prime * (1 + 1e-12)
    assert c0 >= 0 and ct >= 0


def test_posterior_last_step_and_arrays_and_strides():
    c0, ct, var = ddpm_posterior(0.3, 1.0)
    assert (c0, ct, var) == (1.0, 0.0, 0.0)
    ab = alpha_bars(linear_betas(1000))
    ts = timesteps(20, 1000, "leading")  # strided steps t -> t - 50
    c0, ct, var = ddpm_posterior(ab[ts[:-1]], ab[ts[1:]])
    assert_close(c0 + ct * np.sqrt(ab[ts[:-1]]), np.sqrt(ab[ts[1:]]), rtol=1e-12)
    # unstrided: var is Ho et al.'s beta_tilde_t = (1 - ab_{t-1})/(1 - ab_t) beta_t
    b = linear_betas(1000)
    _, _, v1 = ddpm_posterior(ab[1:], ab[:-1])
    assert_close(v1, (1 - ab[:-1]) / (1 - ab[1:]) * b[1:], rtol=1e-9)


@pytest.mark.parametrize("args, match", [
    ((0.5, 0.4), "alpha_bar_prev must be >"),
    ((0.0, 0.5), "alpha_bar_t"),
    ((1.0, 1.0), "alpha_bar_t"),
    ((0.5, 1.5), "alpha_bar_prev"),
    ((float("nan"), 0.9), "finite"),
])
def test_posterior_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ddpm_posterior(*args)


# ----------------------------------------------------------------------------- chains
def test_random_walk_matches_closed_form_marginal():
    n, steps = 20000, 40
    x0 = D(np.tile(np.array([[1.0, -2.0]]), (n, 1)))
    sig = np.geomspace(0.01, 0.3, steps)
    traj = random_walk(x0, sig, rng=backend.default_rng(0))  # x0 and the rng on the run's backend
    assert traj.shape == (steps + 1, n, 2)
    assert_equal(traj[0], x0)
    s_t = random_walk_marginal_std(sig)
    for t in (1, 10, steps):
        d = traj[t] - x0
        # mean: sd of the sample mean is s_t/sqrt(n); 5 sd.  std: sd of sample std ~ s_t/sqrt(2n); 5 sd
        assert np.abs(d.mean(0)).max() < 5 * s_t[t] / math.sqrt(n)
        assert np.abs(d.std(0) - s_t[t]).max() < 5 * s_t[t] / math.sqrt(2 * n)


def test_random_walk_replays_given_noise():
    x0 = D(np.zeros((3, 2)))
    noise = [D(np.full((3, 2), float(i))) for i in range(4)]
    traj = random_walk(x0, [0.5, 0.5, 1.0, 2.0], noise=noise)
    assert_close(traj[-1], np.full((3, 2), 0.5 * 1 + 1.0 * 2 + 2.0 * 3))
    with pytest.raises(ValueError, match="noise must hold one array per step"):
        random_walk(x0, [0.5, 0.5], noise=noise)


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(1000), linear_betas(50)])
def test_vp_chain_matches_closed_form_marginal(betas):
    n = 20000
    x0 = D(np.tile(np.array([[2.0, -1.0, 0.5]]), (n, 1)))
    traj = vp_chain(x0, betas, rng=backend.default_rng(1))
    mean_coef, std = vp_chain_marginal(betas)
    assert_close(mean_coef**2, np.concatenate(([1.0], alpha_bars(betas))), rtol=1e-10)
    T = len(betas)
    for t in (1, T // 2, T):
        m = mean_coef[t] * x0[0]
        # CLT, 5 sd: the chain's marginal is exactly N(m, std^2) since every step is Gaussian
        assert np.abs(traj[t].mean(0) - m).max() < 5 * std[t] / math.sqrt(n)
        assert np.abs(traj[t].std(0) - std[t]).max() < 5 * std[t] / math.sqrt(2 * n)
    if T == 1000:
        # reaches N(0, I): the residual signal sqrt(ab_T) * |x0| is below the 5-sd noise floor
        assert np.abs(traj[-1].mean(0)).max() < 5 / math.sqrt(n)
        assert np.abs(traj[-1].std(0) - 1).max() < 5 / math.sqrt(2 * n)
    else:
        # T = 50 linear keeps ab_T = 0.60: the mean is visibly not 0 -- the classic short-schedule bug
        assert np.abs(traj[-1].mean(0)).max() > 1.0


@pytest.mark.parametrize("call, exc, match", [
    (lambda: add_noise_ve(np.zeros((2, 2)), -1.0, np.zeros((2, 2))), ValueError, "sigma"),
    (lambda: add_noise_ve(np.zeros((2, 2)), 1.0, np.zeros((2, 3))), ValueError, "eps"),
    (lambda: add_noise_ve(np.zeros((2, 2), dtype=int), 1.0, np.zeros((2, 2))), TypeError, "x0"),
    (lambda: add_noise_ve(np.zeros((2, 2)), np.ones(3), np.zeros((2, 2))), ValueError, "sigma"),
    (lambda: add_noise_vp(np.zeros((2, 2)), 1.5, np.zeros((2, 2))), ValueError, "alpha_bar"),
    (lambda: random_walk(np.zeros((2, 2)), [0.1, -0.1]), ValueError, "sigmas"),
    (lambda: vp_chain(np.zeros((2, 2)), [0.1, 1.0]), ValueError, "betas"),
    (lambda: add_noise_ve(np.full((2, 2), np.nan), 1.0, np.zeros((2, 2))), ValueError, "NaN"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
