"""Tests for minidiff.reversal: reversed clouds return toward the data, fallbacks, agreement of
the cKDTree and brute-force paths, bad input. Forward walks are built here in a few lines."""
import numpy as np
import pytest

from device_helpers import D, H
from minidiff import datasets
from minidiff.reversal import reverse_point_clouds


def walk(x0, sigmas, seed):
    """x_t = x_{t-1} + sigma_t w_t, every cloud kept: (T+1, N, D)."""
    rng = np.random.default_rng(seed)
    traj = [x0]
    for s in sigmas:
        traj.append(traj[-1] + s * rng.standard_normal(x0.shape))
    return np.stack(traj)


@pytest.mark.parametrize("name,method", [("circle", "kdtree"), ("circle", "brute"), ("swiss_roll_3d", "kdtree")])
def test_reversed_clouds_return_to_the_manifold(name, method):
    ds = datasets.get_dataset(name)
    x0 = H(ds.sample(600, rng=0))
    sigmas = np.full(20, 0.08)
    traj = walk(x0, sigmas, seed=1)  # host; the brute-force path runs on the run's backend (the device)
    rev = reverse_point_clouds(D(traj) if method == "brute" else traj, sigmas, k=10, rng=2, method=method)
    rev = type(rev)(path=H(rev.path), n_empty=rev.n_empty)
    dist = lambda a: H(ds.distance(D(a)))  # noqa: E731
    assert rev.path.shape == traj.shape and np.array_equal(rev.path[-1], traj[-1])
    noisy = dist(traj[-1]).mean()  # ~ 0.08 * sqrt(20) * E|normal component| ~ 0.3
    end = dist(rev.path[0]).mean()
    # the end cloud is the k-NN mean of data points (within ~chord sag) plus 0.08 * N(0, I):
    # mean distance ~ 0.08 * E|z_normal| ~ 0.065 (2-D) or ~0.065-0.09 (3-D) vs ~0.3 noisy
    assert end < 0.5 * noisy and end < 0.12
    # the trajectory moves toward the manifold on average over the last half
    mid = dist(rev.path[10]).mean()
    assert end < mid < noisy * 1.05
    assert (rev.n_empty == 0).all()  # k-NN neighbourhoods are never empty
    # end points are new points, not copies of the data (noise re-injected at the last step)
    assert np.linalg.norm(rev.path[0][:, None] - x0[None], axis=-1).min() > 1e-6


def test_kdtree_and_brute_force_agree():
    ds = datasets.get_dataset("spiral")
    sigmas = np.full(6, 0.1)
    traj = walk(H(ds.sample(200, rng=3)), sigmas, seed=4)
    for kw in ({"k": 5}, {"radius": 0.3, "max_neighbors": 12}):
        a = reverse_point_clouds(traj, sigmas, noise_scale=0.0, method="kdtree", **kw)  # host (cKDTree)
        b = reverse_point_clouds(D(traj), sigmas, noise_scale=0.0, method="brute", chunk_size=33, **kw)
        # same neighbours (no ties in continuous data) -> same weighted means up to summation order
        assert np.abs(a.path - H(b.path)).max() < 1e-10
        assert np.array_equal(a.n_empty, b.n_empty)


def test_empty_neighbourhood_fallback_is_the_nearest_point():
    rng = np.random.default_rng(5)
    sigmas = np.array([0.5, 0.5, 0.5])
    traj = walk(rng.standard_normal((50, 2)), sigmas, seed=6)
    rev = reverse_point_clouds(traj, sigmas, radius=1e-9, noise_scale=0.0)
    assert (rev.n_empty == 50).all()  # every neighbourhood is empty at radius 1e-9
    for t in (3, 2, 1):
        x, cloud = rev.path[t], traj[t - 1]
        nearest = cloud[np.linalg.norm(x[:, None] - cloud[None], axis=-1).argmin(1)]
        assert np.array_equal(rev.path[t - 1], nearest)


def test_inverse_distance_mean_by_hand():
    # one query, cloud t-1 = {(0,0), (3,0), (0,10)}, k = 2: neighbours at distances 1 and 2
    traj = np.array([[[0.0, 0.0], [3.0, 0.0], [0.0, 10.0]],
                     [[1.0, 0.0], [5.0, 5.0], [6.0, 6.0]]])
    rev = reverse_point_clouds(traj, [0.1], x_start=np.array([[1.0, 0.0]]), k=2, noise_scale=0.0)
    expect = (1 / 1 * np.array([0.0, 0.0]) + 1 / 2 * np.array([3.0, 0.0])) / (1 + 1 / 2)
    assert np.abs(rev.path[0, 0] - expect).max() < 1e-15


def test_reproducible_and_noise_scale():
    sigmas = np.full(4, 0.2)
    traj = walk(np.random.default_rng(7).standard_normal((80, 2)), sigmas, seed=8)
    a = reverse_point_clouds(traj, sigmas, rng=9).path
    assert np.array_equal(a, reverse_point_clouds(traj, sigmas, rng=9).path)
    b = reverse_point_clouds(traj, sigmas, rng=9, noise_scale=0.0).path
    assert np.abs(a - b).max() > 0.05  # the noise is really added


def test_bad_input():
    traj = np.zeros((3, 5, 2))
    with pytest.raises(ValueError, match="trajectory"):
        reverse_point_clouds(np.zeros((1, 5, 2)), [])
    with pytest.raises(ValueError, match="trajectory"):
        reverse_point_clouds(np.zeros((5, 2)), [0.1])
    with pytest.raises(ValueError, match="sigmas"):
        reverse_point_clouds(traj, [0.1])
    with pytest.raises(ValueError, match="sigma"):
        reverse_point_clouds(traj, [0.1, -0.1])
    with pytest.raises(ValueError, match="k or radius"):
        reverse_point_clouds(traj, [0.1, 0.1], k=2, radius=0.1)
    with pytest.raises(ValueError, match="radius"):
        reverse_point_clouds(traj, [0.1, 0.1], radius=0.0)
    with pytest.raises(ValueError, match="k"):
        reverse_point_clouds(traj, [0.1, 0.1], k=6)
    with pytest.raises(ValueError, match="x_start"):
        reverse_point_clouds(traj, [0.1, 0.1], x_start=np.zeros((4, 3)))
    bad = traj.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="trajectory"):
        reverse_point_clouds(bad, [0.1, 0.1])
    with pytest.raises(ValueError, match="method"):
        reverse_point_clouds(traj, [0.1, 0.1], method="ann")
