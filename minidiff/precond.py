r"""What the network predicts: eps, x0, v, or the EDM preconditioning (docs/quality.md §1-§3).

Every parametrisation is one instance of the preconditioned denoiser of Karras et al. 2022 (Eq. 7):

    ``D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))``

with ``x = x0 + sigma eps`` (VE form), ``D`` the estimate of ``x0`` and ``F`` the raw network. The
network is trained on Karras et al.'s Eq. 8 with the loss weight ``lambda(sigma)``; every choice here has
``lambda c_out^2 = 1``, so the loss is the plain mean square in F-space:

    ``L = E || F - F_target ||^2``,   ``F_target = (x0 - c_skip x) / c_out``.

The samplers take an eps-predictor, ``eps_hat = (x - D) / sigma``. Written out (closed forms, so no
``x - D`` cancellation at small sigma), with ``s = sigma``, ``sd = sigma_data``:

=====  ========================  =================================  ==========================================
kind   c_skip, c_out             F_target                           eps_hat from F
=====  ========================  =================================  ==========================================
eps    1, -s                     eps                                F
x0     0, 1                      x0                                 (x - F) / s
v      1/(1+s^2), -s/sqrt(1+s^2) v = (eps - s x0)/sqrt(1+s^2)      s x/(1+s^2) + F/sqrt(1+s^2)
edm    sd^2/(s^2+sd^2),          (s x0/sd - sd eps)/sqrt(s^2+sd^2)  s x/(s^2+sd^2) - sd F/sqrt(s^2+sd^2)
       s sd/sqrt(s^2+sd^2)
=====  ========================  =================================  ==========================================

(``v`` is Salimans & Ho 2022's ``sqrt(ab) eps - sqrt(1-ab) x0`` with ``ab = 1/(1+s^2)``; it is EDM with
``sigma_data = 1`` and F negated.) The network input: every minidiff denoiser already scales its input by
``1/sqrt(1 + sigma^2)`` (Table 1's VP ``c_in``); for ``edm`` the wrapper feeds it
``x sqrt(1+s^2) / sqrt(s^2+sd^2)`` so the network sees Table 1's ``c_in x = x / sqrt(s^2+sd^2)``. The noise
level enters the networks through sinusoidal features of ``log sigma``; Table 1's
``c_noise = ln(sigma)/4`` is an affine function of it, so no change is needed there.

EDM trains on ``ln sigma ~ N(P_mean, P_std^2)`` (Karras et al. 2022, Table 1: ``P_mean = -1.2``,
``P_std = 1.2``): :class:`LogNormalSigmas`.
"""
from __future__ import annotations

import math

from . import backend
from ._validate import check_array, check_choice, check_float_dtype, check_positive_int, check_real, check_rng, sigma_like

__all__ = ["PARAMETRIZATIONS", "Preconditioning", "PreconditionedDenoiser", "LogNormalSigmas"]

PARAMETRIZATIONS = ("eps", "x0", "v", "edm")


def _sigma(sigma, x):
    """``sigma`` shaped to broadcast on ``x``: a float stays a float (validated); a (B,) array becomes
    (B, 1, ..., 1) without scanning its values (no host sync: this runs every training and sampling step,
    and the model validates the same sigma when it is called)."""
    if hasattr(sigma, "shape") and getattr(sigma, "ndim", 0) == 1 and sigma.shape[0] == x.shape[0]:
        return sigma.reshape((x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype, copy=False)
    return sigma_like(sigma, x)


class Preconditioning:
    r"""The coefficients of one parametrisation (module docstring; Karras et al. 2022, Eq. 7-8, Table 1).

    ``kind`` is one of ``"eps"``, ``"x0"``, ``"v"``, ``"edm"``; ``sigma_data`` (the data's standard
    deviation per coordinate) is used by ``edm`` only (Karras et al. use 0.5 for images in [-1, 1]).
    Methods take ``sigma`` as a float or a (B,) array and ``x`` (B, ...); they return arrays shaped
    like ``x`` (or coefficients broadcastable to it).
    """

    def __init__(self, kind: str = "eps", sigma_data: float = 0.5):
        self.kind = check_choice(kind, "parametrization", PARAMETRIZATIONS)
        self.sigma_data = check_real(sigma_data, "sigma_data", 0.0, None, low_open=True)

    # -- Karras et al. 2022, Table 1, in the table's own terms ----------------------------------------
    def coefficients(self, sigma):
        r"""``(c_skip, c_out, c_in, lambda)`` at ``sigma`` (floats or arrays like sigma), as in Table 1:

        - eps: ``c_skip = 1``, ``c_out = -sigma``, ``c_in = 1/sqrt(1+sigma^2)``, ``lambda = 1/sigma^2``
        - x0: ``c_skip = 0``, ``c_out = 1``, ``c_in = 1/sqrt(1+sigma^2)``, ``lambda = 1``
        - v: ``c_skip = 1/(1+sigma^2)``, ``c_out = -sigma/sqrt(1+sigma^2)``, ``c_in = 1/sqrt(1+sigma^2)``,
          ``lambda = (1+sigma^2)/sigma^2``
        - edm: ``c_skip = sd^2/(sigma^2+sd^2)``, ``c_out = sigma sd/sqrt(sigma^2+sd^2)``,
          ``c_in = 1/sqrt(sigma^2+sd^2)``, ``lambda = (sigma^2+sd^2)/(sigma sd)^2``.

        Each has ``lambda c_out^2 = 1`` (unit weight in F-space, Karras et al. 2022, Eq. 8).
        """
        xp = backend.get_xp(sigma) if hasattr(sigma, "shape") else math
        s2 = sigma * sigma
        if self.kind == "edm":
            sd = self.sigma_data
            r = xp.sqrt(s2 + sd * sd)
            return sd * sd / (s2 + sd * sd), sigma * sd / r, 1.0 / r, (s2 + sd * sd) / (s2 * sd * sd)
        c_in = 1.0 / xp.sqrt(1.0 + s2)
        if self.kind == "eps":
            return 1.0 + 0.0 * sigma, -sigma, c_in, 1.0 / s2
        if self.kind == "x0":
            return 0.0 * sigma, 1.0 + 0.0 * sigma, c_in, 1.0 + 0.0 * sigma
        return 1.0 / (1.0 + s2), -sigma * c_in, c_in, (1.0 + s2) / s2  # v

    # -- what training and sampling use (closed forms) ------------------------------------------------
    def target(self, x0, eps, sigma):
        r"""``F_target = (x0 - c_skip x) / c_out`` with ``x = x0 + sigma eps``, in closed form:
        eps -> ``eps``; x0 -> ``x0``; v -> ``(eps - s x0)/sqrt(1+s^2)``;
        edm -> ``(s x0 / sd - sd eps)/sqrt(s^2+sd^2)``."""
        s = _sigma(sigma, x0)
        xp = backend.get_xp(x0)
        if self.kind == "eps":
            return eps
        if self.kind == "x0":
            return x0
        if self.kind == "v":
            return (eps - s * x0) / (xp.sqrt(1.0 + s * s) if not isinstance(s, float) else math.sqrt(1.0 + s * s))
        sd = self.sigma_data
        r = xp.sqrt(s * s + sd * sd) if not isinstance(s, float) else math.sqrt(s * s + sd * sd)
        return (s * x0 * (1.0 / sd) - sd * eps) / r

    def eps_from_output(self, F, x, sigma):
        r"""``eps_hat = (x - D)/sigma = a(sigma) x + b(sigma) F`` with ``a = (1 - c_skip)/sigma`` and
        ``b = -c_out/sigma``: eps (0, 1); x0 (1/s, -1/s); v (s/(1+s^2), 1/sqrt(1+s^2));
        edm (s/(s^2+sd^2), -sd/sqrt(s^2+sd^2))."""
        s = _sigma(sigma, x)
        sq = math.sqrt if isinstance(s, float) else backend.get_xp(x).sqrt
        if self.kind == "eps":
            return F
        if self.kind == "x0":
            return (x - F) / s
        if self.kind == "v":
            return s / (1.0 + s * s) * x + F / sq(1.0 + s * s)
        sd2 = self.sigma_data ** 2
        return s / (s * s + sd2) * x - self.sigma_data * F / sq(s * s + sd2)

    def x0_from_output(self, F, x, sigma):
        """``D = c_skip x + c_out F`` (the x0 estimate)."""
        s = _sigma(sigma, x)
        c_skip, c_out, _, _ = self.coefficients(s)
        return c_skip * x + c_out * F

    def model_input(self, x, sigma):
        r"""What to pass the network so that, after its built-in ``1/sqrt(1+sigma^2)``, it sees
        ``c_in x``: ``x`` itself for eps/x0/v; ``x sqrt(1+s^2)/sqrt(s^2+sd^2)`` for edm."""
        if self.kind != "edm":
            return x
        s = _sigma(sigma, x)
        sq = math.sqrt if isinstance(s, float) else backend.get_xp(x).sqrt
        return x * (sq(1.0 + s * s) / sq(s * s + self.sigma_data ** 2))

    def to_config(self) -> dict:
        return {"parametrization": self.kind, "sigma_data": self.sigma_data}

    def __repr__(self):
        return f"Preconditioning({self.kind!r}, sigma_data={self.sigma_data})"


class PreconditionedDenoiser:
    """An eps-predictor ``eps_hat(x, sigma[, y])`` from a network ``F`` trained with ``precond``: what the
    samplers take. For ``kind="eps"`` it returns the network's output unchanged."""

    def __init__(self, model, precond: Preconditioning):
        if not callable(model):
            raise TypeError(f"model must be callable; got {type(model).__name__}")
        if not isinstance(precond, Preconditioning):
            raise TypeError(f"precond must be a Preconditioning; got {type(precond).__name__}")
        self.model, self.precond = model, precond
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, x, sigma, *args, **kwargs):
        x = check_array(x, "x", finite=False)  # float32/float64 (the model checks shapes)
        F = self.model(self.precond.model_input(x, sigma), sigma, *args, **kwargs)
        return self.precond.eps_from_output(F, x, sigma)

    def parameters(self):
        return self.model.parameters()


class LogNormalSigmas:
    r"""Training noise levels ``ln sigma ~ N(p_mean, p_std^2)`` (Karras et al. 2022, Table 1: EDM uses
    ``p_mean = -1.2``, ``p_std = 1.2``; median sigma 0.30, 95 % within [0.029, 3.2])."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        # ln sigma within a few p_std of p_mean stays inside sigma_like's [1e-15, 1e15] (|ln| <= 34.5)
        self.p_mean = check_real(p_mean, "p_mean", -30.0, 30.0)
        self.p_std = check_real(p_std, "p_std", 0.0, 10.0, low_open=True)

    def sample_sigmas(self, n: int, rng, dtype="float32"):
        """``n`` draws as an array of ``dtype`` on the backend of ``rng``."""
        n = check_positive_int(n, "n", maximum=2**31 - 1)
        xp = backend.rng_xp(check_rng(rng, allow_seed=False))
        dtype = check_float_dtype(dtype)
        z = rng.standard_normal(n, dtype=dtype)
        return xp.exp(z * self.p_std + self.p_mean)
