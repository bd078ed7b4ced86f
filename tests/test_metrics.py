"""Tests for minidiff.metrics on cases with known answers (computed by hand or in closed form)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from device_helpers import OnBackend
from minidiff import datasets
from minidiff import metrics as _metrics

metrics = OnBackend(_metrics)  # runs on the run's backend (the device under the stand-in), seen from the host


def test_manifold_distance_known_offsets():
    circle = datasets.get_dataset("circle")  # radius 1.5
    t = np.linspace(0, 2 * np.pi, 101)[:-1]
    radii = np.where(np.arange(100) % 2 == 0, 1.7, 1.4)  # distances 0.2 and 0.1 alternately
    x = np.stack([radii * np.cos(t), radii * np.sin(t)], 1)
    r = metrics.manifold_distance(x, circle)
    assert abs(r["mean"] - 0.15) < 1e-12 and abs(r["max"] - 0.2) < 1e-12
    assert abs(r["median"] - 0.15) < 1e-12 and abs(r["rms"] - math.sqrt((0.04 + 0.01) / 2)) < 1e-12
    with pytest.raises(NotImplementedError):
        metrics.manifold_distance(np.zeros((2, 1, 16, 16)), datasets.get_dataset("glyphs16"))


@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 50))
def test_knn_distances_match_brute_force_and_chunking(seed, chunk):
    rng = np.random.default_rng(seed)
    x, ref = rng.standard_normal((23, 3)), rng.standard_normal((41, 3))
    d = metrics.knn_distances(x, ref, k=4, chunk_size=chunk)
    brute = np.sort(np.linalg.norm(x[:, None] - ref[None], axis=-1), axis=1)[:, :4]
    assert np.abs(d - brute).max() < 1e-12  # exact recomputation from differences


def test_memorization_rate_known_cases():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((200, 4))
    copies = train[:30] + 1e-6 * rng.standard_normal((30, 4))  # d1 ~ 2e-6, d2 ~ 1: memorised
    fresh = rng.standard_normal((70, 4))  # independent draws: d1/d2 ~ U-ish, rarely < 1/3
    assert metrics.memorization_rate(copies, train) == 1.0
    # exact copies have d1 = 0 exactly (distances recomputed from differences, not the GEMM)
    assert metrics.knn_distances(train[:5], train, k=1).max() == 0.0
    rate = metrics.memorization_rate(np.concatenate([copies, fresh]), train)
    # the 30 copies count; fresh points count when d1 < d2/3, which for 4-D Poisson-like
    # neighbours has probability (1/3)^4 ~ 1.2%: expect 30/100 plus at most a few
    assert 0.30 <= rate <= 0.36
    with pytest.raises(ValueError, match="ratio"):
        metrics.memorization_rate(copies, train, ratio=0.0)


def test_sliced_wasserstein_hand_computed_1d():
    a = np.array([[0.0], [1.0]])
    b = np.array([[0.0], [0.5], [1.0]])
    # quantile functions differ by 0.5 on (1/3, 2/3]: W1 = 0.5 * 1/3, W2 = sqrt(0.25 * 1/3)
    assert abs(metrics.sliced_wasserstein(a, b, n_projections=3, rng=0, p=1) - 1 / 6) < 1e-12
    assert abs(metrics.sliced_wasserstein(a, b, n_projections=3, rng=0) - math.sqrt(1 / 12)) < 1e-12


@given(shift=st.floats(-5, 5), seed=st.integers(0, 1000))
def test_sliced_wasserstein_of_a_shift(shift, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((50, 1))
    # in 1-D theta = +-1, so SW_p of a pure shift is |shift| exactly (up to rounding)
    assert abs(metrics.sliced_wasserstein(a, a + shift, n_projections=4, rng=seed) - abs(shift)) < 1e-9
    assert metrics.sliced_wasserstein(a, a.copy(), n_projections=4, rng=seed) == 0.0


def test_sliced_wasserstein_of_a_2d_shift():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 2))
    v = np.array([1.2, -0.5])
    sw = metrics.sliced_wasserstein(a, a + v, n_projections=4000, rng=2, chunk_size=512)
    # SW_2^2 = E (theta.v)^2 = |v|^2 / 2; MC relative std of the mean of cos^2 over 4000
    # directions: sqrt(1/8)/0.5/sqrt(4000) ~ 1.1%, i.e. ~0.6% on SW: 3% is > 4 std
    assert abs(sw - np.linalg.norm(v) / math.sqrt(2)) < 0.03 * np.linalg.norm(v)


def test_mmd_closed_forms():
    # two point masses: MMD^2 = 1 + 1 - 2 exp(-|v|^2 / 2h^2)
    a, b = np.zeros((5, 2)), np.tile([0.6, 0.8], (7, 1))
    assert abs(metrics.mmd_rbf(a, b, bandwidth=0.5) - (2 - 2 * math.exp(-1 / 0.5))) < 1e-12
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 3))
    assert metrics.mmd_rbf(x, x.copy()) < 1e-12  # identical sets (biased estimator: exactly 0)
    # Gaussians N(0, I) vs N(mu, I) in D = 3 with bandwidth h: MMD^2 = 2 c (1 - exp(-|mu|^2/(2(h^2+2)))),
    # c = (h^2/(h^2+2))^(D/2); V-statistic bias ~ 2(1 - c)/n ~ 1e-3, MC std ~ 1e-3 at n = 2000
    n, h, mu = 2000, 1.5, np.array([1.0, 0.0, 0.0])
    p, q = rng.standard_normal((n, 3)), rng.standard_normal((n, 3)) + mu
    c = (h**2 / (h**2 + 2)) ** 1.5
    expect = 2 * c * (1 - math.exp(-1.0 / (2 * (h**2 + 2))))
    assert abs(metrics.mmd_rbf(p, q, bandwidth=h, chunk_size=300) - expect) < 0.01
    with pytest.raises(ValueError, match="bandwidth"):
        metrics.mmd_rbf(p, q, bandwidth=-1.0)


def test_precision_recall_known_cases():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((400, 2))
    pr = metrics.precision_recall(real, real.copy(), k=3)
    assert pr == {"precision": 1.0, "recall": 1.0}  # every point lies in its own ball
    far = real + 100.0
    pr = metrics.precision_recall(real, far, k=3)
    assert pr == {"precision": 0.0, "recall": 0.0}
    # mode collapse: fakes only in the half plane x > 0.5 -> high precision, recall ~ P(x > 0.5)-ish
    fake = real[real[:, 0] > 0.5]
    pr = metrics.precision_recall(real, fake, k=3, chunk_size=37)
    assert pr["precision"] == 1.0
    # real points covered by fake balls: those with x > 0.5 (31%) plus a thin margin
    assert 0.28 < pr["recall"] < 0.45


def test_bad_input():
    a = np.zeros((4, 2))
    with pytest.raises(ValueError, match="a"):
        metrics.sliced_wasserstein(np.zeros((0, 2)), a)
    with pytest.raises(ValueError, match="item size"):
        metrics.mmd_rbf(a, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.knn_distances(np.full((2, 2), np.nan), a)
    with pytest.raises(ValueError, match="k"):
        metrics.precision_recall(a, a, k=4)
    with pytest.raises(ValueError, match="p"):
        metrics.sliced_wasserstein(a, a, p=3)
