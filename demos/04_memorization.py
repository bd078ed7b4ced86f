"""The ideal denoiser memorises; a trained network generalises.

    python demos/04_memorization.py [--fast] [--out DIR]

Writes ``04_memorization.png``: 300 training points on a spiral; samples from the ideal denoiser of
those points (they land ON training points) and from an MLP trained on the same points (new points
along the curve, between the training points); zoomed crops; and the histogram of d1/d2, the ratio of
each sample's distance to its nearest and second-nearest training point, with the memorisation rate.

Runtime on 2 cores: full ~2-5 s if demo 03 already trained and cached the MLP in DIR (else add its
~15-20 s of training); --fast ~4 s.

Why (Permenter & Yuan 2024; docs/math.md §9): for data uniform on a finite set K the loss
E|eps_hat(x0 + sigma eps, sigma) - eps|^2 has an exact minimiser, the ideal denoiser
    x0_hat(x, sigma) = sum_i softmax_i(-|x - x_i|^2 / (2 sigma^2)) x_i,
and as sigma -> 0 the softmax picks the nearest x_i: every sampler run with it ends ON a training
point. A perfectly trained network would do the same. A real one, with finite capacity and training,
learns a smoother function -- and that is what lets it generate new points.
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

from minidiff import backend, datasets, metrics
from minidiff.ideal import IdealDenoiser
from minidiff.runs import TrainConfig, fit
from minidiff.samplers import sample
from minidiff.schedules import log_linear_sigmas

parser = argparse.ArgumentParser(description="memorisation: ideal denoiser vs trained MLP")
parser.add_argument("--fast", action="store_true", help="tiny sizes (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)  # notebook: defaults
os.makedirs(args.out, exist_ok=True)

# %% [markdown]
# ## 1. the same model as demo 03
#
# The spiral MLP of demo 03 (loaded from its cache when demo 03 ran first) and the ideal denoiser of
# the same 300 training points: the exact minimiser of the training loss for this data set.

# %%
cfg = TrainConfig(dataset="spiral", n_train=300, hidden=(128, 128, 128, 128), batch_size=512,
                  steps=150 if args.fast else 4000, lr=2e-3, warmup_steps=50 if args.fast else 100,
                  sigma_min=0.005, sigma_max=80.0, seed=0)
# Trains, or loads the run an earlier 03/04/05 saved with this exact config (fit's checkpoint as a cache).
result = fit(cfg, checkpoint_path=os.path.join(args.out, f"spiral_mlp_n{cfg.n_train}_steps{cfg.steps}.npz"),
             resume=True, progress=False)
model, data = result.ema_model, result.data
if result.seconds > 1.0:
    print(f"trained the MLP in {result.seconds:.1f} s ({cfg.steps} steps)")
data = data.astype("float32")
ideal = IdealDenoiser(data)
spiral = datasets.get_dataset("spiral")  # the true curve, for the distance to the manifold

# %% [markdown]
# ## 2. sample both
#
# DDIM (gamma = 1, mu = 0): x <- x - (s - s') eps_hat(x, s) on a log-linear grid from sigma_max = 80 down
# to 0.001, then a last step to sigma = 0 that returns x0_hat. Same starting noise for both.
# Why 0.001, below the MLP's smallest training sigma (0.005)? The training points are on average 0.04
# apart but randomly placed, so some pairs are only ~0.01 apart; the ideal denoiser separates them only
# once sigma is well below their gap. (For the MLP the last steps move x by ~0.005 |eps_hat|: harmless.)

# %%
n_samples = 300 if args.fast else 1000
n_steps = 20 if args.fast else 50
sigmas = np.concatenate([log_linear_sigmas(n_steps, 0.001, cfg.sigma_max), [0.0]])
rng = backend.default_rng(7)
x_T = float(sigmas[0]) * rng.standard_normal((n_samples, 2), dtype="float32")  # x ~ N(0, sigma_max^2 I)

results = {}
for name, den in [("ideal denoiser", ideal), ("trained MLP", model)]:
    x0 = sample(den, sigmas, x_T, method="ddim")
    # memorization_rate: share of samples with d1 < d2 / 3 (d1, d2: distances to the nearest and second
    # nearest training point). A copy of a training point has d1 = 0; a new point between two neighbours
    # on the curve has d1 ~ d2 / 2 or more.
    d12 = backend.to_numpy(metrics.knn_distances(x0, data, k=2))
    results[name] = dict(x=backend.to_numpy(x0), ratio=d12[:, 0] / np.maximum(d12[:, 1], 1e-12),
                         mem=metrics.memorization_rate(x0, data),
                         dist=metrics.manifold_distance(x0, spiral)["median"])
    print(f"{name:15s}: memorisation rate {results[name]['mem']:.3f}, "
          f"median distance to the true spiral {results[name]['dist']:.4f}")

# %% [markdown]
# ## 3. the figure
#
# What to see: the ideal denoiser's samples sit exactly on training points (d1/d2 ~ 0, rate ~ 1) --
# it can only reproduce its training set. The MLP's samples fill the curve BETWEEN the training points
# (d1/d2 spread over (0, 1)): generalisation, at the price of a small distance off the true curve
# (its samples sit slightly on the inner side of the turns, and a few land between the turns).
# With fewer training points or a bigger network trained longer, the MLP drifts toward memorising too.

# %%
data_np = backend.to_numpy(data)
fig, axes = plt.subplots(2, 3, figsize=(15, 10))
axes[0, 0].scatter(*data_np.T, s=8, c="tab:blue")
axes[0, 0].set_title(f"training set: {cfg.n_train} points on the spiral")
zoom = (0.5, 1.3, -0.3, 0.9)  # a window on the outer turn
for col, (name, r) in enumerate(results.items(), start=1):
    for row, window in enumerate([None, zoom]):
        ax = axes[row, col]
        ax.scatter(*data_np.T, s=30 if window else 8, facecolors="none", edgecolors="tab:blue", label="training")
        ax.scatter(*r["x"].T, s=6 if window else 3, c="tab:red", alpha=0.6, label="samples")
        if window:
            ax.set(xlim=window[:2], ylim=window[2:])
            ax.set_title(f"{name}, zoom", fontsize=10)
        else:
            ax.set_title(f"{name}: memorisation rate {r['mem']:.2f}\n"
                         f"median distance to the true spiral {r['dist']:.3f}", fontsize=10)
            ax.add_patch(plt.Rectangle((zoom[0], zoom[2]), zoom[1] - zoom[0], zoom[3] - zoom[2], fill=False, ls="--"))
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="lower left")
for ax in axes[0]:
    ax.set(xlim=(-2.4, 2.4), ylim=(-2.4, 2.4))
ax = axes[1, 0]
bins = np.linspace(0, 1, 41)
for name, r in results.items():
    ax.hist(r["ratio"], bins=bins, alpha=0.6, label=name)
ax.axvline(1 / 3, color="k", ls="--", label="threshold d1/d2 = 1/3")
ax.set(xlabel="d1 / d2 (nearest / second-nearest training point)", ylabel="samples",
       title="memorised samples sit left of the line")
ax.legend(fontsize=8)
fig.suptitle(f"Memorisation: DDIM, {n_steps} steps, same starting noise for both denoisers")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "04_memorization.png"), dpi=100)
plt.close(fig)
print("wrote 04_memorization.png into", args.out)
