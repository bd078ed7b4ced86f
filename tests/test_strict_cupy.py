"""The strict CuPy stand-in itself (tests/strict_cupy): it must refuse what CuPy refuses and count
what CuPy would transfer, or the device-path run of the suite proves nothing.

Runs in both suite runs: under MINIDIFF_STRICT_CUPY=1 the stand-in is already ``cupy``; otherwise
the fixture imports it for this module only and removes it again, so minidiff never sees it.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "strict_cupy")


@pytest.fixture(scope="module")
def cp():
    if os.environ.get("MINIDIFF_STRICT_CUPY", "") == "1":
        import cupy

        yield cupy
        return
    saved = {k: v for k, v in sys.modules.items() if k == "cupy" or k.startswith("cupy.")}
    errors = np.geterr()  # the stand-in turns NumPy's floating-point warnings off; restored below
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, HERE)
    try:
        import cupy

        assert cupy._STRICT
        yield cupy
    finally:
        sys.path.remove(HERE)
        for k in [k for k in sys.modules if k == "cupy" or k.startswith("cupy.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        np.seterr(**errors)


@pytest.fixture
def counter(cp):
    cp._strict.reset()
    return cp._strict


def test_device_array_is_not_a_numpy_array_and_refuses_implicit_conversion(cp):
    a = cp.arange(3.0)
    assert not isinstance(a, np.ndarray) and type(a).__module__ == "cupy"
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([a, a])


@pytest.mark.parametrize("op", [lambda a, h: a + h, lambda a, h: h + a, lambda a, h: a * h, lambda a, h: h @ a,
                                lambda a, h: a < h])
def test_mixing_with_host_arrays_in_operators_raises(cp, op):
    with pytest.raises(TypeError, match="Unsupported type"):
        op(cp.ones(3), np.ones(3))


@pytest.mark.parametrize("f", [lambda m, a, h: m.maximum(a, h), lambda m, a, h: m.concatenate([a, h]),
                               lambda m, a, h: m.where(a > 0, a, h), lambda m, a, h: m.stack([h, a])])
def test_mixing_with_host_arrays_in_functions_raises(cp, f):
    with pytest.raises(TypeError, match="Unsupported type"):
        f(cp, cp.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="Unsupported type"):
        f(np, cp.ones(3), np.ones(3))  # NumPy's own function dispatches to the device and refuses too


def test_scalars_are_accepted_and_numpy_functions_dispatch_to_the_device(cp, counter):
    a = cp.arange(4.0)
    for r in (a + 1.5, np.float32(2.0) * a, np.exp(a), np.concatenate([a, a]), np.maximum(a, 0.0)):
        assert type(r) is cp.ndarray
    assert counter.syncs == 0 and counter.h2d == 0


def test_reductions_and_scalar_indexing_return_0d_device_arrays(cp, counter):
    a = cp.arange(6.0).reshape(2, 3)
    for r in (a.sum(), a.max(), cp.mean(a), a[1, 2], cp.linalg.norm(a), cp.all(a >= 0)):
        assert type(r) is cp.ndarray and r.shape == ()
    assert counter.syncs == 0


@pytest.mark.parametrize("sync", [float, int, bool, lambda a: a.item(), lambda a: a.get(), lambda a: a.tolist(),
                                  lambda a: __import__("cupy").asnumpy(a), repr, str, lambda a: f"{a:.3f}",
                                  lambda a: [0, 1][a]])
def test_every_sync_is_counted(cp, counter, sync):
    a = cp.asarray(1) if sync is not None else None
    counter.reset()
    sync(a)
    assert counter.syncs == 1 and counter.h2d == 0


def test_host_to_device_copies_are_counted_and_device_paths_are_free(cp, counter):
    h = np.arange(3.0)
    d = cp.asarray(h)
    assert counter.h2d == 1
    h[0] = 99.0
    assert float(d[0]) == 0.0  # a copy, not a view of host memory
    counter.reset()
    cp.asarray(d), cp.asarray(d, dtype=cp.float32), cp.array(d), cp.zeros(3), cp.arange(5)
    assert counter.h2d == 0 and counter.syncs == 0
    cp.asarray([1.0, 2.0]), cp.asarray(0.5), d[np.array([0, 1])]
    assert counter.h2d == 3
    d[:2] = np.zeros(2)
    assert counter.h2d == 4 and counter.syncs == 0


def test_views_write_through_and_out_returns_the_same_array(cp):
    a = cp.zeros((2, 3))
    a[0][1] = 5.0
    a[1] += 1.0
    out = cp.empty((2, 3))
    assert cp.multiply(a, 2.0, out=out) is out
    assert np.array_equal(cp.asnumpy(out), [[0.0, 10.0, 0.0], [2.0, 2.0, 2.0]])


def test_random_generator_offers_only_cupys_methods(cp):
    g = cp.random.default_rng(0)
    for m in ("random", "standard_normal", "integers", "uniform", "standard_exponential", "gamma", "beta",
              "poisson", "binomial"):
        assert callable(getattr(g, m))
    for m in ("normal", "choice", "permutation", "shuffle", "spawn", "bytes"):
        assert not hasattr(g, m)  # numpy.random.Generator has these; cupy.random.Generator does not
    z = g.standard_normal((4, 5), dtype=cp.float32)
    assert type(z) is cp.ndarray and z.dtype == np.float32
    i = g.integers(0, 7)
    assert type(i) is cp.ndarray and i.shape == ()  # CuPy returns a 0-d array, not an int


def test_seeds_keep_32_bits_like_curand(cp):
    # CuPy seeds cuRAND with SeedSequence(seed).generate_state(1, uint32)[0]: 32 bits. Two seeds with
    # the same 32-bit state draw the same numbers; different ones differ.
    state = lambda s: int(np.random.SeedSequence(s).generate_state(1, np.uint32)[0])
    a, b = (cp.asnumpy(cp.random.default_rng(s).random(8)) for s in (1, 2))
    assert state(1) != state(2) and not np.array_equal(a, b)
    g1, g2 = cp.random.XORWOW(1), cp.random.XORWOW(1)
    assert g1._seed == g2._seed == state(1)


def test_pickle_and_cuda_runtime(cp, counter):
    a = cp.arange(3.0)
    b = pickle.loads(pickle.dumps(a))
    assert type(b) is cp.ndarray and counter.syncs == 1 and counter.h2d == 1
    assert cp.cuda.runtime.getDeviceCount() == 1
    cp.cuda.Device().synchronize()
    assert counter.syncs == 2


def test_host_only_names_are_absent(cp):
    for name in ("save", "loadtxt", "errstate"):
        assert not hasattr(cp, name)
    with pytest.raises(AttributeError):
        cp.arange(3.0).tofile


def test_gpu_benchmark_runs_under_the_stand_in(tmp_path):
    # benchmarks/bench_gpu.py cannot be timed here (no GPU); its --smoke mode checks that it runs the
    # device path correctly (synchronised timing, inputs made once on each backend). Subprocess only:
    # the stand-in is installed as cupy in that child, never in this process.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MINIDIFF_BACKEND="cupy", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([HERE, root]))
    out = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_gpu.py"), "--smoke"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for case in ("MLP training step", "U-Net training step", "DDIM sampling (MLP)", "ideal denoiser"):
        assert case in out.stdout
    assert "GPU/CPU" in out.stdout and "strict CuPy stand-in" in out.stdout


def test_as_strided_is_a_device_view(cp):
    a = cp.arange(12.0).reshape(3, 4)
    v = cp.lib.stride_tricks.as_strided(a, (2, 2), (a.strides[0], a.strides[1]))
    assert type(v) is cp.ndarray
    a[0, 1] = 7.0  # a view: writes to the base show through
    assert float(v[0, 1]) == 7.0
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.lib.stride_tricks.as_strided(np.zeros(3), (3,), (8,))


def test_linalg_results_are_device_arrays(cp):
    """NumPy's linalg returns named tuples (EighResult, ...); CuPy returns plain tuples of device arrays.
    The stand-in must too, or a device path through eigh meets host arrays (found by demo 13 under it)."""
    a = cp.asarray(np.array([[2.0, 1.0], [1.0, 3.0]]))
    w, V = cp.linalg.eigh(a)
    assert isinstance(w, cp.ndarray) and isinstance(V, cp.ndarray)
    assert isinstance(cp.maximum(w, 0.0), cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy((V * w) @ V.T), [[2.0, 1.0], [1.0, 3.0]], atol=1e-12)
    assert isinstance(cp.linalg.eigvalsh(a), cp.ndarray)
