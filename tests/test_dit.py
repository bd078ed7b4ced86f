"""The diffusion transformer: patchify round trips, position embedding, adaLN-Zero, gradients, training.

Gradcheck tolerance 1e-6 relative, as in test_models.py (float64 central differences, eps = 1e-6).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff.nn import Adam, DiTBlock, DiTDenoiser, Module, build_model, gradcheck, load, save
from minidiff.nn import LayerNorm
from minidiff.nn.dit import AdaLayerNorm, patchify, sincos_pos_embed_2d, unpatchify
from nn_helpers import randomize, rn

TOL = 1e-6

pytestmark = pytest.mark.usefixtures("numpy_backend")


@given(B=st.integers(1, 3), C=st.integers(1, 4), p=st.integers(1, 4), gh=st.integers(1, 4), gw=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_patchify_round_trips(B, C, p, gh, gw, seed):
    x = rn(B, C, p * gh, p * gw, seed=seed)
    t = patchify(x, p)
    assert t.shape == (B, gh * gw, p * p * C)
    np.testing.assert_array_equal(unpatchify(t, p, C, p * gh, p * gw), x)
    np.testing.assert_array_equal(patchify(unpatchify(t, p, C, p * gh, p * gw), p), t)
    # token (i, j) holds exactly the patch at rows p i.., columns p j.. (checked against slicing)
    i, j = gh - 1, gw - 1
    patch = x[:, :, p * i:p * i + p, p * j:p * j + p].transpose(0, 2, 3, 1).reshape(B, -1)
    np.testing.assert_array_equal(t[:, i * gw + j], patch)


def test_sincos_pos_embed_2d():
    pe = sincos_pos_embed_2d(8, 3, 5, dtype="float64")
    assert pe.shape == (15, 8)
    # row features depend on i only, column features on j only; sin^2 + cos^2 = 1 per frequency
    np.testing.assert_allclose(pe[:, 0] ** 2 + pe[:, 2] ** 2, 1.0, atol=1e-15)
    assert np.array_equal(pe[0, :4], pe[4, :4]) and np.array_equal(pe[0, 4:], pe[5, 4:])
    assert len({tuple(r) for r in pe.round(12)}) == 15  # every position distinct
    np.testing.assert_allclose(pe[6], [np.sin(1), np.sin(1e-2), np.cos(1), np.cos(1e-2),
                                       np.sin(1), np.sin(1e-2), np.cos(1), np.cos(1e-2)], atol=1e-15)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2, 2)


def test_fresh_dit_outputs_exactly_zero_and_blocks_are_identity():
    model = DiTDenoiser(2, 8, patch_size=2, dim=16, depth=2, num_heads=2, num_classes=3, context_dim=6, seed=1)
    x = rn(3, 2, 8, 8).astype("float32")
    ctx = rn(3, 4, 6).astype("float32")
    out = model(x, np.array([0.01, 1.0, 50.0], dtype="float32"), y=np.array([0, 1, 3]), context=ctx)
    assert np.array_equal(out, np.zeros_like(out))
    block = DiTBlock(16, 2, context_dim=6, seed=0)
    h = rn(3, 5, 16).astype("float32")
    np.testing.assert_array_equal(block(h, rn(3, 16).astype("float32"), ctx), h)  # adaLN-Zero: identity


@given(B=st.integers(1, 4), L=st.integers(1, 6), D=st.integers(1, 9), seed=st.integers(0, 2**16),
       scale=st.floats(1e-3, 1e3))
def test_ada_layer_norm_is_layer_norm_then_modulation(B, L, D, seed, scale):
    """The fused norm equals LayerNorm followed by ``(1 + scale) n + shift``, computed separately here; with
    ``shift = scale = 0`` it is LayerNorm itself. Inputs scaled over six decades (LayerNorm is scale
    invariant); float64, 1e-12 relative to the output's size."""
    ada, ln = AdaLayerNorm(D, dtype="float64"), LayerNorm(D, dtype="float64")
    for m in (ada, ln):
        m.gamma.data[...] = rn(D, seed=seed + 1)
        m.beta.data[...] = rn(D, seed=seed + 2)
    x = rn(B, L, D, seed=seed) * scale + 3.0
    shift, sc = rn(B, D, seed=seed + 3), rn(B, D, seed=seed + 4)
    want = ln(x) * (1.0 + sc[:, None, :]) + shift[:, None, :]
    np.testing.assert_allclose(ada(x, shift, sc), want, rtol=0, atol=1e-12 * (1 + np.abs(want).max()))
    zeros = np.zeros((B, D))
    np.testing.assert_allclose(ada(x, zeros, zeros), ln(x), rtol=0, atol=1e-12 * (1 + np.abs(want).max()))


def test_ada_layer_norm_gradcheck():
    """x, shift, scale and gamma, beta: float64 central differences."""
    ada = randomize(AdaLayerNorm(5, dtype="float64"))
    result = gradcheck(ada, (rn(3, 4, 5), rn(3, 5, seed=2), rn(3, 5, seed=3)))
    assert result.max_rel_error < TOL, result.worst()
    assert set(result.errors) == {"input0", "input1", "input2", "gamma", "beta"}


@pytest.mark.parametrize("with_context", [False, True])
def test_dit_block_gradcheck(with_context):
    block = randomize(DiTBlock(8, 2, mlp_ratio=2, context_dim=3 if with_context else None, dtype="float64"))
    inputs = (rn(2, 5, 8), rn(2, 8, seed=2)) + ((rn(2, 4, 3, seed=3),) if with_context else ())
    result = gradcheck(block, inputs, max_entries=16, n_directions=2)
    assert result.max_rel_error < TOL, result.worst()
    assert len(result.errors) == len(inputs) + len(list(block.parameters()))


@pytest.mark.parametrize("kw", [dict(), dict(num_classes=3), dict(patch_size=1, image_size=4)])
def test_dit_gradcheck_all_parameters(kw):
    kw = {"image_size": 8, **kw}
    model = randomize(DiTDenoiser(2, dim=8, depth=2, num_heads=2, mlp_ratio=2, dtype="float64", **kw))
    s = kw["image_size"]
    y = np.array([0, 3]) if "num_classes" in kw else None
    result = gradcheck(model, rn(2, 2, s, s), kwargs=dict(sigma=np.array([0.3, 4.0]), y=y),
                       max_entries=8, n_directions=2)
    assert result.max_rel_error < TOL, result.worst()
    assert set(result.errors) == {"input0"} | {n for n, _ in model.named_parameters()}


def test_dit_gradcheck_with_text_context():
    model = randomize(DiTDenoiser(1, 4, dim=8, depth=1, num_heads=2, mlp_ratio=2, context_dim=5, dtype="float64"))

    class WithContext(Module):  # differentiate w.r.t. x and the context (the text encoder trains through it)
        def __init__(self):
            self.model = model

        def forward(self, x, context):
            mask = np.array([[True, True, False], [True, True, True]])
            return self.model(x, 0.7, context=context, context_mask=mask)

        def backward(self, g):
            return self.model.backward(g)

    result = gradcheck(WithContext(), (rn(2, 1, 4, 4), rn(2, 3, 5, seed=4)), max_entries=8, n_directions=2)
    assert result.max_rel_error < TOL, result.worst()


def test_batched_equals_per_sample_and_checkpoint(tmp_path):
    model = randomize(DiTDenoiser(1, 4, dim=8, depth=1, num_heads=2, num_classes=2, seed=0))
    x = rn(3, 1, 4, 4).astype("float32")
    sigma = np.array([0.1, 1.0, 10.0], dtype="float32")
    y = np.array([0, 1, 2])
    full = model(x, sigma, y)
    for b in range(3):
        np.testing.assert_allclose(model(x[b:b + 1], sigma[b:b + 1], y[b:b + 1])[0], full[b], rtol=1e-5, atol=1e-6)
    save(tmp_path / "dit.npz", model)
    clone = load(tmp_path / "dit.npz").model
    np.testing.assert_array_equal(clone(x, sigma, y), full)
    assert type(build_model({"model": "DiTDenoiser", **model.config})) is DiTDenoiser


def test_training_lowers_the_loss():
    """Four 4x4 images, eps loss at fixed (x, sigma, eps) on the evaluation batch, 150 Adam steps."""
    rng = np.random.default_rng(0)
    data = np.sign(rng.standard_normal((4, 1, 4, 4))).astype("float32")
    model = DiTDenoiser(1, 4, dim=16, depth=2, num_heads=2, seed=0)
    sigma = np.full(4, 0.5, dtype="float32")
    eps = rng.standard_normal(data.shape).astype("float32")

    def loss():
        return float(((model(data + 0.5 * eps, sigma) - eps) ** 2).mean())

    before = loss()
    opt = Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        err = model(data + 0.5 * eps, sigma) - eps
        model.zero_grad()
        model.backward(err * (2.0 / err.size))
        opt.step()
    # memorising 4 fixed noisy images: the loss must at least halve (observed far more); a backward with a
    # wrong sign or a dead branch leaves it at ~1 (= E eps^2, the loss of a zero output)
    assert loss() < 0.5 * before, (before, loss())


def test_errors():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        DiTDenoiser(1, 7, patch_size=2)
    with pytest.raises(ValueError, match="divisible by 4"):
        DiTDenoiser(1, 8, dim=10, num_heads=2)
    model = DiTDenoiser(1, 8, dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="shape"):
        model(rn(1, 1, 4, 4).astype("float32"), 1.0)
    with pytest.raises(ValueError, match="unconditional"):
        model(rn(1, 1, 8, 8).astype("float32"), 1.0, y=np.array([0]))
    with pytest.raises(ValueError, match="context"):
        model(rn(1, 1, 8, 8).astype("float32"), 1.0, context=rn(1, 2, 3).astype("float32"))


def test_dit_with_classifier_free_guidance_and_a_sampler():
    from minidiff import classifier_free, sample

    model = randomize(DiTDenoiser(1, 4, dim=8, depth=1, num_heads=2, num_classes=3, seed=0))
    y = np.array([0, 2])
    x = rn(2, 1, 4, 4).astype("float32")
    guided = classifier_free(model, y, 1.0)
    # w = 1 is the conditional model itself (one batched call of [y, null] inside the wrapper)
    np.testing.assert_allclose(guided(x, 0.7), model(x, 0.7, y), rtol=1e-5, atol=1e-6)
    out = sample(classifier_free(model, y, 3.0), [5.0, 1.0, 0.1, 0.0], 5.0 * x, method="ddim")
    assert out.shape == x.shape and np.all(np.isfinite(out))
