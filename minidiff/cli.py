"""Command line: ``python -m minidiff {demo,train,sample,datasets,info}`` (or ``minidiff ...``).

Errors a user can cause (unknown dataset, missing checkpoint, wrong model/dataset pairing,
a diverged run) are printed as one message and exit code 2, not as a traceback.
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

SAMPLERS = ("gradient_estimation", "ddim", "ddpm", "euler", "heun", "dpmpp_2m", "reverse_sde")
GRIDS = ("log_linear", "karras", "leading", "trailing", "linspace")


class UserError(Exception):
    """A mistake in the command line or its files: printed without a traceback."""


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
    from .training import TrainConfig, fit

    cfg = TrainConfig(steps=args.steps) if args.steps else TrainConfig()
    if args.fast:
        cfg = TrainConfig(steps=200, n_train=1000, batch_size=256)
    os.makedirs(args.out, exist_ok=True)
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
    plotting.plot_demo(res.data, samples, traj, res.losses, m, fig_path,
                       title=f"MLP denoiser on the {cfg.dataset}: {cfg.steps} training steps, "
                             f"gradient-estimation sampler, {nfe} NFE")
    report = {"metrics": m, "reference_fresh_samples_of_the_true_manifold": best, "train_seconds": res.seconds,
              "final_loss": float(np.mean(res.losses[-100:])), "nfe": nfe, "config": cfg.__dict__}
    with open(os.path.join(args.out, "demo_metrics.json"), "w") as f:
        json.dump(report, f, indent=2, default=list)
    for k, v in m.items():
        print(f"  {k:24s} {v:.4f}   (fresh samples of the true {cfg.dataset}: {best[k]:.4f})")
    print(f"  wrote {fig_path} and {os.path.join(args.out, 'demo_metrics.json')}")
    return 0


def cmd_train(args):
    from .training import TrainConfig, fit

    if args.model == "vae":
        return _train_vae(args)

    overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                   "seed": args.seed, "n_train": args.n_train}.items() if v is not None}
    if args.model == "unet":
        overrides.setdefault("batch_size", 64)  # images: 64 per step (512 points suits the MLP)
    cfg = TrainConfig(dataset=args.dataset, model=args.model, conditional=args.conditional,
                      checkpoint_every=args.checkpoint_every, **overrides)
    res = fit(cfg, checkpoint_path=args.out, progress=not args.quiet, resume=args.resume)
    print(f"trained {type(res.model).__name__} ({res.model.num_parameters()} parameters) on "
          f"{args.dataset} for {cfg.steps} steps in {res.seconds:.1f} s; "
          f"final loss {np.mean(res.losses[-100:]):.4f}; checkpoint {args.out}")
    return 0


def _train_vae(args):
    """Stage 1 of latent diffusion: a variational autoencoder on an image dataset (minidiff.latent)."""
    from .latent import AutoencoderConfig, fit_autoencoder

    if args.conditional:
        raise UserError("--model vae is unconditional (drop --conditional)")
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
    from .nn import EMA, load
    from .training import TrainConfig, make_schedule

    if not os.path.exists(path):
        raise UserError(f"checkpoint {path!r} does not exist (write one with `minidiff train --out {path}`)")
    ck = load(path)
    model = ck.model
    if ck.ema_state is not None:  # sample with the EMA weights, as training intended
        ema = EMA(model)
        ema.load_state_dict(ck.ema_state)
        ema.copy_to(model)
    model.eval()
    cfg = TrainConfig.from_dict({k: v for k, v in (ck.config or {}).items()})
    shape = ck.extra.get("data_shape")
    if not shape:
        raise UserError(f"checkpoint {path!r} does not record the data shape it was trained on")
    return model, make_schedule(cfg), shape


def cmd_sample(args):
    from . import plotting

    model, schedule, shape = _load_for_sampling(args.checkpoint)
    y = None
    if args.label is not None:
        if getattr(model, "num_classes", None) is None:
            raise UserError("--label needs a class-conditional checkpoint")
        y = backend.get_xp().full(args.n, args.label, dtype="int64")
    t0 = time.perf_counter()
    x, _, nfe = _draw(model, schedule, args.n, shape, sampler=args.sampler, steps=args.steps, grid=args.grid,
                      seed=args.seed, y=y)
    x_host = backend.to_numpy(x)  # explicit device -> host copy, to save
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, x=x_host)
    os.replace(tmp, args.out)
    print(f"sampled {args.n} with {args.sampler} ({nfe} denoiser calls) in {time.perf_counter() - t0:.1f} s; "
          f"wrote {args.out} (key 'x', shape {x_host.shape})")
    if args.plot:
        plotting.plot_samples(x_host, args.plot, title=f"{args.sampler}, {args.steps} steps")
        print(f"wrote {args.plot}")
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
    p = argparse.ArgumentParser(prog="minidiff", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the main job: train on the spiral, sample, write a figure")
    d.add_argument("--out", default="minidiff-out", help="output folder (default: minidiff-out)")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: TrainConfig's)")
    d.add_argument("--n", type=int, default=2000, help="samples to draw (default 2000)")
    d.add_argument("--sample-steps", type=int, default=20, help="sampler steps (default 20)")
    d.add_argument("--fast", action="store_true", help="a few seconds: tiny training, for smoke tests")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a denoiser and write a checkpoint")
    t.add_argument("--dataset", default="spiral", help="built-in name (see `datasets`) or a .npy/.csv file")
    t.add_argument("--model", choices=("mlp", "unet", "vae"), default="mlp",
                   help="vae: the autoencoder of latent diffusion (image datasets)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--n-train", type=int, help="points drawn from a built-in dataset")
    t.add_argument("--seed", type=int)
    t.add_argument("--conditional", action="store_true", help="class-conditional (labelled datasets)")
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--out", required=True, help="checkpoint path (.npz)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--sampler", choices=SAMPLERS, default="gradient_estimation")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--grid", choices=GRIDS, default="log_linear")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--label", type=int, default=None, help="class label (conditional checkpoints)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output .npz (samples under key 'x')")
    s.add_argument("--plot", default=None, help="also write a PNG of the samples")
    s.set_defaults(func=cmd_sample)

    sub.add_parser("datasets", help="list built-in datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("info", help="versions, backend, GPU").set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .training import NonFiniteLossError

    try:
        return args.func(args)
    except (UserError, ValueError, TypeError, FileNotFoundError, NonFiniteLossError) as exc:
        print(f"minidiff {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
