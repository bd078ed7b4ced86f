"""Layers: finite-difference gradients, identities against the definitions, invariants, clear errors.

Tolerance for every gradcheck: relative error < 1e-6. Central differences in float64 with eps = 1e-6
have truncation error ~eps^2 * |f'''| ~ 1e-12 and roundoff ~1e-16 * |f| / eps ~ 1e-10 * |f|; observed
errors are 1e-10..1e-8, while a wrong derivative gives errors of order 1 (see the mutation tests).
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff import backend
from minidiff.nn import (
    GELU, Conv2d, Downsample, Embedding, GroupNorm, LayerNorm, Linear, ReLU, ResBlock, SigmaEmbedding,
    SiLU, Tanh, Upsample, gradcheck,
)
from nn_helpers import D, H, randomize, rn

F64 = "float64"
TOL = 1e-6

# Inputs come from nn_helpers (rn, D): on the default backend, the device under MINIDIFF_BACKEND=cupy.


LAYER_CASES = {
    "linear": lambda: (Linear(5, 4, dtype=F64), rn(3, 5)),
    "linear_3d_input": lambda: (Linear(5, 4, dtype=F64), rn(2, 3, 5)),
    "linear_nobias": lambda: (Linear(5, 4, bias=False, dtype=F64), rn(3, 5)),
    "relu": lambda: (ReLU(), rn(3, 5)),
    "silu": lambda: (SiLU(), rn(3, 5) * 3),
    "gelu": lambda: (GELU(), rn(3, 5) * 3),
    "tanh": lambda: (Tanh(), rn(3, 5)),
    "layernorm": lambda: (LayerNorm(6, dtype=F64), rn(3, 6)),
    "groupnorm": lambda: (GroupNorm(2, 6, dtype=F64), rn(2, 3, 3, 6)),
    "conv3x3_s1": lambda: (Conv2d(3, 4, 3, 1, dtype=F64), rn(2, 5, 5, 3)),
    "conv3x3_s2_odd": lambda: (Conv2d(3, 4, 3, 2, dtype=F64), rn(2, 5, 5, 3)),
    "conv3x3_s2_even": lambda: (Conv2d(3, 4, 3, 2, dtype=F64), rn(2, 6, 4, 3)),
    "conv3x3_nopad": lambda: (Conv2d(2, 3, 3, 1, padding=0, dtype=F64), rn(2, 5, 4, 2)),
    "conv1x1_s1": lambda: (Conv2d(3, 4, 1, 1, dtype=F64), rn(2, 5, 5, 3)),
    "conv1x1_s2": lambda: (Conv2d(3, 4, 1, 2, dtype=F64), rn(2, 5, 5, 3)),
    "upsample": lambda: (Upsample(), rn(2, 3, 3, 2)),
    "downsample": lambda: (Downsample(), rn(2, 4, 6, 2)),
    # moderate sigmas: eps = 1e-6 must stay small relative to sigma
    "sigma_embedding": lambda: (SigmaEmbedding(dtype=F64), np.exp(rn(4) * 2)),
    "resblock_1x1skip": lambda: (ResBlock(4, 6, 5, groups=2, dtype=F64), (rn(2, 4, 4, 4), rn(2, 5, seed=2))),
    "resblock_identity": lambda: (ResBlock(4, 4, 5, groups=2, dtype=F64), (rn(2, 4, 4, 4), rn(2, 5, seed=2))),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_gradcheck(case):
    module, x = LAYER_CASES[case]()
    result = gradcheck(randomize(module), x)
    assert result.max_rel_error < TOL, result.worst()


def test_embedding_gradcheck_params():
    emb = randomize(Embedding(4, 3, dtype=F64))
    labels = D(np.array([0, 3, 1, 3]))  # repeated label: its gradient rows must add up
    result = gradcheck(emb, labels, check_inputs=False)
    assert result.max_rel_error < TOL, result.worst()


class WrongSiLU(SiLU):
    """Mutation: drops the x s (1 - s) term of the derivative."""

    def backward(self, dy):
        return dy * self._s


class ConvWithoutFold(Conv2d):
    """Mutation: the col2im fold forgets the off-centre taps (only the centre tap reaches dx)."""

    def backward(self, dy):
        B, H, W, C = self._xshape
        super().backward(dy)
        dy2 = dy.reshape(-1, self.out_channels)
        return (dy2 @ self.W.data[1, 1].T).reshape(B, H, W, C)


class LinearWrongWeightGrad(Linear):
    """Mutation: accumulates dW from a transposed upstream (wrong pairing of rows)."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.W.grad += self._x.reshape(-1, self.in_features).T @ dy[::-1]
        return dx


@pytest.mark.parametrize("make", [
    lambda: (WrongSiLU(), rn(3, 5)),
    lambda: (ConvWithoutFold(3, 4, 3, dtype=F64), rn(2, 5, 5, 3)),
    lambda: (LinearWrongWeightGrad(5, 4, dtype=F64), rn(3, 5)),
])
def test_gradcheck_catches_wrong_backward(make):
    module, x = make()  # built in the test, on the backend of the run (nothing at collection time)
    # a wrong derivative is off by O(1) relative; 1e-2 is far above the 1e-6 pass threshold
    assert gradcheck(randomize(module), x).max_rel_error > 1e-2


def conv_reference(x, W, b, stride, pad):
    """The definition y[b,i,j,o] = b_o + sum_{u,v,c} xpad[b, s i + u, s j + v, c] W[u,v,c,o], by loops."""
    k = W.shape[0]
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    Ho = (x.shape[1] + 2 * pad - k) // stride + 1
    Wo = (x.shape[2] + 2 * pad - k) // stride + 1
    y = np.zeros((x.shape[0], Ho, Wo, W.shape[3]))
    for i in range(Ho):
        for j in range(Wo):
            patch = xpad[:, stride * i:stride * i + k, stride * j:stride * j + k, :]  # (B, k, k, C)
            y[:, i, j, :] = np.einsum("buvc,uvco->bo", patch, W) + b
    return y


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (3, 1, 0)])
def test_conv_matches_definition(k, stride, pad):
    conv = randomize(Conv2d(3, 2, k, stride, padding=pad, dtype=F64))
    x = rn(2, 7, 6, 3)
    y = conv(x)
    ref = conv_reference(H(x), H(conv.W.data), H(conv.b.data), stride, pad)  # host loops
    assert y.shape == ref.shape
    assert np.abs(H(y) - ref).max() < 1e-12  # same sums in a different order: float64 roundoff only


@pytest.mark.parametrize("make,shape", [
    (lambda: Conv2d(3, 4, 3, 2, dtype=F64), (4, 6, 6, 3)),
    (lambda: GroupNorm(2, 4, dtype=F64), (4, 3, 3, 4)),
    (lambda: LayerNorm(4, dtype=F64), (4, 4)),
])
def test_batched_equals_per_sample(make, shape):
    module = randomize(make())
    x = rn(*shape)
    y = module(x)
    per = np.concatenate([module(x[i:i + 1]) for i in range(x.shape[0])])
    assert np.abs(y - per).max() < 1e-12  # float64, identical arithmetic per sample


def test_resampling_identities():
    x = rn(2, 3, 5, 4)
    up = Upsample()(x)
    assert up.shape == (2, 6, 10, 4)
    assert np.array_equal(up[:, 1::2, ::2], x)  # nearest: every copy equals its source
    assert np.array_equal(Downsample()(up), x)  # the mean of four equal values is exact


def test_norms_normalise():
    x = rn(3, 4, 4, 6) * 5 + 2
    y = GroupNorm(3, 6, dtype=F64)(x).reshape(3, 16, 3, 2)
    # per (sample, group): mean 0, variance var/(var + eps) with eps = 1e-5 and var ~ 25
    assert np.abs(y.mean(axis=(1, 3))).max() < 1e-12
    assert np.abs(y.var(axis=(1, 3)) - 1).max() < 1e-5
    z = LayerNorm(6, dtype=F64)(rn(5, 6) * 5 + 2)
    assert np.abs(z.mean(axis=-1)).max() < 1e-12 and np.abs(z.var(axis=-1) - 1).max() < 1e-5


def test_backward_accumulates_and_zero_grad():
    lin = randomize(Linear(3, 2, dtype=F64))
    x, dy = rn(4, 3), rn(4, 2, seed=5)
    lin(x)
    lin.backward(dy)
    once = lin.W.grad.copy()
    lin.backward(dy)
    assert np.abs(lin.W.grad - 2 * once).max() < 1e-12  # += accumulation
    lin.zero_grad()
    assert not lin.W.grad.any() and not lin.b.grad.any()


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20))
def test_gelu_is_the_tanh_form_and_close_to_the_erf_form(values):
    """GELU's forward against ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` written out here with
    math.tanh in float64: within 1e-12 relative plus 1e-15 |x| absolute (tanh carries an absolute rounding
    error ~1e-16, which ``x (1 + tanh) / 2`` turns into ~1e-16 |x| where 1 + tanh cancels), and within 1e-3
    of the exact ``x Phi(x)`` (the tanh form's largest error is about 5e-4, near |x| = 2; Hendrycks &
    Gimpel 2016)."""
    x = np.array(values, dtype=np.float64)
    y = H(GELU()(D(x)))
    c = math.sqrt(2.0 / math.pi)
    want = np.array([v / 2 * (1 + math.tanh(c * (v + 0.044715 * v ** 3))) for v in values])
    assert np.all(np.abs(y - want) <= 1e-12 * np.abs(want) + 1e-15 * np.abs(x)), (y, want)
    exact = np.array([v / 2 * (1 + math.erf(v / math.sqrt(2))) for v in values])
    np.testing.assert_allclose(y, exact, rtol=0, atol=1e-3)


def test_silu_extreme_inputs_no_overflow_float32():
    x = D(np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exp overflow would warn
        y = SiLU()(x)
    assert y.dtype == np.float32
    assert np.allclose(H(y), [0.0, 0.0, 0.0, 100.0, 1e4], atol=1e-30)  # -100 * sigmoid(-100) ~ -4e-42


@pytest.mark.parametrize("make,shape", [
    (lambda: Linear(3, 2), (4, 3)), (SiLU, (4, 3)), (GELU, (4, 3)), (ReLU, (4, 3)), (Tanh, (4, 3)),
    (lambda: LayerNorm(3), (4, 3)), (lambda: GroupNorm(2, 4), (2, 4, 4, 4)), (lambda: Conv2d(4, 4), (2, 4, 4, 4)),
    (Upsample, (2, 4, 4, 4)), (Downsample, (2, 4, 4, 4)),
])
def test_float32_stays_float32(make, shape, xp):
    layer = make()
    x = xp.ones(shape, dtype=np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert layer.backward(xp.ones_like(y)).dtype == np.float32


# ---- sigma embedding -------------------------------------------------------------------------------

def test_sigma_embedding_injective_on_dense_grid():
    """Distinct embeddings over sigma in [1e-3, 1e5], with a Lipschitz-type lower bound.

    The lowest (sin, cos) pair at w1 = 1/4 alone has chord 2 sin(w1 |du| / 2); on |du| <= span =
    log(1e8) = 18.4, w1 |du| / 2 <= 2.31 < pi, and sin is concave there, so the chord is at least
    (sin(2.31) / 2.31) * w1 |du| >= 0.08 |du|. We assert 0.05 |du| over every pair of a 2000-point grid.
    """
    emb = SigmaEmbedding(dtype=F64)
    u = np.linspace(math.log(1e-3), math.log(1e5), 2000)
    e = H(emb(D(np.exp(u))))  # (N, 16), computed on the backend, compared on the host
    d2 = (e * e).sum(1)[:, None] + (e * e).sum(1)[None, :] - 2 * e @ e.T
    dist = np.sqrt(np.maximum(d2, 0))
    du = np.abs(u[:, None] - u[None, :])
    off = ~np.eye(len(u), dtype=bool)
    assert (dist[off] >= 0.05 * du[off]).all()
    assert dist[off].min() > 0.05 * (u[1] - u[0])  # min pairwise distance bounded below


@given(st.floats(math.log(1e-3), math.log(1e5)), st.floats(1e-3, math.log(1e8)))
def test_sigma_embedding_separates_pairs(u1, du):
    u2 = u1 + du if u1 + du <= math.log(1e5) else u1 - du
    e = H(SigmaEmbedding(dtype=F64)(D(np.exp(np.array([u1, u2])))))
    assert np.linalg.norm(e[0] - e[1]) >= 0.05 * abs(u2 - u1)  # bound derived in the test above


def test_two_feature_embedding_aliases_which_is_why_we_do_not_use_it():
    # sin/cos of log(sigma)/2 repeats when log(sigma) moves by 4 pi: sigma = 1e-3 and 1e-3 * e^(4 pi)
    # (~287) get the same two features. The multi-frequency embedding keeps them far apart.
    u = np.array([math.log(1e-3), math.log(1e-3) + 4 * math.pi])
    two = np.stack([np.sin(u / 2), np.cos(u / 2)], axis=1)
    assert np.abs(two[0] - two[1]).max() < 1e-12
    e = H(SigmaEmbedding(dtype=F64)(D(np.exp(u))))
    assert np.linalg.norm(e[0] - e[1]) > 0.5


# ---- errors ----------------------------------------------------------------------------------------

def test_shape_and_dtype_errors_are_clear():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match="last dimension 3"):
        lin(D(np.ones((4, 5), dtype=np.float32)))
    with pytest.raises(TypeError, match="float64 but the parameters are float32"):
        lin(D(np.ones((4, 3))))
    with pytest.raises(TypeError, match="float32 or float64"):
        lin(D(np.ones((4, 3), dtype=np.int64)))
    with pytest.raises(TypeError, match="must be an array"):
        lin([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="4 dimensions"):
        Conv2d(3, 3)(D(np.ones((4, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(3, 3, kernel_size=5)
    with pytest.raises(ValueError, match="stride"):
        Conv2d(3, 3, stride=3)
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="even"):
        Downsample()(D(np.ones((1, 3, 4, 2), dtype=np.float32)))
    with pytest.raises(TypeError, match="float32 or float64"):
        Linear(3, 2, dtype="float16")


def test_embedding_label_errors():
    emb = Embedding(4, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        emb(D(np.array([0, 4])))  # checked before indexing: CuPy would wrap 4 -> 0 silently
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        emb(D(np.array([-1, 0])))
    with pytest.raises(TypeError, match="integer"):
        emb(D(np.array([0.0, 1.0])))


def test_module_state_dict_roundtrip_and_no_half_load():
    a, b = Linear(3, 2, seed=1), Linear(3, 2, seed=2)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(a.W.data, b.W.data) and np.array_equal(a.b.data, b.b.data)
    before = b.W.data.copy()
    bad = {"W": np.zeros((3, 2)), "b": np.zeros(5)}  # W fine, b wrong: nothing may be written
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict(bad)
    assert np.array_equal(b.W.data, before)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"W": np.zeros((3, 2))})


def test_named_parameters_cover_nested_modules():
    blk = ResBlock(4, 8, 5, groups=2)
    names = [n for n, _ in blk.named_parameters()]
    assert len(names) == len(set(names))
    assert {"gn1.gamma", "conv1.W", "proj.W", "skip.W", "conv2.b"} <= set(names)
    assert sum(p.data.size for p in blk.parameters()) == blk.num_parameters()


@pytest.mark.gpu
def test_backend_mismatch_is_a_type_error():
    with backend.use_backend("numpy"):
        lin = Linear(3, 2)  # numpy parameters
    with backend.use_backend("cupy") as cp:
        x = cp.ones((4, 3), dtype=cp.float32)
    with pytest.raises(TypeError, match="numpy array like the parameters"):
        lin(x)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["conv3x3_s2_odd", "groupnorm", "silu", "resblock_1x1skip", "sigma_embedding"])
def test_layer_gradcheck_on_cupy(case):
    with backend.use_backend("cupy") as cp:
        module, x = LAYER_CASES[case]()
        randomize(module)
        x = tuple(cp.asarray(a) for a in x) if isinstance(x, tuple) else cp.asarray(x)
        result = gradcheck(module, x)
    assert result.max_rel_error < TOL, result.worst()
