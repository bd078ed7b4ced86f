"""Image sample quality, measured: glyph FID against NFE for six samplers and two parametrisations.

    python demos/13_image_quality.py [--fast] [--out DIR]

Writes into DIR (default ``minidiff-out/demos``):

- ``13_fid_vs_nfe.png``: the table of ``benchmarks/bench_image_samplers.py`` as curves. One panel per
  model (a 16x16 glyph U-Net trained with eps-prediction on the schedule's grid, and the same network
  with the EDM preconditioning and log-normal noise levels of Karras et al. 2022, at equal training
  compute): glyph FID (mean +- standard error over sampling seeds) against the number of denoiser calls,
  one line per sampler, and the real-vs-real noise floor as a grey band; below, the share of "bad"
  samples (a pixel outside [-1.2, 1.2] or the glyph classifier's confidence below 0.5).

The full run plots the committed result of the benchmark (``benchmarks/results/image_samplers.json``,
about an hour on 2 cores to reproduce); without that file it runs the benchmark's quick settings (~10
minutes). ``--fast`` (~40 s) runs the benchmark on two U-Nets trained for 10 steps: the curves are drawn
but the numbers mean nothing, and the figure says so.

What to see (full run): the EDM panel lies far below the eps panel at every NFE (the preconditioning
keeps the network's input and target at unit variance at every noise level, docs/quality.md §3); on
the EDM model gradient estimation and DPM-Solver++(2M) reach the floor region with fewer calls than
DDIM; Heun needs 2N - 1 calls for N levels and diverges on very short grids. The glyph FID is
measured in the feature space of a small glyph classifier and is not comparable to Inception FID
(docs/quality.md §4).
"""

# %%
import argparse
import json
import os
import subprocess
import sys

import minidiff  # noqa: F401  (first: picks the BLAS thread count before NumPy loads)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

parser = argparse.ArgumentParser(description="glyph FID against NFE for six samplers, eps vs EDM")
parser.add_argument("--fast", action="store_true", help="a tiny live run (meaningless numbers, for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args([] if "ipykernel" in sys.modules else None)
os.makedirs(args.out, exist_ok=True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_image_samplers.py")
COMMITTED = os.path.join(ROOT, "benchmarks", "results", "image_samplers.json")

# %% [markdown]
# ## 1. the table: the committed benchmark run, or a live one

# %%
if args.fast or not os.path.exists(COMMITTED):
    path = os.path.join(args.out, "13_table.json")
    quick = (["--steps", "10", "--n", "40", "--nfe", "2", "4", "--seeds", "2", "--reader-steps", "20",
              "--gammas", "3"] if args.fast else
             ["--steps", "400", "--n", "200", "--nfe", "5", "10", "20", "--seeds", "2", "--reader-steps", "400",
              "--gammas", "3"])
    subprocess.run([sys.executable, BENCH, *quick, "--cache", os.path.join(args.out, "13_cache"), "--out", path],
                   check=True, cwd=ROOT)
    source = "tiny --fast run: 10 training steps, numbers meaningless" if args.fast else "quick run (400 steps)"
else:
    path, source = COMMITTED, "committed benchmark run"
with open(path) as f:
    table = json.load(f)
floor = np.asarray(table["floor"], dtype=float)
floor_m = floor.mean()
floor_se = floor.std(ddof=1) / np.sqrt(len(floor)) if len(floor) > 1 else 0.0
# rows: (model, sampler, NFE, calls, FID mean, FID SE, precision, recall, bad %)
rows = [tuple(r) for r in table["rows"]]
models = sorted({r[0] for r in rows})

# %% [markdown]
# ## 2. the figure

# %%
BASES = ["DDIM", "DDPM", "GE gamma=2", "Heun", "DPM-Solver++(2M)", "GE best gamma"]
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
fig, axes = plt.subplots(2, len(models), figsize=(6.2 * len(models), 7.6), squeeze=False,
                         gridspec_kw={"height_ratios": [2.2, 1]})
for j, model in enumerate(models):
    ax, axb = axes[0, j], axes[1, j]
    samplers = []
    for r in rows:
        if r[0] == model and r[1] not in samplers:
            samplers.append(r[1])
    for name in samplers:
        rs = sorted((r for r in rows if r[0] == model and r[1] == name), key=lambda r: r[3])
        calls = [r[3] for r in rs]
        base = name.split(" (")[0]  # "GE best gamma (GE gamma=3)": one colour per sampler in every panel
        color = COLORS[BASES.index(base) % len(COLORS)] if base in BASES else "k"
        ax.errorbar(calls, [r[4] for r in rs], yerr=[r[5] for r in rs], marker="o", ms=4, capsize=2,
                    color=color, label=base)
        axb.plot(calls, [r[8] for r in rs], marker="o", ms=4, color=color)
    ticks = sorted({r[2] for r in rows if r[0] == model})  # the nominal NFE (Heun's 2N - 1 calls sit beside them)
    for a in (ax, axb):
        a.set_xscale("log")
        a.set_xticks(ticks)
        a.set_xticklabels([str(t) for t in ticks])
        a.minorticks_off()
    ax.axhspan(max(floor_m - 2 * floor_se, 1e-3), floor_m + 2 * floor_se, color="0.8", zorder=0)
    ax.axhline(floor_m, color="0.5", lw=1, ls="--", label="real vs real (floor)")
    ax.set_yscale("log")
    ax.set_xlabel("denoiser calls (NFE)")
    ax.set_ylabel("glyph FID (log)")
    ax.set_title(f"{model} U-Net: glyph FID vs NFE", fontsize=10)
    axb.set_ylim(-3, 103)
    axb.set_xlabel("denoiser calls (NFE)")
    axb.set_ylabel("bad samples %")
    ax.grid(alpha=0.3)
    axb.grid(alpha=0.3)
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="upper center", ncol=7, fontsize=8, frameon=False)  # above the panels
n = table["args"]["n"]
fig.suptitle(f"{source}; n = {n} samples per point, mean +- SE over {len(floor)} seeds; "
             f"floor {floor_m:.2f} +- {floor_se:.2f}", y=0.005, va="bottom", fontsize=9)
fig.tight_layout(rect=(0, 0.03, 1, 0.94))
fig.savefig(os.path.join(args.out, "13_fid_vs_nfe.png"), dpi=100)
plt.close(fig)
best = min((r for r in rows if r[2] == 20 or r[3] <= 20), key=lambda r: r[4], default=None)
if best is not None:
    print(f"best at <= 20 calls: {best[0]} {best[1]} ({best[3]} calls): glyph FID {best[4]:.2f} "
          f"= {best[4] / floor_m:.1f} x the floor")
print(f"wrote {os.path.join(args.out, '13_fid_vs_nfe.png')} ({source})")
