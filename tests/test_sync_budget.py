"""Sync budgets on the device path, counted by the strict CuPy stand-in (docs/backends.md §1).

A GPU runs ahead of Python until something needs a value on the host: every ``float()``, ``bool()``
or ``.get()`` makes the host wait for the device. These tests pin how many such syncs, and how many
host -> device copies, the hot loops make. They run under
``MINIDIFF_BACKEND=cupy MINIDIFF_STRICT_CUPY=1`` (the second CI run) and skip otherwise.
"""
import numpy as np
import pytest

from minidiff import backend
from minidiff.ideal import IdealDenoiser
from minidiff.latent import train_autoencoder
from minidiff.nn import Autoencoder, MLPDenoiser, UNetDenoiser, clip_grad_norm
from minidiff.samplers import METHODS, iter_sample
from minidiff.schedules import Schedule
from minidiff.training import train


def _per_step(counter, gen, warmup=2, steps=3):
    """(syncs, h2d copies) per item of generator ``gen`` after ``warmup`` items (caches filled)."""
    for _ in range(warmup):
        next(gen)
    counter.reset()
    for _ in range(steps):
        next(gen)
    return counter.syncs / steps, counter.h2d / steps


def _points(xp, n=64, d=2, seed=0):
    return backend.default_rng(seed, xp=xp).standard_normal((n, d), dtype="float32")


@pytest.mark.parametrize("conditional", [False, True])
def test_training_step_syncs_once_for_the_loss_and_once_for_clipping(strict_counter, xp, conditional):
    data = _points(xp)
    labels = backend.default_rng(1, xp=xp).integers(0, 3, size=64) if conditional else None
    model = MLPDenoiser(dim=2, hidden=(16, 16), num_classes=3 if conditional else None, seed=0)
    sched = Schedule.log_linear(0.01, 10.0, 50)
    gen = train(model, data, sched, steps=10, batch_size=8, labels=labels,
                label_dropout=0.2 if conditional else 0.0, seed=0)
    syncs, h2d = _per_step(strict_counter, gen)
    assert syncs <= 2, f"{syncs} syncs per training step (budget: loss 1 + clipping 1)"
    assert h2d == 0, f"{h2d} host -> device copies per training step"


@pytest.mark.parametrize("parametrization", ["x0", "v", "edm"])
def test_preconditioned_training_step_budget(strict_counter, xp, parametrization):
    model = MLPDenoiser(dim=2, hidden=(16, 16), seed=0)
    gen = train(model, _points(xp), Schedule.log_linear(0.01, 10.0, 50), steps=10, batch_size=8, seed=0,
                parametrization=parametrization, sigma_distribution="lognormal")
    syncs, h2d = _per_step(strict_counter, gen)
    assert syncs <= 2 and h2d == 0, (parametrization, syncs, h2d)


def test_unet_training_step_budget(strict_counter, xp):
    data = backend.default_rng(0, xp=xp).standard_normal((16, 1, 8, 8), dtype="float32")
    model = UNetDenoiser(channels=1, base_channels=8, channel_mult=(1, 2), groups=4, seed=0)
    gen = train(model, data, Schedule.log_linear(0.01, 10.0, 50), steps=6, batch_size=4, seed=0)
    syncs, h2d = _per_step(strict_counter, gen, warmup=1, steps=2)
    assert syncs <= 2 and h2d == 0, (syncs, h2d)


def test_clip_grad_norm_syncs_once_for_all_tensors(strict_counter, xp):
    model = UNetDenoiser(channels=1, base_channels=8, channel_mult=(1, 2), groups=4, seed=0)
    params = list(model.parameters())
    for p in params:
        p.grad[...] = 1.0
    strict_counter.reset()
    total = clip_grad_norm(params, 1e-3)
    assert strict_counter.syncs == 1 and len(params) > 10
    n = sum(int(p.data.size) for p in params)
    assert total == pytest.approx(np.sqrt(n), rel=1e-6)  # every entry 1: the norm is sqrt(#entries)


@pytest.mark.parametrize("method", METHODS)
def test_sampler_loop_makes_no_sync_per_step(strict_counter, xp, method):
    # a sync-free denoiser: any sync counted below is the sampler's own
    def denoiser(x, sigma):
        return x * (1.0 / (1.0 + sigma * sigma))

    sigmas = Schedule.log_linear(0.01, 10.0, 100).sampling_sigmas(12)
    x = backend.default_rng(0, xp=xp).standard_normal((5, 2))
    gen = iter_sample(denoiser, sigmas, x, method=method, rng=3)
    syncs, h2d = _per_step(strict_counter, gen, warmup=1, steps=4)
    assert syncs == 0 and h2d == 0, (method, syncs, h2d)


@pytest.mark.parametrize("sigma_kind", ["float", "array"])
def test_ideal_denoiser_syncs_at_most_once_per_call_and_never_per_chunk(strict_counter, xp, sigma_kind):
    data = _points(xp, n=200)
    den = IdealDenoiser(data, chunk_size=16)  # 13 chunks
    x = _points(xp, n=4, seed=1)
    sigma = 0.5 if sigma_kind == "float" else xp.full((4,), 0.5, dtype="float32")
    strict_counter.reset()
    den(x, sigma)
    den.x0_hat(x, sigma)
    assert strict_counter.syncs <= 2 and strict_counter.h2d == 0, (strict_counter.syncs, strict_counter.h2d)


def test_model_forward_copies_nothing_to_the_device(strict_counter, xp):
    model = MLPDenoiser(dim=2, hidden=(8,), seed=0)
    x = _points(xp, n=4)
    model(x, 0.5)  # first call on this backend fills the frequency cache
    strict_counter.reset()
    model(x, 0.5)
    model(x, 0.7)
    assert strict_counter.h2d == 0 and strict_counter.syncs == 0


def test_autoencoder_training_step_budget(strict_counter, xp):
    """The VAE's loop: reconstruction and KL terms in one sync, clipping in another."""
    data = backend.default_rng(0, xp=xp).standard_normal((16, 1, 8, 8), dtype="float32")
    ae = Autoencoder(1, latent_channels=2, base_channels=4, channel_mult=(1, 2), seed=0)
    gen = train_autoencoder(ae, data, steps=6, batch_size=4, seed=0)
    syncs, h2d = _per_step(strict_counter, gen, warmup=1, steps=2)
    assert syncs <= 2 and h2d == 0, (syncs, h2d)
