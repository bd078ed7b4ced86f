"""Tests for minidiff.guidance: classifier-free guidance identities and call count, and classifier
guidance against an analytic Gaussian-mixture classifier (docs/math.md §10)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_helpers import D, H
from minidiff import backend
from minidiff.guidance import classifier_free, classifier_guidance

K = 3  # classes 0..K-1, K is the null label
log_sigmas = st.integers(-2000, 2000).map(lambda k: 10.0 ** (k / 1000))  # log-uniform in [1e-2, 1e2]


class FakeConditional:
    """A nonlinear deterministic eps(x, sigma, y) with per-label parameters; records each call."""

    num_classes = K

    def __init__(self, seed=0, dim=2):
        r = np.random.default_rng(seed)
        self.A = D(r.standard_normal((K + 1, dim)))  # on the run's backend, like x and y below
        self.b = D(r.standard_normal((K + 1, dim)))
        self.calls = []

    def __call__(self, x, sigma, y=None):
        xp = backend.get_xp(x)
        self.calls.append((x.shape[0], None if y is None else y.copy()))
        s = xp.asarray(sigma, dtype=x.dtype).reshape(-1, 1) if np.ndim(sigma) else sigma  # (B,) -> (B, 1)
        return xp.tanh(x * self.A[y] + s) + self.b[y]  # (B, D) * (B, D) -> (B, D)


@given(seed=st.integers(0, 2**16), sigma=log_sigmas, w=st.floats(-3.0, 10.0))
def test_cfg_endpoints_and_affine_in_w(seed, sigma, w):
    model = FakeConditional(seed)
    r = np.random.default_rng(seed)
    x = D(r.standard_normal((5, 2)))
    y = D(r.integers(0, K, size=5))
    eps_c = model(x, sigma, y=y)
    eps_u = model(x, sigma, y=D(np.full(5, K)))
    out = {v: classifier_free(model, y, v)(x, sigma) for v in (0.0, 1.0, w)}
    # w = 1 / w = 0 reproduce the plain model: same arithmetic up to eps_u + (eps_c - eps_u)
    # rounding, ~1e-16 * |eps| <= 1e-15
    assert np.max(np.abs(out[1.0] - eps_c)) < 1e-14
    assert np.max(np.abs(out[0.0] - eps_u)) < 1e-14
    # affine in w: rounding ~ |w| * 1e-16 * |eps| with |w| <= 10, |eps| <= ~5
    assert np.max(np.abs(out[w] - (out[0.0] + w * (out[1.0] - out[0.0])))) < 1e-13


def test_cfg_is_one_call_of_batch_2b():
    model = FakeConditional()
    y = D(np.array([0, 2, 1, 1]))
    den = classifier_free(model, y, 4.0)
    model.calls.clear()
    den(D(np.zeros((4, 2))), 0.5)
    assert len(model.calls) == 1
    batch, labels = model.calls[0]
    assert batch == 8
    assert np.array_equal(H(labels), np.array([0, 2, 1, 1, K, K, K, K]))


def test_cfg_per_sample_sigma_and_explicit_null_label():
    model = FakeConditional()
    r = np.random.default_rng(1)
    x = D(r.standard_normal((4, 2)))
    y = D(np.array([0, 1, 2, 0]))
    sig = D(np.array([0.1, 1.0, 3.0, 10.0]))
    out = classifier_free(model, y, 2.0, null_label=2)(x, sig)
    for i in range(4):  # metamorphic: per-sample sigma == one row at a time with a float sigma
        one = classifier_free(model, y[i:i + 1], 2.0, null_label=2)(x[i:i + 1], float(sig[i]))
        assert np.max(np.abs(one - out[i:i + 1])) < 1e-14


def test_cfg_dtype_float32():
    model = FakeConditional()
    model.A, model.b = model.A.astype(np.float32), model.b.astype(np.float32)
    x = D(np.ones((3, 2), dtype=np.float32))
    out = classifier_free(model, D(np.array([0, 1, 2])), 1.5)(x, 0.7)
    assert out.dtype == np.float32


def test_cfg_with_minidiff_model():
    nn = pytest.importorskip("minidiff.nn")
    if not hasattr(nn, "MLPDenoiser"):
        pytest.skip("minidiff.nn.MLPDenoiser not available yet")
    model = nn.MLPDenoiser(2, hidden=(16,), num_classes=K, dtype="float64", seed=0)
    r = np.random.default_rng(0)
    x = D(r.standard_normal((6, 2)))
    y = D(r.integers(0, K, size=6))
    # w = 1 is the conditional model; float64, only the final eps_u + 1 * (eps_c - eps_u) rounding
    assert np.max(np.abs(classifier_free(model, y, 1.0)(x, 0.3) - model(x, 0.3, y=y))) < 1e-12
    assert np.max(np.abs(classifier_free(model, y, 0.0)(x, 0.3) - model(x, 0.3, y=None))) < 1e-12


# ---------------------------------------------------------------- classifier guidance, analytic

MEANS = np.array([[-2.0, 0.0], [1.5, 1.0]])  # two classes, data 1/2 N(mu_0, c^2 I) + 1/2 N(mu_1, c^2 I)
C = 0.4


def _resp(x, sigma):
    """Posterior class probabilities r_k(x, sigma) and v = c^2 + sigma^2 (per row)."""
    s = np.asarray(sigma, dtype=float).reshape(-1, 1) if np.ndim(sigma) else sigma  # (B,) -> (B, 1)
    v = C * C + s * s
    d = -((x[:, None, :] - MEANS[None]) ** 2).sum(-1) / (2 * v)  # (B, 1, D) - (1, 2, D) -> (B, 2)
    r = np.exp(d - d.max(1, keepdims=True))
    return r / r.sum(1, keepdims=True), v, s


def mixture_eps(x, sigma):
    """Exact eps of the two-Gaussian mixture: eps = s * sum_k r_k (x - mu_k) / v."""
    r, v, s = _resp(x, sigma)
    return s * (x - r @ MEANS) / v  # (B, 2) @ (2, D) -> (B, D)


class AnalyticClassifier:
    """log p(y | x, sigma) = log r_y; gradient -(x - mu_y)/v + sum_k r_k (x - mu_k)/v."""

    def log_prob(self, x, sigma, y):
        r, _, _ = _resp(x, sigma)
        return np.log(r[np.arange(len(y)), y])

    def grad_log_prob(self, x, sigma, y):
        r, v, _ = _resp(x, sigma)
        return (-(x - MEANS[y]) + (x - r @ MEANS)) / v  # (B, 2) @ (2, D) -> (B, D)


def test_analytic_classifier_gradient_by_finite_differences():
    clf = AnalyticClassifier()
    r = np.random.default_rng(0)
    x = r.standard_normal((5, 2))
    y = np.array([0, 1, 1, 0, 1])
    g = clf.grad_log_prob(x, 0.8, y)
    h = 1e-6
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        fd = (clf.log_prob(x + e, 0.8, y) - clf.log_prob(x - e, 0.8, y)) / (2 * h)
        assert np.max(np.abs(fd - g[:, j])) < 1e-7  # central differences: O(h^2) + rounding 1e-16 / h


@given(sigma=log_sigmas, seed=st.integers(0, 2**16))
def test_classifier_guidance_scale_one_gives_exact_conditional(sigma, seed):
    """Bayes: score(x | y) = score(x) + grad log p(y | x), so with scale 1 the guided mixture eps
    is the exact eps of the class-y Gaussian, s (x - mu_y) / (c^2 + s^2)."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((6, 2)) * (1 + sigma)
    y = r.integers(0, 2, size=6)
    guided = classifier_guidance(mixture_eps, AnalyticClassifier(), y, 1.0)(x, sigma)
    exact = sigma * (x - MEANS[y]) / (C * C + sigma * sigma)
    # terms of size s |x| / v <= ~1/(2c) * |x| cancel; float64 rounding well below 1e-10
    assert np.max(np.abs(guided - exact)) < 1e-10


def test_classifier_guidance_scale_and_per_sample_sigma():
    clf = AnalyticClassifier()
    r = np.random.default_rng(3)
    x = r.standard_normal((4, 2))
    y = np.array([0, 1, 0, 1])
    sig = np.array([0.05, 0.5, 2.0, 20.0])
    assert np.max(np.abs(classifier_guidance(mixture_eps, clf, y, 0.0)(x, sig) - mixture_eps(x, sig))) < 1e-15
    out = classifier_guidance(mixture_eps, clf, y, 3.0)(x, sig)
    expected = mixture_eps(x, sig) - sig[:, None] * 3.0 * clf.grad_log_prob(x, sig, y)
    assert np.max(np.abs(out - expected)) < 1e-13


# ---------------------------------------------------------------- bad input

def test_bad_input():
    model = FakeConditional()
    y = np.array([0, 1])
    with pytest.raises(TypeError, match="y"):
        classifier_free(model, np.array([0.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="y"):
        classifier_free(model, np.zeros((2, 1), dtype=int), 1.0)
    with pytest.raises(ValueError, match="w"):
        classifier_free(model, y, float("nan"))
    with pytest.raises(TypeError, match="w"):
        classifier_free(model, y, "2")
    with pytest.raises(TypeError, match="cond_denoiser"):
        classifier_free(3, y, 1.0)
    with pytest.raises(ValueError, match="null_label"):
        classifier_free(lambda x, s, y=None: x, y, 1.0)
    with pytest.raises(ValueError, match="x"):
        classifier_free(model, y, 1.0)(np.zeros((3, 2)), 1.0)
    with pytest.raises(TypeError, match="classifier"):
        classifier_guidance(mixture_eps, object(), y, 1.0)
    with pytest.raises(ValueError, match="scale"):
        classifier_guidance(mixture_eps, AnalyticClassifier(), y, math.inf)
    with pytest.raises(ValueError, match="x"):
        classifier_guidance(mixture_eps, AnalyticClassifier(), y, 1.0)(np.zeros((3, 2)), 1.0)
