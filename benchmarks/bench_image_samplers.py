r"""Glyph FID against NFE for six samplers and two parametrisations: the Permenter-Yuan table on images.

Permenter & Yuan (ICML 2024) report that gradient estimation (gamma = 2) beats DDIM at few steps
(CIFAR-10 FID 3.79 vs 16.86 at 10 steps). This script asks the same question on 16x16 glyphs:

1. trains the glyph feature map (``minidiff.metrics.GlyphFeatures``: a hand-written classifier on clean
   ``glyphs16``; its last hidden layer) and measures the **noise floor**: glyph FID between two
   independent sets of real glyphs of the sample size n, per seed;
2. trains two U-Nets at **equal training compute** (same architecture, steps, batch, optimiser): one with
   the eps parametrisation on the schedule's grid (the library default), one with the EDM
   preconditioning of Karras et al. 2022 and log-normal noise levels (``sigma_data`` = the training
   pixels' standard deviation). Both are cached in ``--cache`` (``fit(resume=True)``);
3. samples n glyphs per (model, sampler, NFE, seed) from the same starting noise per seed and reports
   the glyph FID (mean +- standard error over seeds), k-NN precision and recall in the same feature
   space, and the "bad" share: samples with a pixel outside [-1.2, 1.2] or classifier confidence < 0.5.

Samplers (all end with a step to sigma = 0 on the ``--grid`` from sigma_max to sigma_min; default
Karras et al.'s rho = 7 grid, the image default of ``minidiff sample``):
DDIM, DDPM, gradient estimation with gamma = 2 and the best of ``--gammas`` (chosen per NFE on the
same seeds: optimistic), Heun (N levels cost 2N - 1 calls, so N = (NFE + 1) // 2) and DPM-Solver++(2M).
The family methods end with a plain DDIM step, as the CLI does.

The glyph FID is not comparable to Inception FID (docs/quality.md §4): read each row against the floor.

    python benchmarks/bench_image_samplers.py       # the full table: ~1 hour on 2 cores (--jobs 2)
    python benchmarks/bench_image_samplers.py --steps 400 --n 200 --nfe 5 10 20 --seeds 2   # a quick look

With ``--jobs 2`` (the default) the two models run in two processes of one BLAS thread each; their
results are merged into one table and, with ``--out``, one JSON file (``benchmarks/results/
image_samplers.json`` is the committed run, plotted by ``demos/13_image_quality.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np  # benchmarks run on the host

import minidiff as md
from minidiff import backend, samplers
from minidiff.metrics import GlyphFeatures, glyph_fid
from minidiff.runs import IMAGE_DEFAULTS, TrainConfig, fit, make_denoiser, make_schedule

METHODS = {  # name -> iter_sample kwargs
    "DDIM": dict(method="ddim", final_step="ddim"),
    "DDPM": dict(method="ddpm", final_step="ddim"),
    "GE gamma=2": dict(method="gradient_estimation", final_step="ddim"),
    "Heun": dict(method="heun"),
    "DPM-Solver++(2M)": dict(method="dpmpp_2m"),
}


def sigmas_for(kwargs, nfe, schedule, grid):
    n = (nfe + 1) // 2 if kwargs["method"] == "heun" else nfe
    return [float(s) for s in schedule.sampling_sigmas(n, spacing=grid, final_zero=True)]


def draw(denoiser, kwargs, nfe, z, seed, schedule, grid):
    sig = sigmas_for(kwargs, nfe, schedule, grid)
    den = samplers.CountingDenoiser(denoiser)
    x = samplers.sample(den, sig, sig[0] * z, rng=backend.default_rng(3000 + seed), **kwargs)
    return x, den.calls


def bad_mask(x, feats):
    """The "bad" samples: a pixel outside [-1.2, 1.2], or the glyph classifier's confidence below 0.5 (n,)."""
    xh = backend.to_numpy(x)
    return (np.abs(xh).reshape(len(xh), -1).max(1) > 1.2) | (backend.to_numpy(feats.confidence(x)) < 0.5)


def summarise(values):
    v = np.asarray(values, dtype=float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(se)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=IMAGE_DEFAULTS["steps"],
                    help=f"U-Net training steps, each model (default {IMAGE_DEFAULTS['steps']}, the CLI's)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=500, help="samples per (model, sampler, NFE, seed)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--gammas", type=float, nargs="+", default=[1.5, 3.0])
    ap.add_argument("--grid", default="karras", choices=["karras", "log_linear"], help="noise-level grid")
    ap.add_argument("--jobs", type=int, default=2, help="models run in parallel processes (default 2)")
    ap.add_argument("--reader-steps", type=int, default=1500)
    ap.add_argument("--models", nargs="+", default=["eps", "edm"], choices=["eps", "edm"])
    ap.add_argument("--cache", default=os.path.join("benchmarks", ".cache"))
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--table", default=None, metavar="JSON",
                    help="only print the compact README table of a finished run's JSON, and exit")
    args = ap.parse_args()
    if args.table:
        return compact_table(args.table)
    os.makedirs(args.cache, exist_ok=True)
    if args.jobs > 1 and len(args.models) > 1:
        return run_parallel(args)
    t_start = time.perf_counter()
    print(f"bench_image_samplers: steps {args.steps}, batch {args.batch}, n {args.n}, NFE {args.nfe}, "
          f"seeds {args.seeds}, gammas {args.gammas}; load {os.getloadavg()[0]:.1f}", flush=True)

    ds = md.get_dataset("glyphs16")
    t = time.perf_counter()
    feats = GlyphFeatures.train("glyphs16", steps=args.reader_steps, seed=0)
    xr, yr = ds.sample(2000, md.default_rng(99), return_labels=True)
    acc = float((feats.predict(xr) == yr).mean())
    print(f"glyph classifier: {args.reader_steps} steps in {time.perf_counter() - t:.0f} s, accuracy on fresh "
          f"real glyphs {acc:.3f}", flush=True)

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    reals = {s: ds.sample(args.n, md.default_rng(5000 + s)) for s in seeds}  # reference sets
    floor = [glyph_fid(reals[s], ds.sample(args.n, md.default_rng(6000 + s)), feats)["fid"] for s in seeds]
    floor_m, floor_se = summarise(floor)
    print(f"noise floor (real vs real, n = {args.n}): glyph FID {floor_m:.3f} +- {floor_se:.3f}", flush=True)

    data_sd = float(np.std(backend.to_numpy(ds.sample(4000, md.default_rng(0)))))
    # the CLI's image defaults (EDM), and the same with eps-prediction on the schedule's grid: equal compute
    configs = {
        "eps": TrainConfig.for_images(dataset="glyphs16", steps=args.steps, batch_size=args.batch,
                                      parametrization="eps", sigma_distribution="schedule", checkpoint_every=500),
        "edm": TrainConfig.for_images(dataset="glyphs16", steps=args.steps, batch_size=args.batch,
                                      checkpoint_every=500),
    }
    rows, results = [], {"floor": floor, "classifier_accuracy": acc, "args": vars(args), "data_sd": data_sd}
    for name in args.models:
        cfg = configs[name]
        t = time.perf_counter()
        res = fit(cfg, checkpoint_path=os.path.join(args.cache, f"unet-{name}-{args.steps}.npz"), resume=True,
                  progress=False)
        den = make_denoiser(res.ema_model, cfg)
        schedule = make_schedule(cfg)
        print(f"model {name}: {args.steps} steps ({time.perf_counter() - t:.0f} s, cached runs load in ~1 s); "
              f"final loss {np.mean(res.losses[-100:]):.4f}", flush=True)
        methods = dict(METHODS)
        methods.update({f"GE gamma={g:g}": dict(method="family", gamma=g, final_step="ddim") for g in args.gammas})
        per = {}
        for seed in seeds:
            z = backend.asarray(np.random.default_rng(1000 + seed).standard_normal((args.n, 1, 16, 16)),
                                dtype="float32")
            for mname, kw in methods.items():
                for nfe in args.nfe:
                    t = time.perf_counter()
                    x, calls = draw(den, kw, nfe, z, seed, schedule, args.grid)
                    m = glyph_fid(reals[seed], x, feats)
                    bad = bad_mask(x, feats)
                    r = per.setdefault((mname, nfe), {"fid": [], "precision": [], "recall": [], "bad": [], "nfe": calls})
                    r["fid"].append(m["fid"])
                    r["precision"].append(m["precision"])
                    r["recall"].append(m["recall"])
                    r["bad"].append(float(bad.mean()))
                    print(f"    {name} seed {seed} {mname} NFE {nfe} ({calls} calls): glyph FID {m['fid']:.2f}, "
                          f"precision {m['precision']:.2f}, recall {m['recall']:.2f}, bad {100 * bad.mean():.1f} % "
                          f"({time.perf_counter() - t:.0f} s)", flush=True)
            print(f"  model {name} seed {seed} done ({time.perf_counter() - t_start:.0f} s total)", flush=True)
        # the best gamma per NFE (over gamma = 2 and --gammas), chosen on these same seeds
        for nfe in args.nfe:
            cands = ["GE gamma=2"] + [f"GE gamma={g:g}" for g in args.gammas]
            best = min(cands, key=lambda c: np.mean(per[(c, nfe)]["fid"]))
            per[("GE best gamma", nfe)] = dict(per[(best, nfe)], best=best)
        for (mname, nfe), r in per.items():
            if mname.startswith("GE gamma=") and mname != "GE gamma=2":
                continue  # the sweep is summarised by the best-gamma row
            fm, fse = summarise(r["fid"])
            rows.append((name, mname + (f" ({r['best']})" if "best" in r else ""), nfe, r["nfe"], fm, fse,
                         np.mean(r["precision"]), np.mean(r["recall"]), 100 * np.mean(r["bad"])))
        results[name] = {f"{k[0]}|{k[1]}": v for k, v in per.items()}

    results["rows"] = rows
    results["seconds"] = time.perf_counter() - t_start
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print_table(rows, floor_m, floor_se, args)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load {os.getloadavg()[0]:.1f}")


def run_parallel(args):
    """One child process per model (one BLAS thread each), then the merged table."""
    t0 = time.perf_counter()
    children, parts = [], {}
    for name in args.models:
        parts[name] = os.path.join(args.cache, f"part-{name}.json")
        cmd = [sys.executable, os.path.abspath(__file__), *strip(sys.argv[1:], ("--models", "--out", "--jobs")),
               "--models", name, "--out", parts[name], "--jobs", "1"]
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        children.append(subprocess.Popen(cmd, env=env))
    codes = [c.wait() for c in children]
    if any(codes):
        raise SystemExit(f"a child run failed (exit codes {codes})")
    merged = {}
    for name in args.models:
        with open(parts[name]) as f:
            part = json.load(f)
        for k, v in part.items():
            merged.setdefault(k, v)  # floor, classifier: the same seeds in every child (the first is kept)
        merged[name] = part[name]
        merged.setdefault("all_rows", []).extend(part["rows"])
    merged["rows"] = merged.pop("all_rows")
    merged["seconds"] = time.perf_counter() - t0
    merged["args"] = vars(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(merged, f, indent=1, default=str)
    floor_m, floor_se = summarise(merged["floor"])
    print_table([tuple(r) for r in merged["rows"]], floor_m, floor_se, args)
    print(f"\ntotal {merged['seconds']:.0f} s (two processes); load {os.getloadavg()[0]:.1f}")


def compact_table(path):
    """The README's table: one row per (model, sampler), one column per NFE, cells "FID +- SE / bad %"."""
    with open(path) as f:
        res = json.load(f)
    floor_m, floor_se = summarise(res["floor"])
    rows = [tuple(r) for r in res["rows"]]
    nfes = sorted({r[2] for r in rows})
    print(f"floor (real vs real, n = {res['args']['n']}): {floor_m:.2f} +- {floor_se:.2f}; "
          f"{res['seconds']:.0f} s in all\n")
    print("| model | sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
    print("|---|---|" + "---|" * len(nfes))
    order = {m: i for i, m in enumerate(list(METHODS) + ["GE best gamma"])}
    keys = sorted({(r[0], r[1].split(" (")[0]) for r in rows}, key=lambda k: (k[0], order.get(k[1], 99)))
    for model, sampler in keys:
        cells = []
        for k in nfes:
            r = [r for r in rows if r[0] == model and r[1].split(" (")[0] == sampler and r[2] == k]
            if not r:
                cells.append("")
                continue
            r = r[0]
            best = f" ({r[1].split(' (')[1].rstrip(')').replace('GE ', '')})" if r[1].startswith("GE best") else ""
            cells.append(f"{r[4]:.3g} +- {r[5]:.2g} / {r[8]:.0f}{best}")
        print(f"| {model} | {sampler} | " + " | ".join(cells) + " |")


def strip(argv, names):
    """``argv`` without the options in ``names`` and their values."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a.split("=")[0] in names
            if skip:
                continue
        elif skip:
            continue
        out.append(a)
    return out


def print_table(rows, floor_m, floor_se, args):
    order = {m: i for i, m in enumerate(list(METHODS) + ["GE best gamma"])}
    rows = sorted(rows, key=lambda r: (r[0], order.get(r[1].split(" (")[0], 99), r[2]))
    print(f"\nglyph FID (lower is better; noise floor real vs real at n = {args.n}: {floor_m:.3f} +- {floor_se:.3f}; "
          f"mean +- SE over {args.seeds} sampling seeds; one training run per model)\n")
    print("| model | sampler | NFE | calls | glyph FID | x floor | precision | recall | bad % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mname, nfe, calls, fm, fse, p, rc, bad in rows:
        print(f"| {name} | {mname} | {nfe} | {calls} | {fm:.2f} +- {fse:.2f} | {fm / floor_m:.1f} | {p:.2f} | "
              f"{rc:.2f} | {bad:.1f} |")


if __name__ == "__main__":
    main()
