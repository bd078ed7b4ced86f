"""Forward diffusion: a point cloud on a surface dissolves into a Gaussian blob.

    python demos/01_forward_diffusion.py [--fast] [--out DIR]

Writes into DIR (default ``minidiff-out/demos``):

- ``01_random_walk_3d.png``: the figure of the "Unit 10 – Diffusion Models" lecture notes -- a
  swiss-roll sheet in R^3, points sampled on it, and the cloud after 5, 10 and 20 random-walk
  steps; plus the measured spread against its closed form.
- ``01_random_walk_3d.gif``: the same walk, one frame per step.
- ``01_vp_chain_2d.png``: the figure of "How diffusion models work" -- the VP (DDPM) chain carries a
  2-D spiral to N(0, I); top row samples, bottom row the exact marginal density q(x_t).
- ``01_vp_chain_1d.png``: the 1-D example of the DL4DS lecture slides, beta = p = 0.01 -- histograms of x_t
  against the closed-form marginal density.

Full mode ~12 s on 2 cores; --fast ~4 s (fewer points, coarser grids, a 6-frame GIF).
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

from minidiff import backend, datasets, forward

parser = argparse.ArgumentParser(description="forward diffusion: random walk in 3-D and the VP chain in 1-D/2-D")
parser.add_argument("--fast", action="store_true", help="tiny sizes (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)  # notebook: defaults
os.makedirs(args.out, exist_ok=True)

n_points = 400 if args.fast else 1500   # points diffused
grid_res = 50 if args.fast else 120     # density grid for the 2-D marginal
rng = backend.default_rng(0)            # all randomness comes from this generator

# %% [markdown]
# ## 1. random walk in R^3
#
# The forward diffusion of the "Unit 10 – Diffusion Models" lecture notes: start from points on a
# manifold K and repeatedly add noise,
#
#     x_t = x_{t-1} + sigma_t w_t,    w_t ~ N(0, I),   t = 1..T          (forward.random_walk)
#
# A sum of independent Gaussians is Gaussian, so after t steps x_t ~ N(x_0, s_t^2 I) with
# s_t^2 = sigma_1^2 + ... + sigma_t^2                                     (forward.random_walk_marginal_std)
# Here sigma_t is constant (0.12), so s_20 = 0.12 sqrt(20) ~ 0.54: comparable to the gap between the
# sheets of the roll, which is why the roll is unrecognisable at t = 20.

# %%
surface = datasets.get_dataset("swiss_roll_3d")       # the sheet (c1(u), h, c2(u)), h in [-1, 1]
x0 = surface.sample(n_points, rng=rng)                 # (N, 3) points ON the manifold
T_walk = 20
step_sigmas = np.full(T_walk, 0.12)
traj = forward.random_walk(x0, step_sigmas, rng=rng)   # (T + 1, N, 3): traj[t] = x_t
traj_np = backend.to_numpy(traj)                       # device -> host for plotting
manifold = backend.to_numpy(surface.sample(3000 if args.fast else 8000, rng=rng))  # dense sample = "the surface"


def style3d(ax, title):
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-2.5, 2.5)
    ax.set_ylim(-2.5, 2.5)
    ax.set_zlim(-2.5, 2.5)
    ax.view_init(elev=18, azim=-62)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])


fig = plt.figure(figsize=(19, 4.2))
ax = fig.add_subplot(1, 6, 1, projection="3d")
ax.scatter(*manifold.T, s=1, c=manifold[:, 0] ** 2 + manifold[:, 2] ** 2, cmap="viridis", alpha=0.5)
style3d(ax, "the manifold K (swiss-roll sheet)")
for k, t in enumerate([0, 5, 10, 20]):
    ax = fig.add_subplot(1, 6, k + 2, projection="3d")
    # colour = radius of the START point on the roll, so you can see which layer each point came from
    ax.scatter(*traj_np[t].T, s=3, c=traj_np[0, :, 0] ** 2 + traj_np[0, :, 2] ** 2, cmap="viridis")
    style3d(ax, "sampled points, t = 0" if t == 0 else f"after t = {t} steps")
# Last panel: the check that the walk is what the formula says -- RMS displacement |x_t - x_0| / sqrt(3)
# (per-coordinate std) against s_t.
ax = fig.add_subplot(1, 6, 6)
s_closed = forward.random_walk_marginal_std(step_sigmas)                 # (T + 1,) host float64
s_measured = np.sqrt(np.mean((traj_np - traj_np[0]) ** 2, axis=(1, 2)))  # (T+1, N, 3) -> (T+1,)
ax.plot(s_closed, "k-", label=r"closed form $s_t=\sqrt{\sum_{u\leq t}\sigma_u^2}$")
ax.plot(s_measured, "o", ms=4, label="measured std of $x_t - x_0$")
ax.set(xlabel="step t", title="spread of the cloud", ylabel="std per coordinate")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.suptitle(r"Forward diffusion $x_t = x_{t-1} + \sigma_t w_t$ ($\sigma_t$ = 0.12): "
             "the structure of the manifold is washed out; at t = 20 the cloud could have come from any surface")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "01_random_walk_3d.png"), dpi=100)
plt.close(fig)

# The same walk as an animation (a slowly turning camera helps the eye read 3-D).
frames = list(range(0, T_walk + 1, 4)) if args.fast else list(range(T_walk + 1))
fig = plt.figure(figsize=(5, 5))
ax = fig.add_subplot(projection="3d")
colour = traj_np[0, :, 0] ** 2 + traj_np[0, :, 2] ** 2


def draw(t):
    ax.clear()
    ax.scatter(*traj_np[t].T, s=3, c=colour, cmap="viridis")
    style3d(ax, f"random walk, t = {t}, spread s_t = {s_closed[t]:.2f}")
    ax.view_init(elev=18, azim=-62 + 2 * t)


anim = FuncAnimation(fig, draw, frames=frames)
anim.save(os.path.join(args.out, "01_random_walk_3d.gif"), writer=PillowWriter(fps=4), dpi=70)
plt.close(fig)

# %% [markdown]
# ## 2. VP chain in 2-D
#
# The DDPM forward chain (Ho et al. 2020, Eq. 2) shrinks as it adds noise, so the variance stays bounded:
#
#     x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) u_t,   u_t ~ N(0, I)     (forward.vp_chain)
#
# Unrolled, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with alpha_bar_t = prod (1 - beta_s)
# (forward.vp_chain_marginal returns the two coefficients). So the marginal density is a blurred,
# shrunk copy of the data:  q(x_t) = mean_i N(x_t; sqrt(ab_t) x0_i, (1 - ab_t) I)   (exact for our
# finite sample x0_i), and as ab_t -> 0 it becomes N(0, I) whatever the data was.
#
# What to see: the noise std grows like sqrt(t beta) at first, so the spiral's turns (0.5 apart) merge
# already by t ~ 20; by t = 60 only a lopsided blob is left; at t = 500 (ab = 0.0066) samples and
# density are indistinguishable from N(0, I) -- the point a sampler starts from.

# %%
spiral = datasets.get_dataset("spiral")
y0 = spiral.sample(n_points, rng=rng)           # (N, 2)
beta = np.full(500, 0.01)                       # the DL4DS slides' constant p = 0.01
chain = backend.to_numpy(forward.vp_chain(y0, beta, rng=rng))   # (501, N, 2), host
mean_coef, std_coef = forward.vp_chain_marginal(beta)            # sqrt(ab_t), sqrt(1 - ab_t), t = 0..500

steps_2d = [0, 2, 6, 20, 60, 500]
lim = 3.2
g = np.linspace(-lim, lim, grid_res)
gx, gy = np.meshgrid(g, g)
grid = np.stack([gx.ravel(), gy.ravel()], axis=1)               # (G, 2)
y0_np = backend.to_numpy(y0)

fig, axes = plt.subplots(2, len(steps_2d), figsize=(3.3 * len(steps_2d), 6.6))
for k, t in enumerate(steps_2d):
    a, s = mean_coef[t], std_coef[t]
    axes[0, k].scatter(*chain[t].T, s=2, alpha=0.6)
    axes[0, k].set_title(f"t = {t}: " + r"$\sqrt{\bar\alpha_t}$" + f" = {a:.3f}", fontsize=10)
    if t == 0:
        # at t = 0 the marginal is the data itself (a curve, no density): show the points
        axes[1, k].scatter(*y0_np.T, s=1, c="k")
        axes[1, k].set_title("q(x_0): the data (a curve)", fontsize=10)
    else:
        # exact density of q(x_t) on the grid: Gaussian mixture with one component per data point
        d2 = ((grid[:, None, :] - a * y0_np[None, :, :]) ** 2).sum(-1)   # (G, 1, 2) - (1, N, 2) -> (G, N)
        dens = np.exp(-d2 / (2 * s * s)).mean(1) / (2 * np.pi * s * s)  # (G, N) -> (G,)
        axes[1, k].imshow(dens.reshape(grid_res, grid_res), origin="lower", extent=(-lim, lim, -lim, lim),
                          cmap="magma")
        axes[1, k].set_title(r"exact $q(x_t)$, std $\sqrt{1-\bar\alpha_t}$" + f" = {s:.3f}", fontsize=10)
    for row in range(2):
        axes[row, k].set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
        axes[row, k].set_xticks([])
        axes[row, k].set_yticks([])
axes[0, 0].set_ylabel("samples $x_t$ (vp_chain)")
axes[1, 0].set_ylabel("marginal density")
fig.suptitle(r"VP chain $x_t=\sqrt{1-\beta}\,x_{t-1}+\sqrt{\beta}\,u_t$, $\beta$ = 0.01: a spiral becomes N(0, I)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "01_vp_chain_2d.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 3. VP chain in 1-D
#
# A three-mode 1-D data distribution (a Gaussian mixture, so q(x_t) has a closed form too):
# component k has mean m_k, std tau_k, weight w_k; after t steps the component becomes
# N(sqrt(ab_t) m_k, ab_t tau_k^2 + (1 - ab_t)) -- the data's own spread shrinks, the noise fills in.

# %%
m = np.array([-2.0, 0.5, 2.5])
tau = np.array([0.15, 0.3, 0.1])
w = np.array([0.3, 0.5, 0.2])
# pick component k with probability w_k by thresholding a uniform (rng.random is shared by both backends)
uni = backend.to_numpy(rng.random(20 * n_points))
comp = np.searchsorted(np.cumsum(w), uni)
z0 = m[comp] + tau[comp] * backend.to_numpy(rng.standard_normal(20 * n_points))
x1d = backend.to_numpy(forward.vp_chain(backend.asarray(z0[:, None]), beta, rng=rng))[:, :, 0]  # (501, N)

steps_1d = [0, 20, 50, 100, 200, 500]
xs = np.linspace(-4.5, 4.5, 400)
fig, axes = plt.subplots(1, len(steps_1d), figsize=(3.2 * len(steps_1d), 3.4), sharey=True)
for ax, t in zip(axes, steps_1d):
    a, s = mean_coef[t], std_coef[t]
    var_k = a * a * tau**2 + s * s                                      # (3,)
    pdf = (w / np.sqrt(2 * np.pi * var_k) * np.exp(-(xs[:, None] - a * m) ** 2 / (2 * var_k))).sum(1)  # (400, 3) -> (400,)
    ax.hist(x1d[t], bins=80, range=(-4.5, 4.5), density=True, color="tab:orange", alpha=0.6, label="histogram of $x_t$")
    ax.plot(xs, pdf, "k-", lw=1.5, label="closed-form $q(x_t)$")
    ax.plot(xs, np.exp(-xs**2 / 2) / np.sqrt(2 * np.pi), "b--", lw=1, label="N(0, 1)")
    ax.set_title(f"t = {t}, " + r"$\bar\alpha_t$" + f" = {a * a:.3f}", fontsize=10)
    ax.set_xlabel("x")
axes[-1].legend(fontsize=8, loc="upper right")  # t = 500: the top of the panel is empty, no data under it
fig.suptitle(r"1-D VP chain with p = $\beta$ = 0.01 (DL4DS slides): $X_T=(\sqrt{1-p})^T X_0+\sum_i \sqrt{p}(\sqrt{1-p})^i u_{T-i}$"
             r" $\to$ N(0, 1)")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "01_vp_chain_1d.png"), dpi=100)
plt.close(fig)

print(f"random walk: spread after {T_walk} steps: measured {s_measured[-1]:.3f}, closed form {s_closed[-1]:.3f}")
print(f"VP chain: alpha_bar_500 = {mean_coef[-1] ** 2:.4f}; std of x_500 (1-D) = {x1d[-1].std():.3f} (target 1)")
print("wrote 01_random_walk_3d.png/.gif, 01_vp_chain_2d.png, 01_vp_chain_1d.png into", args.out)
