r"""Cascaded diffusion (Ho et al. 2021): a base model samples a low-resolution image, a super-resolution
model samples the high-resolution image conditioned on it. See docs/latent.md §4.

Training the second stage (:func:`train_super_resolution`), per step::

    x0 ~ data (high resolution),  low = downsample_mean(x0, f)
    s_aug ~ U(0, aug_max),  low_aug = low + s_aug * eps'                 (conditioning augmentation)
    sigma ~ schedule,  eps ~ N(0, I),  x = x0 + sigma * eps
    loss = mean || eps_hat(x, sigma | low_aug, s_aug) - eps ||^2

Sampling (:func:`super_resolve`): augment the given low-resolution images with a fixed ``aug_sigma``
(fresh noise, as in training) and run any sampler on the conditional denoiser, starting from
``up(low) + sigma_start * noise`` (docs/latent.md §4: given the low-resolution image, a moderate
``sigma_start`` already makes this start close to the noisy conditional distribution).
"""
from __future__ import annotations

import math
import time

from . import backend
from ._validate import SIGMA_MAX, check_array, check_host_1d, check_positive_int, check_real, check_rng
from .nn import Adam, SuperResDenoiser, clip_grad_norm, warmup_cosine_lr
from .nn.superres import downsample_mean, upsample_nearest

__all__ = ["train_super_resolution", "super_resolve"]


def train_super_resolution(model: SuperResDenoiser, data, schedule, *, steps: int, batch_size: int = 32,
                           lr: float = 2e-3, aug_max: float = 0.5, warmup_steps: int = 0, min_lr: float = 0.0,
                           grad_clip: float = 1.0, seed: int = 0):
    r"""Train ``model`` on high-resolution images ``data (N, C, H, W)``; yield per-step metrics.

    The eps loss of Ho et al. 2020 (Alg. 1), conditioned on ``low_aug = downsample_mean(x0) + s_aug eps'``
    with ``s_aug ~ U(0, aug_max)`` per sample (Ho et al. 2021, Sec. 3, Gaussian conditioning
    augmentation): :math:`L = \frac{1}{BD}\sum_b \|\hat\epsilon_b - \epsilon_b\|^2`. Adam with warm-up and
    cosine decay. Yields ``step``, ``loss``, ``seconds``; returns the optimiser."""
    xp = backend.get_xp(data)
    check_array(data, "data", ndim=4)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    aug_max = check_real(aug_max, "aug_max", low=0.0)
    data = data.astype(model.unet.conv_in.W.data.dtype, copy=False)
    n, D = int(data.shape[0]), int(math.prod(data.shape[1:]))
    opt = Adam(model.parameters(), lr=lr)
    model.train()
    t0 = time.perf_counter()
    rng = backend.CounterRNG(int(seed), xp=xp)  # one generator, stream ``step`` per step (docs/backends.md §2)
    for step in range(steps):
        rng.at(step)
        x0 = data[rng.integers(0, n, size=batch_size)]  # (B, C, H, W)
        low = downsample_mean(x0, model.factor)
        s_aug = (aug_max * rng.random(batch_size)).astype(x0.dtype)  # (B,)
        low_aug = low + s_aug[:, None, None, None] * rng.standard_normal(low.shape, dtype=x0.dtype)
        sigma = schedule.sample_sigmas(batch_size, rng, dtype=x0.dtype)  # (B,)
        eps = rng.standard_normal(x0.shape, dtype=x0.dtype)
        x = x0 + sigma[:, None, None, None] * eps
        err = model(x, sigma, low_aug, aug_sigma=s_aug) - eps
        loss = float(xp.vdot(err.reshape(-1), err.reshape(-1))) / (batch_size * D)  # one host sync per step
        if not math.isfinite(loss):
            raise FloatingPointError(f"super-resolution training diverged at step {step + 1} (loss {loss})")
        model.zero_grad()
        model.backward(err * (2.0 / (batch_size * D)))
        clip_grad_norm(model.parameters(), grad_clip if grad_clip and grad_clip > 0 else float("inf"))
        opt.lr = warmup_cosine_lr(step, steps, lr, warmup_steps, min_lr)
        opt.step()
        yield {"step": step + 1, "loss": loss, "seconds": time.perf_counter() - t0}
    model.eval()
    return opt


def super_resolve(model: SuperResDenoiser, low_res, sigmas, *, aug_sigma: float = 0.1, method: str = "ddim",
                  seed=0, **sampler_kwargs):
    r"""High-resolution samples ``(B, C, f h, f w)`` given ``low_res (B, C, h, w)``: ``low_aug = low_res +
    aug_sigma eps'`` once, then ``x = up(low_res) + sigmas[0] w``, ``w ~ N(0, I)``, is run through
    :func:`minidiff.samplers.sample` with the denoiser ``eps_hat(x, sigma | low_aug, aug_sigma)``.

    Why start at ``up(low_res)``: the noisy high-resolution image at level ``s`` given the low-resolution
    one is ``x0 + s eps`` with ``x0`` close to ``up(low)``; by the KL bound of docs/math.md §2 with mean
    ``up(low)``, ``KL <= E|x0 - up(low)|^2 / (2 s^2)``, so a ``sigmas[0]`` a few times the residual's RMS
    norm suffices (docs/latent.md §4), far below the ``sigma_max`` an unconditional model needs. For a large
    ``sigmas[0]`` the start is pure noise, as usual. ``sigmas`` is a sampling grid (e.g.
    ``Schedule.log_linear(0.01, 5.0).sampling_sigmas(20)``)."""
    from .samplers import sample

    if not isinstance(model, SuperResDenoiser):
        raise TypeError(f"model must be a SuperResDenoiser; got {type(model).__name__}")
    low_res = check_array(low_res, "low_res", ndim=4)
    sigmas = check_host_1d(sigmas, "sigmas", 0.0, SIGMA_MAX, min_len=2)  # the sampler checks the rest
    aug_sigma = check_real(aug_sigma, "aug_sigma", 0.0, SIGMA_MAX)
    xp = backend.get_xp(low_res)
    rng = check_rng(seed, "seed", xp=xp)
    dtype = model.unet.conv_in.W.data.dtype
    low = low_res.astype(dtype, copy=False)
    low_aug = low + aug_sigma * rng.standard_normal(low.shape, dtype=dtype)
    B, C, h, w = low.shape
    f = model.factor
    x = upsample_nearest(low, f) + float(sigmas[0]) * rng.standard_normal((B, C, f * h, f * w), dtype=dtype)
    return sample(lambda x_, s_: model(x_, s_, low_aug, aug_sigma=aug_sigma), sigmas, x, method=method, rng=rng,
                  **sampler_kwargs)
