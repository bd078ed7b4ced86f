"""Timing helpers shared by the benchmark scripts (host code; not part of the package).

Run the scripts from the repository root (``python benchmarks/bench_mlp.py``): Python puts the
script's folder on ``sys.path``, so ``from _timing import ...`` finds this file.
"""
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")  # the CI-class machine has 2 cores
os.environ.setdefault("OMP_NUM_THREADS", "2")

import minidiff  # noqa: E402,F401  before NumPy, as the CLI and demos do: sets OpenBLAS's short spin (minidiff/_threads.py)

import numpy as np  # noqa: E402


# Seconds to wait before timing each implementation. After a call, a BLAS or OpenMP library keeps its
# worker threads spinning for a while (OpenBLAS by default 2^28 cycles, ~0.1 s): the next
# implementation, timed at once, would share the cores with them. Measured here: PyTorch's MLP step took
# 21.7 ms timed right after minidiff's and 9.3 ms with NumPy's OpenBLAS threads asleep
# (docs/performance.md §8). The pause lets the other library's threads go to sleep first.
PAUSE_S = 0.3


def interleaved(fns, rounds, inner):
    """{name: (min ms, median ms)} per call, the implementations timed in alternation so that load from
    other processes hits them alike; the minimum is the figure least disturbed by that load. Each
    timing starts after a pause of ``PAUSE_S`` and one untimed call, so that neither library's
    spinning threads are still on the cores when the other is timed."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(PAUSE_S)  # the previous implementation's idle threads go to sleep
            fn()  # this implementation's threads wake up
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t) / inner * 1e3)
    return {name: (min(ts), float(np.median(ts))) for name, ts in times.items()}


def gemm_gflops(n=1024, rounds=5):
    """This machine's float32 matmul rate (GFLOP/s, 2 n^3 flops), best of ``rounds``."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ms = interleaved({"gemm": lambda: a @ a}, rounds, 3)["gemm"][0]
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def torch_or_none(threads=2):
    """PyTorch if installed (for comparison only; never a dependency), with ``threads`` threads."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def print_table(res, ref, flops=None, peak=None, ref2=None):
    """Print ``interleaved``'s results: min and median ms, the ratio of minima to ``ref`` (a key of
    ``res``; "-" when that peer was not run), with ``ref2`` a second ratio column, and with
    ``flops``/``peak`` the fraction of the GEMM rate (``flops`` of GEMM work per call)."""
    refs = [r for r in (ref, ref2) if r is not None]
    head = f"{'impl':<22}{'min ms':>9}{'median':>9}" + "".join(f"{'/ ' + r:>24}" for r in refs)
    print(head + (f"{'GEMM frac':>11}" if flops else ""))
    for name, (best, med) in res.items():
        ratios = "".join(f"{best / res[r][0]:>24.2f}" if r in res else f"{'-':>24}" for r in refs)
        frac = f"{flops / (best * 1e-3) / 1e9 / peak:>11.2f}" if flops else ""
        print(f"{name:<22}{best:>9.2f}{med:>9.2f}{ratios}{frac}")
