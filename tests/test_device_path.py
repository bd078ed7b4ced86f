"""Every public API family once with inputs on the run's backend (the device under
MINIDIFF_BACKEND=cupy MINIDIFF_STRICT_CUPY=1), compared with the same call on host copies.

In the NumPy run both sides are NumPy and the comparisons are identities; under the strict CuPy
stand-in the device side must run without touching host arrays (any mix raises) and agree with the
host computation. Tolerances: the stand-in computes with NumPy, so device and host results are equal
up to summation order (float64: 1e-12 relative); on a real GPU cuBLAS may order sums differently,
which float64 also keeps far below 1e-9.
"""
import os

import numpy as np
import pytest

from device_helpers import D, H, assert_close, assert_equal
from minidiff import backend, datasets, metrics
from minidiff.forward import ddpm_posterior
from minidiff.guidance import classifier_free, classifier_guidance
from minidiff.ideal import IdealDenoiser, dist, project
from minidiff.nn import EMA, SGD, Adam, AdamW, MLPDenoiser, NoiseAwareClassifier, load, save
from minidiff.samplers import METHODS, CountingDenoiser, ddim_vp, ddpm_ancestral_vp, denoise_once, iter_sample, sample
from minidiff.schedules import Schedule, alpha_bars, linear_betas, timesteps

RTOL = 1e-9  # float64 on both sides: summation order only (see the module docstring)


def _host(a):
    return backend.asarray(H(a), xp=np)


def _gauss(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.fixture
def den_pair():
    """The same ideal denoiser on the run's backend and on the host."""
    data = _gauss(40, 2, seed=1)
    return IdealDenoiser(D(data), chunk_size=7), IdealDenoiser(data, chunk_size=7)


class RecordingRNG(backend.CounterRNG):
    """A counter-based generator that keeps every normal draw (to replay a run as ``noise=``)."""

    def __init__(self, seed, xp):
        super().__init__(seed, xp=xp)
        self.draws = []

    def standard_normal(self, size=None, dtype="float64"):
        z = super().standard_normal(size, dtype)
        self.draws.append(z)
        return z


@pytest.mark.parametrize("method", METHODS)
def test_every_sampler_with_seed_generator_and_replayed_noise(method, den_pair, xp):
    dev, host = den_pair
    sigmas = Schedule.log_linear(0.02, 20.0, 100).sampling_sigmas(6)
    x = D(20.0 * _gauss(5, 2, seed=2))
    a = sample(dev, sigmas, x, method=method, rng=7)  # an int seed
    b = sample(dev, sigmas, x, method=method, rng=backend.default_rng(7, xp=xp))  # a generator
    assert backend.get_xp(a) is xp
    assert_equal(a, b)
    rec = RecordingRNG(3, xp)
    c = sample(dev, sigmas, x, method=method, rng=rec)
    assert all(backend.get_xp(w) is xp for w in rec.draws)
    # replay: the draws given back as noise=, on the device (exactly) and on the host (float64 rounding)
    assert_equal(sample(dev, sigmas, x, method=method, noise=rec.draws), c)
    host_out = sample(host, sigmas, H(x), method=method, noise=[H(w) for w in rec.draws])
    assert_close(c, host_out, rtol=RTOL, atol=1e-12)
    assert len(list(iter_sample(dev, sigmas, x, method=method, rng=3))) == len(sigmas) - 1


def test_a_generator_of_the_other_backend_is_refused(den_pair, xp):
    if xp is np:
        pytest.skip("needs a second backend: runs under MINIDIFF_BACKEND=cupy")
    dev, _ = den_pair
    sigmas = Schedule.log_linear(0.02, 20.0, 100).sampling_sigmas(4)
    with pytest.raises(TypeError, match="numpy.*cupy"):
        sample(dev, sigmas, D(_gauss(3, 2)), method="ddpm", rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.*cupy"):
        datasets.get_dataset("sphere").sample(10, np.random.default_rng(0))


def test_vp_reference_samplers_and_denoise_once(den_pair, xp):
    dev, host = den_pair
    ab = alpha_bars(linear_betas(200))
    ts = timesteps(5, 200)
    sig = np.sqrt((1 - ab) / ab)

    def eps_vp(den):
        return lambda x, t: den(x / np.sqrt(ab[t]), float(sig[t]))

    xT = _gauss(4, 2, seed=5)
    noise = [_gauss(4, 2, seed=20 + i) for i in range(len(ts) - 1)]
    for fn, kw in ((ddpm_ancestral_vp, {}), (ddim_vp, {"eta": 0.5})):
        d = fn(eps_vp(dev), ab, ts, D(xT), noise=[D(w) for w in noise], **kw)
        h = fn(eps_vp(host), ab, ts, xT, noise=noise, **kw)
        assert_close(d, h, rtol=RTOL, atol=1e-12)
        assert backend.get_xp(fn(eps_vp(dev), ab, ts, D(xT), rng=1, **kw)) is xp
    assert_close(denoise_once(dev, D(xT), 0.5), denoise_once(host, xT, 0.5), rtol=RTOL, atol=1e-12)
    counting = CountingDenoiser(dev)
    counting(D(xT), 1.0)
    assert counting.calls == 1 and counting.samples == 4


def test_ideal_denoiser_api(den_pair):
    dev, host = den_pair
    q, s = _gauss(6, 2, seed=3), np.geomspace(0.05, 5.0, 6)
    for name in ("x0_hat", "weights", "smoothed_dist2", "__call__"):
        assert_close(getattr(dev, name)(D(q), D(s)), getattr(host, name)(q, s), rtol=RTOL, atol=1e-12)
    data = _gauss(30, 2, seed=4)
    assert_close(project(D(q), D(data)), project(q, data), rtol=RTOL)
    assert_close(dist(D(q), D(data)), dist(q, data), rtol=RTOL)


def test_metrics(xp):
    a, b = _gauss(60, 2, seed=5), _gauss(50, 2, seed=6) + 0.3
    ds = datasets.get_dataset("circle")
    pts = H(ds.sample(40, rng=1))
    for f, args in ((metrics.memorization_rate, (a, b)), (metrics.mmd_rbf, (a, b)),
                    (metrics.precision_recall, (a, b)), (metrics.knn_distances, (a, b)), (metrics.knn, (a, b))):
        d, h = f(*(D(v) for v in args)), f(*(backend.asarray(v, xp=np) for v in args))
        if isinstance(d, dict):
            for k in d:
                assert d[k] == pytest.approx(h[k], rel=1e-9, abs=1e-12), (f.__name__, k)
        elif isinstance(d, tuple):
            for u, v in zip(d, h):
                assert_close(u, v, rtol=1e-9)
        elif isinstance(d, float):
            assert d == pytest.approx(h, rel=1e-9, abs=1e-12), f.__name__
        else:
            assert_close(d, h, rtol=1e-9)
    # random projections: the generator must live on the data's backend; compare two device runs
    sw1 = metrics.sliced_wasserstein(D(a), D(b), rng=backend.default_rng(0, xp=xp))
    sw2 = metrics.sliced_wasserstein(D(a), D(b), rng=backend.default_rng(0, xp=xp))
    assert sw1 == sw2 and sw1 > 0
    md, mh = metrics.manifold_distance(D(pts * 1.1), ds), metrics.manifold_distance(pts * 1.1, ds)
    assert md["mean"] > 0 and md == pytest.approx(mh, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", datasets.list_datasets())
def test_every_dataset_draws_on_the_default_backend(name, xp):
    ds = datasets.get_dataset(name)
    n = 6
    if ds.num_classes is None:
        x = ds.sample(n, rng=backend.default_rng(0))
        y = None
    else:
        x, y = ds.sample(n, rng=backend.default_rng(0), return_labels=True)
        assert backend.get_xp(y) is xp and y.shape == (n,)
    assert backend.get_xp(x) is xp and x.shape == (n,) + tuple(ds.shape)
    assert np.isfinite(H(x)).all()


def test_optimisers_and_ema_on_the_device(xp):
    for opt_cls, kw in ((SGD, {"lr": 0.1, "momentum": 0.9}), (Adam, {"lr": 0.1}), (AdamW, {"lr": 0.1})):
        dev = MLPDenoiser(2, hidden=(8,), dtype="float64", seed=0)
        with backend.use_backend("numpy"):
            host = MLPDenoiser(2, hidden=(8,), dtype="float64", seed=0)
        host.load_state_dict({k: H(v) for k, v in dev.state_dict().items()})
        ema_d, ema_h = EMA(dev, 0.9), EMA(host, 0.9)
        od, oh = opt_cls(dev.parameters(), **kw), opt_cls(host.parameters(), **kw)
        x, s = _gauss(5, 2, seed=7), np.geomspace(0.1, 3.0, 5)
        for _ in range(3):
            for model, opt, ema, xx, ss in ((dev, od, ema_d, D(x), D(s)), (host, oh, ema_h, x, s)):
                out = model(xx, ss)
                opt.zero_grad()
                model.backward(out * 0.2)
                opt.step()
                ema.update()
        for k, v in dev.state_dict().items():
            assert backend.get_xp(v) is xp
            assert_close(v, host.state_dict()[k], rtol=1e-9, atol=1e-12)
        for k in ema_d.shadow:
            assert_close(ema_d.shadow[k], ema_h.shadow[k], rtol=1e-9, atol=1e-12)


def test_checkpoints_cross_backends(tmp_path, xp):
    model = MLPDenoiser(2, hidden=(8,), num_classes=2, seed=3)
    opt = Adam(model.parameters(), lr=1e-3)
    ema = EMA(model, 0.9)
    x = D(_gauss(4, 2).astype(np.float32))
    model.backward(model(x, 0.5, D(np.array([0, 1, 2, 1]))))
    opt.step()
    ema.update()
    path = tmp_path / "m.npz"
    save(path, model, optimizer=opt, ema=ema)  # written from the run's backend
    for target in ("numpy", backend.get_backend()):
        with backend.use_backend(target) as txp:
            ck = load(path)  # loaded onto either backend
            for k, v in ck.model.state_dict().items():
                assert backend.get_xp(v) is txp
                assert_equal(v, model.state_dict()[k])
            opt2 = Adam(ck.model.parameters(), lr=1e-3)
            opt2.load_state_dict(ck.optimizer_state)
            ema2 = EMA(ck.model, 0.9)
            ema2.load_state_dict(ck.ema_state)
            assert_equal(ck.model(D(H(x)), 0.5), model(x, 0.5))


def test_guidance_on_the_device(xp):
    cond = MLPDenoiser(2, hidden=(8,), num_classes=2, dtype="float64", seed=1)
    clf = NoiseAwareClassifier(2, 2, hidden=(8,), dtype="float64", seed=2)
    x, y = D(_gauss(3, 2)), D(np.array([0, 1, 1]))
    out = classifier_free(cond, y, 2.0)(x, 0.7)
    assert backend.get_xp(out) is xp
    assert_close(out, 2.0 * H(cond(x, 0.7, y)) - H(cond(x, 0.7)), rtol=1e-9, atol=1e-12)
    base = MLPDenoiser(2, hidden=(8,), dtype="float64", seed=3)
    g = classifier_guidance(base, clf, y, 1.5)(x, D(np.array([0.3, 1.0, 2.0])))
    assert backend.get_xp(g) is xp and g.shape == (3, 2)


def test_ddpm_posterior_is_host_math():
    # schedule math is host float64 by design (docs/backends.md §3): Python floats in, floats out
    c0, ct, var = ddpm_posterior(0.5, 0.9)
    assert all(isinstance(v, float) for v in (c0, ct, var))


def test_cli_train_and_sample_run_on_the_default_backend(tmp_path, capsys):
    from minidiff.cli import main

    ck = tmp_path / "c.npz"
    assert main(["train", "--dataset", "moons", "--steps", "5", "--n-train", "64", "--out", str(ck), "--quiet"]) == 0
    out = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(ck), "--steps", "3", "--n", "7", "--out", str(out)]) == 0
    x = np.load(out)["x"]
    assert x.shape == (7, 2) and np.isfinite(x).all()
    assert main(["info"]) == 0
    assert os.environ.get("MINIDIFF_BACKEND", "numpy") in capsys.readouterr().out


# ----------------------------------------------------------------------------- newer modules on the device
# Their own test files pin NumPy; these run each once with inputs on the run's backend.
def _gradcheck_ok(module, x, **kw):
    from minidiff.nn import gradcheck

    result = gradcheck(module, x, max_entries=6, n_directions=1, **kw)
    assert result.max_rel_error < 1e-6, result.worst()  # float64 central differences, as in test_layers


def test_attention_blocks_on_the_device(xp):
    from minidiff.nn import FeedForward, MultiHeadAttention, TransformerBlock
    from nn_helpers import randomize, rn

    mask = D(np.array([[1, 1, 0, 1], [1, 0, 0, 1]], bool))
    cmask = D(np.array([[1, 0, 1], [0, 1, 1]], bool))
    _gradcheck_ok(randomize(MultiHeadAttention(8, 2, context_dim=6, dtype="float64")), (rn(2, 4, 8), rn(2, 3, 6, seed=2)),
                  kwargs={"mask": cmask})
    _gradcheck_ok(randomize(TransformerBlock(8, 2, context_dim=6, mlp_ratio=2, dtype="float64")),
                  (rn(2, 4, 8), rn(2, 3, 6, seed=2)), kwargs={"mask": mask, "context_mask": cmask})
    _gradcheck_ok(randomize(FeedForward(6, 12, dtype="float64")), rn(2, 3, 6))


def test_text_encoder_and_dit_on_the_device(xp):
    from minidiff.nn import DiTDenoiser
    from minidiff.text import TextEncoder
    from nn_helpers import randomize, rn

    enc = randomize(TextEncoder(vocab_size=6, max_length=5, dim=8, depth=1, num_heads=2, dtype="float64"))
    ids, mask = D(np.array([[3, 1, 3, 0], [5, 2, 0, 0]])), D(np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool))
    out = enc(ids, mask)
    assert backend.get_xp(out) is xp and out.shape == (2, 4, 8)
    dit = randomize(DiTDenoiser(1, 4, dim=8, depth=1, num_heads=2, mlp_ratio=2, num_classes=2, dtype="float64"))
    _gradcheck_ok(dit, rn(2, 1, 4, 4), kwargs={"sigma": D(np.array([0.3, 4.0])), "y": D(np.array([0, 2]))})
    text_dit = DiTDenoiser(1, 4, dim=8, depth=1, num_heads=2, context_dim=8, dtype="float64", seed=1)
    eps = text_dit(rn(2, 1, 4, 4), 0.5, context=out, context_mask=mask)  # text-conditioned, on the device
    assert backend.get_xp(eps) is xp and eps.shape == (2, 1, 4, 4)


def test_autoencoder_superres_and_preconditioning_on_the_device(xp):
    from minidiff.nn import Autoencoder
    from minidiff.nn.superres import SuperResDenoiser
    from minidiff.precond import PreconditionedDenoiser, Preconditioning
    from nn_helpers import randomize, rn

    ae = randomize(Autoencoder(1, latent_channels=2, base_channels=3, channel_mult=(1, 2), dtype="float64"))
    x = rn(2, 1, 8, 8)
    noise = rn(2, *ae.latent_shape((1, 8, 8)), seed=4)
    _gradcheck_ok(ae, x, kwargs={"noise": noise})
    sr = randomize(SuperResDenoiser(1, factor=2, base_channels=4, channel_mult=(1, 2), groups=2, dtype="float64"))
    _gradcheck_ok(sr, rn(2, 1, 8, 8), kwargs={"sigma": D(np.array([0.5, 2.0])), "low_res": rn(2, 1, 4, 4, seed=5),
                                              "aug_sigma": 0.1})
    den = PreconditionedDenoiser(MLPDenoiser(2, hidden=(8,), dtype="float64", seed=0), Preconditioning("edm", 0.5))
    out = den(D(_gauss(3, 2)), D(np.array([0.1, 1.0, 10.0])))
    assert backend.get_xp(out) is xp and out.shape == (3, 2)


def test_latent_pipeline_cascade_and_fid_on_the_device(xp):
    """Latent scaling, encode/decode, the super-resolution trainer and sampler, and the Frechet distance
    run on the default backend and agree with the same computations on the host (float64: 1e-9)."""
    from minidiff.cascade import super_resolve, train_super_resolution
    from minidiff.latent import decode_latents, encode_latents, latent_scale
    from minidiff.nn import Autoencoder
    from minidiff.nn.superres import SuperResDenoiser
    from nn_helpers import randomize, rn

    ae = randomize(Autoencoder(1, latent_channels=2, base_channels=3, channel_mult=(1, 2), dtype="float64"))
    x = rn(5, 1, 8, 8)
    z0, scale, shift = encode_latents(ae, x, batch_size=2)
    assert backend.get_xp(z0) is xp
    assert float(xp.mean(z0)) == pytest.approx(0.0, abs=1e-12) and float(xp.std(z0)) == pytest.approx(1.0, rel=1e-12)
    assert latent_scale(z0) == pytest.approx((1.0, 0.0), abs=1e-12)
    with backend.use_backend("numpy"):
        host = Autoencoder(1, latent_channels=2, base_channels=3, channel_mult=(1, 2), dtype="float64")
        host.load_state_dict({k: H(v) for k, v in ae.state_dict().items()})
        z0_h, scale_h, shift_h = encode_latents(host, H(x))
        x_h = decode_latents(host, z0_h, scale_h, shift_h)
    assert (scale, shift) == pytest.approx((scale_h, shift_h), rel=1e-9)
    assert_close(z0, z0_h, rtol=1e-9, atol=1e-12)
    assert_close(decode_latents(ae, z0, scale, shift, batch_size=3), x_h, rtol=1e-9, atol=1e-12)

    sr = SuperResDenoiser(1, factor=2, base_channels=4, channel_mult=(1,), groups=2, seed=0)
    data = backend.default_rng(0, xp=xp).standard_normal((8, 1, 8, 8), dtype="float32")
    losses = [m["loss"] for m in train_super_resolution(sr, data, Schedule.log_linear(0.02, 5.0, 20), steps=3,
                                                        batch_size=4)]
    assert len(losses) == 3 and all(np.isfinite(losses))
    out = super_resolve(sr, data[:2, :, ::2, ::2], Schedule.log_linear(0.02, 1.0, 8).sampling_sigmas(4), seed=0)
    assert backend.get_xp(out) is xp and out.shape == (2, 1, 8, 8) and bool(xp.isfinite(out).all())

    a, b = _gauss(80, 3, seed=1), _gauss(70, 3, seed=2) * 1.5 + 0.2
    assert metrics.feature_fid(D(a), D(b)) == pytest.approx(metrics.feature_fid(a, b), rel=1e-9)
