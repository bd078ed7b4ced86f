"""Latent diffusion: the latent scale, encode/decode, training a denoiser on latents, sampling decoded images
(API and CLI), and the DiT through the training pipeline."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import TrainConfig, fit
from minidiff.cli import main
from minidiff.latent import (
    AutoencoderConfig, decode_latents, encode_latents, fit_autoencoder, latent_scale, load_autoencoder,
)
from minidiff.nn import Autoencoder, DiTDenoiser, load
from nn_helpers import randomize, rn

pytestmark = pytest.mark.usefixtures("numpy_backend")


@given(std=st.floats(1e-3, 1e3), mean=st.floats(-10, 10), seed=st.integers(0, 2**16))
def test_latent_scale_gives_zero_mean_unit_variance(std, mean, seed):
    z = mean + std * rn(50, 4, 3, 3, seed=seed)
    scale, shift = latent_scale(z)
    u = (z - shift) * scale
    # exact identities of the sample moments, up to float64 rounding of sums over 1800 entries
    assert abs(u.mean()) < 1e-9 * (1 + abs(mean) / std)
    assert abs(u.var() - 1.0) < 1e-9
    assert abs(scale * std - 1.0) < 0.15  # and it measures the spread: 1800 draws, std error ~2%


def test_latent_scale_refuses_constant_latents():
    with pytest.raises(ValueError, match="zero variance"):
        latent_scale(np.ones((4, 2, 2, 2)))


def test_encode_then_decode_latents():
    ae = randomize(Autoencoder(1, latent_channels=2, base_channels=4, channel_mult=(1, 2), dtype="float64"))
    x = rn(10, 1, 8, 8)
    z0, scale, shift = encode_latents(ae, x, batch_size=3)  # chunked
    assert z0.shape == (10, 2, 4, 4)
    assert abs(z0.mean()) < 1e-12 and abs(z0.var() - 1.0) < 1e-12  # unit variance on the data itself
    mu, _ = ae.encode(x)
    np.testing.assert_allclose(z0, (mu - shift) * scale, rtol=1e-12, atol=1e-12)  # chunked == whole batch
    np.testing.assert_allclose(decode_latents(ae, z0, scale, shift), ae.decode(mu), rtol=1e-10, atol=1e-12)
    z1, s1, h1 = encode_latents(ae, x[:4], scale=2.0, shift=0.5)  # a given scale is used as is
    assert (s1, h1) == (2.0, 0.5)
    np.testing.assert_allclose(z1, (mu[:4] - 0.5) * 2.0, rtol=1e-12, atol=1e-12)


def tiny_autoencoder(path):
    cfg = AutoencoderConfig(dataset="glyphs16", n_train=32, base_channels=4, steps=5, batch_size=8)
    fit_autoencoder(cfg, checkpoint_path=path, progress=False)
    return load_autoencoder(path)


def test_fit_on_latents_and_decode_samples(tmp_path):
    from minidiff import sample

    ae_path = tmp_path / "ae.npz"
    ae = tiny_autoencoder(ae_path)
    cfg = TrainConfig(dataset="glyphs16", n_train=32, model="dit", dit_dim=16, dit_depth=1, dit_heads=2,
                      steps=5, batch_size=8, latent=str(ae_path))
    ck_path = tmp_path / "ldm.npz"
    res = fit(cfg, checkpoint_path=ck_path, progress=False, resume=True)
    assert res.data.shape == (32,) + ae.latent_shape((1, 16, 16))
    # the stored scale is measured on the data: the training latents have unit variance
    assert abs(float(res.data.var()) - 1.0) < 1e-5 and res.config.latent_scale > 0
    assert load(ck_path).config["latent_scale"] == res.config.latent_scale
    sigmas = res.schedule.sampling_sigmas(3)
    z = sample(res.ema_model, sigmas, float(sigmas[0]) * rn(4, *res.data.shape[1:]).astype("float32"), method="ddim")
    x = res.decode(z)
    assert x.shape == (4, 1, 16, 16) and np.all(np.isfinite(x))
    again = fit(cfg, checkpoint_path=ck_path, progress=False, resume=True)  # same config: a cache hit
    assert again.losses == res.losses


def test_cli_latent_round_trip(tmp_path, capsys):
    ae = tmp_path / "ae.npz"
    ldm = tmp_path / "ldm.npz"
    out = tmp_path / "s.npz"
    assert main(["train", "--dataset", "glyphs16", "--model", "vae", "--steps", "3", "--batch-size", "4",
                 "--n-train", "16", "--out", str(ae), "--quiet"]) == 0
    assert main(["train", "--dataset", "glyphs16", "--latent", str(ae), "--model", "dit", "--steps", "3",
                 "--batch-size", "4", "--n-train", "16", "--out", str(ldm), "--quiet"]) == 0
    assert "latent space" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(ldm), "--n", "3", "--steps", "3", "--out", str(out)]) == 0
    x = np.load(out)["x"]
    assert x.shape == (3, 1, 16, 16) and np.all(np.isfinite(x))  # decoded images of the data's shape
    assert main(["train", "--dataset", "glyphs16", "--latent", str(tmp_path / "nope.npz"), "--model", "dit",
                 "--steps", "3", "--out", str(ldm), "--quiet"]) == 2


def test_dit_through_fit_in_pixel_space():
    cfg = TrainConfig(dataset="glyphs16", n_train=16, model="dit", dit_dim=16, dit_depth=1, dit_heads=2,
                      patch_size=4, steps=3, batch_size=4)
    res = fit(cfg, progress=False)
    assert isinstance(res.model, DiTDenoiser) and res.model.patch_size == 4 and len(res.losses) == 3
    with pytest.raises(ValueError, match="model must be"):
        TrainConfig(model="transformer")


@pytest.mark.parametrize("model", ["dit", "unet"])
def test_text_conditioned_latent_diffusion(tmp_path, model):
    """The text path in latent space: a captioned-glyph autoencoder, a text-conditioned denoiser on its
    latents (CLI), and prompts sampled to decoded images by the CLI and by ``generate``, also after the two
    checkpoints moved to another folder together (the recorded absolute path is then gone)."""
    import shutil

    from minidiff.t2i import TextConditionedDenoiser, generate, load_text_model

    ae, ldm, out = tmp_path / "ae.npz", tmp_path / "ldm.npz", tmp_path / "s.npz"
    assert main(["train", "--dataset", "captioned_glyphs", "--model", "vae", "--steps", "2", "--batch-size", "4",
                 "--n-train", "16", "--out", str(ae), "--quiet"]) == 0
    extra = ["--dit-dim", "16", "--dit-depth", "1"] if model == "dit" else ["--base-channels", "8"]
    assert main(["train", "--dataset", "captioned_glyphs", "--conditional", "--latent", str(ae), "--model", model,
                 "--steps", "2", "--batch-size", "4", "--n-train", "16", "--text-dim", "16", "--text-depth", "1",
                 "--out", str(ldm), "--quiet", *extra]) == 0
    ck = load(ldm)
    assert ck.model_class == "TextConditionedDenoiser" and ck.extra["data_shape"] == [4, 6, 6]  # 24 / 4 per side
    assert type(ck.model.denoiser).__name__ == ("DiTDenoiser" if model == "dit" else "UNetDenoiser")
    assert main(["sample", "--checkpoint", str(ldm), "--prompt", "bold R", "--n", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert np.load(out)["x"].shape == (2, 1, 24, 24)  # decoded glyphs, not latents
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in (ae, ldm):
        shutil.move(str(f), str(moved / f.name))
    m = load_text_model(str(moved / "ldm.npz"))
    assert isinstance(m, TextConditionedDenoiser) and m.sample_shape == (4, 6, 6)
    x = generate(m, "serif 7", n=3, steps=2)
    z = generate(m, "serif 7", n=3, steps=2, decode=False)
    assert x.shape == (3, 1, 24, 24) and z.shape == (3, 4, 6, 6) and np.all(np.isfinite(x))
    np.testing.assert_allclose(x, decode_latents(m.latent[0], z, m.latent[1], m.latent[2]), rtol=1e-5, atol=1e-6)
    assert main(["sample", "--checkpoint", str(moved / "ldm.npz"), "--prompt", "7", "--n", "1", "--steps", "2",
                 "--out", str(out)]) == 0
