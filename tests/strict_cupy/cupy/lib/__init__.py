"""cupy.lib in the strict stand-in: only ``stride_tricks`` (as CuPy's ``cupy.lib.stride_tricks``)."""
from . import stride_tricks  # noqa: F401
