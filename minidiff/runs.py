"""Run management around :func:`minidiff.training.train`: configs, data, model and schedule
factories, checkpoints and resume.

:class:`TrainConfig` holds the built-in defaults (a good spiral model in about a minute on
2 CPU cores); :func:`fit` builds data, model and schedule from it, runs the training generator
with a progress bar and returns a :class:`TrainResult` with the EMA model for sampling.
:func:`restore_run` and :func:`save_run` are the checkpoint side of ``train(resume=True)``.
The algorithm itself (Ho et al. 2020, Algorithm 1) is in :mod:`minidiff.training`.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace

from . import backend
from ._validate import (
    SIGMA_MAX, SIGMA_MIN, check_array, check_bool, check_choice, check_float_dtype, check_int, check_positive_int, check_real,
)
from .nn.optim import MAX_LR
from .precond import PARAMETRIZATIONS, LogNormalSigmas, PreconditionedDenoiser, Preconditioning
from .nn import build_model, load, save
from .schedules import Schedule
from .nn.checkpoint import NonFiniteCheckpointError
from .training import NonFiniteLossError, _diverged, train

__all__ = ["IMAGE_DEFAULTS", "IMAGE_SAMPLING", "TrainConfig", "TrainResult", "fit", "is_text_run", "make_model", "make_schedule", "load_data", "config_dict",
           "restore_run", "save_run", "make_denoiser"]


# The defaults of `minidiff train --model unet|dit` on pixels (TrainConfig.for_images in Python), chosen
# from the glyph-FID table of benchmarks/bench_image_samplers.py (docs/quality.md §5): the EDM
# preconditioning with log-normal training noise levels (Karras et al. 2022) beats eps-prediction on
# the schedule's grid at equal compute at every sampler and NFE; 3000 steps of batch 64 keep the
# default 16x16 glyph run under ~15 minutes on 2 cores.
IMAGE_DEFAULTS = {"steps": 3000, "batch_size": 64, "parametrization": "edm", "sigma_distribution": "lognormal",
                  "sigma_data": 0.5}
# ... and the sampling defaults of `minidiff sample` for such a checkpoint (same table)
IMAGE_SAMPLING = {"sampler": "dpmpp_2m", "grid": "karras", "steps": 20}


@dataclass
class TrainConfig:
    """Built-in defaults: a good spiral model in about a minute on 2 CPU cores."""

    dataset: str = "spiral"  # a minidiff.datasets name, or a path to a .npy/.csv file of points
    n_train: int = 4000  # points drawn from a built-in dataset (ignored for files)
    model: str = "mlp"  # "mlp" (points), "unet" or "dit" (images or latents)
    hidden: tuple = (128, 128, 128, 128)  # MLP widths; 4 x 128 SiLU fits a 2-D curve well
    base_channels: int = 32  # U-Net width at full resolution
    channel_mult: tuple = (1, 2)  # U-Net width multipliers per resolution
    dit_dim: int = 64  # DiT token width
    dit_depth: int = 4  # DiT blocks
    dit_heads: int = 4  # DiT attention heads
    patch_size: int = 0  # DiT patch side; 0: 2 when the image side is even, else 1 (a 7x7 latent)
    latent: str = ""  # an Autoencoder checkpoint: train in its latent space (latent diffusion); "": pixels
    latent_scale: float = 0.0  # latents are (mu(x) - latent_shift) * latent_scale; 0: measured on the data
    latent_shift: float = 0.0  # (used only with a given latent_scale)
    conditional: bool = False  # train p(x | y) with label dropout (needs a labelled dataset)
    label_dropout: float = 0.1  # share of labels replaced by the null label (classifier-free guidance)
    schedule: str = "log_linear"  # linear | scaled_linear | cosine | log_linear | karras
    sigma_min: float = 0.005  # for log_linear/karras: below the spiral's local detail
    sigma_max: float = 80.0  # for log_linear/karras: >> data RMS norm (~1.3), see check_terminal_noise
    T: int = 1000  # training grid size
    steps: int = 4000  # optimiser steps
    batch_size: int = 512  # points per step
    lr: float = 2e-3  # peak Adam learning rate
    warmup_steps: int = 100  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1e-5  # final learning rate
    weight_decay: float = 0.0  # AdamW-style decoupled weight decay (0 = plain Adam)
    grad_clip: float = 1.0  # clip the global gradient norm (<= 0 disables)
    ema_decay: float = 0.995  # EMA of the weights, used for sampling
    loss_weighting: str = "none"  # "none", or "min_snr" (Hang et al. 2023, gamma = 5; eps only)
    parametrization: str = "eps"  # what the network predicts: eps | x0 | v | edm (minidiff.precond)
    sigma_data: float = 0.5  # data std per coordinate, for parametrization="edm" (Karras et al. 2022)
    sigma_distribution: str = "schedule"  # training sigmas: "schedule" (uniform on the grid) | "lognormal"
    p_mean: float = -1.2  # lognormal: mean of ln sigma (Karras et al. 2022, Table 1)
    p_std: float = 1.2  # lognormal: std of ln sigma
    checkpoint_every: int = 0  # write a checkpoint every k steps (0: only at the end)
    seed: int = 0  # seeds data, init, and every step's draws
    dtype: str = "float32"  # model dtype
    # text conditioning (dataset captioned_glyphs with conditional=True; docs/attention.md §8)
    text_dim: int = 64  # width of the text encoder = the cross-attention context width
    text_depth: int = 2  # transformer blocks in the text encoder
    attention_resolutions: tuple = ()  # U-Net downsampling factors with attention; text models: () -> all but 1
    num_heads: int = 4  # heads of every attention layer
    pooled_context: bool = True  # text models: also add the mean text embedding to the noise embedding

    @classmethod
    def for_images(cls, **overrides) -> "TrainConfig":
        """A config with the image defaults (:data:`IMAGE_DEFAULTS`, what ``minidiff train --model unet``
        uses on pixels) under ``overrides``; ``model`` defaults to ``"unet"``."""
        return cls(**{"model": "unet", **IMAGE_DEFAULTS, **overrides})

    def __post_init__(self):
        # every field through the validator of its kind (numbers are stored as plain Python numbers)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise TypeError(f"dataset must be a data set name or a file path (str); got {self.dataset!r}")
        for name in ("hidden", "channel_mult"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise TypeError(f"{name} must be a sequence of positive integers; got {v!r}")
            setattr(self, name, tuple(check_positive_int(h, f"{name} entry", maximum=2**16) for h in v))
        self.attention_resolutions = tuple(check_positive_int(r, "attention_resolutions entry", maximum=2**16)
                                           for r in self.attention_resolutions)
        for name in ("text_dim", "text_depth", "num_heads"):
            setattr(self, name, check_positive_int(getattr(self, name), name, maximum=2**16))
        self.pooled_context = check_bool(self.pooled_context, "pooled_context")
        self.conditional = check_bool(self.conditional, "conditional")
        self.base_channels = check_positive_int(self.base_channels, "base_channels", maximum=2**16)
        self.steps = check_positive_int(self.steps, "steps", maximum=10**9)
        self.batch_size = check_positive_int(self.batch_size, "batch_size", maximum=2**24)
        self.n_train = check_positive_int(self.n_train, "n_train", maximum=10**7)
        self.T = check_positive_int(self.T, "T", minimum=2, maximum=10**6)
        self.warmup_steps = check_int(self.warmup_steps, "warmup_steps", minimum=0)
        self.checkpoint_every = check_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        self.seed = check_int(self.seed, "seed", minimum=0, maximum=2**31 - 1)
        self.lr = check_real(self.lr, "lr", 0.0, MAX_LR, low_open=True)
        self.min_lr = check_real(self.min_lr, "min_lr", 0.0, MAX_LR)
        self.weight_decay = check_real(self.weight_decay, "weight_decay", 0.0, MAX_LR)
        self.grad_clip = check_real(self.grad_clip, "grad_clip")  # <= 0 turns clipping off
        self.label_dropout = check_real(self.label_dropout, "label_dropout", 0.0, 1.0, high_open=True)
        self.ema_decay = check_real(self.ema_decay, "ema_decay", 0.0, 1.0, high_open=True)
        self.sigma_min = check_real(self.sigma_min, "sigma_min", SIGMA_MIN, SIGMA_MAX)
        self.sigma_max = check_real(self.sigma_max, "sigma_max", SIGMA_MIN, SIGMA_MAX)
        check_choice(self.model, "model", ("mlp", "unet", "dit"))
        for name in ("dit_dim", "dit_depth", "dit_heads"):
            setattr(self, name, check_positive_int(getattr(self, name), name, maximum=2**16))
        self.patch_size = check_int(self.patch_size, "patch_size", minimum=0, maximum=2**16)
        if not isinstance(self.latent, str):
            raise TypeError(f"latent must be an Autoencoder checkpoint path or ''; got {type(self.latent).__name__}")
        self.latent_scale = check_real(self.latent_scale, "latent_scale", 0.0, SIGMA_MAX)  # 0: measure on the data
        self.latent_shift = check_real(self.latent_shift, "latent_shift")
        check_choice(self.schedule, "schedule", ("linear", "scaled_linear", "cosine", "log_linear", "karras"))
        check_choice(self.loss_weighting, "loss_weighting", ("none", "min_snr"))
        check_float_dtype(self.dtype)
        if self.schedule in ("log_linear", "karras") and not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max; got {self.sigma_min} and {self.sigma_max}")
        check_choice(self.parametrization, "parametrization", PARAMETRIZATIONS)
        check_choice(self.sigma_distribution, "sigma_distribution", ("schedule", "lognormal"))
        LogNormalSigmas(self.p_mean, self.p_std)  # validates both
        Preconditioning(self.parametrization, self.sigma_data)  # validates sigma_data

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild a config from :func:`config_dict`'s output; unknown keys are an error."""
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict; got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model, its EMA copy (use it to sample), the data,
    the schedule and the per-step loss history."""

    model: object
    ema_model: object
    data: object
    labels: object
    schedule: Schedule
    config: TrainConfig
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    denoiser: object = None  # eps_hat(x, sigma[, y]) for the samplers: ema_model, preconditioned if not eps
    autoencoder: object = None  # latent diffusion: the Autoencoder whose latents ``data`` holds

    def decode(self, z0):
        """Images from latent samples ``z0`` (latent diffusion), via :func:`minidiff.latent.decode_latents`
        with the stored scale; pixel-space runs return ``z0`` unchanged."""
        if self.autoencoder is None:
            return z0
        from .latent import decode_latents

        return decode_latents(self.autoencoder, z0, self.config.latent_scale, self.config.latent_shift)


def load_data(name_or_path: str, n: int, seed: int, conditional: bool = False):
    """``(data, labels)`` on the default backend: a built-in dataset by name (``n`` samples),
    or a user's ``.npy`` (array of points or images) / ``.csv`` (points, one per row) file."""
    from . import datasets, fileio  # host modules; imported here so training stays light

    xp = backend.get_xp()
    if os.path.splitext(str(name_or_path))[1].lower() in (".npy", ".csv"):
        if conditional:
            raise ValueError("conditional training needs a labelled built-in dataset; files carry no labels")
        arr = fileio.load_points_file(name_or_path)  # host array
        return backend.asarray(arr, dtype="float64"), None
    ds = datasets.get_dataset(name_or_path)
    rng = backend.default_rng(seed, xp=xp)
    if conditional:
        if not getattr(ds, "num_classes", None):
            raise ValueError(f"dataset {name_or_path!r} has no labels; conditional training needs one "
                             f"(e.g. 'spiral_arms')")
        x, y = ds.sample(n, rng, return_labels=True)
        return x, y
    return ds.sample(n, rng), None


def is_text_run(conditional: bool, dataset: str) -> bool:
    """A text-to-image run: conditional training on a captioned data set (docs/attention.md §8)."""
    return bool(conditional) and dataset.startswith("captioned_glyphs")


def make_model(cfg: TrainConfig, data, num_classes=None, context_dim=None):
    """Build the model ``cfg`` names for data of this shape (checks model/data pairing); ``context_dim``
    gives a DiT cross-attention to a text context of that width."""
    if cfg.model == "mlp":
        if data.ndim != 2:
            raise ValueError(f"model 'mlp' needs points of shape (N, D); the data has shape "
                             f"{tuple(data.shape)} -- use --model unet for images")
        return build_model("MLPDenoiser", dim=int(data.shape[1]), hidden=list(cfg.hidden),
                           num_classes=num_classes, dtype=cfg.dtype, seed=cfg.seed)
    if data.ndim != 4:
        raise ValueError(f"model {cfg.model!r} needs images of shape (N, C, H, W); the data has shape "
                         f"{tuple(data.shape)} -- use --model mlp for points")
    if cfg.model == "dit":
        C, H, W = (int(k) for k in data.shape[1:])
        if H != W:
            raise ValueError(f"model 'dit' needs square images; the data is {H}x{W}")
        p = cfg.patch_size or (2 if H % 2 == 0 else 1)
        return build_model("DiTDenoiser", channels=C, image_size=H, patch_size=p, dim=cfg.dit_dim,
                           depth=cfg.dit_depth, num_heads=cfg.dit_heads, num_classes=num_classes,
                           context_dim=context_dim, dtype=cfg.dtype, seed=cfg.seed)
    return build_model("UNetDenoiser", channels=int(data.shape[1]), base_channels=cfg.base_channels,
                       channel_mult=list(cfg.channel_mult), num_classes=num_classes, dtype=cfg.dtype,
                       seed=cfg.seed)


def make_schedule(cfg: TrainConfig) -> Schedule:
    """The training :class:`Schedule` the config names (sigma range used by log_linear/karras)."""
    if cfg.schedule in ("log_linear", "karras"):
        return Schedule.from_name(cfg.schedule, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, T=cfg.T)
    return Schedule.from_name(cfg.schedule, T=cfg.T)


def fit(config: TrainConfig | None = None, *, checkpoint_path=None, progress: bool = True,
        data=None, labels=None, resume: bool = False, callback=None) -> TrainResult:
    """Train with ``config`` (default: :class:`TrainConfig`'s built-in defaults) and return a
    :class:`TrainResult` with the model and its EMA copy. ``data``/``labels`` override the
    config's dataset. ``callback(metrics)`` is called after every step. A tqdm progress bar
    shows loss and steps/s when ``progress``.

    With ``checkpoint_path`` and ``resume=True`` it is also a cache: a missing file means
    train from scratch, a finished run with the same config is loaded without training, and
    an interrupted one continues. ``losses`` always holds the whole history."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. TrainConfig(steps=2)) or None; got {type(config).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None; got {type(callback).__name__}")
    cfg = config or TrainConfig()
    text = is_text_run(cfg.conditional, cfg.dataset)
    if data is not None:
        data = check_array(data, "data", min_size=1)  # float32/float64, finite
    if data is None:
        if text:
            from .t2i import load_text_data

            data, labels = load_text_data(cfg.dataset, cfg.n_train, cfg.seed)
        else:
            data, labels = load_data(cfg.dataset, cfg.n_train, cfg.seed, cfg.conditional)
    autoencoder = None
    if cfg.latent:  # latent diffusion: encode the data once; the measured scale goes into the config
        from .latent import encode_latents, load_autoencoder

        autoencoder = load_autoencoder(cfg.latent)
        given = cfg.latent_scale > 0
        data, scale, shift = encode_latents(autoencoder, data, cfg.latent_scale if given else None,
                                            cfg.latent_shift if given else None)
        cfg = replace(cfg, latent=os.path.abspath(cfg.latent), latent_scale=scale, latent_shift=shift)
    num_classes = None
    if cfg.conditional and not text:
        if labels is None:
            raise ValueError("conditional=True needs labels")
        num_classes = int(backend.to_numpy(labels).max()) + 1  # host copy once, at set-up
    if text:
        from .t2i import make_text_model

        model = make_text_model(cfg, data)
    else:
        model = make_model(cfg, data, num_classes)
    schedule = make_schedule(cfg)
    xp = backend.get_xp(data)
    flat = data.reshape(data.shape[0], -1)  # (N, D)
    rms = float(xp.sqrt(xp.mean(xp.sum(flat * flat, axis=1))))  # RMS norm of a data point
    if rms > 0:  # all-zero data: nothing for the terminal noise to drown (and no data_rms to check)
        schedule.check_terminal_noise(data_rms=rms)  # warns if N(0, sigma_max^2) is far from p_T

    gen = train(model, data, schedule, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                labels=labels, label_dropout=cfg.label_dropout if cfg.conditional else 0.0,
                warmup_steps=cfg.warmup_steps, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
                grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, loss_weighting=cfg.loss_weighting,
                seed=cfg.seed, checkpoint_path=checkpoint_path, checkpoint_every=cfg.checkpoint_every,
                config=config_dict(cfg), resume=resume, parametrization=cfg.parametrization,
                sigma_data=cfg.sigma_data, sigma_distribution=cfg.sigma_distribution, p_mean=cfg.p_mean,
                p_std=cfg.p_std)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="train", unit="step", leave=False)
    recent, t0, done = [], time.perf_counter(), None
    try:
        while True:
            try:
                m = next(gen)
            except StopIteration as stop:
                done = stop.value
                break
            recent = (recent + [m["loss"]])[-25:]
            if callback is not None:
                callback(m)
            if bar is not None:
                if bar.n == 0 and m["step"] > 1:
                    bar.update(m["step"] - 1)  # resumed run
                bar.update(1)
                if m["step"] % 25 == 0 or m["step"] == cfg.steps:
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
    finally:
        if bar is not None:
            bar.close()
    ema, losses = done["ema"], done["losses"]
    ema_model = build_model(type(model).__name__, **model.config)
    if ema is not None:
        ema.copy_to(ema_model)
    else:
        ema_model.load_state_dict(model.state_dict())
    ema_model.eval()
    return TrainResult(model=model, ema_model=ema_model, data=data, labels=labels, schedule=schedule,
                       config=cfg, losses=losses, seconds=time.perf_counter() - t0,
                       denoiser=make_denoiser(ema_model, cfg), autoencoder=autoencoder)


def make_denoiser(model, cfg: TrainConfig):
    """The eps-predictor the samplers take: ``model`` itself for ``parametrization="eps"``, else the model
    wrapped in :class:`~minidiff.precond.PreconditionedDenoiser` (docs/quality.md §3)."""
    if cfg.parametrization == "eps":
        return model
    return PreconditionedDenoiser(model, Preconditioning(cfg.parametrization, cfg.sigma_data))


def config_dict(cfg: TrainConfig) -> dict:
    """``cfg`` as a JSON-able dict (tuples as lists), as stored in checkpoints."""
    d = asdict(cfg)
    d["hidden"] = list(cfg.hidden)
    d["channel_mult"] = list(cfg.channel_mult)
    d["attention_resolutions"] = list(cfg.attention_resolutions)
    return d


# ----------------------------------------------------------------------------- checkpoints and resume
# config fields a resumed run may change: bookkeeping, and the step count (resuming a finished run
# with more steps continues it; the cosine decay then stretches to the new count)
_BOOKKEEPING = {"checkpoint_every", "steps"}
# train() arguments stored in every checkpoint and compared on resume (a mismatch is refused)
_RESUME_ARGS = ("batch_size", "lr", "warmup_steps", "min_lr", "weight_decay", "grad_clip", "ema_decay",
                "loss_weighting", "label_dropout", "parametrization", "sigma_data", "sigma_distribution",
                "p_mean", "p_std")


def save_run(path, model, opt, ema, config, step, seed, losses, data_shape, train_args):
    """Write a training checkpoint: model, optimiser, EMA, config, the run's step/seed/losses and the
    optimiser settings of :func:`~minidiff.training.train`; refused (NonFiniteLossError) if a weight
    is NaN/inf."""
    try:
        save(path, model, optimizer=opt, ema=ema, config=config,
             extra={"step": int(step), "seed": int(seed), "losses": [float(v) for v in losses],
                    "data_shape": [int(k) for k in data_shape], "train_args": train_args})
    except NonFiniteCheckpointError:  # finite loss, but the update made some weight NaN/inf
        raise NonFiniteLossError(_diverged("weights", "NaN/inf", step, path)) from None


def restore_run(path, model, opt, ema, *, seed: int, steps: int, config: dict | None, train_args: dict):
    """Load the checkpoint at ``path`` into ``model``/``opt``/``ema`` for ``train(resume=True)``;
    returns ``(step reached, loss history)``. Everything is validated before the model is touched,
    so a refused resume (different seed, config or optimiser settings, or a checkpoint beyond
    ``steps``) changes nothing."""
    ck = load(path)
    if not isinstance(ck.extra, dict) or not isinstance(ck.extra.get("step"), int):
        raise ValueError(f"resume: {path!s} was not written by train() (no step count in it)")
    start = ck.extra["step"]
    if int(ck.extra.get("seed", seed)) != int(seed):
        raise ValueError(f"resume: checkpoint was trained with seed {ck.extra.get('seed')}, not {seed}")
    diff = [] if config is None or ck.config is None else sorted(
        k for k in set(config) | set(ck.config)
        if k not in _BOOKKEEPING and config.get(k) != ck.config.get(k))
    if diff:
        raise ValueError(f"resume: {path!s} was trained with a different config "
                         f"(fields {diff}); train to another checkpoint path, or start afresh")
    stored = ck.extra.get("train_args")  # absent in checkpoints written before it was recorded
    if isinstance(stored, dict):
        changed = sorted(k for k in _RESUME_ARGS if k in stored and stored[k] != train_args[k])
        if changed:
            raise ValueError(f"resume: {path!s} was trained with different optimiser settings "
                             + ", ".join(f"{k}={stored[k]!r} (now {train_args[k]!r})" for k in changed)
                             + "; pass the same settings, or train to another checkpoint path")
    if start > steps:
        raise ValueError(f"resume: the checkpoint is at step {start}, beyond steps={steps}")
    model.load_state_dict(ck.model.state_dict())
    if ck.optimizer_state is not None:
        opt.load_state_dict(ck.optimizer_state)
    if ema is not None and ck.ema_state is not None:
        ema.load_state_dict(ck.ema_state)
    return start, list(ck.extra.get("losses", []))
