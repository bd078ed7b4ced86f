"""Glyph FID: the Frechet distance against its closed forms on Gaussians, sample fits converging to it,
and the glyph feature map (a hand-written classifier's last hidden layer)."""
import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

import minidiff as md
from minidiff.metrics import GlyphFeatures, feature_fid, frechet_distance, gaussian_fit, glyph_fid

pytestmark = pytest.mark.usefixtures("numpy_backend")


def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@given(d=st.integers(1, 8), seed=st.integers(0, 2 ** 16), log_scale=st.floats(-2.0, 2.0))
def test_commuting_covariances_closed_form(d, seed, log_scale):
    """C1 = Q diag(a) Q^T, C2 = Q diag(b) Q^T: d^2 = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(seed)
    Q = random_rotation(d, rng)
    a, b = np.exp(rng.normal(size=(2, d))) * 10.0 ** log_scale
    mu1, mu2 = rng.normal(size=(2, d)) * 10.0 ** (log_scale / 2)
    got = frechet_distance(mu1, (Q * a) @ Q.T, mu2, (Q * b) @ Q.T)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # float64 eigendecompositions of matrices with condition <~ e^6: relative error ~1e-12 of the traces
    assert abs(got - want) <= 1e-9 * (np.sum(a) + np.sum(b) + np.sum((mu1 - mu2) ** 2)), (got, want)


@given(d=st.integers(1, 8), seed=st.integers(0, 2 ** 16))
def test_general_covariances_against_scipy_sqrtm(d, seed):
    """Non-commuting covariances: the trace term against scipy's matrix square root of C1 C2, and
    the distance's symmetry and zero on equal Gaussians."""
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(2, d, d))
    C1, C2 = A @ A.T + 0.1 * np.eye(d), B @ B.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=(2, d))
    cross = np.real(np.trace(scipy.linalg.sqrtm(C1 @ C2)))
    want = np.sum((mu1 - mu2) ** 2) + np.trace(C1) + np.trace(C2) - 2 * cross
    scale = np.trace(C1) + np.trace(C2)
    # scipy's sqrtm of a non-symmetric product: ~1e-10 relative; 1e-8 of the traces leaves margin
    assert abs(frechet_distance(mu1, C1, mu2, C2) - want) <= 1e-8 * scale
    assert abs(frechet_distance(mu1, C1, mu2, C2) - frechet_distance(mu2, C2, mu1, C1)) <= 1e-9 * scale
    assert abs(frechet_distance(mu1, C1, mu1, C1)) <= 1e-9 * scale


def test_one_dimensional_is_w2_of_normals():
    assert math.isclose(frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])),
                        3.0 ** 2 + (2.0 - 3.0) ** 2, rel_tol=1e-12)


def test_fitted_gaussians_converge_to_the_closed_form():
    """Samples of N(0, I) and N(m, diag(s^2)) in d = 4: the fitted distance tends to the exact one; the
    plug-in estimate is biased upwards by O(d/n), so at n = 20000 it lies within ~0.01 of 1.5."""
    rng = np.random.default_rng(0)
    m, s = np.array([1.0, 0.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.5, 0.5])
    a = rng.standard_normal((20000, 4))
    b = rng.standard_normal((20000, 4)) * s + m
    exact = 1.0 + 2 * 0.5 ** 2
    assert abs(feature_fid(a, b) - exact) < 0.02
    mu, C = gaussian_fit(a)
    assert np.abs(mu).max() < 0.05 and np.abs(C - np.eye(4)).max() < 0.05  # 5 SE at n = 20000


def test_errors():
    with pytest.raises(ValueError, match="at least 2 rows"):
        gaussian_fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="C2 must have shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


def test_glyph_features_separate_digits_and_floor_is_below_shuffled_labels():
    """A short-trained glyph classifier reads the digits, and the glyph FID of real vs real is far below
    real vs a wrong distribution (every image flipped upside down)."""
    feats = GlyphFeatures.train("glyphs16", steps=150, hidden=(64, 32), seed=0)
    ds = md.get_dataset("glyphs16")
    x, y = ds.sample(600, md.default_rng(1), return_labels=True)
    x2 = ds.sample(600, md.default_rng(2))
    acc = float((feats.predict(x) == y).mean())
    assert acc > 0.8, acc  # measured ~0.95 after 150 steps; chance is 0.1
    assert feats.features(x).shape == (600, 32)
    c = feats.confidence(x)
    assert c.shape == (600,) and np.all((c > 0) & (c <= 1))
    same = glyph_fid(x, x2, feats)
    flipped = glyph_fid(x, x2[:, :, ::-1].copy(), feats)
    assert same["fid"] < 0.2 * flipped["fid"], (same, flipped)
    assert same["precision"] > 0.5 and same["recall"] > 0.5
