r"""Samplers: from noise at ``sigmas[0]`` down a decreasing grid of noise levels.

A *denoiser* is any callable ``denoiser(x, sigma) -> eps_hat`` in sigma space (VE, docs/math.md §1):
``x = x0 + sigma * eps``, ``x0_hat = x - sigma * eps_hat``. Every sampler here walks a strictly
decreasing host-float grid ``sigma_0 > ... > sigma_N`` (the last entry may be 0) and yields a
:class:`SamplerState` after each step, so demos can draw trajectories and the CLI can log.

Methods (``iter_sample(..., method=...)``; docs/math.md §8 derives each):

- ``"family"``: Permenter & Yuan (2024), Alg. 2, in smalldiffusion's two-knob parametrisation::

      eps_bar = gamma * eps_i + (1 - gamma) * eps_{i-1}        (eps_bar = eps_0 on the first step)
      s_p     = (s' / s**mu) ** (1 / (1 - mu))                 (so that s' = s**mu * s_p**(1 - mu))
      eta     = sqrt(s'**2 - s_p**2)
      x'      = x - (s - s_p) * eps_bar + eta * w,   w ~ N(0, I)

  Presets: ``"ddim"`` (gamma=1, mu=0; Song et al. 2021, Eq. 12 with eta_DDIM = 0), ``"ddpm"``
  (gamma=1, mu=1/2; Ho et al. 2020, Alg. 2 with the posterior variance), ``"gradient_estimation"``
  (gamma=2, mu=0; Permenter & Yuan 2024). ``"euler"`` is Euler on dx/dsigma = eps_hat (Karras et
  al. 2022), which in sigma space *is* DDIM, so it runs the same code with gamma=1, mu=0.
- ``"heun"``: Karras et al. 2022, Alg. 1 (no churn); 2 calls per step, the step to sigma = 0 is
  an Euler step, so N steps ending in 0 cost 2N - 1 calls. One state per outer step.
- ``"dpmpp_2m"``: DPM-Solver++(2M), Lu et al. 2022, Alg. 2, with lambda = -log sigma.
- ``"reverse_sde"``: Euler–Maruyama on the reverse-time VE SDE (Song et al. 2021b, Eq. 6; docs/math.md §7);
  its last step, to sigma = 0, is an Euler step of the probability-flow ODE (no noise).

The end of the grid: an extrapolated step (gamma != 1) straight to sigma = 0 can overshoot the
data, since ``eps_bar`` mixes in an older, larger-noise estimate at the one step where the estimate
matters most. Permenter & Yuan end their grid at a small sigma and then take a plain step; here
``final_step="ddim"`` makes the last step a plain DDIM step (gamma = 1, mu = 0; with a grid that
ends in 0 it returns ``x0_hat``). The default ``final_step=None`` applies the method's own update
on every step, exactly as written above.

The "adding a small amount of noise to the points obtained from the diffusion model" of the
lecture notes "Unit 10 – Diffusion Models" is ``final_noise=``: after the last step,
``x <- x + final_noise * w``, reported as one extra state.

Sigma grids are converted to Python floats once; ``x`` stays on its backend (NumPy or CuPy) and
dtype (float32 or float64); the loop makes no host/device copies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import backend
from ._validate import (
    SIGMA_MAX, SIGMA_MIN, check_array, check_callable, check_choice, check_host_1d, check_real, check_rng, sigma_like,
)

__all__ = [
    "METHODS",
    "SamplerState",
    "CountingDenoiser",
    "denoise_once",
    "iter_sample",
    "sample",
    "ddpm_ancestral_vp",
    "ddim_vp",
]

# name -> (gamma, mu) for the presets of the Permenter–Yuan family
_FAMILY_PRESETS = {
    "ddim": (1.0, 0.0),
    "euler": (1.0, 0.0),
    "ddpm": (1.0, 0.5),
    "gradient_estimation": (2.0, 0.0),
}
METHODS = ("family",) + tuple(_FAMILY_PRESETS) + ("heun", "dpmpp_2m", "reverse_sde")
FINAL_STEPS = (None, "ddim")


@dataclass
class SamplerState:
    """What a sampler yields after each step."""

    step: int       # number of steps taken so far (1..N; N+1 for the final-noise state)
    x: Any          # current sample, shape of the input x, at noise level `sigma`
    x0_hat: Any     # the denoiser's x0 estimate made at the start of this step
    sigma: float    # noise level x is now at (0.0 after a final step to sigma = 0)
    nfe: int        # denoiser calls made so far (cumulative)


# --------------------------------------------------------------------------------------------
# The update rules. Each runner walks the grid and yields a SamplerState per step;
# ``draw()`` returns the next Gaussian w wherever noise enters.
# --------------------------------------------------------------------------------------------

def _run_family(denoiser, sig, x, draw, *, gamma, mu, final_step):
    r"""Permenter & Yuan 2024, Alg. 2 with smalldiffusion's (gamma, mu) (docs/math.md §8)::

        eps_bar = gamma eps_i + (1 - gamma) eps_{i-1};  s_p = (s' / s^mu)^(1/(1-mu))
        x' = x - (s - s_p) eps_bar + sqrt(s'^2 - s_p^2) w
    """
    n = len(sig) - 1
    eps_prev = None
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        g, m = (1.0, 0.0) if (final_step == "ddim" and i == n - 1) else (gamma, mu)
        eps = _call(denoiser, x, s)
        eps_bar = eps if eps_prev is None else g * eps + (1.0 - g) * eps_prev
        s_p = _family_sigma_p(s, s_next, m)
        eta = math.sqrt(max(s_next * s_next - s_p * s_p, 0.0))  # s_p <= s', clamp rounding only
        x0_hat = x - s * eps
        x = x - (s - s_p) * eps_bar
        if eta > 0:
            x = x + eta * draw()
        eps_prev = eps
        yield SamplerState(step=i + 1, x=x, x0_hat=x0_hat, sigma=s_next, nfe=i + 1)


def _run_heun(denoiser, sig, x, draw):
    r"""Karras et al. 2022, Alg. 1 (deterministic, no churn), with d = eps_hat = dx/dsigma::

        x_e = x + (s' - s) d(x, s);   x' = x + (s' - s) (d(x, s) + d(x_e, s')) / 2   (s' > 0)
        x' = x_e                                                                     (s' = 0)
    """
    nfe = 0
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        d = _call(denoiser, x, s)
        nfe += 1
        x0_hat = x - s * d
        x_e = x + (s_next - s) * d
        if s_next > 0:
            d_e = _call(denoiser, x_e, s_next)
            nfe += 1
            x = x + (0.5 * (s_next - s)) * (d + d_e)
        else:
            x = x_e
        yield SamplerState(step=i + 1, x=x, x0_hat=x0_hat, sigma=s_next, nfe=nfe)


def _run_dpmpp_2m(denoiser, sig, x, draw):
    r"""DPM-Solver++(2M), Lu et al. 2022, Alg. 2, data prediction, lambda = -log sigma::

        h = lambda' - lambda = log(s / s');   first order:  x' = (s'/s) x - expm1(-h) x0_hat
        second order: D = x0_hat_i + (x0_hat_i - x0_hat_{i-1}) / (2 r),  r = h_{i-1} / h
                      x' = (s'/s) x - expm1(-h) D
        last step to s' = 0: x' = x0_hat (h = inf)
    Note -expm1(-h) = 1 - s'/s, which is how it is computed.
    """
    x0_prev, h_prev = None, None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        eps = _call(denoiser, x, s)
        x0_hat = x - s * eps
        if s_next == 0.0:
            x = x0_hat
            h = None
        else:
            h = math.log(s / s_next)
            if x0_prev is None:
                D = x0_hat
            else:
                c = h / (2.0 * h_prev)  # 1 / (2 r)
                D = (1.0 + c) * x0_hat - c * x0_prev
            ratio = s_next / s
            x = ratio * x + (1.0 - ratio) * D
        x0_prev, h_prev = x0_hat, h
        yield SamplerState(step=i + 1, x=x, x0_hat=x0_hat, sigma=s_next, nfe=i + 1)


def _run_reverse_sde(denoiser, sig, x, draw):
    r"""Euler–Maruyama on the reverse VE SDE (Song et al. 2021b, Eq. 6; docs/math.md §7), with
    forward dx = sqrt(2 sigma) dW(sigma) and score = -eps_hat / sigma::

        x' = x + 2 (s' - s) eps_hat + sqrt(2 s (s - s')) w      (s' > 0)
        x' = x0_hat = x - s eps_hat                              (s' = 0, no noise)

    The last line is not the SDE's own Euler–Maruyama step (that would move by 2 s eps_hat and
    overshoot): it is an Euler step of the probability-flow ODE dx/dsigma = eps_hat (docs/math.md §7).
    """
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        eps = _call(denoiser, x, s)
        x0_hat = x - s * eps
        if s_next == 0.0:
            x = x0_hat
        else:
            x = x + (2.0 * (s_next - s)) * eps + math.sqrt(2.0 * s * (s - s_next)) * draw()
        yield SamplerState(step=i + 1, x=x, x0_hat=x0_hat, sigma=s_next, nfe=i + 1)


def _family_sigma_p(s: float, s_next: float, mu: float) -> float:
    """s_p with s' = s**mu * s_p**(1 - mu), in logs (stable for tiny s'); 0 when s' = 0."""
    if s_next == 0.0:
        return 0.0
    if mu == 0.0:
        return s_next  # exactly, so that mu = 0 is deterministic (eta = 0), not eta ~ 1e-16
    return math.exp((math.log(s_next) - mu * math.log(s)) / (1.0 - mu))


# --------------------------------------------------------------------------------------------
# The entry points.
# --------------------------------------------------------------------------------------------

def iter_sample(denoiser, sigmas, x, *, method="family", gamma=None, mu=None, rng=None,
                noise=None, final_step=None, final_noise=0.0):
    r"""Generator of :class:`SamplerState` s, one per step, from ``x`` at ``sigmas[0]``.

    Parameters
    ----------
    denoiser : callable ``(x, sigma) -> eps_hat`` (``sigma`` is passed as a Python float).
    sigmas : strictly decreasing 1-D sequence, host or device; entries > 0 except the last (>= 0).
        Converted to Python floats once.
    x : float32/float64 array (B, ...), the starting point at noise level ``sigmas[0]``
        (e.g. ``sigmas[0] * standard_normal``). Never modified in place.
    method : one of ``METHODS``; see the module docstring for each update and its source.
    gamma, mu : the two knobs of ``method="family"`` (defaults 1 and 0, i.e. DDIM); gamma > 0,
        mu in [0, 1). The presets fix them (passing a different value is an error); the other
        methods take neither.
    rng : Generator or seed for ``backend.default_rng`` (on x's backend); used for the Gaussian
        draws when ``noise`` is not given. Unseeded when None.
    noise : optional list of arrays shaped like ``x``, one per step that injects noise (family
        steps with mu > 0 to sigma' > 0; reverse-SDE steps to sigma' > 0) plus one for
        ``final_noise > 0``, consumed in order. Lets a run be replayed or compared with another
        implementation. A list that runs out raises ValueError at the draw that finds it empty;
        one with arrays left over raises ValueError when the run ends.
    final_step : None (the method's update throughout) or ``"ddim"`` (family methods only: the
        last step is a plain DDIM step, gamma = 1 and mu = 0, so no extrapolation and no noise).
    final_noise : float >= 0; after the last step add ``final_noise * w`` (a trick of the
        "Unit 10 – Diffusion Models" lecture notes);
        yields one more state with ``sigma = sqrt(sigma_N**2 + final_noise**2)``.

    Yields
    ------
    SamplerState(step, x, x0_hat, sigma, nfe) after each step.
    """
    check_callable(denoiser, "denoiser")
    sig = _host_sigmas(sigmas)
    x = check_array(x, "x")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, ...) with B >= 1; got {tuple(x.shape)}")
    kind, gamma, mu = _resolve_method(method, gamma, mu)
    if not (final_step is None or isinstance(final_step, str)) or final_step not in FINAL_STEPS:
        raise ValueError(f"final_step must be one of {FINAL_STEPS}; got {final_step!r}")
    if final_step is not None and kind != "family":
        raise ValueError(f"final_step={final_step!r} applies to the family methods only; method={method!r}")
    final_noise = check_real(final_noise, "final_noise", 0.0, SIGMA_MAX)

    draw = _NoiseSource(noise, x, rng)
    run = {"family": _run_family, "heun": _run_heun, "dpmpp_2m": _run_dpmpp_2m,
           "reverse_sde": _run_reverse_sde}[kind]
    kwargs = {"gamma": gamma, "mu": mu, "final_step": final_step} if kind == "family" else {}

    state = None
    for state in run(denoiser, sig, x, draw, **kwargs):
        yield state
    if final_noise > 0:
        yield SamplerState(step=state.step + 1, x=state.x + final_noise * draw(),
                           x0_hat=state.x0_hat, sigma=math.hypot(sig[-1], final_noise), nfe=state.nfe)
    draw.check_exhausted()


def sample(denoiser, sigmas, x, **kwargs):
    """Run :func:`iter_sample` to the end and return the final ``x`` (same arguments)."""
    state = None
    for state in iter_sample(denoiser, sigmas, x, **kwargs):
        pass
    return state.x


def denoise_once(denoiser, x, sigma):
    r"""One-shot estimate ``x0_hat = x - sigma * eps_hat(x, sigma)`` (Tweedie; docs/math.md §6).

    This is the single-step denoising that "How diffusion models work" (by the author of the
glyffuser) shows is not enough: at large sigma it
    returns a blurry average of the data (for the ideal denoiser, a weighted mean of the
    training set), not a sample. ``sigma`` is a float or one level per sample, shape (B,).
    """
    check_callable(denoiser, "denoiser")
    x = check_array(x, "x")
    s = sigma_like(sigma, x)
    eps_hat = _call(denoiser, x, sigma)
    return x - s * eps_hat


class CountingDenoiser:
    """Wrap a denoiser and count its calls (NFE) and the samples it has seen.

    ``calls`` is the number of invocations, ``samples`` the sum of batch sizes passed
    (a classifier-free guided call of batch 2B counts as one call of B rows here, since it
    wraps the guided denoiser; wrap the conditional model to count its 2B rows).
    """

    def __init__(self, denoiser):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable; got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.calls = 0
        self.samples = 0

    def __call__(self, x, sigma):
        self.calls += 1
        self.samples += int(x.shape[0])
        return self.denoiser(x, sigma)

    def reset(self) -> None:
        self.calls = 0
        self.samples = 0


# --------------------------------------------------------------------------------------------
# Literal VP-space references over integer timesteps (for equivalence tests and for learners).
# --------------------------------------------------------------------------------------------

def ddpm_ancestral_vp(eps_model_vp, alpha_bars, timesteps, x_T, rng=None, noise=None):
    r"""DDPM ancestral sampling in VP space, written as Ho et al. 2020, Alg. 2.

    ``eps_model_vp(x_t, t) -> eps_hat`` takes the integer timestep ``t``. Over the strided grid
    t_0 > t_1 > ... > t_{N-1} (ab_prev = 1 after the last), with a_t = ab_t / ab_prev and
    beta_t = 1 - a_t (docs/math.md §3)::

        z ~ N(0, I) if not the last step else 0
        x_{prev} = (x_t - beta_t / sqrt(1 - ab_t) * eps_model(x_t, t)) / sqrt(a_t) + sigma_t z
        sigma_t^2 = (1 - ab_prev) / (1 - ab_t) * beta_t      (the posterior variance)

    ``noise``: optional list of N - 1 arrays (the z's), all used; otherwise drawn from ``rng``.
    Returns x_0.
    """
    ab, ts, x_T = _vp_setup(eps_model_vp, alpha_bars, timesteps, x_T)
    draw = _NoiseSource(noise, x_T, rng)
    x = x_T
    for i, t in enumerate(ts):
        ab_t = ab[t]
        ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0
        a_t = ab_t / ab_prev
        beta_t = 1.0 - a_t
        eps = _call(eps_model_vp, x, t)
        x = (x - (beta_t / math.sqrt(1.0 - ab_t)) * eps) / math.sqrt(a_t)
        if i + 1 < len(ts):
            var = (1.0 - ab_prev) / (1.0 - ab_t) * beta_t
            x = x + math.sqrt(var) * draw()
    draw.check_exhausted()
    return x


def ddim_vp(eps_model_vp, alpha_bars, timesteps, x_T, eta=0.0, rng=None, noise=None):
    r"""DDIM in VP space, Song et al. 2021, Eq. 12 (with sigma_t(eta) from Eq. 16)::

        x0_hat   = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
        sigma_t  = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)
        x_prev   = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma_t^2) eps + sigma_t z

    ab_prev = 1 after the last timestep (so the last step returns x0_hat). eta = 0 is
    deterministic; eta = 1 is DDPM with the posterior variance. ``noise``: optional list of
    N - 1 arrays when eta > 0 (none when eta = 0). Returns x_0.
    """
    ab, ts, x_T = _vp_setup(eps_model_vp, alpha_bars, timesteps, x_T)
    eta = check_real(eta, "eta", 0.0, 1.0)
    draw = _NoiseSource(noise, x_T, rng)
    x = x_T
    for i, t in enumerate(ts):
        ab_t = ab[t]
        ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0
        eps = _call(eps_model_vp, x, t)
        x0_hat = (x - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)
        sigma_t = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * math.sqrt(1.0 - ab_t / ab_prev)
        x = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1.0 - ab_prev - sigma_t ** 2, 0.0)) * eps
        if sigma_t > 0:
            x = x + sigma_t * draw()
    draw.check_exhausted()
    return x


# --------------------------------------------------------------------------------------------
# Validation and bookkeeping.
# --------------------------------------------------------------------------------------------

def _call(denoiser, x, sigma):
    eps_hat = denoiser(x, sigma)
    if getattr(eps_hat, "shape", None) != x.shape:
        raise ValueError(
            f"denoiser must return eps_hat with the shape of x {tuple(x.shape)}; "
            f"got {getattr(eps_hat, 'shape', type(eps_hat).__name__)}"
        )
    return eps_hat.astype(x.dtype, copy=False)


def _host_sigmas(sigmas) -> list[float]:
    """Validated Python floats: 1-D, length >= 2, strictly decreasing, in [SIGMA_MIN, SIGMA_MAX] except
    the last entry, which may also be 0."""
    s = check_host_1d(sigmas, "sigmas", 0.0, SIGMA_MAX, min_len=2).tolist()  # the one host copy of the grid
    if any(v < SIGMA_MIN for v in s[:-1]) or 0.0 < s[-1] < SIGMA_MIN:
        raise ValueError(f"sigmas must be >= {SIGMA_MIN:g} (the last entry may be 0)")
    if any(b >= a for a, b in zip(s[:-1], s[1:])):
        raise ValueError("sigmas must be strictly decreasing")
    return s


def _resolve_method(method, gamma, mu):
    """(kind, gamma, mu) with kind in {'family', 'heun', 'dpmpp_2m', 'reverse_sde'}."""
    check_choice(method, "method", METHODS)
    gamma = None if gamma is None else check_real(gamma, "gamma")
    mu = None if mu is None else check_real(mu, "mu")
    if method == "family":
        gamma = 1.0 if gamma is None else float(gamma)
        mu = 0.0 if mu is None else float(mu)
    elif method in _FAMILY_PRESETS:
        g0, m0 = _FAMILY_PRESETS[method]
        for name, v, v0 in (("gamma", gamma, g0), ("mu", mu, m0)):
            if v is not None and float(v) != v0:
                raise ValueError(
                    f"{name} is fixed to {v0} by method={method!r}; got {v}. "
                    f"Use method='family' to set gamma and mu freely."
                )
        gamma, mu = g0, m0
    else:
        for name, v in (("gamma", gamma), ("mu", mu)):
            if v is not None:
                raise ValueError(f"{name} is only used by the family methods; method={method!r} takes no {name}")
        return method, None, None
    gamma = check_real(gamma, "gamma", 0.0, 1e6, low_open=True)
    mu = check_real(mu, "mu", 0.0, 1.0, high_open=True)
    return "family", gamma, mu


def _vp_setup(eps_model_vp, alpha_bars, timesteps, x_T):
    check_callable(eps_model_vp, "eps_model_vp")
    x_T = check_array(x_T, "x_T")
    # host copy of the schedule, once; alpha_bar >= 1e-300 keeps 1/sqrt(alpha_bar) a float
    ab = check_host_1d(alpha_bars, "alpha_bars", 1e-300, 1.0, high_open=True).tolist()
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__len__"):
        raise TypeError(f"timesteps must be a 1-D integer array; got {type(timesteps).__name__}")
    ts = backend.to_numpy(timesteps)  # host copy of the integer grid, once
    if ts.dtype.kind not in "iu":
        raise TypeError(f"timesteps must be a 1-D integer array; got dtype {ts.dtype}")
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"timesteps must be a non-empty 1-D integer array; got shape {tuple(ts.shape)}")
    ts = [int(t) for t in ts.tolist()]
    if any(t < 0 or t >= len(ab) for t in ts):  # check before indexing
        raise ValueError(f"timesteps must lie in [0, {len(ab) - 1}]")
    if any(b >= a for a, b in zip(ts[:-1], ts[1:])):
        raise ValueError("timesteps must be strictly decreasing")
    return ab, ts, x_T


class _NoiseSource:
    """Gaussian draws shaped like ``x``, made lazily: the next array of ``noise`` if given, else
    a draw from ``rng`` (a Generator or seed, on x's backend). The runners call it
    wherever noise enters, so nothing has to count the noisy steps in advance;
    :meth:`check_exhausted` at the end refuses a ``noise`` list with arrays left over."""

    def __init__(self, noise, x, rng):
        self.shape, self.dtype, self.used = x.shape, x.dtype, 0
        self.noise = self.gen = None
        if noise is None:
            self.gen = check_rng(rng, xp=backend.get_xp(x))
        else:
            if not isinstance(noise, (list, tuple)):
                raise TypeError(f"noise must be a list of arrays (one per noisy step) or None; "
                                f"got {type(noise).__name__}")
            noise = [check_array(w, f"noise[{i}]", shape=x.shape) for i, w in enumerate(noise)]
            for i, w in enumerate(noise):
                if backend.is_cupy_array(w) != backend.is_cupy_array(x):
                    raise TypeError(f"noise[{i}] must live on the same backend as x")
            self.noise = list(noise)

    def __call__(self):
        self.used += 1
        if self.noise is None:
            return self.gen.standard_normal(self.shape, dtype=self.dtype)
        if self.used > len(self.noise):
            raise ValueError(f"noise holds {len(self.noise)} arrays but the run needs more "
                             f"(one per step that injects noise)")
        return self.noise[self.used - 1].astype(self.dtype, copy=False)

    def check_exhausted(self):
        if self.noise is not None and self.used != len(self.noise):
            raise ValueError(f"noise holds {len(self.noise)} arrays but the run used {self.used} "
                             f"(one per step that injects noise)")
