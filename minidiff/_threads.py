"""How many BLAS threads minidiff's entry points ask for (read before NumPy is imported).

NumPy's OpenBLAS starts one thread per core and spins them between calls. On a small machine shared
by several jobs, a 2-thread GEMM must wait until both of its threads get a core at once: measured on a
2-core machine at load average ~9, a U-Net training step took 2.7-3.9 s with 2 BLAS threads and
0.91-0.94 s with 1 (docs/performance.md §3). With the machine to itself, 2 threads run the GEMMs about
twice as fast. So the default is

    threads = max(1, cores - round(1-minute load average))

taken once when ``minidiff`` is imported: all cores on an idle machine, one thread when other jobs
already keep the cores busy (a second job started beside a first one gets 1). It is written to
``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` only when NumPy has not been
imported yet (afterwards the variables have no effect) and the user has set none of them: setting any
of them, e.g. ``OPENBLAS_NUM_THREADS=2 minidiff train ...``, overrides this choice. The CLI and the
demos import minidiff before NumPy, so they get it.

OpenBLAS also keeps its idle threads spinning for 2^28 cycles (~0.1 s) after each call, so that the next
call starts at once. While they spin they hold the cores that minidiff's own thread pool needs for the
elementwise and attention blocks run just after a GEMM (:mod:`minidiff._parallel`): measured on the
2-core machine, 256 heads of attention took 15 ms alone and 29 ms right after one 2-thread GEMM. So
``OPENBLAS_THREAD_TIMEOUT`` (the spin, as a power of two of cycles) is set to ``SPIN_LOG2_CYCLES`` = 10
(well under a microsecond) under the same conditions, independently of the thread count: a DiT
training step on 196 tokens went from 452-540 ms to 345-378 ms, and an MLP step of small GEMMs did not
change beyond the noise (docs/performance.md §8).

This module imports nothing heavy: it must run before NumPy loads.
"""
from __future__ import annotations

import os
import sys

_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_SPIN_VAR = "OPENBLAS_THREAD_TIMEOUT"
SPIN_LOG2_CYCLES = 10


def default_blas_threads(cores: int, load1: float) -> int:
    """``max(1, cores - round(load1))``: the cores not already kept busy by other jobs."""
    return max(1, int(cores) - int(round(load1)))


def apply_default_blas_threads() -> int | None:
    """Set the BLAS thread variables to :func:`default_blas_threads` if that can still take effect
    (NumPy not imported) and the user set none of them, and OpenBLAS's spin to ``SPIN_LOG2_CYCLES``
    unless the user set it. Returns the thread count set, or None."""
    if "numpy" in sys.modules:
        return None
    os.environ.setdefault(_SPIN_VAR, str(SPIN_LOG2_CYCLES))  # the user's own setting wins
    if any(v in os.environ for v in _VARS):
        return None
    cores = os.cpu_count() or 1
    try:
        load1 = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average (Windows): leave one core to other jobs
        load1 = 1.0 if cores > 1 else 0.0
    n = default_blas_threads(cores, load1)
    for v in _VARS:
        os.environ[v] = str(n)
    return n
