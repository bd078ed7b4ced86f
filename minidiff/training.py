r"""Training a denoiser: the eps-prediction loss of Ho et al. 2020 (Algorithm 1), in sigma space.

One step (seeds 1 and 4, "Algorithm 1"; Karras et al. 2022 write the same loss in VE form)::

    x0 ~ data,  sigma ~ schedule,  eps ~ N(0, I)
    x = x0 + sigma * eps
    loss = mean( w(sigma) * || eps_hat(x, sigma, y) - eps ||^2 )

with an optional per-sigma weight ``w`` and, for class-conditional models, label dropout
to the null label (Ho & Salimans 2022) so the same network also learns the unconditional
eps that classifier-free guidance needs.

:func:`train` is a generator that yields each step's metrics, so the CLI can log, demos
can plot and tests can stop early, without this module importing matplotlib or tqdm.
:func:`fit` wraps it with the built-in defaults of :class:`TrainConfig` and a progress bar.

Reproducibility: step ``k`` draws all its randomness from stream ``k`` of one counter-based
generator (:class:`minidiff.backend.CounterRNG`, keyed by ``(seed, k)``), so a run resumed from a
checkpoint written after step ``k`` continues with exactly the draws of an uninterrupted run, on
either backend, and no generator state is created per step (docs/backends.md §2).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields

from . import backend
from ._validate import (
    check_array, check_bool, check_choice, check_int, check_labels, check_path_write, check_positive_int, check_real,
    trusted_values,
)
from .nn import EMA, Adam, build_model, clip_grad_norm, load, save, warmup_cosine_lr
from .nn.checkpoint import NonFiniteCheckpointError
from .nn.module import Module
from .nn.optim import MAX_LR
from .schedules import Schedule

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "train", "fit", "make_model",
           "make_schedule", "load_data", "loss_weight"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the message names the step and the
    last good checkpoint (which is left untouched)."""


@dataclass
class TrainConfig:
    """Built-in defaults: a good spiral model in about a minute on 2 CPU cores."""

    dataset: str = "spiral"  # a minidiff.datasets name, or a path to a .npy/.csv file of points
    n_train: int = 4000  # points drawn from a built-in dataset (ignored for files)
    model: str = "mlp"  # "mlp" (points) or "unet" (images)
    hidden: tuple = (128, 128, 128, 128)  # MLP widths; 4 x 128 SiLU fits a 2-D curve well
    base_channels: int = 32  # U-Net width at full resolution
    channel_mult: tuple = (1, 2)  # U-Net width multipliers per resolution
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
    loss_weighting: str = "none"  # "none", or "min_snr" (Hang et al. 2023, gamma = 5)
    checkpoint_every: int = 0  # write a checkpoint every k steps (0: only at the end)
    seed: int = 0  # seeds data, init, and every step's draws
    dtype: str = "float32"  # model dtype

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.n_train, "n_train")
        check_positive_int(self.T, "T", minimum=2)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1); got {self.label_dropout}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1); got {self.ema_decay}")
        if self.model not in ("mlp", "unet"):
            raise ValueError(f"model must be 'mlp' or 'unet'; got {self.model!r}")
        if self.loss_weighting not in ("none", "min_snr"):
            raise ValueError(f"loss_weighting must be 'none' or 'min_snr'; got {self.loss_weighting!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild a config from :func:`config_dict`'s output; unknown keys are an error."""
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


# ----------------------------------------------------------------------------- pieces
def loss_weight(sigma, kind: str):
    r"""Per-sample loss weight ``w(sigma)`` for the eps loss.

    - ``"none"``: ``w = 1`` (Ho et al. 2020's "simple" loss).
    - ``"min_snr"``: Min-SNR-gamma (Hang et al. 2023, Eq. 9) with gamma = 5. With
      ``SNR = 1/sigma^2`` the eps-loss weight ``min(SNR, gamma)/SNR`` is ``min(1, gamma sigma^2)``:
      it down-weights the tiny-sigma levels whose eps is nearly unpredictable.
    """
    if kind == "none":
        return None
    if kind == "min_snr":
        xp = backend.get_xp(sigma)
        return xp.minimum(5.0 * sigma * sigma, 1.0)
    raise ValueError(f"loss weighting must be 'none' or 'min_snr'; got {kind!r}")


# config fields a resumed run may change: bookkeeping, and the step count (resuming a finished run
# with more steps continues it; the cosine decay then stretches to the new count)
_BOOKKEEPING = {"checkpoint_every", "steps"}
# train() arguments stored in every checkpoint and compared on resume (a mismatch is refused)
_RESUME_ARGS = ("batch_size", "lr", "warmup_steps", "min_lr", "weight_decay", "grad_clip", "ema_decay",
                "loss_weighting", "label_dropout")


def _atomic_checkpoint(path, model, opt, ema, config, step, seed, losses, data_shape, train_args):
    try:
        save(path, model, optimizer=opt, ema=ema, config=config,
             extra={"step": int(step), "seed": int(seed), "losses": [float(v) for v in losses],
                    "data_shape": [int(k) for k in data_shape], "train_args": train_args})
    except NonFiniteCheckpointError:  # finite loss, but the update made some weight NaN/inf
        raise NonFiniteLossError(_diverged("weights", "NaN/inf", step, path)) from None


def train(model, data, schedule: Schedule, *, steps: int, batch_size: int = 512, lr: float = 2e-3,
          labels=None, label_dropout: float = 0.0, warmup_steps: int = 0, min_lr: float = 0.0,
          weight_decay: float = 0.0, grad_clip: float = 1.0, ema_decay: float | None = 0.999,
          loss_weighting: str = "none", seed: int = 0, checkpoint_path=None,
          checkpoint_every: int = 0, config: dict | None = None, resume: bool = False):
    r"""Train ``model`` to predict eps (Ho et al. 2020, Alg. 1, in sigma space); yield metrics.

    Each step draws ``x0`` from ``data`` (rows, uniformly with replacement), ``sigma`` from
    ``schedule.sample_sigmas``, ``eps ~ N(0, I)``, forms ``x = x0 + sigma eps`` and minimises

    .. math:: L = \frac{1}{B D}\sum_b w(\sigma_b)\, \| \hat\epsilon(x_b, \sigma_b, y_b) - \epsilon_b \|^2,
              \qquad \frac{\partial L}{\partial \hat\epsilon_b} = \frac{2 w(\sigma_b)}{B D} (\hat\epsilon_b - \epsilon_b).

    The gradient goes through ``model.backward``; then the global norm is clipped, Adam(W)
    steps with a warm-up + cosine learning rate, and the EMA is updated.

    Yields one dict per step: ``step`` (1-based), ``loss``, ``grad_norm`` (before clipping),
    ``lr``, ``sigma_mean`` (geometric mean of the batch's sigmas), ``seconds``; plus
    ``checkpoint`` on steps that wrote one. When the generator finishes, its return value
    (``StopIteration.value``) is ``{"ema": EMA or None, "losses": the whole loss history}``
    (restored steps included).

    A non-finite loss or gradient raises :class:`NonFiniteLossError` naming the step; the
    bad update is not applied and the last checkpoint on disk is left as it was.
    With ``resume=True`` and an existing ``checkpoint_path``, model, optimiser, EMA and step
    are restored from it and training continues to ``steps`` with the same draws as an
    uninterrupted run (a checkpoint already at ``steps`` makes it a pure load). If ``config``
    is given and the checkpoint stores a different one (``steps`` and ``checkpoint_every`` aside),
    resuming is refused with a ValueError. The optimiser settings passed in are never ignored: they
    are stored in every checkpoint, and resuming with different ones (``lr``, ``weight_decay``,
    ``batch_size``, ``grad_clip``, ...) is refused with a ValueError naming them; ``steps`` may grow,
    so a finished run can be continued.

    A checkpoint is written only if every array in it is finite: an update that makes a weight
    NaN/inf raises :class:`NonFiniteLossError` before anything is written.
    """
    if not isinstance(model, Module) or not callable(getattr(model, "backward", None)):
        raise TypeError(f"model must be a minidiff.nn denoiser; got {type(model).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a minidiff.Schedule; got {type(schedule).__name__}")
    data = check_array(data, "data", min_size=1)
    if data.ndim < 2:
        raise ValueError(f"data must have shape (N, ...) with N >= 1; got {tuple(data.shape)}")
    xp = backend.get_xp(data)
    steps = check_positive_int(steps, "steps", maximum=10**9)
    batch_size = check_positive_int(batch_size, "batch_size", maximum=2**24)
    lr = check_real(lr, "lr", 0.0, MAX_LR, low_open=True)
    label_dropout = check_real(label_dropout, "label_dropout", 0.0, 1.0, high_open=True)
    warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=0)
    min_lr = check_real(min_lr, "min_lr", 0.0, MAX_LR)
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, MAX_LR)
    grad_clip = None if grad_clip is None else check_real(grad_clip, "grad_clip")  # <= 0 or None: off
    ema_decay = None if ema_decay is None else check_real(ema_decay, "ema_decay", 0.0, 1.0, high_open=True)
    loss_weighting = check_choice(loss_weighting, "loss_weighting", ("none", "min_snr"))
    seed = check_int(seed, "seed", minimum=0, maximum=2**31 - 1)  # (seed << 32) | step seeds each step
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=0)
    resume = check_bool(resume, "resume")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None; got {type(config).__name__}")
    if checkpoint_path is not None:
        checkpoint_path = check_path_write(checkpoint_path, "checkpoint_path")
    n = int(data.shape[0])
    num_classes = getattr(model, "num_classes", None)
    if labels is not None:
        if num_classes is None:
            raise ValueError("labels were given but the model is not class-conditional (num_classes=None)")
        labels = check_labels(labels, "labels", num_classes, batch=n, like=data)
    if checkpoint_every and not checkpoint_path:
        raise ValueError("checkpoint_every needs a checkpoint_path")
    train_args = {"batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps, "min_lr": min_lr,
                  "weight_decay": weight_decay, "grad_clip": grad_clip, "ema_decay": ema_decay,
                  "loss_weighting": loss_weighting, "label_dropout": label_dropout}
    data = data.astype(model_dtype(model), copy=False)

    opt = Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = EMA(model, decay=ema_decay) if ema_decay else None
    start, losses = 0, []
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        ck = load(checkpoint_path)
        if not isinstance(ck.extra, dict) or not isinstance(ck.extra.get("step"), int):
            raise ValueError(f"resume: {checkpoint_path!s} was not written by train() (no step count in it)")
        start = ck.extra["step"]
        # validate everything before touching the model, so a refused resume changes nothing
        if int(ck.extra.get("seed", seed)) != int(seed):
            raise ValueError(f"resume: checkpoint was trained with seed {ck.extra.get('seed')}, not {seed}")
        diff = [] if config is None or ck.config is None else sorted(
            k for k in set(config) | set(ck.config)
            if k not in _BOOKKEEPING and config.get(k) != ck.config.get(k))
        if diff:
            raise ValueError(f"resume: {checkpoint_path!s} was trained with a different config "
                             f"(fields {diff}); train to another checkpoint path, or start afresh")
        stored = ck.extra.get("train_args")  # absent in checkpoints written before it was recorded
        if isinstance(stored, dict):
            changed = sorted(k for k in _RESUME_ARGS if k in stored and stored[k] != train_args[k])
            if changed:
                raise ValueError(f"resume: {checkpoint_path!s} was trained with different optimiser settings "
                                 + ", ".join(f"{k}={stored[k]!r} (now {train_args[k]!r})" for k in changed)
                                 + "; pass the same settings, or train to another checkpoint path")
        if start > steps:
            raise ValueError(f"resume: the checkpoint is at step {start}, beyond steps={steps}")
        model.load_state_dict(ck.model.state_dict())
        if ck.optimizer_state is not None:
            opt.load_state_dict(ck.optimizer_state)
        if ema is not None and ck.ema_state is not None:
            ema.load_state_dict(ck.ema_state)
        losses = list(ck.extra.get("losses", []))

    model.train()
    t0 = time.perf_counter()
    d = int(math.prod(data.shape[1:]))
    rng = backend.CounterRNG(seed, xp=xp)  # one generator; step k reads stream (seed, k)
    for step in range(start, steps):
        rng.at(step)
        idx = rng.integers(0, n, size=batch_size)
        x0 = data[idx]  # (B, ...)
        sigma = schedule.sample_sigmas(batch_size, rng, dtype=x0.dtype)  # (B,)
        eps = rng.standard_normal(x0.shape, dtype=x0.dtype)
        s = sigma.reshape((batch_size,) + (1,) * (x0.ndim - 1))  # (B,) -> (B, 1, ...)
        x = x0 + s * eps
        y = None
        if labels is not None:
            y = labels[idx]
            if label_dropout > 0.0:
                drop = rng.random(batch_size) < label_dropout
                y = xp.where(drop, num_classes, y)  # num_classes is the null label

        with trusted_values():  # sigma and y come from checked data: skip the per-forward value syncs
            eps_hat = model(x, sigma, y) if y is not None else model(x, sigma)
        err = eps_hat - eps  # (B, ...)
        w = loss_weight(s, loss_weighting)
        if w is not None:
            werr = w * err
            loss_t = xp.sum(werr * err) / (batch_size * d)
            grad = werr * (2.0 / (batch_size * d))
        else:
            loss_t = xp.vdot(err.reshape(-1), err.reshape(-1)) / (batch_size * d)
            grad = err * (2.0 / (batch_size * d))
        # the one device -> host sync of the step (besides clipping's): loss and log-mean sigma together
        loss, log_sigma = (float(v) for v in backend.to_numpy(xp.stack([loss_t, xp.mean(xp.log(sigma))])))
        if not math.isfinite(loss):
            raise NonFiniteLossError(_diverged("loss", loss, step + 1, checkpoint_path))

        model.zero_grad()
        model.backward(grad)
        gnorm = clip_grad_norm(model.parameters(), grad_clip if grad_clip is not None and grad_clip > 0 else float("inf"))
        if not math.isfinite(gnorm):
            raise NonFiniteLossError(_diverged("gradient norm", gnorm, step + 1, checkpoint_path))
        opt.lr = warmup_cosine_lr(step, steps, lr, warmup_steps=warmup_steps, min_lr=min_lr)
        opt.step()
        if ema is not None:
            ema.update()
        losses.append(loss)

        metrics = {"step": step + 1, "loss": loss, "grad_norm": gnorm, "lr": opt.lr,
                   "sigma_mean": math.exp(log_sigma),
                   "seconds": time.perf_counter() - t0}
        last = step + 1 == steps
        if checkpoint_path and (last or (checkpoint_every and (step + 1) % checkpoint_every == 0)):
            _atomic_checkpoint(checkpoint_path, model, opt, ema, config, step + 1, seed, losses,
                               data.shape[1:], train_args)
            metrics["checkpoint"] = str(checkpoint_path)
        yield metrics
    return {"ema": ema, "losses": losses}


def _diverged(what, value, step, checkpoint_path):
    where = (f"the last good checkpoint {checkpoint_path!s} was kept" if checkpoint_path and
             os.path.exists(checkpoint_path) else "no checkpoint had been written yet")
    return (f"training diverged: non-finite {what} ({value}) at step {step}; the update was not "
            f"applied and {where}. Lower the learning rate or turn gradient clipping on.")


def model_dtype(model):
    """The dtype of a model's parameters (the dtype training casts the data to)."""
    return next(iter(model.parameters())).data.dtype


# ----------------------------------------------------------------------------- fit
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


def make_model(cfg: TrainConfig, data, num_classes=None):
    """Build the model ``cfg`` names for data of this shape (checks model/data pairing)."""
    if cfg.model == "mlp":
        if data.ndim != 2:
            raise ValueError(f"model 'mlp' needs points of shape (N, D); the data has shape "
                             f"{tuple(data.shape)} -- use --model unet for images")
        return build_model("MLPDenoiser", dim=int(data.shape[1]), hidden=list(cfg.hidden),
                           num_classes=num_classes, dtype=cfg.dtype, seed=cfg.seed)
    if data.ndim != 4:
        raise ValueError(f"model 'unet' needs images of shape (N, C, H, W); the data has shape "
                         f"{tuple(data.shape)} -- use --model mlp for points")
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
    cfg = config or TrainConfig()
    if data is None:
        data, labels = load_data(cfg.dataset, cfg.n_train, cfg.seed, cfg.conditional)
    num_classes = None
    if cfg.conditional:
        if labels is None:
            raise ValueError("conditional=True needs labels")
        num_classes = int(backend.to_numpy(labels).max()) + 1  # host copy once, at set-up
    model = make_model(cfg, data, num_classes)
    schedule = make_schedule(cfg)
    xp = backend.get_xp(data)
    flat = data.reshape(data.shape[0], -1)  # (N, D)
    rms = float(xp.sqrt(xp.mean(xp.sum(flat * flat, axis=1))))  # RMS norm of a data point
    schedule.check_terminal_noise(data_rms=rms)  # warns if N(0, sigma_max^2) is far from p_T

    gen = train(model, data, schedule, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                labels=labels, label_dropout=cfg.label_dropout if cfg.conditional else 0.0,
                warmup_steps=cfg.warmup_steps, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
                grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, loss_weighting=cfg.loss_weighting,
                seed=cfg.seed, checkpoint_path=checkpoint_path, checkpoint_every=cfg.checkpoint_every,
                config=config_dict(cfg), resume=resume)
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
                       config=cfg, losses=losses, seconds=time.perf_counter() - t0)


def config_dict(cfg: TrainConfig) -> dict:
    """``cfg`` as a JSON-able dict (tuples as lists), as stored in checkpoints."""
    d = asdict(cfg)
    d["hidden"] = list(cfg.hidden)
    d["channel_mult"] = list(cfg.channel_mult)
    return d
