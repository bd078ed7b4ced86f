r"""Training a denoiser: Algorithm 1 of Ho et al. 2020 (the eps-prediction loss), in sigma space.

One step (Ho et al. 2020, Algorithm 1; Karras et al. 2022 write the same loss in VE form;
docs/math.md §5 derives it from the variational bound)::

    x0 ~ data,  sigma ~ schedule,  eps ~ N(0, I)
    x = x0 + sigma * eps
    loss = mean( w(sigma) * || eps_hat(x, sigma, y) - eps ||^2 )

with an optional per-sigma weight ``w`` and, for class-conditional models, label dropout
to the null label (Ho & Salimans 2022) so the same network also learns the unconditional
eps that classifier-free guidance needs.

:func:`train` is a generator that yields each step's metrics, so the CLI can log, demos
can plot and tests can stop early, without this module importing matplotlib or tqdm.
Run management (:class:`~minidiff.runs.TrainConfig`, :func:`~minidiff.runs.fit`, data and
model factories, checkpoints and resume) lives in :mod:`minidiff.runs`; its names stay
importable from here as aliases.

Reproducibility: step ``k`` draws all its randomness from stream ``k`` of one counter-based
generator (:class:`minidiff.backend.CounterRNG`, keyed by ``(seed, k)``), so a run resumed from a
checkpoint written after step ``k`` continues with exactly the draws of an uninterrupted run, on
either backend, and no generator state is created per step (docs/backends.md §2).
"""
from __future__ import annotations

import math
import os
import time

from . import backend
from ._validate import (
    check_array, check_bool, check_choice, check_int, check_labels, check_path_write, check_positive_int, check_real,
    trusted_values,
)
from .nn import EMA, Adam, AdamW, clip_grad_norm, warmup_cosine_lr
from .nn.module import Module
from .nn.optim import MAX_LR
from .precond import LogNormalSigmas, Preconditioning
from .schedules import Schedule

__all__ = ["NonFiniteLossError", "train", "loss_weight"]


def train(model, data, schedule: Schedule, *, steps: int, batch_size: int = 512, lr: float = 2e-3,
          labels=None, label_dropout: float = 0.0, warmup_steps: int = 0, min_lr: float = 0.0,
          weight_decay: float = 0.0, grad_clip: float = 1.0, ema_decay: float | None = 0.999,
          loss_weighting: str = "none", seed: int = 0, checkpoint_path=None,
          checkpoint_every: int = 0, config: dict | None = None, resume: bool = False,
          parametrization: str = "eps", sigma_data: float = 0.5, sigma_distribution: str = "schedule",
          p_mean: float = -1.2, p_std: float = 1.2):
    r"""Train ``model`` to predict eps (Ho et al. 2020, Alg. 1, in sigma space); yield metrics.

    Each step draws ``x0`` from ``data`` (rows, uniformly with replacement), ``sigma`` from
    ``schedule.sample_sigmas``, ``eps ~ N(0, I)``, forms ``x = x0 + sigma eps`` and minimises

    .. math:: L = \frac{1}{B D}\sum_b w(\sigma_b)\, \| \hat\epsilon(x_b, \sigma_b, y_b) - \epsilon_b \|^2,
              \qquad \frac{\partial L}{\partial \hat\epsilon_b} = \frac{2 w(\sigma_b)}{B D} (\hat\epsilon_b - \epsilon_b).

    With ``parametrization`` other than ``"eps"`` the network output F is trained on its own target
    instead, ``L = mean w ||F(c_in x, sigma) - F_target||^2`` (Karras et al. 2022, Eq. 8, unit weight in
    F-space; :mod:`minidiff.precond`, docs/quality.md §1); ``sigma_distribution="lognormal"`` draws
    ``ln sigma ~ N(p_mean, p_std^2)`` instead of the schedule's grid.

    The gradient goes through ``model.backward``; then the global norm is clipped, AdamW steps
    with a warm-up + cosine learning rate, and the EMA is updated. ``weight_decay`` is AdamW's
    decoupled decay (Loshchilov & Hutter 2019): ``p <- p (1 - lr wd)`` beside the Adam step,
    not an L2 term added to the gradient; ``weight_decay=0`` is plain Adam.

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
    precond = Preconditioning(parametrization, sigma_data)
    sigma_distribution = check_choice(sigma_distribution, "sigma_distribution", ("schedule", "lognormal"))
    sigma_source = schedule if sigma_distribution == "schedule" else LogNormalSigmas(p_mean, p_std)
    if loss_weighting != "none" and precond.kind != "eps":
        raise ValueError(f"loss_weighting={loss_weighting!r} is defined for the eps loss; "
                         f"parametrization {precond.kind!r} has its own weighting (use 'none')")
    seed = check_int(seed, "seed", minimum=0, maximum=2**31 - 1)  # keys the CounterRNG of the run
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=0)
    resume = check_bool(resume, "resume")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None; got {type(config).__name__}")
    if checkpoint_path is not None:
        checkpoint_path = check_path_write(checkpoint_path, "checkpoint_path")
    n = int(data.shape[0])
    num_classes = getattr(model, "num_classes", None)
    null_ids = getattr(model, "null_ids", None)  # a text-conditioned model: labels are token ids (N, S)
    if labels is not None and null_ids is not None:
        if getattr(labels, "ndim", None) != 2 or labels.shape[0] != n or labels.dtype.kind not in "iu":
            raise ValueError(f"a text-conditioned model needs token ids of shape ({n}, S); got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    elif labels is not None:
        if num_classes is None:
            raise ValueError("labels were given but the model is not class-conditional (num_classes=None)")
        labels = check_labels(labels, "labels", num_classes, batch=n, like=data)
    if checkpoint_every and not checkpoint_path:
        raise ValueError("checkpoint_every needs a checkpoint_path")
    train_args = {"batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps, "min_lr": min_lr,
                  "weight_decay": weight_decay, "grad_clip": grad_clip, "ema_decay": ema_decay,
                  "loss_weighting": loss_weighting, "label_dropout": label_dropout,
                  "parametrization": precond.kind, "sigma_data": precond.sigma_data,
                  "sigma_distribution": sigma_distribution, "p_mean": float(p_mean), "p_std": float(p_std)}
    data = data.astype(model_dtype(model), copy=False)

    # decoupled decay (AdamW); with wd = 0 the two are the same update, and Adam keeps the
    # checkpoints written before weight decay was decoupled resumable
    opt = (AdamW if weight_decay else Adam)(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = EMA(model, decay=ema_decay) if ema_decay else None
    start, losses = 0, []
    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        from .runs import restore_run  # run management (checkpoints, configs) lives in runs.py

        start, losses = restore_run(checkpoint_path, model, opt, ema, seed=seed, steps=steps, config=config,
                                    train_args=train_args)
    model.train()
    t0 = time.perf_counter()
    d = int(math.prod(data.shape[1:]))
    rng = backend.CounterRNG(seed, xp=xp)  # one generator; step k reads stream (seed, k)
    for step in range(start, steps):
        rng.at(step)
        idx = rng.integers(0, n, size=batch_size)
        x0 = data[idx]  # (B, ...)
        sigma = sigma_source.sample_sigmas(batch_size, rng, dtype=x0.dtype)  # (B,)
        eps = rng.standard_normal(x0.shape, dtype=x0.dtype)
        s = sigma.reshape((batch_size,) + (1,) * (x0.ndim - 1))  # (B,) -> (B, 1, ...)
        x = x0 + s * eps
        y = None
        if labels is not None:
            y = labels[idx]
            if label_dropout > 0.0:
                drop = rng.random(batch_size) < label_dropout
                if null_ids is not None:  # caption dropout: the row becomes the empty prompt's ids
                    y = xp.where(drop[:, None], null_ids[None, :y.shape[1]], y)
                else:
                    y = xp.where(drop, num_classes, y)  # num_classes is the null label

        x_in = precond.model_input(x, sigma)  # x itself unless edm (then c_in x after the model's own scaling)
        with trusted_values():  # sigma and y come from checked data: skip the per-forward value syncs
            out = model(x_in, sigma, y) if y is not None else model(x_in, sigma)  # F; eps_hat when eps
        err = out - precond.target(x0, eps, sigma)  # (B, ...); the target is eps itself when eps
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
            from .runs import save_run

            save_run(checkpoint_path, model, opt, ema, config, step + 1, seed, losses, data.shape[1:], train_args)
            metrics["checkpoint"] = str(checkpoint_path)
        yield metrics
    return {"ema": ema, "losses": losses}



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


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the message names the step and the
    last good checkpoint (which is left untouched)."""


def _diverged(what, value, step, checkpoint_path):
    where = (f"the last good checkpoint {checkpoint_path!s} was kept" if checkpoint_path and
             os.path.exists(checkpoint_path) else "no checkpoint had been written yet")
    return (f"training diverged: non-finite {what} ({value}) at step {step}; the update was not "
            f"applied and {where}. Lower the learning rate or turn gradient clipping on.")


def model_dtype(model):
    """The dtype of a model's parameters (the dtype training casts the data to)."""
    return next(iter(model.parameters())).data.dtype




_MOVED = ("TrainConfig", "TrainResult", "fit", "load_data", "make_model", "make_schedule", "config_dict")


def __getattr__(name):  # aliases: minidiff.training.TrainConfig etc. keep working after the split
    if name in _MOVED:
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
