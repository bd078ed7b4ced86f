r"""Closed-form noise schedules and sampling grids.

All schedule math runs in float64 on the host (NumPy) and returns host arrays: the
values are a few thousand numbers, computed once, and the cancellations they hide
(``1 - cumprod(1 - beta)`` loses ~2e-4 relative in float32 at beta = 1e-4) are avoided
with ``log1p``/``expm1`` and sums of logs. Hot code casts them once, e.g. by turning a
sampling grid into Python floats, or with :meth:`Schedule.sample_sigmas`, which draws
on the device of the random generator.

Conventions (docs/math.md §1-§2): training index ``t = 0..T-1``; ``alpha_bar_t`` is
the inclusive product ``prod_{s<=t} (1 - beta_s)``; VE noise level
``sigma = sqrt((1 - alpha_bar) / alpha_bar)``. Sampling grids are strictly decreasing.
"""
from __future__ import annotations

import math
import warnings

import numpy as np  # host-only module: schedules are float64 host math (see docstring)

from . import backend
from ._validate import (
    SIGMA_MAX, SIGMA_MIN, check_bool, check_choice, check_float_dtype, check_host_1d, check_int, check_positive_int,
    check_real, check_rng,
)

__all__ = [
    "linear_betas",
    "scaled_linear_betas",
    "cosine_betas",
    "alpha_bars",
    "betas_from_alpha_bars",
    "sigmas_from_alpha_bars",
    "sigmas_from_betas",
    "alpha_bars_from_sigmas",
    "log_snr",
    "log_linear_sigmas",
    "karras_sigmas",
    "timesteps",
    "SPACINGS",
    "Schedule",
    "ScheduleWarning",
]

SPACINGS = ("leading", "trailing", "linspace")
MAX_T = 10**6  # longest grid accepted (T, n, steps): 8 MB of float64


class ScheduleWarning(UserWarning):
    """A schedule that is legal but probably a mistake (e.g. terminal noise too small)."""


# ----------------------------------------------------------------------------- checks
def _beta_range(beta_start, beta_end):
    return (check_real(beta_start, "beta_start", 0.0, 1.0, low_open=True, high_open=True),
            check_real(beta_end, "beta_end", 0.0, 1.0, low_open=True, high_open=True))


def _sigma_range(sigma_min, sigma_max):
    sigma_min = check_real(sigma_min, "sigma_min", SIGMA_MIN, SIGMA_MAX)
    sigma_max = check_real(sigma_max, "sigma_max", SIGMA_MIN, SIGMA_MAX)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return sigma_min, sigma_max


def _host_1d(values, name):
    """A 1-D float64 host array (a copy) from a list/NumPy/CuPy array; rejects bools, complex, NaN, empties."""
    return check_host_1d(values, name)


def _check_betas(betas):
    betas = _host_1d(betas, "betas")
    if np.any(betas <= 0.0) or np.any(betas >= 1.0):
        raise ValueError(
            f"betas must lie in (0, 1); got min {betas.min():.6g}, max {betas.max():.6g}"
        )
    return betas


def _check_alpha_bars(ab):
    ab = _host_1d(ab, "alpha_bar")
    if np.any(ab <= 0.0) or np.any(ab >= 1.0):
        raise ValueError(f"alpha_bar must lie in (0, 1); got min {ab.min():.6g}, max {ab.max():.6g}")
    return ab


# ----------------------------------------------------------------------------- betas
def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    r"""Linear schedule of Ho et al. 2020 (Sec. 4): ``beta_t = linspace(beta_start, beta_end, T)``,
    both ends included. Returns float64, shape (T,)."""
    T = check_positive_int(T, "T", maximum=MAX_T)
    beta_start, beta_end = _beta_range(beta_start, beta_end)
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def scaled_linear_betas(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> np.ndarray:
    r"""Scaled-linear schedule (Rombach et al. 2022, Stable Diffusion):
    ``beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``. float64, shape (T,)."""
    T = check_positive_int(T, "T", maximum=MAX_T)
    beta_start, beta_end = _beta_range(beta_start, beta_end)
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    r"""Cosine schedule of Nichol & Dhariwal 2021 (Eq. 17):

    .. math:: f(u) = \cos^2\!\Big(\frac{u + s}{1 + s}\,\frac{\pi}{2}\Big), \qquad
              \beta_t = \min\!\Big(1 - \frac{f((t+1)/T)}{f(t/T)},\ \beta_{max}\Big).

    ``f(0) != 1``, so ``alpha_bar_0 = f(1/T)/f(0)`` (the telescoped ratio). For T = 1000 only
    the last beta is clipped (``f(1) = 0``), which makes ``sigma_max`` about 2.03e4.
    """
    T = check_positive_int(T, "T", maximum=MAX_T)
    s = check_real(s, "s", 0.0, 1.0)
    max_beta = check_real(max_beta, "max_beta", 0.0, 1.0, low_open=True, high_open=True)
    u = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((u + s) / (1.0 + s) * (math.pi / 2.0)) ** 2  # (T+1,)
    beta = 1.0 - f[1:] / f[:-1]
    return np.minimum(beta, max_beta)


# ----------------------------------------------------------------------------- conversions
def alpha_bars(betas) -> np.ndarray:
    r"""Cumulative signal fraction ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` (inclusive;
    Ho et al. 2020, Eq. 4), computed as ``exp(cumsum(log1p(-beta)))``."""
    betas = _check_betas(betas)
    return np.exp(np.cumsum(np.log1p(-betas)))


def betas_from_alpha_bars(alpha_bar) -> np.ndarray:
    r"""Inverse of :func:`alpha_bars`: ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}`` with
    ``alpha_bar_{-1} = 1``, computed as ``-expm1(log ab_t - log ab_{t-1})``. ``alpha_bar``
    must be strictly decreasing in (0, 1)."""
    ab = _check_alpha_bars(alpha_bar)
    log_ab = np.log(ab)
    diff = np.diff(np.concatenate(([0.0], log_ab)))  # log(ab_t / ab_{t-1})
    if np.any(diff >= 0.0):
        raise ValueError("alpha_bar must be strictly decreasing")
    return -np.expm1(diff)


def sigmas_from_alpha_bars(alpha_bar) -> np.ndarray:
    r"""VE noise level of a VP marginal: ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``
    (Song et al. 2021b; Karras et al. 2022, Table 1), computed as ``sqrt(expm1(-log ab))``."""
    ab = _check_alpha_bars(alpha_bar)
    return np.sqrt(np.expm1(-np.log(ab)))


def sigmas_from_betas(betas) -> np.ndarray:
    r"""``sigma_t = sqrt(1/alpha_bar_t - 1) = sqrt(expm1(-sum_{s<=t} log1p(-beta_s)))``:
    the VE noise levels of a beta schedule without ever forming ``1 - alpha_bar``."""
    betas = _check_betas(betas)
    return np.sqrt(np.expm1(-np.cumsum(np.log1p(-betas))))


def alpha_bars_from_sigmas(sigmas) -> np.ndarray:
    r"""Inverse of :func:`sigmas_from_alpha_bars`: ``alpha_bar = 1 / (1 + sigma^2)``."""
    sigmas = _host_1d(sigmas, "sigmas")
    if np.any(sigmas <= 0.0):
        raise ValueError("sigmas must be > 0")
    return 1.0 / (1.0 + sigmas**2)


def log_snr(alpha_bar) -> np.ndarray:
    r"""Log signal-to-noise ratio ``lambda = log(alpha_bar / (1 - alpha_bar)) = -2 log sigma``
    (the SNR ``alpha^2 / sigma^2`` of Kingma et al. 2021, Variational Diffusion Models, Eq. 2,
    in logs; docs/math.md §2)."""
    ab = _check_alpha_bars(alpha_bar)
    return np.log(ab) - np.log1p(-ab)


# ----------------------------------------------------------------------------- sigma grids
def log_linear_sigmas(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    r"""Log-linear grid, decreasing: ``sigma_i = sigma_max (sigma_min/sigma_max)^{i/(n-1)}``,
    i = 0..n-1 (consecutive ratios constant; the grid Permenter & Yuan 2024 sample on)."""
    n = check_positive_int(n, "n", minimum=2, maximum=MAX_T)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    grid = np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))
    grid[0], grid[-1] = sigma_max, sigma_min  # exact endpoints
    return grid


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    r"""Karras et al. 2022 (EDM), Eq. 5, decreasing:

    .. math:: \sigma_i = \Big(\sigma_{max}^{1/\rho} + \tfrac{i}{n-1}
              \big(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}\big)\Big)^{\rho},\quad i = 0..n-1.
    """
    n = check_positive_int(n, "n", minimum=2, maximum=MAX_T)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    rho = check_real(rho, "rho", 0.1, 100.0)  # sigma_max^(1/rho) stays a float for sigma_max <= 1e15
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    grid = (a + np.arange(n, dtype=np.float64) / (n - 1) * (b - a)) ** rho
    grid[0], grid[-1] = sigma_max, sigma_min
    return grid


def timesteps(n_steps: int, T: int = 1000, spacing: str = "leading", offset: int = 0) -> np.ndarray:
    r"""Integer inference timesteps, descending (docs/math.md §2; Lin et al. 2024, Table 2).

    - ``leading``:  ``arange(N) * (T // N) + offset``, reversed (N=50, T=1000: 980, ..., 0).
    - ``trailing``: ``round(T - i T/N) - 1``, i = 0..N-1, i.e. ``round(arange(T, 0, -T/N)) - 1``
      without the float-step pitfall (N=50: 999, 979, ..., 19).
    - ``linspace``: ``round(linspace(0, T-1, N))`` reversed (contains T-1 and 0).

    Rounding is round-half-to-even (``np.round``). Requires ``1 <= n_steps <= T``.
    """
    T = check_positive_int(T, "T", maximum=MAX_T)
    n_steps = check_positive_int(n_steps, "n_steps", maximum=T)
    spacing = check_choice(spacing, "spacing", SPACINGS)
    offset = check_int(offset, "offset", minimum=0, maximum=T - 1)
    if spacing == "leading":
        ts = np.arange(n_steps, dtype=np.int64) * (T // n_steps) + int(offset)
        ts = ts[::-1]
    elif spacing == "trailing":
        if offset:
            raise ValueError("offset is only used with spacing='leading'")
        # T - i*T/N for i < N: the values of arange(T, 0, -T/N), whose float step can
        # otherwise produce N + 1 entries (e.g. T = 300, N = 7)
        ts = np.round(T - np.arange(n_steps) * (T / n_steps)).astype(np.int64) - 1
    else:
        if offset:
            raise ValueError("offset is only used with spacing='leading'")
        ts = np.round(np.linspace(0, T - 1, n_steps)).astype(np.int64)[::-1]
    if ts.min() < 0 or ts.max() > T - 1:
        raise ValueError(f"offset={offset} moves timesteps outside [0, {T - 1}]")
    return ts.copy()


# ----------------------------------------------------------------------------- Schedule
class Schedule:
    r"""A training noise grid and the sampling grids derived from it.

    Holds an increasing float64 grid ``sigmas`` (``sigmas[t]`` is the noise level of
    training index t). Training draws ``sigma`` uniformly from the grid (Ho et al. 2020,
    Alg. 1, written in sigma space: ``x = x0 + sigma * eps``); sampling walks a decreasing
    sub-grid (integer spacings) or a log-linear/Karras grid between the same endpoints.

    Build one with a constructor per schedule family::

        Schedule.linear(T=1000)        Schedule.cosine(T=1000)
        Schedule.scaled_linear(T=1000) Schedule.log_linear(sigma_min, sigma_max, T=1000)
        Schedule.karras(sigma_min, sigma_max, T=1000, rho=7.0)
    """

    def __init__(self, sigmas, name: str = "custom"):
        grid = check_host_1d(sigmas, "sigmas", SIGMA_MIN, SIGMA_MAX)
        if grid.size < 2 or np.any(np.diff(grid) <= 0.0):
            raise ValueError("sigmas must be strictly increasing (training index t = 0..T-1) with T >= 2")
        self.sigmas = grid
        if not isinstance(name, str):
            raise TypeError(f"name must be a str; got {type(name).__name__}")
        self.name = name
        self._device_grids = {}  # array-module name -> the grid on that backend (built on first draw)

    # constructors ------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """VE grid of Ho et al.'s linear betas: ``sigma_t = sqrt(1/alpha_bar_t - 1)``."""
        return cls(sigmas_from_betas(linear_betas(T, beta_start, beta_end)), name="linear")

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        """VE grid of the scaled-linear (Stable Diffusion) betas."""
        return cls(sigmas_from_betas(scaled_linear_betas(T, beta_start, beta_end)), name="scaled_linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """VE grid of Nichol & Dhariwal's cosine betas (sigma_max ~ 2.03e4 at T = 1000)."""
        return cls(sigmas_from_betas(cosine_betas(T, s, max_beta)), name="cosine")

    @classmethod
    def log_linear(cls, sigma_min: float = 0.01, sigma_max: float = 80.0, T: int = 1000):
        """``T`` log-spaced levels between ``sigma_min`` and ``sigma_max`` (constant ratio)."""
        return cls(log_linear_sigmas(T, sigma_min, sigma_max)[::-1], name="log_linear")

    @classmethod
    def karras(cls, sigma_min: float = 0.002, sigma_max: float = 80.0, T: int = 1000, rho: float = 7.0):
        """``T`` Karras et al. (2022, Eq. 5) levels: ``sigma^(1/rho)`` evenly spaced."""
        return cls(karras_sigmas(T, sigma_min, sigma_max, rho)[::-1], name="karras")

    @classmethod
    def from_name(cls, name: str, **kwargs):
        """``Schedule.from_name('cosine', T=500)``; the names of the constructors above."""
        makers = {"linear": cls.linear, "scaled_linear": cls.scaled_linear, "cosine": cls.cosine,
                  "log_linear": cls.log_linear, "karras": cls.karras}
        check_choice(name, "schedule name", sorted(makers))
        return makers[name](**kwargs)

    # properties --------------------------------------------------------------------
    @property
    def T(self) -> int:
        return int(self.sigmas.size)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def alpha_bars(self) -> np.ndarray:
        """VP view of the grid: ``alpha_bar = 1 / (1 + sigma^2)``."""
        return alpha_bars_from_sigmas(self.sigmas)

    def __repr__(self) -> str:
        return f"Schedule({self.name}, T={self.T}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g})"

    # training ----------------------------------------------------------------------
    def sample_sigmas(self, n: int, rng, dtype="float32"):
        """Draw ``n`` training noise levels uniformly from the grid (t ~ U{0..T-1}), as an
        array of ``dtype`` on the backend of ``rng`` (a ``backend.default_rng`` Generator).
        The grid is copied to a device once, on the first draw there, not every step."""
        n = check_positive_int(n, "n", maximum=2**31 - 1)
        xp = backend.rng_xp(check_rng(rng, allow_seed=False))
        dtype = check_float_dtype(dtype)
        key = (xp.__name__, str(dtype))
        grid = self._device_grids.get(key)
        if grid is None:
            grid = self._device_grids[key] = xp.asarray(self.sigmas, dtype=dtype)  # once per backend
        t = rng.integers(0, self.T, size=n)
        return grid[t]

    def check_terminal_noise(self, data_rms: float = 1.0, max_kl: float = 0.1) -> float:
        r"""Warn when the terminal noise does not dominate the data; return the KL bound.

        Sampling starts from ``q = N(0, sigma_max^2 I)`` while the true marginal is
        ``p = p_data * N(0, sigma_max^2 I)``. By joint convexity of KL,

        .. math:: KL(p \,\|\, q) \le E_{x_0} KL(N(x_0, \sigma^2 I) \,\|\, N(0, \sigma^2 I))
                  = \frac{E\|x_0\|^2}{2 \sigma_{max}^2} = \frac{\mathrm{rms}^2}{2 \sigma_{max}^2},

        with ``data_rms = sqrt(E ||x0||^2)`` (the RMS norm of a data point, not per coordinate).
        A :class:`ScheduleWarning` is emitted when the bound exceeds ``max_kl`` nats (0.1 by
        default, i.e. ``data_rms / sigma_max > 0.45``). The classic bug it catches: a T = 50
        linear schedule leaves ``alpha_bar_T = 0.60`` (``sigma_max = 0.8115``): the "noise" still
        carries most of the signal (bound 0.76 nats for unit-RMS data).
        """
        data_rms = check_real(data_rms, "data_rms", 0.0, low_open=True)
        max_kl = check_real(max_kl, "max_kl", 0.0, low_open=True)
        kl_bound = data_rms**2 / (2.0 * self.sigma_max**2)
        if kl_bound > max_kl:
            warnings.warn(
                f"terminal noise sigma_max={self.sigma_max:.4g} does not dominate the data: "
                f"KL(p_T || N(0, sigma_max^2 I)) <= rms^2/(2 sigma_max^2) = {kl_bound:.3g} nats > {max_kl} "
                f"(data RMS norm {data_rms:.4g}); use more steps or a larger sigma_max",
                ScheduleWarning, stacklevel=2,
            )
        return kl_bound

    # sampling ----------------------------------------------------------------------
    def sampling_sigmas(self, steps: int, spacing: str = "log_linear", final_zero: bool = True,
                        rho: float = 7.0, offset: int = 0) -> np.ndarray:
        r"""A strictly decreasing grid of ``steps`` noise levels for a sampler (plus a final
        0 when ``final_zero``, so a sampler over it makes ``steps`` denoiser steps).

        ``spacing``: ``"leading"``, ``"trailing"``, ``"linspace"`` pick training indices with
        :func:`timesteps` (DDPM/DDIM practice); ``"log_linear"`` and ``"karras"`` build the
        grid between ``sigma_min`` and ``sigma_max`` with :func:`log_linear_sigmas` /
        :func:`karras_sigmas` (``rho`` used by Karras only).
        """
        steps = check_positive_int(steps, "steps", maximum=MAX_T)
        spacing = check_choice(spacing, "spacing", SPACINGS + ("log_linear", "karras"))
        final_zero = check_bool(final_zero, "final_zero")
        if spacing in SPACINGS:
            grid = self.sigmas[timesteps(steps, self.T, spacing, offset)]
        elif spacing == "log_linear":
            grid = log_linear_sigmas(steps, self.sigma_min, self.sigma_max) if steps > 1 else np.array([self.sigma_max])
        elif spacing == "karras":
            grid = karras_sigmas(steps, self.sigma_min, self.sigma_max, rho) if steps > 1 else np.array([self.sigma_max])
        else:
            raise ValueError(
                f"spacing must be one of {SPACINGS + ('log_linear', 'karras')}; got {spacing!r}"
            )
        return np.concatenate((grid, [0.0])) if final_zero else grid.copy()

