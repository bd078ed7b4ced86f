"""The fast convolution path (strided-view im2col into reused buffers) against the plain algorithm.

``conv2d_reference`` / ``conv2d_reference_backward`` are k*k shifted GEMMs, tap by tap; they are first
checked against the definition written as loops, then the fast Conv2d is checked against them for
random shapes, strides and paddings, and for the one risk buffer reuse adds: a work buffer that
aliases an output or a cache still needed. All in float64: the two paths add the same products in a
different order, so they agree to ~1e-15 relative; 1e-12 absolute on O(1..10) values leaves room.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidiff.nn import Conv2d
from minidiff.nn.layers import conv2d_reference, conv2d_reference_backward
from nn_helpers import randomize, rn

pytestmark = pytest.mark.usefixtures("numpy_backend")
F64 = "float64"


def definition(x, W, b, s, p):
    """y[b,i,j,o] = b_o + sum_{u,v,c} xpad[b, s i + u, s j + v, c] W[u,v,c,o], by loops over pixels."""
    k = W.shape[0]
    xpad = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    Ho, Wo = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
    y = np.zeros((x.shape[0], Ho, Wo, W.shape[3]))
    for i in range(Ho):
        for j in range(Wo):
            y[:, i, j] = np.einsum("buvc,uvco->bo", xpad[:, s * i:s * i + k, s * j:s * j + k], W) + b
    return y


def test_reference_matches_definition_and_its_backward_matches_finite_differences():
    x, W, b = rn(2, 5, 6, 3), rn(3, 3, 3, 4, seed=2), rn(4, seed=3)
    for s, p in [(1, 1), (2, 1), (1, 0), (2, 2)]:
        y = conv2d_reference(x, W, b, s, p)
        assert np.abs(y - definition(x, W, b, s, p)).max() < 1e-12  # float64 reordering only
        g = rn(*y.shape, seed=4)
        dx, dW, db = conv2d_reference_backward(x, W, g, s, p)
        # central differences of f = sum(y * g) along one random direction per argument; the error is
        # O(eps^2) = 1e-12 truncation plus ~1e-10 roundoff, far below a wrong term's O(1)
        eps, rng = 1e-6, np.random.default_rng(5)
        for arg, grad in ((0, dx), (1, dW), (2, db)):
            args = [x, W, b]
            v = rng.standard_normal(args[arg].shape)
            plus = [a + eps * v if i == arg else a for i, a in enumerate(args)]
            minus = [a - eps * v if i == arg else a for i, a in enumerate(args)]
            num = ((conv2d_reference(*plus, s, p) - conv2d_reference(*minus, s, p)) * g).sum() / (2 * eps)
            assert abs(num - (grad * v).sum()) < 1e-6 * max(1.0, abs(num))


@given(B=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9), C=st.integers(1, 5),
       O=st.integers(1, 5), k=st.sampled_from([1, 3]), s=st.sampled_from([1, 2]), p=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_fast_conv_matches_reference(B, H, W, C, O, k, s, p, seed):
    p = min(p, k - 1)  # the layer allows padding 0..k-1
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    if Ho < 1 or Wo < 1:
        return  # no output pixel: the layer refuses this input (tested in test_layers)
    conv = randomize(Conv2d(C, O, k, s, padding=p, dtype=F64), seed=seed)
    x = rn(B, H, W, C, seed=seed)
    y = conv(x)
    ref = conv2d_reference(x, conv.W.data, conv.b.data, s, p)
    assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-12  # float64 reordering only
    g = rn(*y.shape, seed=seed + 1)
    dx = conv.backward(g)
    rdx, rdW, rdb = conv2d_reference_backward(x, conv.W.data, g, s, p)
    assert dx.shape == x.shape and np.abs(dx - rdx).max() < 1e-12
    assert np.abs(conv.W.grad - rdW).max() < 1e-12 and np.abs(conv.b.grad - rdb).max() < 1e-12


def test_reused_buffers_never_alias_outputs_or_a_needed_cache():
    a, b = randomize(Conv2d(3, 3, dtype=F64), seed=1), randomize(Conv2d(3, 3, dtype=F64), seed=2)
    x1, x2, x3 = rn(2, 6, 6, 3, seed=1), rn(2, 6, 6, 3, seed=2), rn(1, 4, 5, 3, seed=3)
    y1 = a(x1)
    y1_copy = y1.copy()
    b(x2)  # same shapes: b's forward takes the pooled padded buffer a used
    a(x3)  # a different shape on a: a new im2col buffer
    y1b = a(x1)  # back to the first shape
    assert np.array_equal(y1, y1_copy)  # earlier outputs are untouched by later forwards
    g = rn(*y1b.shape, seed=4)
    dx_b = b.backward(rn(2, 6, 6, 3, seed=5))  # b's backward in between uses the pooled dy buffers
    dx_b_copy = dx_b.copy()
    dx = a.backward(g)
    rdx, rdW, _ = conv2d_reference_backward(x1, a.W.data, g, 1, 1)
    assert np.abs(dx - rdx).max() < 1e-12 and np.abs(a.W.grad - rdW).max() < 1e-12
    assert np.array_equal(dx_b, dx_b_copy)  # a returned gradient is not a pooled buffer either


def test_non_contiguous_input():
    conv = randomize(Conv2d(3, 2, 3, padding=0, dtype=F64))
    x = rn(2, 7, 7, 6)[..., ::2]  # a strided view, as the U-Net's channel slices are
    assert np.abs(conv(x) - conv2d_reference(x, conv.W.data, conv.b.data, 1, 0)).max() < 1e-12


def test_pooled_padding_of_one_width_does_not_leak_into_another():
    # p = 1 on 6x6 and p = 2 on 4x4 both pad to 8x8: the wider border must still read as zeros after the
    # narrower one wrote its interior into a buffer of that shape
    wide, narrow = (randomize(Conv2d(2, 2, 3, padding=p, dtype=F64), seed=p) for p in (2, 1))
    x_narrow, x_wide = rn(1, 6, 6, 2, seed=1), rn(1, 4, 4, 2, seed=2)
    for _ in range(2):
        assert np.abs(narrow(x_narrow) - conv2d_reference(x_narrow, narrow.W.data, narrow.b.data, 1, 1)).max() < 1e-12
        assert np.abs(wide(x_wide) - conv2d_reference(x_wide, wide.W.data, wide.b.data, 1, 2)).max() < 1e-12


@given(B=st.integers(1, 3), HW=st.integers(1, 5), G=st.integers(1, 3), per=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_groupnorm_fast_path_matches_the_plain_formula(B, HW, G, per, seed):
    from minidiff.nn import GroupNorm
    C = G * per
    gn = randomize(GroupNorm(G, C, dtype=F64), seed=seed)
    x = rn(B, HW, 2, C, seed=seed) * 3 + 1
    dy = rn(B, HW, 2, C, seed=seed + 1)
    # plain: normalise each (sample, group) over its HW*2*C/G values; LayerNorm's VJP on those groups
    xg = x.reshape(B, -1, G, per).transpose(0, 2, 1, 3).reshape(B, G, -1)  # (B, G, n)
    mu, var = xg.mean(axis=2, keepdims=True), xg.var(axis=2, keepdims=True)
    r = 1.0 / np.sqrt(var + gn.eps)
    xhat = ((xg - mu) * r).reshape(B, G, -1, per).transpose(0, 2, 1, 3).reshape(x.shape)
    y = gn(x)
    assert np.abs(y - (xhat * gn.gamma.data + gn.beta.data)).max() < 1e-12  # float64 reordering only
    g = (dy * gn.gamma.data).reshape(B, -1, G, per).transpose(0, 2, 1, 3).reshape(B, G, -1)
    xh = (xg - mu) * r
    dxg = r * (g - g.mean(axis=2, keepdims=True) - xh * (g * xh).mean(axis=2, keepdims=True))
    dx_ref = dxg.reshape(B, G, -1, per).transpose(0, 2, 1, 3).reshape(x.shape)
    dx = gn.backward(dy)
    assert np.abs(dx - dx_ref).max() < 1e-10  # r can reach ~1/sqrt(eps) ~ 300 for one-value groups
    assert np.abs(gn.gamma.grad - (dy * xhat).sum(axis=(0, 1, 2))).max() < 1e-10
    assert np.abs(gn.beta.grad - dy.sum(axis=(0, 1, 2))).max() < 1e-12


def test_work_buffer_pool_stays_bounded(monkeypatch):
    from minidiff.nn import layers
    monkeypatch.setattr(layers, "_SCRATCH", {})
    monkeypatch.setattr(layers, "_SCRATCH_BYTES", 2400)  # bytes: one or two of the buffers below
    conv = randomize(Conv2d(1, 1, 3, dtype=F64))
    for side in range(4, 12):  # eight padded shapes, (side + 2)^2 float64 = 288..1352 bytes each
        x = rn(1, side, side, 1, seed=side)
        assert np.abs(conv(x) - conv2d_reference(x, conv.W.data, conv.b.data, 1, 1)).max() < 1e-12
        assert sum(b.nbytes for b in layers._SCRATCH.values()) <= layers._SCRATCH_BYTES
    assert len(layers._SCRATCH) <= layers._SCRATCH_MAX
