"""Shared test configuration: hypothesis profiles, the gpu marker, backend fixtures.

Profiles: ``ci`` (default; ~50 examples, no deadline, derandomised so CI is reproducible)
and ``thorough`` (opt-in: ``HYPOTHESIS_PROFILE=thorough python -m pytest``).
"""
import os

import pytest
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

HAVE_GPU = backend.cupy_available()


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
