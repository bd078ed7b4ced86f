"""Does gradient estimation (gamma > 1) beat DDIM at few steps on a toy manifold?

Permenter & Yuan (ICML 2024) report CIFAR-10 FID 3.79 (gamma = 2) vs 16.86 (DDIM) at 10 steps.
Here: a 2-D spiral, the exact ideal denoiser of a training set drawn from it (and optionally a
trained MLP checkpoint), samplers compared at equal denoiser calls (NFE 5, 10, 20; Heun with N
outer steps costs 2N - 1, so it gets N = 3, 5, 10 -> NFE 5, 9, 19), on log-linear and Karras grids
from sigma_max to sigma_min followed by a last step to 0.

Metrics (lower is better):
- dist: mean Euclidean distance of the samples to the true (continuous) spiral;
- SW: sliced Wasserstein-2 distance to a fresh sample of the spiral of the same size.
Rows "reference" give the noise floor: the training set itself and a second fresh sample.

Note the ideal denoiser of a finite set memorises: with enough steps every sample lands on a
training point (dist -> 0, SW -> the training set's own SW). What differs at few steps is how far
from the manifold the samplers stop.

    python benchmarks/bench_samplers.py [--fast] [--checkpoint model.npz] [--seeds 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from minidiff import backend, samplers
from minidiff.datasets import get_dataset
from minidiff.ideal import IdealDenoiser
from minidiff.schedules import karras_sigmas, log_linear_sigmas

from minidiff.metrics import sliced_wasserstein


def sw(a, b, seed):
    """SW_2 with 256 random directions drawn from ``seed`` (minidiff.metrics)."""
    return sliced_wasserstein(a, b, n_projections=256, rng=seed)


GRIDS = {"log-linear": log_linear_sigmas, "karras": karras_sigmas}

# name -> (sample() kwargs, grid kind): 'family' grids have NFE levels > 0 then 0 (NFE calls);
# 'heun' grids have N = (NFE + 1) // 2 levels then 0 (2N - 1 calls)
METHODS = {
    "ddim": dict(method="ddim"),
    "ddpm": dict(method="ddpm"),
    "ge gamma=1.5": dict(method="family", gamma=1.5, final_step="ddim"),
    "ge gamma=2": dict(method="gradient_estimation", final_step="ddim"),
    "ge gamma=2 (no final ddim)": dict(method="gradient_estimation"),
    "ge gamma=2.5": dict(method="family", gamma=2.5, final_step="ddim"),
    "ge gamma=3": dict(method="family", gamma=3.0, final_step="ddim"),
    "heun": dict(method="heun"),
    "dpmpp_2m": dict(method="dpmpp_2m"),
}


def grid_for(name, kwargs, nfe, grid, sigma_min, sigma_max):
    n = (nfe + 1) // 2 if kwargs["method"] == "heun" else nfe
    return [float(s) for s in GRIDS[grid](n, sigma_min, sigma_max)] + [0.0]


def run(denoiser, label, data, args, dtype):
    """{(method, grid, nfe): (dist mean, SW, actual nfe)} averaged over seeds."""
    results = {}
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        fresh = data.sample(args.n_samples, rng=backend.default_rng(2000 + seed))
        z = rng.standard_normal((args.n_samples, 2)).astype(dtype)
        for name, kwargs in METHODS.items():
            for grid in GRIDS:
                for nfe in args.nfe:
                    sigmas = grid_for(name, kwargs, nfe, grid, args.sigma_min, args.sigma_max)
                    den = samplers.CountingDenoiser(denoiser)
                    x = sigmas[0] * backend.asarray(z)
                    out = samplers.sample(den, sigmas, x, rng=backend.default_rng(3000 + seed), **kwargs)
                    dist = float(backend.to_numpy(data.distance(out)).mean())  # host scalar for the table
                    r = results.setdefault((name, grid, nfe), [[], [], den.calls])
                    r[0].append(dist)
                    r[1].append(sw(out, fresh, seed))
    return {k: (float(np.mean(v[0])), float(np.mean(v[1])), v[2]) for k, v in results.items()}


def table(results, metric, title, args):
    i = {"dist": 0, "sw": 1}[metric]
    cols = [(g, n) for g in GRIDS for n in args.nfe]
    lines = [f"**{title}**", "",
             "| method | " + " | ".join(f"{g} NFE {n}" for g, n in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name in METHODS:
        cells = []
        for g, n in cols:
            v = results[(name, g, n)]
            cells.append(f"{v[i]:.4f}" + (f" ({v[2]})" if v[2] != n else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fast", action="store_true", help="smaller sets and one seed (~seconds)")
    p.add_argument("--checkpoint", default=None, help="trained denoiser, loaded with minidiff.nn.load(path).model")
    p.add_argument("--seeds", type=int, default=None, help="runs averaged per cell (default 3, --fast 1)")
    p.add_argument("--n-train", type=int, default=None, help="training-set size of the ideal denoiser")
    p.add_argument("--n-samples", type=int, default=None, help="samples per run")
    p.add_argument("--sigma-min", type=float, default=0.01)
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.fast else 3)
    args.n_train = args.n_train or (500 if args.fast else 2000)
    args.n_samples = args.n_samples or (500 if args.fast else 2000)

    data = get_dataset("spiral")
    print(f"# bench_samplers: spiral, n_train={args.n_train}, n_samples={args.n_samples}, seeds={args.seeds}, "
          f"sigma in [{args.sigma_min}, {args.sigma_max}] then 0, backend={backend.get_backend()}")
    print("# SW: minidiff.metrics.sliced_wasserstein, 256 directions")
    print("# numbers in parentheses: actual NFE where it differs from the column's (Heun: 2N - 1)\n")
    train = data.sample(args.n_train, rng=backend.default_rng(0))
    fresh_a = data.sample(args.n_samples, rng=backend.default_rng(2000))
    fresh_b = data.sample(args.n_samples, rng=backend.default_rng(5000))
    floor_train = sw(train[: args.n_samples], fresh_a, 0)
    floor_fresh = sw(fresh_b, fresh_a, 0)
    print(f"reference: SW(training set[:{args.n_samples}], fresh) = {floor_train:.4f}; "
          f"SW(fresh, fresh') = {floor_fresh:.4f}; dist of both = 0\n")

    denoisers = [("ideal denoiser of the training set", IdealDenoiser(train), np.float64)]
    if args.checkpoint:
        from minidiff import nn
        ck = nn.load(args.checkpoint)
        model = ck.model
        if ck.ema_state is not None:  # sample with the EMA weights, as `minidiff sample` does
            ema = nn.EMA(model)
            ema.load_state_dict(ck.ema_state)
            ema.copy_to(model)
        dt = np.dtype(str(next(iter(dict(model.named_parameters()).values())).data.dtype))
        denoisers.append((f"trained model {args.checkpoint}", lambda x, s: model(x, s), dt))
    for label, den, dtype in denoisers:
        t0 = time.perf_counter()
        res = run(den, label, data, args, dtype)
        print(f"## {label} ({time.perf_counter() - t0:.1f} s)\n")
        print(table(res, "dist", "mean distance to the spiral", args) + "\n")
        print(table(res, "sw", "sliced Wasserstein-2 to fresh spiral samples", args) + "\n")


if __name__ == "__main__":
    main()
