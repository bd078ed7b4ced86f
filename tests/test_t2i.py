"""Text-conditioned U-Net and the text-to-image wrapper: gradchecks, guidance over prompts, sampling, CLI."""
import numpy as np
import pytest

import minidiff as md
from minidiff import backend
from minidiff.cli import main
from minidiff.nn import Module, UNetDenoiser, gradcheck, load, save
from minidiff.t2i import TextConditionedDenoiser, generate, glyph_tokenizer
from minidiff.text import TextEncoder
from minidiff.training import train

# float64 central differences with eps = 1e-6: truncation ~1e-12 and roundoff ~1e-10 relative; attention's
# softmax and the norms keep the observed errors near 1e-7, so 1e-5 leaves margin and still fails on any
# wrong term (those give errors of order 1).
TOL = 1e-5


class _ImageAndContext(Module):
    """Expose the U-Net as f(x, context) for gradcheck (sigma and the mask are fixed keywords)."""

    def __init__(self, unet):
        self.unet = unet

    def forward(self, x, context, sigma=None, mask=None):
        return self.unet(x, sigma, context=context, context_mask=mask)

    def backward(self, d):
        return self.unet.backward(d)


def _tiny_unet(pooled, dtype="float64", context_dim=6, attention_resolutions=(1, 2)):
    return UNetDenoiser(1, base_channels=8, channel_mult=(1, 2), groups=4, context_dim=context_dim,
                        attention_resolutions=attention_resolutions, num_heads=2, pooled_context=pooled,
                        dtype=dtype, seed=3)


def test_conditioned_unet_gradcheck_image_and_context():
    """With pooled_context the context's gradient has both paths (cross-attention and the pooled mean)."""
    rng = backend.default_rng(0)
    xp = backend.get_xp()
    x = rng.standard_normal((2, 1, 4, 4))
    c = rng.standard_normal((2, 3, 6))
    mask = xp.asarray([[True, True, False], [True, False, False]])
    # 8 random entries + 2 random directions per array: any wrong term shows up in the directions
    res = gradcheck(_ImageAndContext(_tiny_unet(True)), (x, c), kwargs=dict(sigma=xp.asarray([0.5, 2.0]), mask=mask),
                    max_entries=8, n_directions=2)
    assert res.max_rel_error < TOL, res.worst()


def test_masked_context_tokens_do_not_matter():
    """Padding positions of the context carry no information: changing them leaves eps_hat unchanged."""
    rng = backend.default_rng(1)
    xp = backend.get_xp()
    m = _tiny_unet(True)
    x, c = rng.standard_normal((2, 1, 4, 4)), rng.standard_normal((2, 3, 6))
    mask = xp.asarray([[True, True, False], [True, False, False]])
    a = m(x, 1.0, context=c, context_mask=mask)
    c2 = c.copy()
    c2[0, 2] += 5.0
    c2[1, 1:] -= 3.0
    b = m(x, 1.0, context=c2, context_mask=mask)
    assert float(xp.abs(a - b).max()) < 1e-12  # masked keys get weight exactly 0
    c2[0, 0] += 1.0
    assert float(xp.abs(m(x, 1.0, context=c2, context_mask=mask) - a).max()) > 1e-6


def _tiny_text_model(dtype="float64"):
    tok = glyph_tokenizer()
    enc = TextEncoder(tok.vocab_size, tok.max_length, dim=8, depth=1, num_heads=2, dtype=dtype, seed=1)
    return TextConditionedDenoiser(tok, enc, _tiny_unet(True, dtype=dtype, context_dim=8, attention_resolutions=(2,)))


def test_text_conditioned_denoiser_gradcheck_through_the_encoder():
    m = _tiny_text_model()
    ids = m.encode(["bold serif R", ""])
    x = backend.default_rng(2).standard_normal((2, 1, 4, 4))
    res = gradcheck(m, x, kwargs=dict(sigma=0.8, y=ids), max_entries=6, n_directions=2)
    assert res.max_rel_error < TOL, res.worst()
    assert res.errors["text_encoder.tok"] < TOL  # the encoder's gradient arrives through dcontext


def test_guidance_over_prompts_weights():
    xp = backend.get_xp()
    m = _tiny_text_model()
    ids = m.encode(["italic 7", "R"])
    x = backend.default_rng(3).standard_normal((2, 1, 4, 4))
    cond = m(x, 1.3, ids)
    uncond = m(x, 1.3, None)  # None = the empty prompt
    assert float(xp.abs(md.classifier_free(m, ids, 1.0)(x, 1.3) - cond).max()) < 1e-12
    assert float(xp.abs(md.classifier_free(m, ids, 0.0)(x, 1.3) - uncond).max()) < 1e-12
    g3 = md.classifier_free(m, ids, 3.0)(x, 1.3)
    assert float(xp.abs(g3 - (uncond + 3.0 * (cond - uncond))).max()) < 1e-12
    assert float(xp.abs(cond - uncond).max()) > 1e-6  # the prompt changes the prediction


def test_caption_dropout_and_checkpoint_round_trip(tmp_path):
    m = _tiny_text_model(dtype="float32")
    data = backend.default_rng(4).standard_normal((16, 1, 4, 4), dtype="float32")
    ids = m.encode(["R", "bold 7", "seven, mono", "the letter A in a bold serif face"] * 4)
    gen = train(m, data, md.Schedule.log_linear(0.01, 10.0, T=50), steps=3, batch_size=8, labels=ids,
                label_dropout=0.5, lr=1e-3, checkpoint_path=str(tmp_path / "t.npz"))
    losses = [s["loss"] for s in gen]
    assert len(losses) == 3 and all(np.isfinite(losses))
    ck = load(str(tmp_path / "t.npz"))
    assert isinstance(ck.model, TextConditionedDenoiser) and ck.model.tokenizer == m.tokenizer
    x = data[:2]
    a, b = m(x, 0.7, ids[:2]), ck.model(x, 0.7, ids[:2])
    assert float(backend.get_xp().abs(a - b).max()) == 0.0


def test_generate_prompts_and_errors():
    m = _tiny_text_model(dtype="float32")
    x = generate(m, "bold serif R", n=3, steps=3, shape=(1, 4, 4))
    assert x.shape == (3, 1, 4, 4)
    assert generate(m, ["", "7"], steps=2, shape=(1, 4, 4)).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(m, "bold comic R", n=1, steps=2, shape=(1, 4, 4))
    with pytest.raises(ValueError, match="limit"):
        generate(m, " ".join(["the"] * 20) + " R", n=1, steps=2, shape=(1, 4, 4))


def test_cli_train_and_sample_with_a_prompt(tmp_path, capsys):
    ck = str(tmp_path / "t2i.npz")
    assert main(["train", "--dataset", "captioned_glyphs", "--model", "unet", "--conditional", "--steps", "2",
                 "--batch-size", "4", "--n-train", "32", "--base-channels", "8", "--text-dim", "16",
                 "--text-depth", "1", "--out", ck, "--quiet"]) == 0
    out = str(tmp_path / "s.npz")
    assert main(["sample", "--checkpoint", ck, "--prompt", "bold serif R", "--guidance", "3", "--n", "2",
                 "--steps", "2", "--out", out]) == 0
    assert np.load(out)["x"].shape == (2, 1, 24, 24)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", ck, "--prompt", "bold comic R", "--steps", "2", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "comic" in err and "vocabulary" in err and len(err.splitlines()) == 1


def test_reproduce_text_glyphs_runs_the_four_stages(tmp_path):
    """The shipped model's recipe, shrunk to a few steps per stage: it writes a sampling checkpoint whose
    config is the shipped one but for the sizes of the run."""
    from minidiff.t2i import load_text_model, reproduce_text_glyphs

    out = reproduce_text_glyphs(str(tmp_path), stages=(2, 1, 1, 1), stage1_plan=3, n_train=8, batch_size=2,
                                progress=False)
    for k in (1, 2, 3, 4):
        assert (tmp_path / f"stage{k}.npz").exists()
    ck, shipped = load(out), load("text-glyphs")
    assert ck.extra["step"] == 5 and ck.ema_state is None and ck.optimizer_state is None
    differ = {k for k in shipped.config if shipped.config[k] != ck.config.get(k)}
    assert differ == {"n_train", "steps", "checkpoint_every", "batch_size"}, differ
    assert ck.model.config == shipped.model.config  # the same network
    m = load_text_model(out)
    assert m.sample_shape == (1, 24, 24)
