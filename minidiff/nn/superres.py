r"""A super-resolution denoiser for cascaded diffusion (Ho et al. 2021, "Cascaded Diffusion Models").
See docs/latent.md §4.

The second stage of a cascade predicts the noise of a high-resolution image ``x`` given a low-resolution
one. The low-resolution image is upsampled to full size and concatenated to ``x`` as extra channels (Ho et
al. 2021, Sec. 2 and Fig. 3); during training it is corrupted with Gaussian noise of a random level
``s_aug`` ("conditioning augmentation", their Sec. 3), and the network is told that level, here as one
more constant channel. At sampling time the first stage's output is augmented with a small fixed level,
which hides the first stage's artefacts from the second (the train/test mismatch that augmentation
fixes).

Implementation: a :class:`~minidiff.nn.UNetDenoiser` on ``2 C + 1`` channels
``[x, up(low_res) sqrt(1 + sigma^2), s_aug sqrt(1 + sigma^2)]``. The U-Net scales its whole input by
``c_in = 1 / sqrt(1 + sigma^2)``; the factor ``sqrt(1 + sigma^2)`` on the conditioning channels cancels
it, so the conditioning reaches the first convolution unscaled at every noise level. The U-Net's last
``C + 1`` output channels are unused (their gradient is zero).
"""
from __future__ import annotations

from .. import backend
from .._validate import MAX_SIZE, check_float_dtype, check_positive_int, sigma_like
from .layers import check_input
from .models import UNetDenoiser, _sigma_inputs
from .module import Module

__all__ = ["SuperResDenoiser", "upsample_nearest", "downsample_mean"]


def upsample_nearest(x, factor: int):
    """``x (B, C, h, w) -> (B, C, factor h, factor w)``, each pixel repeated into a factor x factor block."""
    xp = backend.get_xp(x)
    B, C, h, w = x.shape
    y = xp.broadcast_to(x[:, :, :, None, :, None], (B, C, h, factor, w, factor))
    return y.reshape(B, C, h * factor, w * factor)  # (B, C, h, f, w, f) -> (B, C, fh, fw), one copy


def downsample_mean(x, factor: int):
    """``x (B, C, H, W) -> (B, C, H / factor, W / factor)``: the mean of each factor x factor block."""
    B, C, H, W = x.shape
    if H % factor or W % factor:
        raise ValueError(f"H and W must be divisible by factor={factor}; got {H}x{W}")
    return x.reshape(B, C, H // factor, factor, W // factor, factor).mean(axis=(3, 5))


class SuperResDenoiser(Module):
    r"""``eps_hat(x, sigma | low_res, s_aug)`` for images ``x (B, C, H, W)`` and ``low_res (B, C, H/f, W/f)``.

    ``forward(x, sigma, low_res, aug_sigma=0.0) -> eps_hat``: ``aug_sigma`` (a float or (B,)) is the noise
    level the caller already added to ``low_res``; ``backward(d_eps_hat) -> dx``.

    Parameters
    ----------
    channels : C of the images.
    factor : the resolution ratio f (H = f h), e.g. 2 for 14x14 -> 28x28.
    base_channels, channel_mult, groups, num_frequencies, dtype, seed : of the inner U-Net (its widths
        must be divisible by ``groups``).
    """

    def __init__(self, channels: int, factor: int = 2, base_channels: int = 32, channel_mult=(1, 2),
                 groups: int = 8, num_frequencies: int = 8, dtype="float32", seed=0):
        self.channels = check_positive_int(channels, "channels", maximum=MAX_SIZE)
        self.factor = check_positive_int(factor, "factor", maximum=64)
        dt = check_float_dtype(dtype)
        self.unet = UNetDenoiser(2 * self.channels + 1, base_channels=base_channels, channel_mult=channel_mult,
                                 groups=groups, num_frequencies=num_frequencies, dtype=dt, seed=seed)
        self.config = dict(channels=self.channels, factor=self.factor, base_channels=int(base_channels),
                           channel_mult=[int(m) for m in channel_mult], groups=int(groups),
                           num_frequencies=int(num_frequencies), dtype=str(dt),
                           seed=seed if seed is None or isinstance(seed, int) else None)

    def forward(self, x, sigma, low_res, aug_sigma=0.0):
        xp = backend.get_xp(x)
        check_input(x, "x", like=self.unet.conv_in.W.data, ndim=4)
        check_input(low_res, "low_res", like=x, ndim=4)
        B, C, H, W = x.shape
        f = self.factor
        if C != self.channels or tuple(low_res.shape) != (B, C, H // f, W // f) or H % f or W % f:
            raise ValueError(f"x must be (B, {self.channels}, H, W) and low_res (B, {self.channels}, H/{f}, W/{f}); "
                             f"got {tuple(x.shape)} and {tuple(low_res.shape)}")
        _, c_in = _sigma_inputs(sigma, x)
        s_aug = sigma_like(aug_sigma, x, "aug_sigma", allow_zero=True)  # float or (B, 1, 1, 1)
        undo = 1.0 / c_in  # sqrt(1 + sigma^2): the U-Net multiplies every input channel by c_in
        cond = upsample_nearest(low_res, f) * undo
        aug_map = xp.ones((B, 1, H, W), dtype=x.dtype) * (s_aug * undo)
        out = self.unet(xp.concatenate([x, cond, aug_map], axis=1), sigma)  # (B, 2C + 1, H, W)
        self._out_shape = out.shape
        return xp.ascontiguousarray(out[:, :C])

    def backward(self, d_eps_hat):
        xp = backend.get_xp(d_eps_hat)
        g = xp.zeros(self._out_shape, dtype=d_eps_hat.dtype)
        g[:, :self.channels] = d_eps_hat  # the unused output channels get no gradient
        return xp.ascontiguousarray(self.unet.backward(g)[:, :self.channels])
