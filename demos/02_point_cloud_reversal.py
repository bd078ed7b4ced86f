"""Reversing diffusion without a model: walk back through the stored point clouds.

    python demos/02_point_cloud_reversal.py [--fast] [--out DIR]

Writes into DIR (default ``minidiff-out/demos``):

- ``02_point_cloud_reversal.png``: the figure of the "Unit 10 – Diffusion Models" lecture notes --
  the cloud at t = 20, the reversed end points on the swiss-roll sheet, a crop with the
  trajectories of a few points, and the distance to the surface along the way.
- ``02_reversal_knobs.png``: what the two knobs do (neighbourhood size k, re-injected noise):
  distance to the surface against novelty (distance to the nearest original point).

Full mode ~10 s on 2 cores; --fast ~3 s.

The procedure (the lecture notes' ``minidiff.reversal.reverse_point_clouds``). The forward walk
x^t = x^{t-1} + sigma_t w^t (``minidiff.forward.random_walk``) keeps every cloud. From a point x at
time t:

    N(x) = the k points of cloud t-1 nearest to x (or those within a radius)
    mu   = sum_j w_j p_j / sum_j w_j,   w_j = 1 / |x - p_j|          (inverse-distance mean)
    x'   = mu + noise_scale * sigma_t * z,   z ~ N(0, I)

Cloud t-1 is on average closer to the manifold than cloud t, so the local mean moves x toward it;
the Gaussian draw makes the end points new points rather than copies of the data. This needs every
intermediate cloud -- impossible for real data, which is why diffusion models learn the direction
instead (demo 03).
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

from minidiff import backend, datasets, forward, metrics
from minidiff.reversal import reverse_point_clouds

parser = argparse.ArgumentParser(description="non-parametric reversal of a 3-D random walk")
parser.add_argument("--fast", action="store_true", help="tiny sizes (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)  # notebook: defaults
os.makedirs(args.out, exist_ok=True)

n_points = 600 if args.fast else 2500
rng = backend.default_rng(1)

# %% [markdown]
# ## 1. forward, then back
#
# The forward walk of demo 01 on the swiss-roll sheet, keeping every cloud; then every point of the last
# cloud is walked back one step at a time (a local mean in the previous cloud plus fresh noise,
# docs/math.md §3). No figure yet: the printed numbers say how close to the surface the end points are
# and whether they are new points or copies of the data.

# %%
surface = datasets.get_dataset("swiss_roll_3d")
x0 = surface.sample(n_points, rng=rng)                    # (N, 3), on the sheet
T = 20
step_sigmas = np.full(T, 0.12)                            # as in demo 01: s_20 = 0.12 sqrt(20) = 0.54
traj = forward.random_walk(x0, step_sigmas, rng=rng)      # (T + 1, N, 3), every cloud kept

# Reverse every point of the last cloud. k = 8 neighbours; noise_scale = 1 re-injects exactly the
# forward step's sigma (the lecture notes' "small covariance").
rev = reverse_point_clouds(traj, step_sigmas, k=8, noise_scale=1.0, rng=2)
path = backend.to_numpy(rev.path)                         # (T + 1, N, 3): path[20] = start, path[0] = end
end = rev.path[0]

# How close to the surface, and how new? metrics.manifold_distance uses the exact projection onto the
# sheet; the distance to the nearest ORIGINAL point (metrics.knn_distances) tells whether the end
# points are copies of x0 (distance 0) or new points.
d_end = metrics.manifold_distance(end, surface)
d_start = metrics.manifold_distance(rev.path[T], surface)
nn_end = backend.to_numpy(metrics.knn_distances(end, x0, k=1))[:, 0]
nn_data = backend.to_numpy(metrics.knn_distances(x0, x0, k=2))[:, 1]  # data's own spacing, for scale
dist_along = [metrics.manifold_distance(rev.path[t], surface)["mean"] for t in range(T + 1)]
dist_forward = [metrics.manifold_distance(traj[t], surface)["mean"] for t in range(T + 1)]
print(f"mean distance to the surface: start (t=20) {d_start['mean']:.3f} -> end {d_end['mean']:.3f}")
print(f"end points: median distance to the nearest original point {np.median(nn_end):.3f} "
      f"(the data's own nearest-neighbour spacing: {np.median(nn_data):.3f})")

# %% [markdown]
# ## 2. the figure
#
# What to see: the end points lie on the sheet (both layers of the roll are recovered and the inner
# turn is not smeared into the outer one), yet they are not the original points: each is a
# mean of neighbours plus fresh noise. Reversal tracks the forward curve in the right panel: the local
# mean undoes one forward step at a time. With noise_scale = 1 the last step adds noise of size
# sigma_1 = 0.12 back on, so the end cloud sits ~0.1 off the surface -- the price of novelty.

# %%
manifold = backend.to_numpy(surface.sample(3000 if args.fast else 8000, rng=rng))


def style3d(ax, title, lim=((-2.5, 2.5),) * 3):
    ax.set_title(title, fontsize=10)
    ax.set(xlim=lim[0], ylim=lim[1], zlim=lim[2])
    ax.view_init(elev=18, azim=-62)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])


fig = plt.figure(figsize=(19, 5.5))
ax = fig.add_subplot(1, 4, 1, projection="3d")
ax.scatter(*path[T].T, s=2, c="0.4")
style3d(ax, f"start: the cloud at t = {T}")

ax = fig.add_subplot(1, 4, 2, projection="3d")
ax.scatter(*manifold.T, s=1, c="0.85", alpha=0.3)
dist_colour = backend.to_numpy(surface.distance(end))
sc = ax.scatter(*path[0].T, s=3, c=dist_colour, cmap="viridis_r", vmin=0, vmax=0.3)
fig.colorbar(sc, ax=ax, shrink=0.6, label="distance to the surface")
style3d(ax, f"end points after reversing {T} steps\nmean distance {d_end['mean']:.3f} (start {d_start['mean']:.3f})")

# A crop: points whose end lies in a slab of the sheet, and their whole trajectories (t = 20 -> 0).
ax = fig.add_subplot(1, 4, 3, projection="3d")
in_crop = np.where((path[0, :, 1] > 0.2) & (path[0, :, 1] < 1.0) & (path[0, :, 0] > 0.3))[0][:25]
crop_m = manifold[(manifold[:, 1] > 0.2) & (manifold[:, 1] < 1.0) & (manifold[:, 0] > 0.3)]
ax.scatter(*crop_m.T, s=1, c="0.7", alpha=0.4)
for i in in_crop:
    ax.plot(*path[:, i].T, lw=0.8, alpha=0.8)
    ax.scatter(*path[0, i], s=12, c="k")
crop_lim = [(min(path[:, in_crop, j].min(), 0.0), path[:, in_crop, j].max()) for j in range(3)]
style3d(ax, "crop (zoomed): trajectories t = 20 -> 0 (black: end)", lim=crop_lim)

ax = fig.add_subplot(1, 4, 4)
ax.plot(range(T + 1), dist_forward, "o-", ms=3, label="forward walk: cloud t")
ax.plot(range(T + 1), dist_along, "s-", ms=3, label="reversal: cloud at t")
ax.set(xlabel="t", ylabel="mean distance to the surface", title="distance to the manifold along the way")
ax.invert_xaxis()  # read left to right as the reversal runs: t = 20 -> 0
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.suptitle("Reversing the random walk with the stored clouds: local inverse-distance means + Gaussian draws")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "02_point_cloud_reversal.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## 3. the knobs
#
# Two failure modes (documented in minidiff.reversal): k too large averages a wide region (points are
# pulled inward, off the roll); no noise (noise_scale = 0) copies the forward clouds' structure back.
# We sweep both and plot closeness (mean distance to the surface) against novelty (median distance to
# the nearest original data point; 0 = copies).
#
# What to see: without noise, k = 1 walks each point back onto an ORIGINAL data point (novelty 0,
# distance 0: pure memorisation, by construction); larger k gives new points but drifts off the
# surface (over-smoothing: k = 64 averages across a wide patch). With noise the end cloud's distance
# to the surface is set by the very last draw, ~ noise_scale * sigma_1 * 0.8 (the normal component of
# a 3-D Gaussian step), and k hardly matters: the re-injected noise buys novelty at a fixed cost in
# closeness. (Demo 05's final_noise / DDPM sampler make the same trade.)

# %%
fig, ax = plt.subplots(figsize=(7, 5))
for noise_scale, marker in [(0.0, "o"), (0.5, "s"), (1.0, "^")]:
    pts = []
    for k in ([1, 8, 64] if args.fast else [1, 4, 16, 64]):
        r = reverse_point_clouds(traj, step_sigmas, k=k, noise_scale=noise_scale, rng=3)
        close = metrics.manifold_distance(r.path[0], surface)["mean"]
        novel = float(np.median(backend.to_numpy(metrics.knn_distances(r.path[0], x0, k=1))))
        pts.append((novel, close))
        if noise_scale == 0.0 or k == 1:  # label once per k (the noisy runs' points overlap)
            ax.annotate(f"k={k}", (novel, close), textcoords="offset points", xytext=(4, 3), fontsize=7)
    pts = np.array(pts)
    ax.plot(pts[:, 0], pts[:, 1], marker + "-", label=f"noise_scale = {noise_scale}")
ax.set_yscale("symlog", linthresh=1e-3)  # k = 1 without noise sits exactly on the data: distance 0
ax.axvline(np.median(nn_data), color="0.5", ls=":", label="data's own NN spacing")
ax.set(xlabel="novelty: median distance to the nearest original point",
       ylabel="mean distance to the surface (symlog)",
       title="Reversal knobs: closeness vs novelty")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "02_reversal_knobs.png"), dpi=100)
plt.close(fig)
print("wrote 02_point_cloud_reversal.png, 02_reversal_knobs.png into", args.out)
