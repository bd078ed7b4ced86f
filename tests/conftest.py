"""Shared test configuration: hypothesis profiles, the gpu marker, backend fixtures, and the
strict CuPy stand-in.

Profiles: ``ci`` (default; ~50 examples, no deadline, derandomised so CI is reproducible)
and ``thorough`` (opt-in: ``HYPOTHESIS_PROFILE=thorough python -m pytest``).

``MINIDIFF_STRICT_CUPY=1`` installs ``tests/strict_cupy`` as ``cupy`` for this test process
(and the subprocesses it starts) before minidiff imports CuPy: with ``MINIDIFF_BACKEND=cupy``
the whole suite then runs on the device path on a CPU (docs/backends.md §4).
"""
import os
import sys

import pytest

STRICT_CUPY = os.environ.get("MINIDIFF_STRICT_CUPY", "") == "1"
if STRICT_CUPY:
    _STAND_IN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "strict_cupy")
    sys.path.insert(0, _STAND_IN)
    os.environ["PYTHONPATH"] = os.pathsep.join([_STAND_IN] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    import cupy  # noqa: E402

    assert getattr(cupy, "_STRICT", False), f"MINIDIFF_STRICT_CUPY=1 but 'cupy' is {cupy.__file__}"
from hypothesis import HealthCheck, settings

from minidiff import backend

settings.register_profile(
    "ci", max_examples=50, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HAVE_GPU = backend.cupy_available()  # True under the stand-in: gpu-marked tests run on the CPU
DEVICE = os.environ.get("MINIDIFF_BACKEND", "numpy").strip().lower() == "cupy"  # the suite runs on cupy


def pytest_collection_modifyitems(config, items):
    if HAVE_GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a visible CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def xp():
    """The array module of the default backend (numpy, or cupy under MINIDIFF_BACKEND=cupy)."""
    return backend.get_xp()


@pytest.fixture
def numpy_backend():
    """Pin the NumPy backend for a test that builds NumPy inputs (use with
    ``pytest.mark.usefixtures("numpy_backend")``); CuPy is covered by gpu-marked tests."""
    with backend.use_backend("numpy"):
        yield


@pytest.fixture
def strict_counter():
    """The stand-in's sync / host->device copy counter, reset; skips unless the stand-in is active
    and the default backend is cupy (sync budgets are meaningless on NumPy)."""
    if not (STRICT_CUPY and DEVICE):
        pytest.skip("sync budgets need MINIDIFF_BACKEND=cupy MINIDIFF_STRICT_CUPY=1")
    import cupy

    cupy._strict.reset()
    yield cupy._strict
    cupy._strict.reset()
