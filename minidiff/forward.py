r"""Forward (noising) processes, the VE <-> VP bridge, parametrisation conversions and the
DDPM posterior.

Two coordinate systems (docs/math.md §1):

- VE, "sigma space" (the core of minidiff): ``x = x0 + sigma * eps``.
- VP, "DDPM space": ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``.

They describe the same marginals: ``x_ve = x_vp / sqrt(alpha_bar)`` with
``sigma = sqrt((1 - alpha_bar) / alpha_bar)``, and the ``eps`` is the same in both.

Backend-agnostic: arrays stay on the backend they arrive on. Noise levels may be Python
floats or arrays broadcastable against ``x``.
"""
from __future__ import annotations

import math
import numbers

from . import backend
from ._validate import check_array, check_host_1d, check_real, check_rng, sigma_like

__all__ = [
    "add_noise_ve",
    "add_noise_vp",
    "vp_to_ve",
    "ve_to_vp",
    "x0_from_eps",
    "eps_from_x0",
    "score_from_eps",
    "eps_from_score",
    "v_from_eps",
    "eps_from_v",
    "x0_from_v",
    "ddpm_posterior",
    "random_walk",
    "random_walk_marginal_std",
    "vp_chain",
    "vp_chain_marginal",
]


def _alpha_bar_like(alpha_bar, x, name="alpha_bar", allow_one=False):
    """alpha_bar as a float or a (B, 1, ..., 1) array; must lie in (0, 1) ((0, 1] if allow_one)."""
    # shape handling, finite, in [1e-300, 1] (alpha_bar = 1e-300 is sigma = 1e150: still a float)
    ab = sigma_like(alpha_bar, x, name=name, low=1e-300, high=1.0)
    if not allow_one and bool(backend.get_xp(x).any(backend.get_xp(x).asarray(ab) >= 1.0)):  # host sync: validation
        raise ValueError(f"{name} must lie in (0, 1)")
    return ab


# ----------------------------------------------------------------------------- noising
def add_noise_ve(x0, sigma, eps):
    r"""VE forward marginal ``x = x0 + sigma * eps``: the perturbation kernel of the VE SDE
    (Song et al. 2021b, Sec. 3.4) and the noising of Karras et al. 2022, Sec. 2 (their Eq. 1 is
    the probability-flow ODE, not this); docs/math.md §1. ``sigma``: float or (B,)."""
    x0 = check_array(x0, "x0")
    eps = check_array(eps, "eps", shape=x0.shape, like=x0)
    return x0 + sigma_like(sigma, x0) * eps


def add_noise_vp(x0, alpha_bar, eps):
    r"""VP forward marginal ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``
    (Ho et al. 2020, Eq. 4). ``alpha_bar``: float in (0, 1] or (B,)."""
    x0 = check_array(x0, "x0")
    eps = check_array(eps, "eps", shape=x0.shape, like=x0)
    ab = _alpha_bar_like(alpha_bar, x0, allow_one=True)
    xp = backend.get_xp(x0)
    sqrt = math.sqrt if isinstance(ab, float) else xp.sqrt
    return sqrt(ab) * x0 + sqrt(1.0 - ab) * eps


def vp_to_ve(x_vp, alpha_bar):
    r"""``x_ve = x_vp / sqrt(alpha_bar)``: a VP state at alpha_bar is the VE state at
    ``sigma = sqrt((1 - alpha_bar)/alpha_bar)`` (Song et al. 2021a, DDIM, Eq. 14 change of variables)."""
    x_vp = check_array(x_vp, "x_vp")
    ab = _alpha_bar_like(alpha_bar, x_vp, allow_one=True)
    return x_vp / (math.sqrt(ab) if isinstance(ab, float) else backend.get_xp(x_vp).sqrt(ab))


def ve_to_vp(x_ve, sigma):
    r"""``x_vp = x_ve / sqrt(1 + sigma^2)`` (= ``sqrt(alpha_bar) x_ve``, ``alpha_bar = 1/(1 + sigma^2)``).
    ``sigma = 0`` is allowed (then ``x_vp = x_ve``)."""
    x_ve = check_array(x_ve, "x_ve")
    s = sigma_like(sigma, x_ve, allow_zero=True)
    if isinstance(s, float):
        return x_ve / math.sqrt(1.0 + s * s)
    return x_ve / backend.get_xp(x_ve).sqrt(1.0 + s * s)


# ----------------------------------------------------------------------------- parametrisations
def x0_from_eps(x, sigma, eps):
    r"""Tweedie/denoised estimate in VE: ``x0_hat = x - sigma * eps_hat``."""
    x = check_array(x, "x")
    eps = check_array(eps, "eps", shape=x.shape, like=x)
    return x - sigma_like(sigma, x) * eps


def eps_from_x0(x, sigma, x0):
    r"""``eps = (x - x0) / sigma`` (inverse of :func:`x0_from_eps`)."""
    x = check_array(x, "x")
    x0 = check_array(x0, "x0", shape=x.shape, like=x)
    return (x - x0) / sigma_like(sigma, x)


def score_from_eps(eps, sigma):
    r"""Score of the VE marginal: ``grad_x log p_sigma(x) = -eps_hat / sigma``
    (Vincent 2011; Song & Ermon 2019)."""
    eps = check_array(eps, "eps")
    return -eps / sigma_like(sigma, eps)


def eps_from_score(score, sigma):
    r"""``eps_hat = -sigma * score`` (inverse of :func:`score_from_eps`)."""
    score = check_array(score, "score")
    return -sigma_like(sigma, score) * score


def _vp_coefs(alpha_bar, like, other, names):
    check_array(like, names[0])
    check_array(other, names[1], shape=like.shape, like=like)
    ab = _alpha_bar_like(alpha_bar, like, allow_one=True)
    if isinstance(ab, float):
        return math.sqrt(ab), math.sqrt(1.0 - ab)
    xp = backend.get_xp(like)
    return xp.sqrt(ab), xp.sqrt(1.0 - ab)


def v_from_eps(x0, eps, alpha_bar):
    r"""v-prediction target ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0``
    (Salimans & Ho 2022, Progressive Distillation, Sec. 4)."""
    a, b = _vp_coefs(alpha_bar, x0, eps, ("x0", "eps"))
    return a * eps - b * x0


def eps_from_v(x_vp, v, alpha_bar):
    r"""``eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v`` for a VP state ``x_t``."""
    a, b = _vp_coefs(alpha_bar, x_vp, v, ("x_vp", "v"))
    return b * x_vp + a * v


def x0_from_v(x_vp, v, alpha_bar):
    r"""``x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v`` for a VP state ``x_t``."""
    a, b = _vp_coefs(alpha_bar, x_vp, v, ("x_vp", "v"))
    return a * x_vp - b * v


# ----------------------------------------------------------------------------- posterior
def ddpm_posterior(alpha_bar_t, alpha_bar_prev):
    r"""Coefficients of the DDPM posterior ``q(x_prev | x_t, x0) = N(c0 x0 + ct x_t, var I)``
    (Ho et al. 2020, Eqs. 6-7), written for any pair ``alpha_bar_t < alpha_bar_prev``, so it
    covers strided steps:

    .. math:: a' = \bar\alpha_t / \bar\alpha_{prev},\quad \beta' = 1 - a',\quad
              c_0 = \frac{\sqrt{\bar\alpha_{prev}}\,\beta'}{1 - \bar\alpha_t},\quad
              c_t = \frac{\sqrt{a'}\,(1 - \bar\alpha_{prev})}{1 - \bar\alpha_t},\quad
              \mathrm{var} = \frac{1 - \bar\alpha_{prev}}{1 - \bar\alpha_t}\,\beta'.

    ``alpha_bar_prev = 1`` (the last step) gives ``var = 0`` and mean ``x0``. Scalars or
    arrays (host or device); differences of alpha_bars are formed with ``expm1`` of log
    ratios, so they keep full relative precision near alpha_bar = 1.
    """
    alpha_bar_t, alpha_bar_prev = (check_array(a, name) if hasattr(a, "shape") and getattr(a, "ndim", 0) > 0
                                   else check_real(a, name)
                                   for a, name in ((alpha_bar_t, "alpha_bar_t"), (alpha_bar_prev, "alpha_bar_prev")))
    xp = backend.get_xp(alpha_bar_t, alpha_bar_prev)
    scalar = all(isinstance(a, float) for a in (alpha_bar_t, alpha_bar_prev))
    ab_t = xp.asarray(alpha_bar_t, dtype=xp.float64 if scalar else None)
    ab_p = xp.asarray(alpha_bar_prev, dtype=ab_t.dtype)
    if not bool(xp.all(xp.isfinite(ab_t) & xp.isfinite(ab_p))):
        raise ValueError("alpha_bar_t and alpha_bar_prev must be finite")
    if bool(xp.any((ab_t <= 0.0) | (ab_t >= 1.0))):
        raise ValueError("alpha_bar_t must lie in (0, 1)")
    if bool(xp.any((ab_p <= 0.0) | (ab_p > 1.0))):
        raise ValueError("alpha_bar_prev must lie in (0, 1]")
    if bool(xp.any(ab_p <= ab_t)):
        raise ValueError("alpha_bar_prev must be > alpha_bar_t (less noise one step back)")
    log_ratio = xp.log(ab_t) - xp.log(ab_p)  # log a' < 0
    a_prime = xp.exp(log_ratio)
    beta_prime = 0.0 - xp.expm1(log_ratio)  # 1 - a' (0.0 - ... avoids a -0.0)
    one_m_t = 0.0 - xp.expm1(xp.log(ab_t))  # 1 - ab_t
    one_m_p = 0.0 - xp.expm1(xp.log(ab_p))  # 1 - ab_prev (0 at the last step)
    c0 = xp.sqrt(ab_p) * beta_prime / one_m_t
    ct = xp.sqrt(a_prime) * one_m_p / one_m_t
    var = one_m_p / one_m_t * beta_prime
    if scalar:
        return float(c0), float(ct), float(var)
    return c0, ct, var


# ----------------------------------------------------------------------------- step-by-step chains
def _noise_draws(noise, n_steps, shape, rng, xp, dtype):
    if noise is not None:
        if not isinstance(noise, (list, tuple)):
            raise TypeError(f"noise must be a list of arrays (one per step) or None; got {type(noise).__name__}")
        if len(noise) != n_steps:
            raise ValueError(f"noise must hold one array per step ({n_steps}); got {len(noise)}")
        return [check_array(w, f"noise[{i}]", shape=shape) for i, w in enumerate(noise)]
    rng = check_rng(rng, xp=xp)
    return (rng.standard_normal(shape, dtype=dtype) for _ in range(n_steps))


def random_walk(x0, sigmas, rng=None, noise=None):
    r"""The forward diffusion of a point cloud in the "Unit 10 – Diffusion Models" lecture notes,
    kept step by step (docs/math.md §3):

    .. math:: x_t = x_{t-1} + \sigma_t w_t, \qquad w_t \sim N(0, I),\ t = 1..T.

    ``x0``: (N, D) points; ``sigmas``: the T step sizes (host floats, > 0). Returns the
    whole trajectory, shape (T + 1, N, D), with ``traj[0] = x0``. Its closed-form marginal is
    ``x_t ~ N(x0, s_t^2 I)`` with ``s_t^2 = sum_{u<=t} sigma_u^2``
    (:func:`random_walk_marginal_std`).
    """
    x0 = check_array(x0, "x0")
    steps = check_host_1d(sigmas, "sigmas", 0.0, low_open=True).tolist()  # host floats, once
    xp = backend.get_xp(x0)
    traj = xp.empty((len(steps) + 1,) + tuple(x0.shape), dtype=x0.dtype)
    traj[0] = x0
    for t, (s, w) in enumerate(zip(steps, _noise_draws(noise, len(steps), x0.shape, rng, xp, x0.dtype)), 1):
        traj[t] = traj[t - 1] + s * w
    return traj


def random_walk_marginal_std(sigmas):
    r"""``s_t = sqrt(sum_{u<=t} sigma_u^2)``, t = 0..T (s_0 = 0): the std of the random walk's
    marginal ``x_t ~ N(x0, s_t^2 I)`` (sum of independent Gaussians). Host float64 array."""
    steps = check_host_1d(sigmas, "sigmas", 0.0)
    xp = backend.get_xp(steps)
    return xp.sqrt(xp.concatenate((xp.zeros(1), xp.cumsum(steps**2))))


def vp_chain(x0, betas, rng=None, noise=None):
    r"""The VP (DDPM) forward chain of the DL4DS lecture slides, kept step by step (Ho et al. 2020,
    Eq. 2; docs/math.md §3):

    .. math:: x_t = \sqrt{1 - \beta_t}\, x_{t-1} + \sqrt{\beta_t}\, u_t, \qquad u_t \sim N(0, I).

    ``x0``: (N, ...) data; ``betas``: the T betas in (0, 1) (host floats). Returns the
    trajectory, shape (T + 1, N, ...). Closed-form marginal (Eq. 4):
    ``x_t ~ N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)`` (:func:`vp_chain_marginal`).
    """
    x0 = check_array(x0, "x0")
    bs = check_host_1d(betas, "betas", 0.0, 1.0, low_open=True, high_open=True).tolist()
    xp = backend.get_xp(x0)
    traj = xp.empty((len(bs) + 1,) + tuple(x0.shape), dtype=x0.dtype)
    traj[0] = x0
    for t, (b, u) in enumerate(zip(bs, _noise_draws(noise, len(bs), x0.shape, rng, xp, x0.dtype)), 1):
        traj[t] = math.sqrt(1.0 - b) * traj[t - 1] + math.sqrt(b) * u
    return traj


def vp_chain_marginal(betas):
    r"""``(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`` for t = 0..T (t = 0: (1, 0)): mean
    coefficient and std of the VP chain's marginal, from ``alpha_bar_t = prod_{s<=t}(1 - beta_s)``
    computed with log1p/expm1. Host float64 arrays of length T + 1."""
    bs = check_host_1d(betas, "betas", 0.0, 1.0, low_open=True, high_open=True)
    xp = backend.get_xp(bs)
    log_ab = xp.concatenate((xp.zeros(1), xp.cumsum(xp.log1p(-bs))))
    return xp.exp(0.5 * log_ab), xp.sqrt(-xp.expm1(log_ab))
