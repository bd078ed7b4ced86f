r"""A small convolutional variational autoencoder (Kingma & Welling 2013), the first stage of latent
diffusion (Rombach et al. 2022). See docs/latent.md §1.

The model, per image ``x`` with ``D`` pixels and a latent ``z`` with ``d`` entries:

- encoder ``q(z | x) = N(z; mu(x), diag(exp(logvar(x))))``;
- prior ``p(z) = N(0, I)``;
- decoder ``p(x | z) = N(x; x_hat(z), s^2 I)`` with a fixed pixel noise ``s``.

The evidence lower bound (Kingma & Welling 2013, Eq. 3) is

.. math::

    \log p(x) \ge \mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x) \,\|\, p(z)),

    -\log p(x \mid z) = \frac{\|x - \hat x(z)\|^2}{2 s^2} + \frac{D}{2}\log(2\pi s^2),

    \mathrm{KL} = \frac12 \sum_{j=1}^{d} \left(\mu_j^2 + e^{\mathrm{logvar}_j} - 1 - \mathrm{logvar}_j\right)
    \quad\text{(Kingma \& Welling 2013, App. B)}.

The expectation is estimated with one draw of the reparameterisation ``z = mu + exp(logvar/2) * noise``,
``noise ~ N(0, I)`` (their Sec. 2.4), which makes ``z`` a differentiable function of the encoder
outputs. Multiplying ``-ELBO`` by ``2 s^2 / D`` and dropping the constant gives the loss the training
loop minimises, ``||x - x_hat||^2 / D + beta KL / D`` with ``beta = 2 s^2`` (the "beta" of Higgins et al.
2017 read as a pixel noise level); a small beta keeps reconstructions sharp and the latents close to
deterministic, which is what latent diffusion wants (Rombach et al. 2022 use a very small KL weight).

Architecture (channels-last inside, NCHW at the interface, as :class:`~minidiff.nn.UNetDenoiser`):
widths ``w_l = base_channels * channel_mult[l]``; the encoder is ``conv3x3(C -> w_0)``, then per level
``l >= 1`` a stride-2 ``conv3x3(w_{l-1} -> w_l)`` and a ``conv3x3(w_l -> w_l)``, each followed by SiLU, and
a ``conv3x3(w_{L-1} -> 2 latent_channels)`` giving ``(mu, logvar)``. The decoder mirrors it with nearest
2x upsampling. An image of side ``H`` gets a latent of side ``H / 2^(L-1)`` (28 -> 7 with three levels).
"""
from __future__ import annotations

from .. import backend
from .._validate import MAX_SIZE, check_float_dtype, check_positive_int
from .layers import Conv2d, SiLU, Upsample, check_input
from .module import Module

__all__ = ["Autoencoder"]


class Autoencoder(Module):
    r"""Convolutional VAE: ``encode``, ``decode``, ``forward`` with the reparameterisation, ``kl``.

    Parameters
    ----------
    channels : C of the images (B, C, H, W).
    latent_channels : channels of the latent (default 4, as Stable Diffusion's autoencoder).
    base_channels : width at full resolution (default 16).
    channel_mult : width multipliers per level (default (1, 2, 2): H and W must be divisible by 4, and the
        latent is 4x smaller per side).
    dtype : 'float32' (default) or 'float64' (for gradient checks).
    seed : int or Generator for the initialisation.

    ``forward(x, noise=None) -> x_hat``: ``(mu, logvar) = encode(x)``, ``z = mu + exp(logvar / 2) * noise``
    (``noise=None`` decodes ``z = mu``), ``x_hat = decode(z)``. ``kl()`` is the KL term of that forward,
    averaged over the batch. ``backward(d_x_hat, d_kl=0.0) -> dx`` is the gradient of
    ``<d_x_hat, x_hat> + d_kl * kl()`` with respect to ``x``, accumulating every parameter gradient:

    .. math::

        \frac{\partial}{\partial \mu} = \bar z + \frac{d_{kl}}{B}\mu, \qquad
        \frac{\partial}{\partial\, \mathrm{logvar}} = \bar z \odot \tfrac12 e^{\mathrm{logvar}/2}\,\mathrm{noise}
        + \frac{d_{kl}}{2B}\left(e^{\mathrm{logvar}} - 1\right),

    with ``z_bar`` the decoder's gradient with respect to ``z``.
    """

    def __init__(self, channels: int, latent_channels: int = 4, base_channels: int = 16, channel_mult=(1, 2, 2),
                 dtype="float32", seed=0):
        self.channels = check_positive_int(channels, "channels", maximum=MAX_SIZE)
        self.latent_channels = check_positive_int(latent_channels, "latent_channels", maximum=MAX_SIZE)
        base = check_positive_int(base_channels, "base_channels", maximum=MAX_SIZE)
        mult = tuple(check_positive_int(m, "channel_mult entry", maximum=MAX_SIZE) for m in channel_mult)
        if not mult:
            raise ValueError("channel_mult must have at least one entry")
        dt = check_float_dtype(dtype)
        self.config = dict(channels=self.channels, latent_channels=self.latent_channels, base_channels=base,
                           channel_mult=list(mult), dtype=str(dt),
                           seed=seed if seed is None or isinstance(seed, int) else None)
        self.widths = w = [base * m for m in mult]
        self.factor = 2 ** (len(w) - 1)  # image side / latent side
        rng = backend.default_rng(seed)
        C, lc = self.channels, self.latent_channels
        enc = [Conv2d(C, w[0], 3, dtype=dt, seed=rng), SiLU()]
        for l in range(1, len(w)):
            enc += [Conv2d(w[l - 1], w[l], 3, stride=2, dtype=dt, seed=rng), SiLU(),
                    Conv2d(w[l], w[l], 3, dtype=dt, seed=rng), SiLU()]
        enc.append(Conv2d(w[-1], 2 * lc, 3, dtype=dt, seed=rng))  # -> (mu, logvar)
        dec = [Conv2d(lc, w[-1], 3, dtype=dt, seed=rng), SiLU(), Conv2d(w[-1], w[-1], 3, dtype=dt, seed=rng), SiLU()]
        for l in reversed(range(1, len(w))):
            dec += [Upsample(), Conv2d(w[l], w[l - 1], 3, dtype=dt, seed=rng), SiLU()]
        dec.append(Conv2d(w[0], C, 3, dtype=dt, seed=rng))
        self.encoder, self.decoder = enc, dec

    # ------------------------------------------------------------------ the model
    def encode(self, x):
        r"""``x (B, C, H, W) -> (mu, logvar)``, each (B, latent_channels, H / f, W / f), ``f = 2^(L-1)``."""
        self._check_images(x)
        xp = backend.get_xp(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
        for layer in self.encoder:
            h = layer(h)
        lc = self.latent_channels
        mu = xp.ascontiguousarray(h[..., :lc].transpose(0, 3, 1, 2))  # (B, h, w, lc) -> (B, lc, h, w)
        logvar = xp.ascontiguousarray(h[..., lc:].transpose(0, 3, 1, 2))
        return mu, logvar

    def decode(self, z):
        r"""``z (B, latent_channels, h, w) -> x_hat (B, C, f h, f w)`` (the mean of ``p(x | z)``)."""
        check_input(z, "z", like=self.decoder[0].W.data, ndim=4)
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"z must have {self.latent_channels} channels (shape (B, C, h, w)); got {tuple(z.shape)}")
        xp = backend.get_xp(z)
        h = xp.ascontiguousarray(z.transpose(0, 2, 3, 1))  # (B, lc, h, w) -> (B, h, w, lc)
        for layer in self.decoder:
            h = layer(h)
        return xp.ascontiguousarray(h.transpose(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)

    def forward(self, x, noise=None):
        r"""``x_hat = decode(mu + exp(logvar / 2) * noise)``; ``noise=None`` decodes ``mu``."""
        xp = backend.get_xp(x)
        mu, logvar = self.encode(x)
        if noise is None:
            z, std = mu, None
        else:
            check_input(noise, "noise", like=mu)
            if tuple(noise.shape) != tuple(mu.shape):
                raise ValueError(f"noise must have the latent's shape {tuple(mu.shape)}; got {tuple(noise.shape)}")
            std = xp.exp(0.5 * logvar)
            z = mu + std * noise
        self._mu, self._logvar, self._noise, self._std = mu, logvar, noise, std
        return self.decode(z)

    def kl(self) -> float:
        r"""``KL(q(z|x) || N(0, I)) = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` of the last
        forward, averaged over the batch (Kingma & Welling 2013, App. B). A Python float (one host sync)."""
        return float(self._kl_array())

    def _kl_array(self):
        """:meth:`kl` as a 0-d array on the parameters' device (no host sync)."""
        xp = backend.get_xp(self._mu)
        mu, logvar = self._mu, self._logvar
        return 0.5 * xp.sum(mu * mu + xp.exp(logvar) - 1.0 - logvar) / mu.shape[0]

    def backward(self, d_x_hat, d_kl: float = 0.0):
        xp = backend.get_xp(d_x_hat)
        d = xp.ascontiguousarray(d_x_hat.transpose(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
        for layer in reversed(self.decoder):
            d = layer.backward(d)
        dz = d  # (B, h, w, lc), channels-last
        mu = self._mu.transpose(0, 2, 3, 1)  # views, (B, lc, h, w) -> (B, h, w, lc)
        logvar = self._logvar.transpose(0, 2, 3, 1)
        B = mu.shape[0]
        d_mu = dz + (float(d_kl) / B) * mu
        d_logvar = (float(d_kl) / (2.0 * B)) * (xp.exp(logvar) - 1.0)
        if self._noise is not None:
            d_logvar += dz * (0.5 * self._std * self._noise).transpose(0, 2, 3, 1)  # dz/dlogvar = std noise / 2
        d = xp.concatenate([d_mu, d_logvar], axis=-1)  # (B, h, w, 2 lc), the encoder's output layout
        for layer in reversed(self.encoder):
            d = layer.backward(d)
        return xp.ascontiguousarray(d.transpose(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)

    # ------------------------------------------------------------------ helpers
    def latent_shape(self, image_shape):
        """``(latent_channels, H / f, W / f)`` for images of shape ``(C, H, W)``."""
        C, H, W = (int(k) for k in image_shape)
        if H % self.factor or W % self.factor:
            raise ValueError(f"image side must be divisible by {self.factor}; got {H}x{W}")
        return (self.latent_channels, H // self.factor, W // self.factor)

    def _check_images(self, x):
        check_input(x, "x", like=self.encoder[0].W.data, ndim=4)
        B, C, H, W = x.shape
        if C != self.channels:
            raise ValueError(f"x must have {self.channels} channels (shape (B, C, H, W)); got shape {tuple(x.shape)}")
        if H % self.factor or W % self.factor:
            raise ValueError(f"H and W must be divisible by {self.factor} for {len(self.widths)} levels; got {H}x{W}")
