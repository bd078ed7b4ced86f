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


def test_get_xp_follows_arguments_and_default():
    a = np.zeros(3)
    assert backend.get_xp(a) is np
    assert backend.get_xp(1.0, None, a) is np
    assert backend.get_xp() is np  # default backend here (CI has no GPU)
    assert backend.get_backend() == "numpy"


def test_to_numpy_asarray_rng():
    a = backend.asarray([1.0, 2.0], dtype="float32")
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(a), [1.0, 2.0])
    r1, r2 = backend.default_rng(5), backend.default_rng(5)
    np.testing.assert_array_equal(r1.standard_normal(4), r2.standard_normal(4))
    assert backend.default_rng(r1) is r1
    assert backend.rng_xp(r1) is np
    with pytest.raises(TypeError, match="rng"):
        backend.rng_xp(3)


def test_use_backend_restores_previous():
    with backend.use_backend("numpy") as xp:
        assert xp is np
    assert backend.get_backend() == "numpy"


@pytest.mark.parametrize("name, exc", [("torch", ValueError), ("", ValueError), (3, TypeError)])
def test_bad_backend_name(name, exc):
    with pytest.raises(exc, match="backend"):
        backend.set_backend(name)


@pytest.mark.skipif(backend.cupy_available(), reason="checks the error raised without a GPU")
def test_cupy_without_gpu_says_what_to_install():
    with pytest.raises(RuntimeError, match=r"cupy|CuPy|GPU"):
        backend.set_backend("cupy")
    assert backend.get_backend() == "numpy"  # unchanged after the failed switch


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
