"""Tests for minidiff.datasets: shapes, reproducibility, labels, and that each closed-form
projection is the nearest point (checked against a dense sampling of the manifold built here)."""
import math

import numpy as np
import pytest

from minidiff import datasets as ds

POINT_SETS = ["spiral", "swiss_roll", "moons", "circle", "circles", "8gaussians", "checkerboard",
              "spiral_arms", "swiss_roll_3d", "torus", "sphere", "embedded_spiral"]


@pytest.mark.parametrize("name", ds.list_datasets())
def test_shapes_seeds_labels(name):
    d = ds.get_dataset(name)
    n = 64 if name.startswith("glyphs") else 500
    x = d.sample(n, rng=3)
    assert x.shape == (n,) + tuple(d.shape) and d.dim == math.prod(d.shape)
    assert np.isfinite(x).all()
    assert np.array_equal(x, d.sample(n, rng=3))  # same seed, same draw
    assert not np.array_equal(x, d.sample(n, rng=4))
    if d.num_classes is not None:
        x2, y = d.sample(n, rng=3, return_labels=True)
        assert np.array_equal(x2, x) and y.shape == (n,) and y.dtype == np.int64
        assert y.min() >= 0 and y.max() < d.num_classes
        assert len(np.unique(y)) == d.num_classes  # n >= 64 draws hit every class w.h.p. (>= 1 - 10 * 0.9^64)
    else:
        with pytest.raises(ValueError, match="return_labels"):
            d.sample(4, return_labels=True)
    if len(d.shape) == 1:
        # documented scale: roughly in [-2, 2] (8 Gaussians' tails reach a bit beyond)
        assert np.abs(x).max() < 2.0 + 5 * 0.1 and 0.3 < x.std() < 1.5


@pytest.mark.parametrize("name", POINT_SETS)
def test_samples_lie_on_the_manifold(name):
    d = ds.get_dataset(name)
    x = d.sample(300, rng=0)
    dd = d.distance(x)
    if name == "8gaussians":
        # the "manifold" is the 8 centres; samples are std 0.1 Gaussians around them
        assert np.median(dd) < 0.2 and dd.max() < 0.6
    else:
        # clean curves/surfaces (noise = 0): distance is float rounding only, or the curve
        # search's Newton refinement error (converged to ~1e-12 for these smooth pieces)
        assert dd.max() < 1e-9


def dense_manifold(name):
    """A dense sampling of each true manifold, built here from the defining formulae."""
    if name in ("spiral", "swiss_roll"):
        a, t0, t1 = (2 / (4 * math.pi), math.pi, 4 * math.pi) if name == "spiral" else \
            (2 / (4.5 * math.pi), 1.5 * math.pi, 4.5 * math.pi)
        t = np.linspace(t0, t1, 400_000)
        return a * np.stack([t * np.cos(t), t * np.sin(t)], 1)
    if name == "spiral_arms":
        a, t = 2 / (2.5 * math.pi), np.linspace(0.5 * math.pi, 2.5 * math.pi, 200_000)
        return np.concatenate([a * np.stack([t * np.cos(t + p), t * np.sin(t + p)], 1)
                               for p in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    if name == "moons":
        r, t = 4 / 3, np.linspace(0, math.pi, 200_000)
        up = np.stack([-0.5 * r + r * np.cos(t), -0.25 * r + r * np.sin(t)], 1)
        lo = np.stack([0.5 * r + r * np.cos(t + math.pi), 0.25 * r + r * np.sin(t + math.pi)], 1)
        return np.concatenate([up, lo])
    if name in ("circle", "circles"):
        t = np.linspace(0, 2 * math.pi, 200_000)
        radii = (1.5,) if name == "circle" else (0.75, 1.5)
        return np.concatenate([r * np.stack([np.cos(t), np.sin(t)], 1) for r in radii])
    if name == "checkerboard":
        g = np.linspace(0, 1, 300)
        sq = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        return np.concatenate([sq + [i, j] for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0])
    if name == "torus":
        u, v = np.meshgrid(np.linspace(0, 2 * math.pi, 1500), np.linspace(0, 2 * math.pi, 500))
        rho = 1.5 + 0.5 * np.cos(v)
        return np.stack([rho * np.cos(u), rho * np.sin(u), 0.5 * np.sin(v)], -1).reshape(-1, 3)
    if name == "sphere":
        g = np.random.default_rng(0).standard_normal((600_000, 3))
        return 1.5 * g / np.linalg.norm(g, axis=1, keepdims=True)
    raise KeyError(name)


def brute_min_dist(x, pts, chunk=100_000):
    """min_j ||x - p_j|| by the float64 GEMM expansion (|x|, |p| <= ~3: d^2 rounding ~1e-15)."""
    best = np.full(len(x), np.inf)
    for s in range(0, len(pts), chunk):
        p = pts[s:s + chunk]
        d2 = (x * x).sum(1)[:, None] - 2 * x @ p.T + (p * p).sum(1)[None]
        best = np.minimum(best, d2.min(1))
    return np.sqrt(np.maximum(best, 0.0))


# dense spacing (upper bound of the gap between neighbouring dense points, hence of
# d_dense - d_true): spirals 3 pi * 2 / 4e5 ~ 5e-5 per arc step; torus ~ 2 pi 2 / 1500 ~ 8e-3;
# sphere with 6e5 random points ~ 6e-3 typical (1.5 * sqrt(4 pi / 6e5) ~ 7e-3); board 3e-3.
DENSE_TOL = {"spiral": 1e-4, "swiss_roll": 1e-4, "spiral_arms": 1e-4, "moons": 1e-4, "circle": 1e-4,
             "circles": 1e-4, "checkerboard": 4e-3, "torus": 1e-2, "sphere": 3e-2}


@pytest.mark.parametrize("name", sorted(DENSE_TOL))
def test_projection_is_the_nearest_point(name):
    d = ds.get_dataset(name)
    rng = np.random.default_rng(1)
    x = 2.2 * rng.uniform(-1, 1, (60, d.dim))
    p = d.project(x)
    dist = d.distance(x)
    dense = dense_manifold(name)
    d_dense = brute_min_dist(x, dense)
    assert np.abs(dist - np.linalg.norm(x - p, axis=1)).max() < 1e-12
    # never farther than some dense manifold point (it is the minimiser) ...
    assert (dist <= d_dense + 1e-7).all()  # 1e-7: sqrt of the GEMM rounding near 0
    # ... and not closer than the dense minimum minus the dense spacing (it lies on the manifold)
    assert (dist >= d_dense - DENSE_TOL[name]).all()
    assert (brute_min_dist(p, dense) <= DENSE_TOL[name]).all()


def test_embedded_manifold_projection_matches_base():
    e = ds.get_dataset("embedded_spiral", ambient_dim=10, seed=5)
    Q = e.Q(np)
    assert np.abs(Q @ Q.T - np.eye(10)).max() < 1e-12
    x = np.random.default_rng(2).standard_normal((40, 10))
    base = ds.Spiral()
    z = x @ Q.T  # coordinates in the rotated frame
    # distance^2 = (in-plane distance to the spiral)^2 + (out-of-plane part)^2
    expect = np.sqrt(base.distance(z[:, :2]) ** 2 + (z[:, 2:] ** 2).sum(1))
    assert np.abs(e.distance(x) - expect).max() < 1e-9


def test_projection_degenerate_points_are_finite():
    for name, x in (("circle", np.zeros((1, 2))), ("sphere", np.zeros((1, 3))),
                    ("torus", np.array([[0.0, 0.0, 0.3], [1.5, 0.0, 0.0]]))):
        d = ds.get_dataset(name)
        p = d.project(x)
        assert np.isfinite(p).all()
        # equidistant cases: any returned point must realise the distance (here computable by hand)
        by_hand = {"circle": [1.5], "sphere": [1.5], "torus": [np.hypot(1.5, 0.3) - 0.5, 0.5]}[name]
        assert np.abs(d.distance(x) - by_hand).max() < 1e-12


def test_glyphs_range_and_class_structure():
    g = ds.get_dataset("glyphs16")
    x, y = g.sample(400, rng=0, return_labels=True)
    assert x.shape == (400, 1, 16, 16) and x.min() >= -1.0 and x.max() <= 1.0
    assert (x < -0.99).mean() > 0.5 and (x > 0.5).mean() > 0.03  # mostly background, some ink
    # labels carry information: class means differ more than jittered samples within a class
    means = np.stack([x[y == k].mean(0).ravel() for k in range(10)])
    between = np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(10, dtype=bool)].min()
    assert between > 1.0
    with pytest.raises(NotImplementedError):
        g.project(x)
    with pytest.raises(NotImplementedError):
        g.distance(x)


def test_registry_and_bad_input():
    assert set(POINT_SETS + ["glyphs16", "glyphs28", "captioned_glyphs"]) == set(ds.list_datasets())
    with pytest.raises(ValueError, match="spiral"):  # the message lists the known names
        ds.get_dataset("mnist")
    with pytest.raises(TypeError, match="name"):
        ds.get_dataset(3)
    with pytest.raises(ValueError, match="n"):
        ds.get_dataset("spiral").sample(0)
    with pytest.raises(TypeError, match="n"):
        ds.get_dataset("spiral").sample(2.5)
    with pytest.raises(ValueError, match="noise"):
        ds.get_dataset("spiral", noise=-1.0)
    with pytest.raises(ValueError, match="size"):
        ds.GlyphDigits(size=20)
    with pytest.raises(ValueError, match="x"):
        ds.get_dataset("spiral").project(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="x"):
        ds.get_dataset("torus").distance(np.full((2, 3), np.nan))
