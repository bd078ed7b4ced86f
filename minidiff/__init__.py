"""minidiff: diffusion models from scratch in NumPy/CuPy, with hand-written backprop."""
__version__ = "0.1.0"

from .backend import (  # noqa: F401
    asarray, default_rng, get_backend, get_xp, set_backend, to_numpy, use_backend,
)
