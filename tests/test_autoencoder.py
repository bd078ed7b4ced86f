"""The variational autoencoder: gradients of reconstruction + KL together, the KL against Monte Carlo,
shapes, checkpoints and errors.

Gradcheck tolerance 1e-6 relative, as in test_models.py (float64 central differences, eps = 1e-6).
"""
import numpy as np
import pytest

from minidiff import backend
from minidiff.nn import Autoencoder, Module, build_model, gradcheck, load, save
from nn_helpers import randomize, rn

TOL = 1e-6

pytestmark = pytest.mark.usefixtures("numpy_backend")


class ReconPlusKL(Module):
    """``[x_hat.ravel(), kl]`` as one output, so gradcheck's random upstream ``g`` weighs the reconstruction
    with ``g[:-1]`` and the KL with ``g[-1]``: checks ``backward(d_x_hat, d_kl)`` for both terms at once."""

    def __init__(self, ae, noise):
        self.ae, self.noise = ae, noise

    def forward(self, x):
        x_hat = self.ae(x, noise=self.noise)
        self._shape = x_hat.shape
        return np.concatenate([x_hat.reshape(-1), [self.ae.kl()]])

    def backward(self, g):
        return self.ae.backward(g[:-1].reshape(self._shape), d_kl=float(g[-1]))


def small_ae(**kw):
    return Autoencoder(1, latent_channels=2, base_channels=3, channel_mult=(1, 2), dtype="float64", **kw)


@pytest.mark.parametrize("with_noise", [True, False])
def test_gradcheck_reconstruction_and_kl(with_noise):
    ae = randomize(small_ae(seed=0))
    noise = rn(2, 2, 2, 2, seed=5) if with_noise else None
    result = gradcheck(ReconPlusKL(ae, noise), rn(2, 1, 4, 4), max_entries=12, n_directions=2)
    assert result.max_rel_error < TOL, result.worst()
    assert set(result.errors) == {"input0"} | {"ae." + n for n, _ in ae.named_parameters()}


def test_gradcheck_three_levels_kl_only():
    # upstream zero on x_hat: only the KL term's gradient flows (a wrong d_kl path cannot hide behind it)
    ae = randomize(Autoencoder(2, latent_channels=1, base_channels=2, channel_mult=(1, 1, 2), dtype="float64"))

    class KLOnly(Module):
        def __init__(self):
            self.ae = ae

        def forward(self, x):
            self.ae(x, noise=rn(1, 1, 2, 2, seed=3))
            return np.array([self.ae.kl()])

        def backward(self, g):
            return self.ae.backward(np.zeros((1, 2, 8, 8)), d_kl=float(g[0]))

    result = gradcheck(KLOnly(), rn(1, 2, 8, 8), max_entries=8, n_directions=2)
    assert result.max_rel_error < TOL, result.worst()


def test_kl_matches_monte_carlo():
    # KL(q || p) = E_q[log q(z) - log p(z)]; with 200k draws per latent entry the Monte Carlo standard error
    # of the per-sample KL (a sum over 8 entries, each with variance O(1)) is ~0.01: tolerance 5 sigma.
    ae = randomize(small_ae(seed=1), seed=2)
    x = rn(3, 1, 4, 4, seed=4)
    ae(x)
    kl = ae.kl()
    mu, logvar = ae.encode(x)
    rng = np.random.default_rng(0)
    n = 200_000
    eps = rng.standard_normal((n,) + mu.shape)
    z = mu + np.exp(0.5 * logvar) * eps
    log_q = -0.5 * (eps ** 2 + logvar + np.log(2 * np.pi))
    log_p = -0.5 * (z ** 2 + np.log(2 * np.pi))
    per_sample = (log_q - log_p).reshape(n, 3, -1).sum(axis=2)  # (n, B)
    mc = per_sample.mean()
    se = per_sample.mean(axis=1).std() / np.sqrt(n)
    assert abs(kl - mc) < 5 * se + 1e-12, (kl, mc, se)
    assert kl > 0.1  # randomised weights: far from the prior, so the comparison is not trivially 0 == 0


def test_kl_zero_at_the_prior():
    ae = small_ae()
    for p in ae.encoder[-1].parameters():
        p.data[...] = 0.0  # mu = 0, logvar = 0: q = N(0, I) exactly
    ae(rn(2, 1, 4, 4))
    assert ae.kl() == 0.0


def test_noise_none_decodes_the_mean_and_shapes():
    ae = randomize(small_ae())
    x = rn(3, 1, 8, 8)
    mu, logvar = ae.encode(x)
    assert mu.shape == logvar.shape == (3, 2, 4, 4) == (3,) + ae.latent_shape((1, 8, 8))
    np.testing.assert_array_equal(ae(x), ae.decode(mu))
    x_noisy = ae(x, noise=np.zeros_like(mu))  # zero noise is z = mu too
    np.testing.assert_allclose(x_noisy, ae.decode(mu), rtol=0, atol=1e-14)
    assert ae(x, noise=rn(3, 2, 4, 4)).shape == x.shape


def test_batched_equals_per_sample():
    ae = randomize(small_ae())
    x = rn(3, 1, 4, 4)
    noise = rn(3, 2, 2, 2, seed=9)
    full = ae(x, noise=noise)
    for b in range(3):
        np.testing.assert_allclose(ae(x[b:b + 1], noise=noise[b:b + 1])[0], full[b], rtol=1e-12, atol=1e-12)


def test_checkpoint_round_trip(tmp_path):
    ae = randomize(Autoencoder(1, base_channels=4, channel_mult=(1, 2), seed=3))
    path = tmp_path / "ae.npz"
    save(path, ae)
    ck = load(path)
    assert isinstance(ck.model, Autoencoder)
    x = rn(2, 1, 4, 4).astype("float32")
    np.testing.assert_array_equal(ck.model(x), ae(x))
    assert isinstance(build_model({"model": "Autoencoder", **ae.config}), Autoencoder)


def test_errors():
    ae = small_ae()
    with pytest.raises(ValueError, match="channels"):
        ae.encode(rn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="divisible by 2"):
        ae.encode(rn(1, 1, 5, 5))
    with pytest.raises(ValueError, match="noise"):
        ae(rn(1, 1, 4, 4), noise=rn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="z must have 2 channels"):
        ae.decode(rn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="latent_channels"):
        Autoencoder(1, latent_channels=0)
    with pytest.raises(ValueError, match="channel_mult"):
        Autoencoder(1, channel_mult=())
    assert backend.get_backend() == "numpy"


def test_fit_autoencoder_lowers_the_loss_and_caches(tmp_path):
    from minidiff.latent import AutoencoderConfig, fit_autoencoder

    cfg = AutoencoderConfig(dataset="glyphs16", n_train=64, base_channels=4, steps=30, batch_size=16,
                            warmup_steps=5, lr=5e-3)
    path = tmp_path / "ae.npz"
    ae, losses = fit_autoencoder(cfg, checkpoint_path=path, progress=False, resume=True)
    # 30 Adam steps from a random init: the first loss is ~ the data's second moment (~0.9 for glyphs in
    # [-1, 1]); demanding a 2x drop leaves a wide margin over the observed drop.
    assert np.mean(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])
    again, cached = fit_autoencoder(cfg, checkpoint_path=path, progress=False, resume=True)  # loads, no training
    assert cached == losses
    x = rn(2, 1, 16, 16).astype("float32")
    np.testing.assert_array_equal(again(x), ae(x))
    with pytest.raises(ValueError, match="different config"):
        fit_autoencoder(AutoencoderConfig(**{**cfg.as_dict(), "beta": 0.5}), checkpoint_path=path,
                        progress=False, resume=True)


def test_cli_trains_a_vae(tmp_path, capsys):
    from minidiff.cli import main

    out = tmp_path / "ae.npz"
    assert main(["train", "--dataset", "glyphs16", "--model", "vae", "--steps", "3", "--batch-size", "4",
                 "--n-train", "16", "--out", str(out), "--quiet"]) == 0
    assert isinstance(load(out).model, Autoencoder)
    assert "trained Autoencoder" in capsys.readouterr().out
