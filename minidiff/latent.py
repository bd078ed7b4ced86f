r"""Latent diffusion (Rombach et al. 2022): train a variational autoencoder, encode the data once, run
diffusion on the scaled latents, decode the samples. See docs/latent.md §1-§2.

The two stages::

    stage 1   x --encoder--> (mu, logvar),  z = mu + exp(logvar/2) eps,  x_hat = decoder(z)
              minimise  ||x - x_hat||^2 / D + beta KL(q(z|x) || N(0, I)) / D     (:func:`train_autoencoder`)
    stage 2   z0 = (mu(x) - shift) * scale   (unit variance, measured on the data: :func:`latent_scale`)
              train any denoiser on z0 exactly as on pixels; sample z0; x = decoder(z0 / scale + shift)

:func:`train_autoencoder` is a generator like :func:`minidiff.training.train`; :func:`fit_autoencoder`
wraps it with :class:`AutoencoderConfig`'s defaults, a checkpoint and a progress bar.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields

from . import backend
from ._validate import check_array, check_positive_int, check_real
from .nn import Adam, Autoencoder, clip_grad_norm, load, save, warmup_cosine_lr

__all__ = ["AutoencoderConfig", "train_autoencoder", "fit_autoencoder", "load_autoencoder", "latent_scale",
           "encode_latents", "decode_latents"]


# ----------------------------------------------------------------------------- stage 1: the autoencoder
def train_autoencoder(ae: Autoencoder, data, *, steps: int, batch_size: int = 64, lr: float = 2e-3,
                      beta: float = 1e-3, warmup_steps: int = 0, min_lr: float = 0.0, grad_clip: float = 1.0,
                      seed: int = 0, start: int = 0, optimizer=None):
    r"""Train ``ae`` on images ``data (N, C, H, W)`` by minimising the scaled negative ELBO; yield metrics.

    Each step draws a batch ``x`` (rows uniformly with replacement) and ``noise ~ N(0, I)`` and minimises

    .. math:: L = \frac{1}{B D}\sum_b \|x_b - \hat x_b\|^2 + \frac{\beta}{D}\,\frac1B\sum_b \mathrm{KL}_b,
              \qquad \frac{\partial L}{\partial \hat x_b} = \frac{2}{B D}(\hat x_b - x_b),
              \quad \frac{\partial L}{\partial\, \mathrm{kl}} = \frac{\beta}{D},

    which is ``-ELBO * 2 s^2 / D`` plus a constant for a decoder ``N(x_hat, s^2 I)`` with ``beta = 2 s^2``
    (Kingma & Welling 2013, Eq. 3 and 10; see :mod:`minidiff.nn.autoencoder`). Adam with warm-up + cosine
    learning rate and global-norm clipping, as the denoisers. Yields ``step`` (1-based), ``loss``, ``recon``
    (the per-pixel squared error), ``kl`` (per sample, in nats), ``grad_norm``, ``lr``, ``seconds``; returns
    the optimiser (``StopIteration.value``). Step ``k`` draws from a generator seeded with ``(seed, k)``.
    """
    xp = backend.get_xp(data)
    check_array(data, "data", ndim=4)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    beta = check_real(beta, "beta", low=0.0)
    n = int(data.shape[0])
    dtype = ae.encoder[0].W.data.dtype
    data = data.astype(dtype, copy=False)
    D = int(math.prod(data.shape[1:]))
    opt = optimizer if optimizer is not None else Adam(ae.parameters(), lr=lr)
    ae.train()
    t0 = time.perf_counter()
    rng = backend.CounterRNG(int(seed), xp=xp)  # one generator, stream ``step`` per step (docs/backends.md §2)
    for step in range(start, steps):
        rng.at(step)
        x = data[rng.integers(0, n, size=batch_size)]  # (B, C, H, W)
        noise = rng.standard_normal((batch_size,) + ae.latent_shape(x.shape[1:]), dtype=dtype)
        x_hat = ae(x, noise=noise)
        err = x_hat - x
        recon_t = xp.vdot(err.reshape(-1), err.reshape(-1)) / (batch_size * D)
        # the one device -> host sync of the step (besides clipping's): both terms of the loss together
        recon, kl = (float(v) for v in backend.to_numpy(xp.stack([recon_t, ae._kl_array()])))
        loss = recon + beta * kl / D
        if not math.isfinite(loss):
            raise FloatingPointError(f"autoencoder training diverged at step {step + 1} (loss {loss})")
        ae.zero_grad()
        ae.backward(err * (2.0 / (batch_size * D)), d_kl=beta / D)
        gnorm = clip_grad_norm(ae.parameters(), grad_clip if grad_clip and grad_clip > 0 else float("inf"))
        opt.lr = warmup_cosine_lr(step, steps, lr, warmup_steps, min_lr)
        opt.step()
        yield {"step": step + 1, "loss": loss, "recon": recon, "kl": kl, "grad_norm": gnorm, "lr": opt.lr,
               "seconds": time.perf_counter() - t0}
    ae.eval()
    return opt


@dataclass
class AutoencoderConfig:
    """Defaults: a 28x28 glyph autoencoder with a 4 x 7 x 7 latent (4x fewer numbers than pixels)."""

    dataset: str = "glyphs28"  # an image dataset name (glyphs16, glyphs28) or a .npy file of images
    n_train: int = 4000  # images drawn from a built-in dataset
    latent_channels: int = 4  # channels of the latent
    base_channels: int = 16  # width at full resolution
    channel_mult: tuple = (1, 2, 2)  # three levels: 28 -> 14 -> 7
    beta: float = 2e-3  # KL weight = 2 s^2 for a decoder noise s ~ 0.03 (sharp reconstructions)
    steps: int = 800  # optimiser steps
    batch_size: int = 32  # images per step
    lr: float = 2e-3  # peak Adam learning rate
    warmup_steps: int = 50  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1e-5  # final learning rate
    grad_clip: float = 1.0  # global gradient-norm clip
    seed: int = 0  # seeds the data, the initialisation and every step's draws
    dtype: str = "float32"  # model dtype

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        for name in ("n_train", "latent_channels", "base_channels", "steps", "batch_size"):
            check_positive_int(getattr(self, name), name)
        check_real(self.lr, "lr", low=0.0, low_open=True)
        check_real(self.beta, "beta", low=0.0)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown AutoencoderConfig fields: {unknown}")
        return cls(**d)


def fit_autoencoder(config: AutoencoderConfig | None = None, *, checkpoint_path=None, data=None,
                    progress: bool = True, resume: bool = False, callback=None):
    """Train an :class:`~minidiff.nn.Autoencoder` with ``config`` and return ``(ae, losses)``.

    With ``checkpoint_path`` the trained model is written there (with the config and the loss history);
    with ``resume=True`` an existing checkpoint of the same config is loaded instead of training (a cache,
    as :func:`minidiff.training.fit`), and one of a different config is refused with a ValueError.
    ``data`` overrides the config's dataset."""
    from .runs import load_data

    cfg = config or AutoencoderConfig()
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        ck = load(checkpoint_path)
        if ck.config != cfg.as_dict():
            diff = sorted(k for k in set(ck.config or {}) | set(cfg.as_dict())
                          if (ck.config or {}).get(k) != cfg.as_dict().get(k))
            raise ValueError(f"resume: {checkpoint_path!s} was trained with a different config (fields {diff})")
        if not isinstance(ck.model, Autoencoder):
            raise ValueError(f"{checkpoint_path!s} holds a {ck.model_class}, not an Autoencoder")
        ck.model.eval()
        return ck.model, list(ck.extra.get("losses", []))
    if data is None:
        data, _ = load_data(cfg.dataset, cfg.n_train, cfg.seed)
    check_array(data, "data", ndim=4)
    ae = Autoencoder(int(data.shape[1]), latent_channels=cfg.latent_channels, base_channels=cfg.base_channels,
                     channel_mult=cfg.channel_mult, dtype=cfg.dtype, seed=cfg.seed)
    gen = train_autoencoder(ae, data, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, beta=cfg.beta,
                            warmup_steps=cfg.warmup_steps, min_lr=cfg.min_lr, grad_clip=cfg.grad_clip,
                            seed=cfg.seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="train vae", unit="step", leave=False)
    losses, opt = [], None
    try:
        while True:
            try:
                m = next(gen)
            except StopIteration as stop:
                opt = stop.value
                break
            losses.append(m["loss"])
            if callback is not None:
                callback(m)
            if bar is not None:
                bar.update(1)
                if m["step"] % 25 == 0:
                    bar.set_postfix(recon=f"{m['recon']:.4f}", kl=f"{m['kl']:.1f}")
    finally:
        if bar is not None:
            bar.close()
    if checkpoint_path:
        save(checkpoint_path, ae, optimizer=opt, config=cfg.as_dict(),
             extra={"step": cfg.steps, "losses": losses, "data_shape": [int(k) for k in data.shape[1:]]})
    return ae, losses


# ----------------------------------------------------------------------------- stage 2: the latent space
def latent_scale(z):
    r"""``(scale, shift)`` so that ``(z - shift) * scale`` has mean 0 and variance 1 over all entries:
    ``shift = mean(z)``, ``scale = 1 / std(z)``.

    Rombach et al. 2022 (Sec. 4.3.2) rescale the latents of a KL-regularised autoencoder by ``1 / std``
    measured on the data, so that the noise schedule sees data of unit variance whatever the autoencoder;
    Stable Diffusion's 0.18215 is that factor for its autoencoder. Esser et al. 2024 also subtract a shift.
    A schedule's ``sigma_max`` and ``sigma_min`` then mean the same in latent space as on unit-variance
    pixels. See docs/latent.md §2. Returns Python floats (one host sync)."""
    check_array(z, "z")
    xp = backend.get_xp(z)
    shift = float(xp.mean(z))
    std = float(xp.sqrt(xp.mean((z - shift) ** 2)))
    if not std > 0:
        raise ValueError("the latents have zero variance; the autoencoder encodes every image the same")
    return 1.0 / std, shift


def encode_latents(ae: Autoencoder, x, scale=None, shift=None, batch_size: int = 256):
    r"""Encode images once: ``z0 = (mu(x) - shift) * scale`` with the encoder mean ``mu`` (the posterior
    mean, so the training latents are deterministic). ``scale``/``shift`` default to :func:`latent_scale`
    of ``mu`` over ``x``. Returns ``(z0, scale, shift)``; chunks of ``batch_size`` bound the memory."""
    check_array(x, "x", ndim=4)
    xp = backend.get_xp(x)
    batch_size = check_positive_int(batch_size, "batch_size")
    dtype = ae.encoder[0].W.data.dtype
    mu = xp.concatenate([ae.encode(x[i:i + batch_size].astype(dtype, copy=False))[0]
                         for i in range(0, x.shape[0], batch_size)], axis=0)  # (N, lc, h, w)
    if scale is None or shift is None:
        scale, shift = latent_scale(mu)
    return (mu - shift) * scale, float(scale), float(shift)


def decode_latents(ae: Autoencoder, z0, scale: float, shift: float, batch_size: int = 256):
    r"""``x = decoder(z0 / scale + shift)``, the inverse of :func:`encode_latents`' scaling, in chunks."""
    check_array(z0, "z0", ndim=4)
    xp = backend.get_xp(z0)
    batch_size = check_positive_int(batch_size, "batch_size")
    dtype = ae.decoder[0].W.data.dtype
    scale, shift = check_real(scale, "scale", 0.0, low_open=True), check_real(shift, "shift")
    z = (z0 / scale + shift).astype(dtype, copy=False)
    return xp.concatenate([ae.decode(z[i:i + batch_size]) for i in range(0, z.shape[0], batch_size)], axis=0)


def load_autoencoder(path, near=None) -> Autoencoder:
    """The :class:`~minidiff.nn.Autoencoder` stored in a checkpoint (from ``minidiff train --model vae``
    or :func:`fit_autoencoder`), in eval mode; ValueError if the file holds another model.

    ``near``: the latent-diffusion checkpoint that names ``path``. A latent checkpoint records its
    autoencoder's absolute path; when that file is gone (the two were moved or copied together),
    the file of the same name beside ``near`` is used."""
    if not os.path.exists(path) and near is not None:
        beside = os.path.join(os.path.dirname(os.path.abspath(near)), os.path.basename(path))
        path = beside if os.path.exists(beside) else path
    if not os.path.exists(path):
        raise FileNotFoundError(f"autoencoder checkpoint {path!r} does not exist (write one with "
                                f"`minidiff train --model vae --out {path}`)")
    ck = load(path)
    if not isinstance(ck.model, Autoencoder):
        raise ValueError(f"{path!s} holds a {ck.model_class}, not an Autoencoder")
    return ck.model.eval()
