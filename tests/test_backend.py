"""The backend switch, and a static check that device code never calls NumPy directly."""
import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import minidiff
from minidiff import backend

PKG = pathlib.Path(minidiff.__file__).parent

# Host modules: allowed to import numpy (and scipy), each for a stated reason.
HOST_MODULES = {
    "backend.py": "it is the switch itself",
    "schedules.py": "float64 schedule math on the host (docs/math.md §1)",
    "datasets.py": "toy data generation and glyph rendering (not a hot path)",
    "reversal.py": "scipy KD-tree neighbour search on the CPU path",
    "plotting.py": "matplotlib needs host arrays",
    "cli.py": "command line I/O (.npy/.csv files)",
    "fileio.py": "reading users' .npy/.csv files",
    "captioned.py": "glyph rendering with matplotlib and caption strings (not a hot path)",
}
FORBIDDEN_EVERYWHERE = {"torch", "jax", "jaxlib", "autograd", "tensorflow"}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def test_device_modules_do_not_import_numpy():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for name, line in _imports(path):
            if name in FORBIDDEN_EVERYWHERE:
                offenders.append(f"{rel}:{line} imports {name} (no autograd frameworks in minidiff)")
            elif name in ("numpy", "scipy") and rel not in HOST_MODULES:
                offenders.append(f"{rel}:{line} imports {name}; use xp = backend.get_xp(...)")
    assert not offenders, "\n".join(offenders)


def test_the_ast_check_catches_a_numpy_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom numpy.linalg import norm\nimport numpy as np\n")
    assert [n for n, _ in _imports(bad)] == ["os", "numpy", "numpy"]


DEFAULT = os.environ.get("MINIDIFF_BACKEND", "numpy").strip().lower() or "numpy"


def test_get_xp_follows_arguments_and_default():
    a = np.zeros(3)
    assert backend.get_xp(a) is np
    assert backend.get_xp(1.0, None, a) is np
    assert backend.get_xp().__name__ == DEFAULT  # the environment's default backend
    assert backend.get_backend() == DEFAULT


def test_to_numpy_asarray_rng():
    xp = backend.get_xp()
    a = backend.asarray([1.0, 2.0], dtype="float32")
    assert backend.get_xp(a) is xp and a.dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(a), [1.0, 2.0])
    r1, r2 = backend.default_rng(5), backend.default_rng(5)
    np.testing.assert_array_equal(backend.to_numpy(r1.standard_normal(4)), backend.to_numpy(r2.standard_normal(4)))
    assert backend.default_rng(r1) is r1
    assert backend.rng_xp(r1) is xp
    with pytest.raises(TypeError, match="rng"):
        backend.rng_xp(3)


@pytest.mark.parametrize("seed", [1.5, "3", True, np.zeros(1)])
def test_default_rng_refuses_what_is_not_a_seed(seed):
    with pytest.raises(TypeError, match="seed"):
        backend.default_rng(seed)
    with pytest.raises(ValueError, match="seed"):
        backend.default_rng(-1)


@pytest.mark.gpu
def test_default_rng_refuses_a_generator_of_the_other_backend():
    # the bug: a NumPy Generator handed to device code was returned as is and its host draws were
    # mixed into device arrays; now it is a TypeError naming both backends
    import cupy

    with pytest.raises(TypeError, match="numpy.*cupy"):
        backend.default_rng(np.random.default_rng(0), xp=cupy)
    with pytest.raises(TypeError, match="cupy.*numpy"):
        backend.default_rng(backend.default_rng(0, xp=cupy), xp=np)
    g = backend.CounterRNG(0, xp=np)
    with pytest.raises(TypeError, match="numpy.*cupy"):
        backend.default_rng(g, xp=cupy)


def test_use_backend_restores_previous():
    with backend.use_backend("numpy") as xp:
        assert xp is np
    assert backend.get_backend() == DEFAULT


def _normal_cdf(z):
    from math import erf, sqrt
    return 0.5 * (1.0 + np.vectorize(erf)(z / sqrt(2.0)))


def test_counter_rng_is_a_pure_function_of_seed_step_and_draw(xp):
    g = backend.CounterRNG(7, xp=xp)
    a = backend.to_numpy(g.at(3).standard_normal((5, 4), dtype="float32"))
    b = backend.to_numpy(g.at(3).standard_normal((5, 4), dtype="float32"))
    c = backend.to_numpy(backend.CounterRNG(7, xp=xp).at(4).standard_normal((5, 4), dtype="float32"))
    d = backend.to_numpy(backend.CounterRNG(8, xp=xp).at(3).standard_normal((5, 4), dtype="float32"))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # the second call of a step continues the stream instead of repeating it
    g.at(3)
    first, second = backend.to_numpy(g.random(6)), backend.to_numpy(g.random(6))
    assert not np.array_equal(first, second)
    assert backend.rng_xp(g) is xp and backend.default_rng(g, xp=xp) is g


def test_counter_rng_integers_are_identical_on_both_backends(xp):
    # integer draws are exact uint64 arithmetic: the device and the host agree bit for bit
    host = backend.CounterRNG(11, xp=np).at(2**40 + 5).integers(0, 1000, size=257)
    dev = backend.CounterRNG(11, xp=xp).at(2**40 + 5).integers(0, 1000, size=257)
    np.testing.assert_array_equal(backend.to_numpy(dev), host)
    assert host.min() >= 0 and host.max() < 1000


def test_counter_rng_distributions(xp):
    g = backend.CounterRNG(0, xp=xp)
    n = 20000
    z = np.sort(backend.to_numpy(g.at(1).standard_normal(n)))
    u = np.sort(backend.to_numpy(g.at(2).random(n)))
    k = backend.to_numpy(g.at(3).integers(3, 8, size=n))
    # Kolmogorov-Smirnov distance: the 1e-3-level critical value for n = 20000 is 1.95/sqrt(n) = 0.0138
    ks = lambda x, cdf: np.max(np.abs(cdf(x) - np.arange(1, n + 1) / n))
    assert ks(z, _normal_cdf) < 0.0138
    assert ks(u, lambda x: x) < 0.0138 and u.min() >= 0.0 and u.max() < 1.0
    counts = np.bincount(k - 3, minlength=5)
    # chi-square with 4 dof: 18.5 is its 0.999 quantile
    assert k.min() == 3 and k.max() == 7 and ((counts - n / 5) ** 2 / (n / 5)).sum() < 18.5
    # successive steps are uncorrelated: |r| < 4 / sqrt(n) (4 standard errors)
    z1, z2 = (backend.to_numpy(g.at(s).standard_normal(n)) for s in (10, 11))
    assert abs(np.corrcoef(z1, z2)[0, 1]) < 4 / np.sqrt(n)


@pytest.mark.parametrize("name, exc", [("torch", ValueError), ("", ValueError), (3, TypeError)])
def test_bad_backend_name(name, exc):
    with pytest.raises(exc, match="backend"):
        backend.set_backend(name)


@pytest.mark.skipif(backend.cupy_available(), reason="checks the error raised without a GPU")
def test_cupy_without_gpu_says_what_to_install():
    with pytest.raises(RuntimeError, match=r"cupy|CuPy|GPU"):
        backend.set_backend("cupy")
    assert backend.get_backend() == DEFAULT  # unchanged after the failed switch


def test_env_variable_selects_backend():
    code = "from minidiff import backend; print(backend.get_backend())"
    env = dict(os.environ, MINIDIFF_BACKEND="NumPy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["MINIDIFF_BACKEND"] = "opencl"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "backend must be one of" in bad.stderr


@pytest.mark.gpu
def test_cupy_round_trip():
    import cupy  # only reached with a GPU

    with backend.use_backend("cupy") as xp:
        assert xp is cupy
        a = backend.asarray([1.0, 2.0])
        assert backend.get_xp(a) is cupy and backend.get_xp(a, np.zeros(1)) is cupy
        np.testing.assert_array_equal(backend.to_numpy(a), [1.0, 2.0])
        assert backend.rng_xp(backend.default_rng(0)) is cupy
