"""Noise schedules: how fast each one destroys the signal, and the grids samplers walk.

    python demos/06_schedules.py [--fast] [--out DIR]

Writes ``06_schedules.png`` (alpha_bar, log-SNR and sigma against t/T for the linear,
cosine and scaled-linear schedules) and ``06_sigma_grids.png`` (the noise levels a sampler
visits with log-linear, Karras, leading, trailing and linspace grids). Runs in ~2 s; the
schedules are a few thousand float64 numbers, so --fast only shrinks T.

The math (docs/math.md §1-§2, all in ``minidiff.schedules``):

    alpha_bar_t = prod_{s<=t} (1 - beta_s)          alpha_bars(betas)
    sigma_t     = sqrt((1 - alpha_bar_t)/alpha_bar_t) sigmas_from_betas(betas)
    log-SNR     = log(alpha_bar / (1 - alpha_bar)) = -2 log sigma      log_snr(alpha_bar)

A VP state x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps is the VE state
x0 + sigma eps scaled by sqrt(alpha_bar), so alpha_bar and sigma are two views of one number.
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

from minidiff import schedules

parser = argparse.ArgumentParser(description="alpha_bar / log-SNR of three schedules and five sampling grids")
parser.add_argument("--fast", action="store_true", help="small T (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)  # notebook: defaults
os.makedirs(args.out, exist_ok=True)

T = 200 if args.fast else 1000  # number of training steps

# %% [markdown]
# ## 1. three schedules
#
# The betas are the per-step noise fractions of the VP chain x_t = sqrt(1-beta_t) x_{t-1} + sqrt(beta_t) u_t.
# Note the scaled-linear defaults (0.00085..0.012, Stable Diffusion) are a different range from the
# linear defaults (1e-4..0.02, Ho et al. 2020): "scaled" is about the sqrt-spacing AND the range.
#
# What to see: the linear schedule's alpha_bar is ~0 for the last ~third of the steps (those steps
# are "wasted" on pure noise); the cosine one falls evenly and its log-SNR is almost a straight
# line -- Nichol & Dhariwal's point that information should be destroyed at an even rate.
# The cosine sigma_max (~2e4 at T = 1000) comes from the clipped last beta (docs/math.md §2).

# %%
betas = {
    "linear (Ho et al. 2020)": schedules.linear_betas(T),
    "cosine (Nichol & Dhariwal 2021)": schedules.cosine_betas(T),
    "scaled linear (Stable Diffusion)": schedules.scaled_linear_betas(T),
}
u = (np.arange(T) + 1) / T  # t/T, so the curves of different T line up

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for name, b in betas.items():
    alpha_bar = schedules.alpha_bars(b)          # exp(cumsum(log1p(-beta))): exact near alpha_bar = 1
    sigma = schedules.sigmas_from_betas(b)       # sqrt(expm1(-sum log1p(-beta))): no 1 - alpha_bar cancellation
    # the cosine schedule clips its last beta at 0.999, so alpha_bar_{T-1} is tiny but not 0;
    # log_snr needs alpha_bar in (0, 1), which holds for all three
    lam = schedules.log_snr(alpha_bar)
    axes[0].plot(u, alpha_bar, label=name)
    axes[1].plot(u, lam, label=name)
    axes[2].semilogy(u, sigma, label=f"{name}: sigma_max = {sigma[-1]:.3g}")
axes[0].set(title=r"signal fraction $\bar\alpha_t=\prod_{s\leq t}(1-\beta_s)$", xlabel="t / T", ylabel=r"$\bar\alpha_t$")
axes[1].set(title=r"log-SNR $\lambda_t=\log\frac{\bar\alpha_t}{1-\bar\alpha_t}=-2\log\sigma_t$", xlabel="t / T",
            ylabel=r"$\lambda_t$")
axes[2].set(title=r"VE noise level $\sigma_t=\sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$", xlabel="t / T",
            ylabel=r"$\sigma_t$ (log scale)")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"Three training schedules, T = {T}")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "06_schedules.png"), dpi=110)
plt.close(fig)

# %% [markdown]
# ## 2. sampling grids
#
# A sampler walks a short decreasing list of noise levels sigma_0 > ... > sigma_N (then 0).
# Integer spacings pick N training indices of a schedule (minidiff.schedules.timesteps):
#   leading  : arange(N) * (T // N), reversed          -> never visits t = T-1 (the noisiest level)
#   trailing : round(arange(T, 0, -T/N)) - 1           -> starts at T-1
#   linspace : round(linspace(0, T-1, N)), reversed    -> contains both T-1 and 0
# Pure sigma grids live between sigma_min and sigma_max:
#   log-linear: constant ratio sigma_{i+1}/sigma_i     (log_linear_sigmas)
#   Karras    : (smax^(1/rho) + i/(N-1)(smin^(1/rho) - smax^(1/rho)))^rho, rho = 7  (karras_sigmas):
#               spends more steps at small sigma, where detail is decided.
#
# What to see (T = 1000, N = 10): "leading" starts at sigma ~ 61 rather than sigma_max ~ 157 -- the
# sampler's first step starts from noise that is too small (Lin et al. 2024 fix it with "trailing").
# "trailing" in turn stops at sigma ~ 0.33 and jumps from there straight to 0 (the last step
# returns x0_hat); log-linear and Karras cover the whole range, Karras crowding the small sigmas.

# %%
N = 10
sched = schedules.Schedule.linear(T)
grids = {
    "log-linear": schedules.log_linear_sigmas(N, sched.sigma_min, sched.sigma_max),
    "Karras, rho=7": schedules.karras_sigmas(N, sched.sigma_min, sched.sigma_max),
    "leading": sched.sigmas[schedules.timesteps(N, T, "leading")],
    "trailing": sched.sigmas[schedules.timesteps(N, T, "trailing")],
    "linspace": sched.sigmas[schedules.timesteps(N, T, "linspace")],
}

fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
ax = axes[0]
ax.semilogx(sched.sigmas, np.full(T, len(grids)), "|", color="0.7", ms=12)  # the full training grid
for row, (name, grid) in enumerate(grids.items()):
    y = len(grids) - 1 - row
    ax.semilogx(grid, np.full(N, y), "o-", ms=6, label=name)
    ax.annotate(f"max {grid[0]:.3g}", (grid[0], y), textcoords="offset points", xytext=(6, 6), fontsize=7)
ax.set_yticks(range(len(grids) + 1), list(grids)[::-1] + [f"training grid (T={T})"])
ax.set(title=f"The {N} noise levels a sampler visits (linear schedule), log sigma axis",
       xlabel=r"$\sigma$")
ax.grid(alpha=0.3, axis="x")

# Right: the same grids as "log sigma against step index": log-linear is a straight line.
ax = axes[1]
for name, grid in grids.items():
    ax.semilogy(np.arange(N), grid, "o-", ms=4, label=name)
ax.set(title="sigma_i against step i", xlabel="sampling step i", ylabel=r"$\sigma_i$ (log scale)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "06_sigma_grids.png"), dpi=110)
plt.close(fig)

# %% [markdown]
# ## 3. a classic bug, in numbers
#
# A 50-step linear schedule leaves alpha_bar_T = 0.60: the "noise" a sampler starts from still carries
# 60 % of the signal. Schedule.check_terminal_noise warns about it (KL bound rms^2 / (2 sigma_max^2) too big).

# %%
short = schedules.Schedule.linear(T=50)
print(f"T=50 linear: alpha_bar_T = {short.alpha_bars[-1]:.3f}, sigma_max = {short.sigma_max:.3f}")
print(f"T={T} linear: sigma_max = {sched.sigma_max:.4g}; cosine: "
      f"{schedules.Schedule.cosine(T).sigma_max:.4g}; scaled linear: {schedules.Schedule.scaled_linear(T).sigma_max:.4g}")
print("wrote", os.path.join(args.out, "06_schedules.png"), "and", os.path.join(args.out, "06_sigma_grids.png"))
