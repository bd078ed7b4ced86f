"""Command line: ``python -m minidiff {demo,train,sample,datasets,info}`` (or ``minidiff ...``).

Every mistake a user can make (a malformed option, an unknown dataset, an unreadable data file or
checkpoint, an output path that cannot be written, data on the wrong scale, a diverged run, a
missing GPU backend) is answered with ONE line on stderr and exit code 2, never a traceback.
Output paths are checked before any work is done; a missing output folder is created.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np  # host module: reads/writes user files

from . import __version__, backend
from ._validate import check_path_read, check_path_write

SAMPLERS = ("gradient_estimation", "ddim", "ddpm", "euler", "heun", "dpmpp_2m", "reverse_sde")
GRIDS = ("log_linear", "karras", "leading", "trailing", "linspace")


class UserError(Exception):
    """A mistake in the command line or its files: printed without a traceback."""


DESCRIPTION = ("minidiff: diffusion models from scratch in NumPy/CuPy. Train a denoiser on a built-in "
               "dataset or your own points/images, sample from it, or run the demo.")

# Data scale the built-in settings assume (sigma_min = 0.005, sigma_max = 80): coordinates of about
# unit size. Outside these bounds on the RMS of all values, training silently learns nonsense.
DATA_RMS_RANGE = (0.05, 10.0)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit code 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


_positive_float.__name__ = "number > 0"


def _out_file(path, what, exts):
    """Check an output file path before any work: right extension, not a folder, folder created."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in exts:
        raise UserError(f"{what} {path!r} must end in {' or '.join(exts)}")
    try:
        return check_path_write(path, what)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _check_data_scale(data, source):
    """Refuse data far from unit scale (see DATA_RMS_RANGE) with a message that says what to do."""
    xp = backend.get_xp(data)
    rms = float(xp.sqrt(xp.mean(data * data)))  # host sync: once, at set-up
    lo, hi = DATA_RMS_RANGE
    if not lo <= rms <= hi:
        kind = "images" if data.ndim == 4 else "points"
        raise UserError(
            f"{source}: the values have RMS {rms:.3g}, outside [{lo}, {hi}]; minidiff's noise levels assume "
            f"data of about unit size (points with coordinates within a few units of 0, images in [-1, 1]). "
            f"Rescale the file: subtract the mean and divide by the standard deviation"
            + ("; for 0..255 images, map 0..255 to -1..1" if kind == "images" else ""))


# ----------------------------------------------------------------------------- shared
def _draw(model, schedule, n, shape, *, sampler, steps, grid, seed, keep=0, y=None):
    """Sample ``n`` items of ``shape`` from ``model``; returns (x, trajectories of the first
    ``keep`` as a host array (steps + 1, keep, ...), number of denoiser calls)."""
    from .samplers import iter_sample

    xp = backend.get_xp()
    sigmas = schedule.sampling_sigmas(steps, spacing=grid, final_zero=True)
    rng = backend.default_rng(seed, xp=xp)
    shape = (n,) + tuple(int(k) for k in shape)
    dtype = next(iter(model.parameters())).data.dtype
    x = float(sigmas[0]) * rng.standard_normal(shape, dtype=dtype)  # x ~ N(0, sigma_max^2 I)
    denoiser = model if y is None else (lambda x_, s_: model(x_, s_, y))
    path = [backend.to_numpy(x[:keep])] if keep else None  # explicit host copies, for plotting only
    state = None
    # The family methods end with a plain DDIM step (to sigma = 0 it returns x0_hat): the
    # gradient-estimation correction extrapolates, and on the last step that overshoots
    # (Permenter & Yuan end their grid the same way; benchmarks/bench_samplers.py measures it).
    family = sampler in ("gradient_estimation", "ddim", "ddpm", "euler")
    kw = {"final_step": "ddim"} if family else {}
    for state in iter_sample(denoiser, sigmas, x, method=sampler, rng=rng, **kw):
        if keep:
            path.append(backend.to_numpy(state.x[:keep]))
    return state.x, (np.stack(path) if keep else None), state.nfe


def _metrics(samples, train, fresh, ds, rng_seed):
    """Sample quality: distance to the true manifold (when it has a closed form), sliced W2 to
    ``fresh`` samples of it, and the memorisation rate against the ``train`` set."""
    from . import metrics

    out = {}
    if ds is not None and getattr(ds, "has_projection", False):
        out["dist_to_manifold_mean"] = float(metrics.manifold_distance(samples, ds)["mean"])
    out["sliced_W2"] = float(metrics.sliced_wasserstein(samples, fresh, rng=backend.default_rng(rng_seed)))
    out["memorization_rate"] = float(metrics.memorization_rate(samples, train))
    return out


# ----------------------------------------------------------------------------- commands
def cmd_demo(args):
    """Train an MLP on the spiral with the built-in defaults, sample with the gradient-estimation
    sampler, write one figure and the metrics."""
    from . import datasets, plotting
    from .runs import TrainConfig, fit

    if args.fast and args.steps is not None:
        raise UserError("--fast and --steps cannot be combined (--fast means 200 steps)")
    cfg = TrainConfig(steps=args.steps) if args.steps is not None else TrainConfig()
    if args.fast:
        cfg = TrainConfig(steps=200, n_train=1000, batch_size=256)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out!r} is a file; give a folder for the figure and metrics")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {args.out!r}: cannot create the folder ({exc.strerror})") from None
    print(f"minidiff demo: training an MLP {cfg.hidden} on '{cfg.dataset}' ({cfg.n_train} points) "
          f"for {cfg.steps} steps, batch {cfg.batch_size}, backend {backend.get_backend()}")
    res = fit(cfg, progress=not args.quiet)
    print(f"  trained in {res.seconds:.1f} s; final loss (mean of last 100) "
          f"{np.mean(res.losses[-100:]):.4f}")
    t0 = time.perf_counter()
    samples, traj, nfe = _draw(res.ema_model, res.schedule, args.n, res.data.shape[1:], sampler="gradient_estimation",
                               steps=args.sample_steps, grid="log_linear", seed=cfg.seed + 1, keep=12)
    print(f"  sampled {args.n} points with gradient estimation (gamma=2), {nfe} denoiser calls, "
          f"in {time.perf_counter() - t0:.1f} s")
    ds = datasets.get_dataset(cfg.dataset)
    fresh = ds.sample(args.n, backend.default_rng(cfg.seed + 2))
    m = _metrics(samples, res.data, fresh, ds, cfg.seed + 3)
    # the best achievable: an independent sample of the true spiral (SW's finite-sample floor)
    best = _metrics(ds.sample(args.n, backend.default_rng(cfg.seed + 4)), res.data, fresh, ds, cfg.seed + 3)
    fig_path = os.path.join(args.out, "demo.png")
    title = (f"MLP denoiser on the {cfg.dataset}: {cfg.steps} training steps, "
             f"gradient-estimation sampler, {nfe} NFE")
    if args.fast:
        title = ("SMOKE TEST (--fast: 200 training steps, far too few): samples are NOT expected to lie "
                 "on the spiral\n" + title)
    plotting.plot_demo(res.data, samples, traj, res.losses, m, fig_path, title=title)
    report = {"metrics": m, "reference_fresh_samples_of_the_true_manifold": best, "train_seconds": res.seconds,
              "final_loss": float(np.mean(res.losses[-100:])), "nfe": nfe, "config": cfg.__dict__}
    with open(os.path.join(args.out, "demo_metrics.json"), "w") as f:
        json.dump(report, f, indent=2, default=list)
    for k, v in m.items():
        print(f"  {k:24s} {v:.4f}   (fresh samples of the true {cfg.dataset}: {best[k]:.4f})")
    print(f"  wrote {fig_path} and {os.path.join(args.out, 'demo_metrics.json')}")
    return 0


def cmd_train(args):
    from .runs import IMAGE_DEFAULTS, TrainConfig, fit, is_text_run, load_data

    out = _out_file(args.out, "--out", (".npz",))  # checked (folder created) before any training
    if args.model == "vae":
        return _train_vae(args)

    overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                   "seed": args.seed, "n_train": args.n_train,
                                   "sigma_max": args.sigma_max, "parametrization": args.parametrization,
                                   "sigma_data": args.sigma_data, "sigma_distribution": args.sigma_distribution,
                                   "base_channels": args.base_channels, "channel_mult": args.channel_mult,
                                   "attention_resolutions": args.attention_resolutions,
                                   "text_dim": args.text_dim, "text_depth": args.text_depth,
                                   "dit_dim": args.dit_dim, "dit_depth": args.dit_depth, "dit_heads": args.dit_heads,
                                   "patch_size": args.patch_size,
                                   "warmup_steps": args.warmup_steps, "ema_decay": args.ema_decay,
                                   "loss_weighting": args.loss_weighting}.items() if v is not None}
    text = is_text_run(args.conditional, args.dataset)
    if args.model in ("unet", "dit"):
        overrides.setdefault("batch_size", 64)  # images: 64 per step (512 points suits the MLP)
        if not (args.latent or text):  # pixel-space image defaults: EDM preconditioning (docs/quality.md §5)
            for k, v in IMAGE_DEFAULTS.items():
                overrides.setdefault(k, v)
    if args.latent:
        check_path_read(args.latent, "--latent")
        if args.model == "unet":
            overrides.setdefault("channel_mult", (1,))  # a 7x7 latent has one resolution
    cfg = TrainConfig(dataset=args.dataset, model=args.model, conditional=args.conditional,
                      checkpoint_every=args.checkpoint_every, latent=args.latent or "", **overrides)
    data = labels = None
    if os.path.splitext(args.dataset)[1].lower() in (".npy", ".csv"):
        data, labels = load_data(cfg.dataset, cfg.n_train, cfg.seed, cfg.conditional)
        _check_data_scale(data, args.dataset)
    if args.resume and not os.path.exists(out):
        print(f"--resume: {out} does not exist yet; training from scratch")
    res = fit(cfg, checkpoint_path=out, progress=not args.quiet, resume=args.resume, data=data, labels=labels)
    where = (f" in the latent space of {args.latent} (scale {res.config.latent_scale:.4f}, "
             f"shift {res.config.latent_shift:+.4f})") if args.latent else ""
    print(f"trained {type(res.model).__name__} ({res.model.num_parameters()} parameters) on "
          f"{args.dataset}{where} for {cfg.steps} steps in {res.seconds:.1f} s; "
          f"final loss {np.mean(res.losses[-100:]):.4f}; checkpoint {args.out}")
    return 0


def _train_vae(args):
    """Stage 1 of latent diffusion: a variational autoencoder on an image dataset (minidiff.latent)."""
    from .latent import AutoencoderConfig, fit_autoencoder

    if args.conditional or args.latent:
        raise UserError("--model vae is stage 1 and unconditional (drop --conditional and --latent)")
    overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                   "seed": args.seed, "n_train": args.n_train}.items() if v is not None}
    cfg = AutoencoderConfig(dataset=args.dataset, **overrides)
    t0 = time.perf_counter()
    ae, losses = fit_autoencoder(cfg, checkpoint_path=args.out, progress=not args.quiet, resume=args.resume)
    print(f"trained Autoencoder ({ae.num_parameters()} parameters, latent {ae.latent_channels} channels, "
          f"{ae.factor}x smaller per side) on {args.dataset} for {cfg.steps} steps in "
          f"{time.perf_counter() - t0:.1f} s; final loss {np.mean(losses[-100:]):.4f}; checkpoint {args.out}")
    return 0


def _load_for_sampling(path):
    from .nn import load
    from .nn.checkpoint import resolve
    from .runs import TrainConfig, make_denoiser, make_schedule

    path = resolve(path)  # a shipped checkpoint by name, e.g. text-glyphs
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path!r} does not exist (write one with `minidiff train --out {path}`)")
    check_path_read(path, "--checkpoint")
    ck = load(path)
    if ck.model_class == "Autoencoder":
        raise UserError(f"checkpoint {path!r} holds an autoencoder (stage 1 of latent diffusion), not a "
                        f"denoiser; train one on its latents with `minidiff train --latent {path}` and sample that")
    if not isinstance(ck.config, dict) or not isinstance(ck.extra, dict) or ck.model_class not in (
            "MLPDenoiser", "UNetDenoiser", "DiTDenoiser", "TextConditionedDenoiser"):
        raise UserError(f"checkpoint {path!r} was not written by `minidiff train` (it has no training "
                        f"config); `minidiff sample` needs one")
    model = ck.sampling_model()  # the EMA weights, as training intended
    try:
        cfg = TrainConfig.from_dict(dict(ck.config))
    except (TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {path!r} has an invalid training config ({exc})") from None
    shape = ck.extra.get("data_shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(k, int) and 0 < k <= 2**16 for k in shape):
        raise UserError(f"checkpoint {path!r} does not record the data shape it was trained on")
    return make_denoiser(model, cfg), make_schedule(cfg), shape, cfg  # eps-predictor for the samplers


def cmd_sample(args):
    from . import plotting
    from .runs import IMAGE_SAMPLING

    if args.out is None and args.plot is None:
        raise UserError("give --out FILE.npz (the samples) and/or --plot FILE.png")
    out = None if args.out is None else _out_file(args.out, "--out", (".npz", ".npy", ".csv"))
    plot = None if args.plot is None else _out_file(args.plot, "--plot", (".png", ".pdf", ".svg"))
    model, schedule, shape, cfg = _load_for_sampling(args.checkpoint)
    if out is not None and os.path.splitext(out)[1].lower() == ".csv" and len(shape) != 1:
        raise UserError(f"--out {out!r}: CSV holds points, one per row; these samples are images "
                        f"{tuple(shape)}: write .npz or .npy")
    y = None
    text = getattr(model, "null_ids", None) is not None
    # sampler and grid: the image defaults (docs/quality.md §5) for an image model on pixels, else the
    # gradient-estimation sampler on the log-linear grid (points; text models, as t2i.generate)
    images = len(shape) == 3 and not text and not cfg.latent
    if args.sampler is None:
        args.sampler = IMAGE_SAMPLING["sampler"] if images else "gradient_estimation"
    if args.grid is None:
        args.grid = IMAGE_SAMPLING["grid"] if images else "log_linear"
    if args.n is None:
        args.n = 16 if text else 1000
    if args.label is not None:
        k = getattr(model, "num_classes", None)
        if k is None:
            raise UserError("--label needs a class-conditional checkpoint")
        if not 0 <= args.label < k:
            raise UserError(f"--label must be in 0..{k - 1} for this checkpoint; got {args.label}")
        y = backend.get_xp().full(args.n, args.label, dtype="int64")
    if (args.prompt is not None or args.guidance is not None) and not text:
        raise UserError("--prompt/--guidance need a text-conditioned checkpoint (e.g. --checkpoint text-glyphs)")
    t0 = time.perf_counter()
    w = 3.0 if args.guidance is None else args.guidance
    if text:
        from .t2i import generate

        x, nfe = generate(model, args.prompt or "", n=args.n, guidance=w, steps=args.steps, sampler=args.sampler,
                          grid=args.grid, seed=args.seed, schedule=schedule, shape=shape, return_nfe=True,
                          decode=False)  # decoded below with the latent config
    else:
        x, _, nfe = _draw(model, schedule, args.n, shape, sampler=args.sampler, steps=args.steps, grid=args.grid,
                          seed=args.seed, y=y)
    if cfg.latent:  # latent diffusion: decode the latent samples into images
        from .latent import decode_latents, load_autoencoder
        from .nn.checkpoint import resolve

        try:
            ae = load_autoencoder(cfg.latent, near=resolve(args.checkpoint))
        except FileNotFoundError as exc:
            raise UserError(f"{exc}; this latent checkpoint decodes with it") from None
        x = decode_latents(ae, x, cfg.latent_scale, cfg.latent_shift)
        shape = list(x.shape[1:])
    x_host = backend.to_numpy(x)  # explicit device -> host copy, to save
    if not np.all(np.isfinite(x_host)):
        raise UserError(f"sampling produced NaN/inf (checkpoint {args.checkpoint!r}); nothing was written")
    wrote = ""
    if out is not None:
        ext = os.path.splitext(out)[1].lower()
        d, base = os.path.split(os.path.abspath(out))
        tmp = os.path.join(d, f".{base}.{os.getpid()}.tmp{ext}")  # same folder: os.replace is atomic
        try:
            if ext == ".npz":
                np.savez(tmp, x=x_host)
            elif ext == ".npy":
                np.save(tmp, x_host)
            else:
                np.savetxt(tmp, x_host, delimiter=",", header=",".join(f"x{i}" for i in range(x_host.shape[1])),
                           comments="")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        what = {".npz": "key 'x', ", ".npy": "", ".csv": "one point per row, "}[ext]
        wrote = f"; wrote {out} ({what}shape {x_host.shape})"
    print(f"sampled {args.n} with {args.sampler} on the {args.grid} grid ({nfe} denoiser calls) in {time.perf_counter() - t0:.1f} s{wrote}")
    if plot:
        train = None
        if len(shape) == 1:  # points: show the training data under the samples
            from .runs import load_data

            try:
                train, _ = load_data(cfg.dataset, min(cfg.n_train, 4000), cfg.seed)
            except (OSError, ValueError, TypeError):
                print(f"  (training data {cfg.dataset!r} not found: the plot shows the samples only)")
        plotting.plot_samples(x_host, plot, data=None if train is None else backend.to_numpy(train),
                              title=(f'"{args.prompt or ""}", guidance {w:g}, ' if text else "")
                              + f"{args.sampler}, {args.steps} steps")
        print(f"wrote {plot}")
    return 0


def cmd_datasets(args):
    from . import datasets

    for name in datasets.list_datasets():
        ds = datasets.get_dataset(name)
        shape = getattr(ds, "shape", None) or (ds.dim,)
        labels = f", {ds.num_classes} classes" if getattr(ds, "num_classes", None) else ""
        proj = ", exact projection" if getattr(ds, "has_projection", False) else ""
        print(f"{name:16s} shape {tuple(shape)}{labels}{proj}")
    return 0


def cmd_info(args):
    import matplotlib
    import scipy

    print(f"minidiff {__version__}")
    print(f"python   {platform.python_version()} ({platform.machine()})")
    print(f"numpy    {np.__version__}")
    print(f"scipy    {scipy.__version__}")
    print(f"matplotlib {matplotlib.__version__}")
    print(f"backend  {backend.get_backend()} (MINIDIFF_BACKEND={os.environ.get('MINIDIFF_BACKEND', '')!r})")
    if backend.cupy_available():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        print(f"cupy     {cupy.__version__}; GPU 0: {props['name'].decode()}")
    else:
        print("cupy     unavailable (CPU only; `pip install -e \".[gpu]\"` on a machine with an NVIDIA GPU)")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser():
    from dataclasses import fields

    from .runs import IMAGE_DEFAULTS, IMAGE_SAMPLING, TrainConfig

    # the built-in defaults, quoted in the help texts (read off the dataclass: no backend touched)
    D = argparse.Namespace(**{f.name: f.default for f in fields(TrainConfig)})
    I = IMAGE_DEFAULTS
    p = _Parser(prog="minidiff", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, metavar="{demo,train,sample,datasets,info}")

    pos, nonneg = _int_at_least(1), _int_at_least(0)
    d = sub.add_parser("demo", help="the main job: train on the spiral, sample, write a figure",
                       description="Train an MLP on the spiral with the built-in settings, sample it, and write "
                                   "demo.png and demo_metrics.json.")
    d.add_argument("--out", default="minidiff-out", help="output folder, created if missing (default: minidiff-out)")
    d.add_argument("--steps", type=pos, default=None, help=f"training steps (default: {D.steps})")
    d.add_argument("--n", type=pos, default=2000, help="samples to draw (default: 2000)")
    d.add_argument("--sample-steps", type=pos, default=20, help="sampler steps (default: 20)")
    d.add_argument("--fast", action="store_true",
                   help="smoke test in seconds: 200 training steps, far too few for good samples; cannot be "
                        "combined with --steps (default: off)")
    d.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a denoiser and write a checkpoint",
                       description="Train a denoiser and write a checkpoint (.npz). Your own data: a .npy "
                                   "(points (N, D) or images (N, C, H, W)) or .csv (one point per row) file "
                                   "whose values are of about unit size (images in [-1, 1]).")
    t.add_argument("--dataset", default=D.dataset,
                   help=f"built-in name (see `minidiff datasets`) or a .npy/.csv file (default: {D.dataset})")
    t.add_argument("--model", choices=("mlp", "unet", "dit", "vae"), default=D.model,
                   help="mlp: points; unet, dit (diffusion transformer): images or latents; "
                        "vae: the autoencoder of latent diffusion (default: mlp)")
    t.add_argument("--latent", default=None, metavar="AE.npz",
                   help="train in the latent space of this autoencoder (from --model vae); "
                        "`sample` then decodes (default: pixel space)")
    t.add_argument("--steps", type=pos, help=f"training steps (default: {D.steps}; {I['steps']} for unet/dit on pixels)")
    t.add_argument("--batch-size", type=pos, help=f"samples per step (default: {D.batch_size}; 64 for unet/dit)")
    t.add_argument("--lr", type=_positive_float, help=f"peak learning rate (default: {D.lr:g})")
    t.add_argument("--sigma-max", type=_positive_float,
                   help=f"largest noise level; keep it far above the data's size (default: {D.sigma_max:g})")
    t.add_argument("--n-train", type=pos, help=f"points drawn from a built-in dataset (default: {D.n_train})")
    t.add_argument("--seed", type=nonneg, help=f"random seed (default: {D.seed})")
    t.add_argument("--conditional", action="store_true",
                   help="class-conditional (labelled datasets); text-conditional on captioned_glyphs (default: off)")
    t.add_argument("--base-channels", type=pos, help=f"U-Net width at full resolution (default: {D.base_channels})")
    t.add_argument("--channel-mult", type=pos, nargs="+",
                   help=f"U-Net width multipliers per resolution, e.g. 1 2 2 (default: {' '.join(map(str, D.channel_mult))})")
    t.add_argument("--attention-resolutions", type=pos, nargs="+",
                   help="U-Net downsampling factors with a transformer block, e.g. 2 4 (default: none; "
                        "text models: every downsampled level)")
    t.add_argument("--dit-dim", type=pos, help=f"DiT token width (default: {D.dit_dim})")
    t.add_argument("--dit-depth", type=pos, help=f"DiT blocks (default: {D.dit_depth})")
    t.add_argument("--dit-heads", type=pos, help=f"DiT attention heads (default: {D.dit_heads})")
    t.add_argument("--patch-size", type=pos, help="DiT patch side (default: 2 for an even image side, else 1)")
    t.add_argument("--text-dim", type=pos, help=f"text encoder width, text models (default: {D.text_dim})")
    t.add_argument("--text-depth", type=pos, help=f"text encoder blocks, text models (default: {D.text_depth})")
    t.add_argument("--warmup-steps", type=nonneg, help=f"learning-rate warm-up steps (default: {D.warmup_steps})")
    t.add_argument("--ema-decay", type=float, help=f"EMA decay of the weights (default: {D.ema_decay})")
    t.add_argument("--loss-weighting", choices=("none", "min_snr"),
                   help=f"eps-loss weight per noise level (default: {D.loss_weighting})")
    t.add_argument("--parametrization", choices=("eps", "x0", "v", "edm"),
                   help="what the network predicts: eps, x0, v, or edm (the preconditioning of Karras et al. "
                        f"2022) (default: {D.parametrization}; {I['parametrization']} for unet/dit on pixels, not text or latent runs)")
    t.add_argument("--sigma-data", type=_positive_float,
                   help=f"data std per coordinate, for --parametrization edm (default: {D.sigma_data:g})")
    t.add_argument("--sigma-distribution", choices=("schedule", "lognormal"),
                   help="training noise levels: uniform on the schedule's grid, or ln sigma ~ N(-1.2, 1.2^2) "
                        f"(default: {D.sigma_distribution}; {I['sigma_distribution']} for unet/dit on pixels)")
    t.add_argument("--checkpoint-every", type=nonneg, default=0,
                   help="also write the checkpoint every k steps; 0: only at the end (default: 0)")
    t.add_argument("--resume", action="store_true",
                   help="continue from --out if it exists, with the same settings; a larger --steps "
                        "continues a finished run (default: off)")
    t.add_argument("--out", required=True, help="checkpoint path, .npz; its folder is created if missing (required)")
    t.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a checkpoint",
                       description="Draw samples from a checkpoint written by `minidiff train`.")
    s.add_argument("--checkpoint", required=True,
                   help="a .npz written by `minidiff train`, or a shipped model's name: text-glyphs (required)")
    s.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help=f"sampling method (default: gradient_estimation; {IMAGE_SAMPLING['sampler']} for an image "
                        "model trained on pixels without text)")
    s.add_argument("--steps", type=pos, default=20, help="sampler steps (default: 20)")
    s.add_argument("--grid", choices=GRIDS, default=None,
                   help=f"noise-level grid (default: log_linear; {IMAGE_SAMPLING['grid']} for an image model trained "
                        "on pixels without text)")
    s.add_argument("--n", type=pos, default=None, help="samples to draw (default: 1000; 16 for a text model)")
    s.add_argument("--label", type=nonneg, default=None,
                   help="class label, for class-conditional checkpoints (default: none)")
    s.add_argument("--prompt", default=None,
                   help='text prompt, for text-conditioned checkpoints, e.g. "bold serif R"; "" = unconditional '
                        "(default: \"\")")
    s.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w: eps_u + w (eps_c - eps_u), text models (default: 3)")
    s.add_argument("--seed", type=nonneg, default=0, help="random seed (default: 0)")
    s.add_argument("--out", default=None,
                   help="output file: .npz (samples under key 'x'), .npy, or .csv (points only); its folder "
                        "is created if missing (--out or --plot is required)")
    s.add_argument("--plot", default=None,
                   help="also write a figure (.png, .pdf or .svg) of the samples over the training data "
                        "(default: none)")
    s.set_defaults(func=cmd_sample)

    sub.add_parser("datasets", help="list built-in datasets",
                   description="List the built-in datasets.").set_defaults(func=cmd_datasets)
    sub.add_parser("info", help="versions, backend, GPU",
                   description="Print versions, the array backend and the GPU.").set_defaults(func=cmd_info)
    return p


def _check_backend() -> None:
    """MINIDIFF_BACKEND names a backend that can run here (checked before any work)."""
    try:
        backend.get_xp()
    except (RuntimeError, ImportError, ValueError, TypeError) as exc:
        raise UserError(f"MINIDIFF_BACKEND={os.environ.get('MINIDIFF_BACKEND', '')!r}: {exc}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .training import NonFiniteLossError

    try:
        if args.command in ("demo", "train", "sample"):
            _check_backend()
        return args.func(args)
    except BrokenPipeError:  # `minidiff info | head -2`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 0
    except KeyboardInterrupt:
        print(f"minidiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, OSError, NonFiniteLossError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the message holds
        print(f"minidiff {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
