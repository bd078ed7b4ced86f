"""Latent diffusion: a variational autoencoder compresses 28x28 glyphs 4x, a diffusion model learns the latents.

    python demos/10_latent_diffusion.py [--fast] [--out DIR]

Writes into DIR (default ``minidiff-out/demos``):

- ``10_reconstructions.png``: held-out glyphs and their VAE reconstructions (through the 4 x 7 x 7 latent).
- ``10_latent_space.png``: the latent means of 1000 glyphs projected on their first two principal axes,
  coloured by digit.
- ``10_prior_vs_ldm.png``: images decoded from the VAE's own prior z ~ N(0, I) against images decoded from
  latents sampled by the latent diffusion model (the DL4DS slides' comparison of VAEs and diffusion).
- ``10_cost.png``: measured seconds per training step and per sample, pixel space against latent space, for
  the same denoiser architecture.

Runtime on 2 CPU cores: full 56 s on an idle machine (VAE 500 steps in 17 s, latent U-Net 800 steps in 30 s;
~17 minutes on a very busy machine at load 12-17), both cached in DIR (delete ``10_*.npz`` to retrain). --fast: a few seconds with
tiny models trained for a handful of steps (figures are produced, samples are noise).
"""
# %% [markdown]
# # Latent diffusion
# The DL4DS slides end with the idea behind Stable Diffusion: "project the original data to a smaller latent
# space using a conventional autoencoder and then run the diffusion process in the smaller space" (Rombach et
# al. 2022). Stage 1 is a variational autoencoder (Kingma & Welling 2013, docs/latent.md §1); stage 2 is any
# denoiser trained on its latents, scaled to unit variance (docs/latent.md §2).
import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np  # host-side plotting and timing arrays only

from minidiff import backend, datasets
from minidiff.latent import AutoencoderConfig, decode_latents, encode_latents, fit_autoencoder
from minidiff.nn import UNetDenoiser
from minidiff.plotting import plot_images
from minidiff.runs import TrainConfig, fit
from minidiff.samplers import sample

parser = argparse.ArgumentParser(description="latent diffusion on 28x28 glyphs")
parser.add_argument("--fast", action="store_true", help="tiny models, a few steps (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
fast = args.fast

# %% [markdown]
# ## 1. Stage 1: the autoencoder
# The encoder maps a 1 x 28 x 28 glyph to the mean and log-variance of a Gaussian over a 4 x 7 x 7 latent
# (196 numbers for 784 pixels); the decoder maps a latent back to an image. Training maximises the ELBO,
# here as ``||x - x_hat||^2 / D + beta KL / D`` with a small beta: sharp reconstructions, nearly
# deterministic latents. The figure shows held-out glyphs above their reconstructions.
ae_cfg = AutoencoderConfig(dataset="glyphs28", n_train=256 if fast else 3000, base_channels=4 if fast else 8,
                           steps=5 if fast else 500, batch_size=8 if fast else 32, warmup_steps=2 if fast else 25)
ae_path = os.path.join(args.out, f"10_vae_c{ae_cfg.base_channels}_steps{ae_cfg.steps}.npz")
t0 = time.perf_counter()
ae, ae_losses = fit_autoencoder(ae_cfg, checkpoint_path=ae_path, resume=True, progress=not fast)
print(f"autoencoder: {ae.num_parameters()} parameters, {time.perf_counter() - t0:.0f} s (cached in {ae_path})")

glyphs = datasets.get_dataset("glyphs28")
held_out, held_labels = glyphs.sample(1000, rng=backend.default_rng(123), return_labels=True)
held_out = held_out.astype("float32")
recon = ae(held_out[:12])  # noise=None: decode the posterior mean
mse = float(((ae(held_out[:200]) - held_out[:200]) ** 2).mean())
fig, axes = plt.subplots(2, 1, figsize=(9, 2.6))
plot_images(axes[0], held_out[:12], nrow=12, title="held-out glyphs")
plot_images(axes[1], recon, nrow=12, title=f"VAE reconstructions through a 4x7x7 latent (pixel MSE {mse:.4f})")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "10_reconstructions.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 2. The latent space
# Each glyph's latent mean is a point in 196 dimensions. Projected on its two principal axes and coloured by
# digit (full run): some digits gather in their own region (the 1s, the 7s), most overlap. Two of 196
# directions keep little, and the VAE was trained to reconstruct, not to separate classes: its latent is a
# compressed image more than a semantic code. Diffusion has to learn this cloud of 196-dimensional points
# instead of the 784-pixel images.
mu, logvar = ae.encode(held_out)
flat = backend.to_numpy(mu).reshape(len(mu), -1)  # device -> host, (N, 196)
flat = flat - flat.mean(axis=0)
_, _, vt = np.linalg.svd(flat, full_matrices=False)
proj = flat @ vt[:2].T  # (N, 196) @ (196, 2) -> (N, 2)
labels = backend.to_numpy(held_labels)
fig, ax = plt.subplots(figsize=(6.5, 5.5))
for d in range(10):
    sel = labels == d
    ax.scatter(proj[sel, 0], proj[sel, 1], s=6, color=plt.cm.tab10(d), label=str(d))
ax.legend(title="digit", markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
ax.set_xlabel("principal axis 1")
ax.set_ylabel("principal axis 2")
ax.set_title("VAE latent means of 1000 held-out glyphs (PCA)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "10_latent_space.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 3. Stage 2: diffusion on the latents
# ``TrainConfig(latent=...)`` encodes the training glyphs once and scales the latents to unit variance with a
# factor measured on the data (Stable Diffusion's 0.18215 is this factor for its autoencoder); the denoiser
# is then trained exactly as on pixels. A 7 x 7 latent has one resolution, so the U-Net has no down-sampling.
cfg = TrainConfig(dataset="glyphs28", n_train=256 if fast else 3000, model="unet", base_channels=8 if fast else 32,
                  channel_mult=(1,), latent=ae_path, steps=5 if fast else 800, batch_size=8 if fast else 64,
                  warmup_steps=2 if fast else 50, sigma_min=0.01, sigma_max=80.0, seed=0,
                  # the EDM preconditioning of the image defaults (docs/quality.md §5), with sigma_data = 1:
                  # the scaled latents have unit variance
                  parametrization="edm", sigma_distribution="lognormal", sigma_data=1.0)
ldm = fit(cfg, checkpoint_path=os.path.join(args.out, f"10_ldm_edm_c{cfg.base_channels}_steps{cfg.steps}.npz"),
          resume=True, progress=not fast)
print(f"latent denoiser: {ldm.model.num_parameters()} parameters, latent scale {ldm.config.latent_scale:.3f} "
      f"(shift {ldm.config.latent_shift:+.3f}), training latents' variance {float(ldm.data.var()):.3f}")

# %% [markdown]
# ## 4. Samples: the VAE's prior against latent diffusion
# A VAE is itself a generative model: decode z ~ N(0, I). But its encoder never produces latents spread like
# N(0, I) (with a small beta the posteriors are narrow and the aggregate of the latent means is not Gaussian),
# so decoded prior draws are faint scribbles. The latent diffusion model instead samples from the distribution
# of the latents themselves. Left: prior draws; right: latent diffusion (DDPM, 30 steps). In the full run
# (800 training steps with the EDM preconditioning) most latent samples are recognisable, somewhat blurry
# digits, a few are malformed -- far closer to the data than the prior's scribbles, still short of the
# crisp reconstructions of section 1: the denoiser, not the decoder, is the bottleneck; more training helps.
n_show = 24
latent_shape = ae.latent_shape((1, 28, 28))
rng = backend.default_rng(7)
z_prior = rng.standard_normal((n_show,) + latent_shape, dtype="float32")
x_prior = ae.decode(z_prior)
sigmas = ldm.schedule.sampling_sigmas(6 if fast else 30)
z0 = sample(ldm.denoiser, sigmas, float(sigmas[0]) * rng.standard_normal((n_show,) + latent_shape, dtype="float32"),
            method="ddpm", rng=8, final_step="ddim")
x_ldm = ldm.decode(z0)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
plot_images(axes[0], x_prior, nrow=8, title="VAE: decode(z), z ~ N(0, I)")
plot_images(axes[1], x_ldm, nrow=8, title="latent diffusion: decode(z0), z0 sampled by DDPM")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "10_prior_vs_ldm.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 5. What it buys: cost per training step and per sample
# The same U-Net (one resolution, the width above) on 1 x 28 x 28 pixels and on 4 x 7 x 7 latents: 16x fewer
# positions for every convolution. A latent sample pays the denoiser for each sampler step plus one decoder
# call. Times are measured here (best of a few repeats, batch 64); the machine's load changes them.
def best_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


B, steps_per_sample, reps = (8, 6, 1) if fast else (64, 30, 3)
net = {"pixel": UNetDenoiser(1, base_channels=cfg.base_channels, channel_mult=(1,), seed=0),
       "latent": UNetDenoiser(latent_shape[0], base_channels=cfg.base_channels, channel_mult=(1,), seed=0)}
shapes = {"pixel": (1, 28, 28), "latent": latent_shape}
train_s, sample_s = {}, {}
for k, m in net.items():
    x = rng.standard_normal((B,) + shapes[k], dtype="float32")
    s = 1.0  # one noise level for the whole batch (a float works on either backend)

    def step():
        out = m(x, s)
        m.zero_grad()
        m.backward(out)

    train_s[k] = best_time(step, reps)
    call = best_time(lambda: m(x, s), reps)
    sample_s[k] = call * steps_per_sample / B
decode_s = best_time(lambda: ae.decode(z_prior[:1].repeat(B, axis=0)), reps) / B
sample_s["latent"] += decode_s
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, vals, what in ((axes[0], train_s, f"seconds per training step (batch {B})"),
                       (axes[1], sample_s, f"seconds per sample ({steps_per_sample} steps, + decode for latent)")):
    bars = ax.bar(list(vals), list(vals.values()), color=["C0", "C1"])
    ax.bar_label(bars, fmt="%.3g")
    ax.set_title(what, fontsize=10)
    ax.set_ylim(0, 1.25 * max(vals.values()))
fig.suptitle(f"same U-Net: pixels (1x28x28) vs latents (4x7x7): {train_s['pixel'] / train_s['latent']:.1f}x per "
             f"training step, {sample_s['pixel'] / sample_s['latent']:.1f}x per sample", fontsize=10)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "10_cost.png"), dpi=100)
plt.close(fig)
print(f"per training step: pixel {train_s['pixel']:.3f} s, latent {train_s['latent']:.3f} s; per sample: pixel "
      f"{sample_s['pixel'] * 1e3:.1f} ms, latent {sample_s['latent'] * 1e3:.1f} ms (decode {decode_s * 1e3:.2f} ms)")
