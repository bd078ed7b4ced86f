"""The direction field toward the manifold, at several noise levels: ideal vs learned.

    python demos/03_direction_field.py [--fast] [--out DIR]

Writes ``03_direction_field.png``: a grid of query points x in the plane, and for each an arrow
from x to the denoiser's estimate of the clean point, x0_hat(x, sigma) = x - sigma eps_hat(x, sigma).
Top row: the ideal denoiser of the training set (``minidiff.ideal.IdealDenoiser``); bottom row: an
MLP trained on the same points (``minidiff.runs.fit``). Columns: sigma from small to large.
Also writes ``03_training_loss.png`` (the loss curve of that MLP).

This is the spiral figure of the "Unit 10 – Diffusion Models" lecture notes ("predicted directions
from random locations in 2D toward the manifold as a function of sigma"). Permenter & Yuan 2024:
the arrow is the gradient step of the sigma-smoothed squared distance,
sigma eps_hat = (1/2) grad_x dist^2_K(x, sigma) (docs/math.md §9).

Runtime on 2 cores: full ~15-20 s (~15 s of it training the MLP, 4000 Adam steps; the trained model is
cached in DIR as ``spiral_mlp_*.npz`` and reused by demos 04 and 05 -- delete it to retrain);
--fast ~4 s (a barely trained MLP: its arrows are only roughly right).
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

from minidiff import backend
from minidiff.ideal import IdealDenoiser, dist
from minidiff.runs import TrainConfig, fit
from minidiff.samplers import denoise_once

parser = argparse.ArgumentParser(description="direction field x0_hat - x at several sigma, ideal vs learned")
parser.add_argument("--fast", action="store_true", help="tiny training run (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)  # notebook: defaults
os.makedirs(args.out, exist_ok=True)

# %% [markdown]
# ## 1. data and a trained MLP
#
# 300 points on a spiral (a 1-D curve in R^2); an MLP with 4 hidden layers of 128 SiLU units. The training loss (Ho et al. 2020, Alg. 1, sigma space):
#     x0 ~ data, sigma ~ schedule, eps ~ N(0, I),  x = x0 + sigma eps,  L = mean ||eps_hat(x, sigma) - eps||^2
# minidiff.runs.fit runs it with Adam, a warm-up + cosine learning rate, and an EMA of the weights.
# sigma_max = 80 >> the spiral's diameter (4), so sampling from N(0, 80^2 I) starts from pure noise.

# %%
cfg = TrainConfig(dataset="spiral", n_train=300, hidden=(128, 128, 128, 128), batch_size=512,
                  steps=150 if args.fast else 4000, lr=2e-3, warmup_steps=50 if args.fast else 100,
                  sigma_min=0.005, sigma_max=80.0, seed=0)
# One call trains, or loads the finished run that an earlier run of 03/04/05 saved with this exact config
# (fit with resume=True treats its checkpoint as a cache, and refuses one trained with another config).
result = fit(cfg, checkpoint_path=os.path.join(args.out, f"spiral_mlp_n{cfg.n_train}_steps{cfg.steps}.npz"),
             resume=True, progress=False)
model, data, losses = result.ema_model, result.data, result.losses  # EMA weights: smoother, sample better
if result.seconds > 1.0:
    print(f"trained the MLP in {result.seconds:.1f} s ({cfg.steps} steps)")
data = data.astype("float32")  # the model computes in float32
ideal = IdealDenoiser(data)    # eps*(x, sigma) = (x - sum_i w_i x_i)/sigma, w = softmax(-|x - x_i|^2 / 2 sigma^2)

# %% [markdown]
# ## 2. the field on a grid
#
# Where does the network know anything? It only ever saw inputs x = x0 + sigma eps. For a training point
# x0, |sigma eps| < 2.45 sigma with probability 95 % in 2-D, so at this sigma the training inputs fill
# the band {x : dist_K(x) < 2.45 sigma} (dist_K from minidiff.ideal.dist). Outside the band the MLP
# extrapolates -- and a sampler never goes there (at small sigma it is already near the curve).
#
# What to see:
# - small sigma (0.05): inside the thin band both fields point straight at the curve. The ideal one
#   points at the NEAREST TRAINING POINT (the softmax weights collapse onto one x_i), so between two
#   training points its arrows converge on the dots; the MLP points at the curve itself.
#   Outside the band the ideal field is still exact (projection onto the finite set K); the MLP's
#   arrows there are extrapolation -- often sensible, never guaranteed, since it was not trained there.
# - middle sigma: arrows point to a smoothed spiral (a weighted average of nearby points), and the
#   inner turn "pulls" points from across the gap.
# - large sigma (10): every arrow points at the mean of the data: x0_hat -> mean(K). One denoising
#   step from pure noise therefore gives a blur, not a sample (see demos 05 and 07).

# %%
n_grid = 15 if args.fast else 21
lim = 2.6
g = np.linspace(-lim, lim, n_grid)
gx, gy = np.meshgrid(g, g)
x_host = np.stack([gx.ravel(), gy.ravel()], axis=1).astype("float32")  # (G, 2)
x = backend.asarray(x_host)                                             # host -> default backend
fine = np.linspace(-lim - 0.2, lim + 0.2, 60 if args.fast else 160)
fx, fy = np.meshgrid(fine, fine)
x_fine = backend.asarray(np.stack([fx.ravel(), fy.ravel()], axis=1).astype("float32"))
d_fine = backend.to_numpy(dist(x_fine, data)).reshape(fx.shape)  # distance to the nearest training point
d_grid = backend.to_numpy(dist(x, data))
sigmas = [0.05, 0.2, 0.6, 2.0, 10.0]
data_np = backend.to_numpy(data)
arrow_len = 0.7 * (g[1] - g[0])  # every arrow drawn with the same length: the figure shows DIRECTIONS

fig, axes = plt.subplots(2, len(sigmas), figsize=(3.6 * len(sigmas), 8.4))
for k, sigma in enumerate(sigmas):
    band = d_grid < 2.45 * sigma
    rows = []
    for row, (name, den) in enumerate([("ideal", ideal), ("learned MLP", model)]):
        # denoise_once: x0_hat = x - sigma * eps_hat(x, sigma)  (Tweedie's estimate of the clean point)
        x0_hat = backend.to_numpy(denoise_once(den, x, sigma))
        arrow = x0_hat - x_host                    # = -sigma eps_hat: toward the manifold
        rows.append(arrow)
        unit = arrow / (np.linalg.norm(arrow, axis=1, keepdims=True) + 1e-12)
        ax = axes[row, k]
        ax.contourf(fx, fy, d_fine, levels=[0, 2.45 * sigma], colors=["#fde9c9"])  # the training band
        ax.scatter(*data_np.T, s=4, c="tab:blue", zorder=1)
        ax.quiver(x_host[:, 0], x_host[:, 1], arrow_len * unit[:, 0], arrow_len * unit[:, 1], angles="xy",
                  scale_units="xy", scale=1, width=0.005, color="tab:red", zorder=2)
        ax.set(xlim=(-lim - 0.2, lim + 0.2), ylim=(-lim - 0.2, lim + 0.2), aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:
            ax.set_ylabel(f"{name}\n" + r"direction of $\hat{x}_0(x,\sigma) - x$", fontsize=11)
    # How well the network matches the ideal field: mean cosine between the two arrows, in the band.
    a, b = rows[0][band], rows[1][band]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    axes[0, k].set_title(rf"$\sigma$ = {sigma}", fontsize=12)
    axes[1, k].set_title(f"mean cos(ideal, learned) in the band = {cos.mean():.2f}", fontsize=9)
fig.suptitle(r"Direction toward the manifold, $\hat{x}_0 - x = -\sigma\,\hat\epsilon(x,\sigma)$ (unit arrows), "
             f"{cfg.n_train} training points (blue); shaded: where 95 % of the training inputs at this sigma lie")
fig.tight_layout(h_pad=2.0)  # room between the rows: titles are not struck through by the frame above
fig.savefig(os.path.join(args.out, "03_direction_field.png"), dpi=100)
plt.close(fig)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(losses, lw=0.5, alpha=0.5, label="per step")
win = max(1, len(losses) // 50)
ax.semilogy(np.convolve(losses, np.ones(win) / win, mode="valid"), lw=2, label=f"moving mean ({win})")
ax.set(xlabel="step", ylabel="loss  mean |eps_hat - eps|^2", title="training the spiral MLP")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "03_training_loss.png"), dpi=100)
plt.close(fig)
print("wrote 03_direction_field.png, 03_training_loss.png into", args.out)
