r"""Latent vs pixel diffusion on 28x28 glyphs: training time and sampling time at equal sample quality.

Latent diffusion (Rombach et al. 2022) trades a one-off autoencoder for a 4x smaller space to diffuse
in. Its per-step speed-up is easy to measure (``bench_dit.py``); what it buys at equal *quality* needs
quality measured on both sides. This script:

1. trains the glyph feature map (``GlyphFeatures`` on ``glyphs28``) and measures the noise floor
   (real vs real glyph FID at the sample size n);
2. trains an autoencoder (``fit_autoencoder``, a 4 x 7 x 7 latent) and scores its reconstructions of n
   fresh glyphs against the reference set: about the best a latent model can reach through this
   decoder (the "ceiling");
3. trains the pixel model: ``TrainConfig.for_images`` on glyphs28, i.e. what ``minidiff train
   --dataset glyphs28 --model unet`` builds (U-Net base 32, widths (1, 2), EDM, log-normal sigmas),
   for ``--pixel-steps`` steps of batch 64;
4. trains latent models for each of ``--latent-steps``: the same U-Net width on the unit-variance
   latents (one resolution, as the CLI builds for a 7x7 latent), EDM with ``sigma_data`` = 1;
5. samples n glyphs per model and seed (DPM-Solver++(2M), Karras grid, 20 steps, the image sampling
   default) and reports glyph FID, k-NN precision/recall and the "bad" share (a pixel outside
   [-1.2, 1.2] or classifier confidence below 0.5), with the time per training step and per sample;
6. names the cheapest latent budget that is as good as the pixel model on *both* measures: a glyph FID
   no higher (means over seeds) and a bad share not higher by more than 2 standard errors of the
   difference (two proportions over n x seeds samples each), and the speed-ups at that point, with and
   without the autoencoder's one-off training time.

    python benchmarks/bench_latent_quality.py --out benchmarks/results/latent_quality.json   # ~25 min, 2 cores
    python benchmarks/bench_latent_quality.py --pixel-steps 100 --latent-steps 100 200 --n 100 --seeds 1

The pixel model takes most of the time (~10 minutes); ``--reuse-pixel earlier.json`` takes its row from an
earlier run of the same settings, to try other autoencoders or latent budgets against it.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from _timing import gemm_gflops  # noqa: E402  (benchmarks/_timing.py: thread settings, before NumPy)

import numpy as np  # noqa: E402  (benchmarks run on the host)

import minidiff as md  # noqa: E402
from minidiff import backend, samplers  # noqa: E402
from minidiff.latent import AutoencoderConfig, decode_latents, fit_autoencoder  # noqa: E402
from minidiff.metrics import GlyphFeatures, glyph_fid  # noqa: E402
from minidiff.runs import IMAGE_SAMPLING, TrainConfig, fit, make_denoiser, make_schedule  # noqa: E402
from bench_image_samplers import bad_mask  # noqa: E402  (the same "bad" rule as the image-quality table)


def quality(x, real, feats):
    """Glyph FID, precision, recall and the bad share of images ``x`` against ``real``."""
    m = glyph_fid(real, x, feats)
    bad = bad_mask(x, feats)
    return {"fid": float(m["fid"]), "precision": float(m["precision"]), "recall": float(m["recall"]),
            "bad": float(bad.mean())}


def mean_of(per_seed, key):
    return float(np.mean([q[key] for q in per_seed]))


def draw(res, cfg, n, seed, ae=None):
    """n samples (decoded when ``ae``) from the EMA model of ``res``; returns (images, seconds)."""
    den = make_denoiser(res.ema_model, cfg)
    sig = [float(s) for s in make_schedule(cfg).sampling_sigmas(IMAGE_SAMPLING["steps"],
                                                                spacing=IMAGE_SAMPLING["grid"], final_zero=True)]
    shape = (n,) + tuple(int(k) for k in res.data.shape[1:])
    z = backend.asarray(np.random.default_rng(1000 + seed).standard_normal(shape), dtype="float32")
    t = time.perf_counter()
    x = samplers.sample(den, sig, sig[0] * z, method=IMAGE_SAMPLING["sampler"], rng=backend.default_rng(3000 + seed))
    if ae is not None:
        x = decode_latents(ae, x, cfg.latent_scale, cfg.latent_shift)
    backend.to_numpy(x[:1])  # finish the work before stopping the clock (a sync on a GPU)
    return x, time.perf_counter() - t


def bad_share_not_worse(lat, pix, m):
    """True unless the latent model's bad share exceeds the pixel model's by more than 2 standard errors of
    the difference of two proportions, each over ``m`` samples (n per seed times the seeds)."""
    p1, p0 = lat["bad"], pix["bad"]
    se = np.sqrt(p1 * (1 - p1) / m + p0 * (1 - p0) / m)
    return p1 - p0 <= 2 * se


def summarise(out):
    """Equal quality: the cheapest latent budget whose glyph FID is at most the pixel model's and whose bad
    share is not worse beyond noise (:func:`bad_share_not_worse`); prints and stores the speed-ups there."""
    a = out["args"]
    m = a["n"] * a["seeds"]
    ae_seconds = out["autoencoder"]["seconds"]
    pix = out["runs"][f"pixel {a['pixel_steps']}"]
    latents = sorted((r["steps"], n) for n, r in out["runs"].items() if n.startswith("latent"))
    match = next((n for _, n in latents
                  if out["runs"][n]["fid"] <= pix["fid"] and bad_share_not_worse(out["runs"][n], pix, m)), None)
    out["match"] = match
    if match is None:
        print(f"\nno latent budget reached the pixel model's quality (glyph FID {pix['fid']:.2f}, bad "
              f"{100 * pix['bad']:.1f} %): no speed-up at equal quality")
        return
    lat = out["runs"][match]
    out["speedup"] = sp = {"training": pix["train_seconds"] / lat["train_seconds"],
                           "training_with_autoencoder": pix["train_seconds"] / (lat["train_seconds"] + ae_seconds),
                           "sampling": pix["seconds_per_sample"] / lat["seconds_per_sample"],
                           "per_step": pix["seconds_per_step"] / lat["seconds_per_step"]}
    print(f"\nequal quality: {match} (glyph FID {lat['fid']:.2f} <= {pix['fid']:.2f}; bad {100 * lat['bad']:.1f} % "
          f"against {100 * pix['bad']:.1f} %, within 2 standard errors over {m} samples each) against pixel "
          f"{a['pixel_steps']}: training {sp['training']:.1f}x faster ({sp['training_with_autoencoder']:.1f}x counting "
          f"the autoencoder's {ae_seconds:.0f} s), sampling {sp['sampling']:.1f}x faster per sample, "
          f"{sp['per_step']:.1f}x per step")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixel-steps", type=int, default=800)
    ap.add_argument("--latent-steps", type=int, nargs="+", default=[400, 800, 1600, 3200])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ae-steps", type=int, default=1500)
    ap.add_argument("--ae-channels", type=int, default=16)
    ap.add_argument("--ae-beta", type=float, default=AutoencoderConfig.beta, help="KL weight of the autoencoder")
    ap.add_argument("--n", type=int, default=500, help="samples per model and seed")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--reader-steps", type=int, default=1500)
    ap.add_argument("--cache", default=os.path.join("benchmarks", ".cache"))
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--reuse-pixel", default=None, metavar="JSON",
                    help="take the pixel model's row (time and quality) from an earlier run's JSON with the same "
                         "--pixel-steps, --batch, --n, --seeds and --reader-steps instead of training it again")
    ap.add_argument("--summary", default=None, metavar="JSON",
                    help="only print the equal-quality summary of a finished run's JSON, and exit")
    args = ap.parse_args()
    if args.summary:
        with open(args.summary) as f:
            return summarise(json.load(f))
    os.makedirs(args.cache, exist_ok=True)
    t_start = time.perf_counter()
    peak = gemm_gflops()
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    print(f"bench_latent_quality: float32 GEMM {peak:.0f} GFLOP/s, {threads} BLAS thread(s), "
          f"load {os.getloadavg()[0]:.1f}; {vars(args)}", flush=True)
    out = {"args": vars(args), "gemm_gflops": peak, "threads": threads}

    ds = md.get_dataset("glyphs28")
    t = time.perf_counter()
    feats = GlyphFeatures.train("glyphs28", steps=args.reader_steps, seed=0)
    xr, yr = ds.sample(2000, md.default_rng(99), return_labels=True)
    out["classifier_accuracy"] = float((feats.predict(xr) == yr).mean())
    print(f"glyph classifier: {time.perf_counter() - t:.0f} s, accuracy on fresh real glyphs "
          f"{out['classifier_accuracy']:.3f}", flush=True)
    seeds = range(args.seeds)
    reals = {s: ds.sample(args.n, md.default_rng(5000 + s)).astype("float32") for s in seeds}
    out["floor"] = [quality(ds.sample(args.n, md.default_rng(6000 + s)).astype("float32"), reals[s], feats)
                    for s in seeds]
    print(f"noise floor (real vs real): glyph FID {mean_of(out['floor'], 'fid'):.2f}, bad "
          f"{100 * mean_of(out['floor'], 'bad'):.1f} %", flush=True)

    # ---- stage 1: the autoencoder, and the ceiling its decoder puts on latent samples
    ae_cfg = AutoencoderConfig(dataset="glyphs28", base_channels=args.ae_channels, steps=args.ae_steps,
                               beta=args.ae_beta)
    ae_path = os.path.join(args.cache, f"ae-c{args.ae_channels}-{args.ae_steps}-b{args.ae_beta:g}.npz")
    if os.path.exists(ae_path):
        os.remove(ae_path)  # timed from scratch: its training time is part of the comparison
    t = time.perf_counter()
    ae, _ = fit_autoencoder(ae_cfg, checkpoint_path=ae_path, progress=False)
    ae_seconds = time.perf_counter() - t
    # reconstructions of glyphs independent of the reference set, so that the noise floor applies to them
    ceiling = [quality(ae(ds.sample(args.n, md.default_rng(7000 + s)).astype("float32")), reals[s], feats)
               for s in seeds]
    out["autoencoder"] = {"seconds": ae_seconds, "parameters": ae.num_parameters(), "reconstructions": ceiling}
    print(f"autoencoder: {ae.num_parameters()} parameters, {args.ae_steps} steps in {ae_seconds:.0f} s; its "
          f"reconstructions of the reference glyphs: glyph FID {mean_of(ceiling, 'fid'):.2f}, bad "
          f"{100 * mean_of(ceiling, 'bad'):.1f} %", flush=True)

    # ---- stage 2: the pixel model and the latent models
    runs = {f"pixel {args.pixel_steps}": TrainConfig.for_images(dataset="glyphs28", steps=args.pixel_steps,
                                                               batch_size=args.batch)}
    for s in args.latent_steps:
        runs[f"latent {s}"] = TrainConfig.for_images(dataset="glyphs28", steps=s, batch_size=args.batch,
                                                     latent=ae_path, channel_mult=(1,), sigma_data=1.0)
    out["runs"] = {}
    pixel = f"pixel {args.pixel_steps}"
    if args.reuse_pixel:
        with open(args.reuse_pixel) as f:
            old = json.load(f)
        same = ("pixel_steps", "batch", "n", "seeds", "reader_steps")
        if any(old["args"][k] != vars(args)[k] for k in same) or pixel not in old["runs"]:
            raise SystemExit(f"--reuse-pixel: {args.reuse_pixel} was run with other {same} or has no {pixel!r} row")
        out["runs"][pixel] = dict(old["runs"][pixel], reused_from=args.reuse_pixel)
        print(f"{pixel}: reused from {args.reuse_pixel}", flush=True)
        del runs[pixel]
    for name, cfg in runs.items():
        res = fit(cfg, progress=False)
        latent = bool(cfg.latent)
        per_seed, sample_s = [], []
        for s in seeds:
            x, sec = draw(res, res.config, args.n, s, ae if latent else None)
            per_seed.append(quality(x, reals[s], feats))
            sample_s.append(sec / args.n)
        r = {"steps": cfg.steps, "train_seconds": res.seconds, "seconds_per_step": res.seconds / cfg.steps,
             "parameters": res.model.num_parameters(), "seconds_per_sample": float(np.min(sample_s)),
             "quality": per_seed, "fid": mean_of(per_seed, "fid"), "bad": mean_of(per_seed, "bad"),
             "precision": mean_of(per_seed, "precision"), "recall": mean_of(per_seed, "recall")}
        out["runs"][name] = r
        print(f"{name}: {r['parameters']} parameters, trained in {res.seconds:.0f} s "
              f"({1e3 * r['seconds_per_step']:.0f} ms/step); {1e3 * r['seconds_per_sample']:.2f} ms/sample; glyph FID "
              f"{r['fid']:.2f}, precision {r['precision']:.2f}, recall {r['recall']:.2f}, bad {100 * r['bad']:.1f} %",
              flush=True)

    summarise(out)
    out["seconds"] = time.perf_counter() - t_start
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    print(f"total {out['seconds']:.0f} s; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
