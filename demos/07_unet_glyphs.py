"""A convolutional U-Net learns 16x16 digit glyphs: samples, a denoising animation, one step vs many.

    python demos/07_unet_glyphs.py [--fast] [--out DIR]

Writes into DIR (default ``minidiff-out/demos``):

- ``07_glyph_data.png``: training glyphs (``minidiff.datasets`` "glyphs16": digits rendered from a
  font with random rotation/scale/shift, pixels in [-1, 1]).
- ``07_unet_samples.png``: 32 samples with 40 DDPM steps, the same noise with 40 DDIM steps, and with
  only 5 steps ("How diffusion models work": "if we only use 5 sampling steps the characters don't look very
  convincing").
- ``07_denoising.gif``: the animation of "How diffusion models work" -- 16 samples, from pure noise to glyphs (DDPM, 40
  steps), with the model's current guess x0_hat beside them.
- ``07_one_vs_many.png``: held-out glyphs noised to several sigma, then denoised in ONE step
  (``samplers.denoise_once``: x0_hat = x - sigma eps_hat) vs many DDIM steps from that sigma.
- ``07_unet_loss.png``: the training loss.

Runtime on 2 CPU cores: full 166 s on an idle machine (most of it training: 1500 Adam steps of batch 64
on a 16-channel, 92k-parameter U-Net; ~10 minutes on a busy machine);
the trained model is cached in DIR as ``glyph_unet_*.npz`` so a second run only samples (~20 s) --
delete it to retrain. --fast ~6 s with an 8-channel U-Net trained for 10 steps: the figures are
produced but the "samples" are noise.

Training uses the image defaults of the CLI (``TrainConfig.for_images``): x = x0 + sigma eps with
ln sigma ~ N(-1.2, 1.2^2), and the network F wrapped in the EDM preconditioning of Karras et al. 2022,
D(x) = c_skip x + c_out F(c_in x, c_noise), trained on (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
|D(x) - x0|^2 (docs/quality.md §3); the samplers see the equivalent eps_hat = (x - D(x)) / sigma. The
network is ``minidiff.nn.UNetDenoiser``: 3x3 convolutions, GroupNorm, SiLU, two resolutions (16x16 and
8x8) with skip connections, and the noise level injected into every residual block.
"""

# %%
import argparse
import os
import sys

import minidiff  # noqa: F401  (first: picks the BLAS thread count before NumPy loads; minidiff/_threads.py)
import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np  # host-side plotting arrays only
from matplotlib.animation import FuncAnimation, PillowWriter

from minidiff import backend, datasets
from minidiff.runs import TrainConfig, fit
from minidiff.samplers import denoise_once, iter_sample, sample
from minidiff.schedules import log_linear_sigmas

parser = argparse.ArgumentParser(description="U-Net on 16x16 glyphs: samples, denoising GIF, one step vs many")
parser.add_argument("--fast", action="store_true", help="tiny U-Net, 10 training steps (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)  # notebook: defaults
os.makedirs(args.out, exist_ok=True)


def show_grid(ax, images, nrow, title=None):
    """Tile (B, 1, H, W) images in [-1, 1] into one picture (B = nrow * ncol)."""
    imgs = np.clip(backend.to_numpy(images)[:, 0], -1, 1)          # device -> host, (B, H, W)
    B, H, W = imgs.shape
    ncol = B // nrow
    tiled = imgs[:nrow * ncol].reshape(nrow, ncol, H, W).transpose(0, 2, 1, 3).reshape(nrow * H, ncol * W)
    ax.imshow(tiled, cmap="gray", vmin=-1, vmax=1)                 # (nrow, ncol, H, W) -> (nrow H, ncol W)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


# %% [markdown]
# ## 1. data and training
#
# sigma_max = 80 (as in Karras et al. 2022 for images in [-1, 1]). fit() checks it against the data:
# KL(p_T || N(0, 80^2 I)) <= E|x0|^2 / (2 * 80^2) ~ 0.02 nats for 16x16 glyphs (RMS norm ~13), fine.

# %%
# TrainConfig.for_images: the image defaults of `minidiff train --model unet` (runs.IMAGE_DEFAULTS): the EDM
# preconditioning of Karras et al. 2022 with log-normal training noise levels (docs/quality.md §3, §5).
cfg = TrainConfig.for_images(dataset="glyphs16", n_train=4000, base_channels=8 if args.fast else 16,
                             channel_mult=(1, 2), batch_size=16 if args.fast else 64, steps=10 if args.fast else 1500,
                             lr=2e-3, warmup_steps=5 if args.fast else 100, sigma_min=0.01, sigma_max=80.0, seed=0)
# Trains (minutes), or loads the run an earlier call saved with this exact config (fit's checkpoint as a cache).
result = fit(cfg, checkpoint_path=os.path.join(args.out, f"glyph_unet_edm_c{cfg.base_channels}_steps{cfg.steps}.npz"),
             resume=True, progress=not args.fast)
# result.denoiser: the EMA network wrapped in the preconditioning, an eps-predictor for the samplers
model, losses = result.denoiser, result.losses
if result.seconds > 1.0:
    print(f"trained the U-Net ({result.ema_model.num_parameters()} parameters) in {result.seconds:.0f} s")

glyphs = datasets.get_dataset("glyphs16")
train_view = glyphs.sample(32, rng=backend.default_rng(0)).astype("float32")  # same seed as training data
held_out = glyphs.sample(8, rng=backend.default_rng(123)).astype("float32")    # new jitters, for section 4
fig, ax = plt.subplots(figsize=(8, 4.3))
show_grid(ax, train_view, nrow=4, title="training glyphs (16x16, pixels in [-1, 1])")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "07_glyph_data.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 2. samples: DDPM, DDIM, 5 steps
#
# Karras et al.'s grid (rho = 7) from 80 to 0.01, then 0. DDPM (gamma = 1, mu = 1/2) removes more noise than each step
# needs and adds fresh noise back: x' = x - (s - s_p) eps_hat + sqrt(s'^2 - s_p^2) w, s_p = s'^2 / s.
# DDIM (mu = 0) is the deterministic x' = x - (s - s') eps_hat. Same starting noise for all three.
#
# What to see (full mode): DDPM and DDIM from the same noise both give recognisable digits in new poses,
# some hybrids or broken strokes (a 1500-step CPU training run is short). An eps-predicting U-Net
# trained on the schedule's grid (this demo's model before the EDM defaults) left about half of its
# DDIM samples speckled: the deterministic path froze in its errors at large sigma, where
# x0_hat = x - sigma eps_hat multiplies every eps error by sigma. The preconditioned network predicts a
# unit-variance target at every sigma (docs/quality.md §3), and the glyph-FID table of docs/quality.md §5
# measures the difference. With 5 steps the glyphs are rougher: each step jumps far
# ("How diffusion models work": 5 steps don't look convincing).

# %%
n_show = 32
z = backend.default_rng(1).standard_normal((n_show, 1, 16, 16), dtype="float32")
many = 12 if args.fast else 40
grid_many = result.schedule.sampling_sigmas(many, spacing="karras")  # 80 ... 0.01, then 0
grid_few = result.schedule.sampling_sigmas(5, spacing="karras")
x_ddpm = sample(model, grid_many, float(grid_many[0]) * z, method="ddpm", rng=3)
x_ddim = sample(model, grid_many, float(grid_many[0]) * z, method="ddim")
x_few = sample(model, grid_few, float(grid_few[0]) * z, method="ddpm", rng=3)
fig, axes = plt.subplots(1, 3, figsize=(19, 3.9))
show_grid(axes[0], x_ddpm, nrow=4, title=f"U-Net samples, DDPM {many} steps")
show_grid(axes[1], x_ddim, nrow=4, title=f"same starting noise, DDIM {many} steps")
show_grid(axes[2], x_few, nrow=4, title="same starting noise, DDPM 5 steps")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "07_unet_samples.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 3. the denoising animation
#
# iter_sample yields (step, x, x0_hat, sigma, nfe) after every step: x is the noisy state, x0_hat the
# model's current guess of the final image. Both are shown, 16 samples each.

# %%
frames = [(float(grid_many[0]), z[:16] * float(grid_many[0]), None)]
for state in iter_sample(model, grid_many, float(grid_many[0]) * z[:16], method="ddpm", rng=3):
    frames.append((state.sigma, state.x, state.x0_hat))
fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))


def draw(i):
    sigma, x, x0_hat = frames[i]
    for ax in axes:
        ax.clear()
    # show x scaled by 1/sqrt(1 + sigma^2) (the VP view), so the noise is visible at unit scale
    show_grid(axes[0], x / np.sqrt(1.0 + sigma * sigma), nrow=4, title=f"x_t / sqrt(1+sigma^2), sigma = {sigma:.3g}")
    if x0_hat is not None:
        show_grid(axes[1], x0_hat, nrow=4, title="current guess x0_hat = x - sigma eps_hat")
    else:
        axes[1].set_axis_off()


anim = FuncAnimation(fig, draw, frames=len(frames))
anim.save(os.path.join(args.out, "07_denoising.gif"), writer=PillowWriter(fps=6), dpi=80)
plt.close(fig)

# %% [markdown]
# ## 4. one step vs many
#
# Noise 8 held-out glyphs to sigma, then either ONE denoiser call (x0_hat = x - sigma eps_hat, the
# posterior mean E[x0 | x]) or DDIM from sigma down to 0 (20 steps).
#
# What to see: at small sigma one step is enough (the input already says which glyph it is). At large
# sigma the single-step x0_hat is a BLUR -- the average of all glyphs compatible with the noisy input
# (at sigma = 10 almost the mean glyph): it minimises the squared error, so it hedges. Many small steps
# commit to one glyph step by step and end on a sharp one, though not necessarily the original digit:
# the noise destroyed that information.

# %%
levels = [0.3, 1.0, 3.0, 10.0]
eps = backend.default_rng(2).standard_normal(held_out.shape, dtype="float32")
fig, axes = plt.subplots(3, len(levels), figsize=(3.9 * len(levels), 6.4))
for j, sigma in enumerate(levels):
    x_noisy = held_out + sigma * eps                                         # x = x0 + sigma eps
    one = denoise_once(model, x_noisy, sigma)
    grid = np.concatenate([log_linear_sigmas(20, 0.01, sigma), [0.0]])
    multi = sample(model, grid, x_noisy, method="ddim")
    show_grid(axes[0, j], x_noisy / np.sqrt(1.0 + sigma ** 2), nrow=2, title=f"noisy input, sigma = {sigma}")
    show_grid(axes[1, j], one, nrow=2, title="one step: denoise_once")
    show_grid(axes[2, j], multi, nrow=2, title="20 DDIM steps from this sigma")
axes[0, 0].set_ylabel("x (VP-scaled)")
axes[1, 0].set_ylabel("x0_hat, 1 call")
axes[2, 0].set_ylabel("many steps")
fig.suptitle("One denoising step vs many, on held-out glyphs")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "07_one_vs_many.png"), dpi=100)
plt.close(fig)

fig, ax = plt.subplots(figsize=(6, 3.5))
win = max(1, len(losses) // 30)
ax.plot(np.convolve(losses, np.ones(win) / win, mode="valid"))
ax.set(xlabel="step", ylabel=f"loss (moving mean of {win})", title="U-Net training loss", yscale="log")
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "07_unet_loss.png"), dpi=100)
plt.close(fig)
print("wrote 07_glyph_data.png, 07_unet_samples.png, 07_denoising.gif, 07_one_vs_many.png, 07_unet_loss.png into",
      args.out)
