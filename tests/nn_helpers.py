"""Helpers shared by the nn test files (test_layers.py, test_models.py)."""
import numpy as np

from device_helpers import D, H  # noqa: F401  (re-exported for the nn tests)
from minidiff import backend


def randomize(module, seed=0):
    """Random parameters (gamma near 1, everything else ~N(0, 0.3^2)) so no gradient is trivially zero."""
    rng = np.random.default_rng(seed)
    for name, p in module.named_parameters():
        values = rng.standard_normal(p.data.shape) * 0.3 + (1.0 if name.endswith("gamma") else 0.0)
        p.data[...] = backend.asarray(values, dtype=p.data.dtype, xp=backend.get_xp(p.data))
    return module


def rn(*shape, seed=1):
    """A float64 standard-normal array of ``shape`` on the default backend (the device under
    MINIDIFF_BACKEND=cupy), the same numbers on both backends for one ``seed``."""
    return backend.asarray(np.random.default_rng(seed).standard_normal(shape))

