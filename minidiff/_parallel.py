"""Blocks of independent work on a thread pool, with BLAS held to one thread meanwhile (NumPy only).

Attention runs two small GEMMs and seven elementwise passes per (sample, head): for a DiT on 196 tokens
with head width 16, 256 matrices of 196 x 16 x 196. NumPy runs elementwise passes on one core, and
OpenBLAS splits each small GEMM over its threads at a cost larger than the gain: measured on the 2-core
machine, 256 heads of attention forward took 29-30 ms with 1 BLAS thread against 36-41 ms with 2.
Running whole blocks of heads (GEMMs and softmax passes together) on two Python threads, each with
single-threaded BLAS, took 16 ms (docs/performance.md §8). NumPy's ufuncs and OpenBLAS release the GIL, so
Python threads run them in parallel.

:func:`run_blocks` does that. The BLAS thread count is set process-wide through ``threadpoolctl``
(restored on exit), so BLAS work started meanwhile by *other* threads of the user's program also runs on
one thread. The pool has as many workers as BLAS had threads when minidiff first needed the pool: the
load-aware default of :mod:`minidiff._threads`, or ``OPENBLAS_NUM_THREADS`` when the user set it; with
one, every block runs in the caller's thread. Each block writes a disjoint slice of preallocated
outputs, so the result does not depend on the order in which the blocks finish: results are identical
to the serial loop (tested).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["on_cpu", "run_blocks", "workers"]

_lock = threading.Lock()
_state = {}  # "controller", "workers", "pool": created on first use


def workers() -> int:
    """Threads :func:`run_blocks` uses: the largest BLAS thread count found at first use (1 if none).

    A process forked after the pool started inherits the pool object but none of its threads: work handed
    to it would wait forever. So a forked child starts with no pool (:func:`_forget_after_fork`) and builds
    its own on first use."""
    with _lock:
        if "workers" not in _state:
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController()
            counts = [int(i.get("num_threads") or 1) for i in ctl.info() if i.get("user_api") == "blas"]
            n = max(counts, default=1)
            _state.update(controller=ctl, workers=n, pool=ThreadPoolExecutor(n) if n > 1 else None)
        return _state["workers"]


def on_cpu(xp) -> bool:
    """True for NumPy: where cache-sized blocks (and the pool) pay off. A GPU takes a whole array at once,
    and a block loop would only add kernel launches."""
    return getattr(xp, "__name__", "") == "numpy"


def _forget_after_fork():
    global _lock
    _lock = threading.Lock()  # it may have been held by another thread of the parent at the fork
    _state.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_after_fork)


def run_blocks(xp, fn, n: int, block: int) -> None:
    """Call ``fn(slice(i, min(i + block, n)))`` for ``i = 0, block, 2 block, ... < n``.

    On NumPy with ``w = workers() > 1`` and more than one block, the blocks are first made smaller, if
    needed, so that their number is a multiple of ``w``; they are then dealt into ``w`` contiguous runs,
    one per thread (this thread takes the first), with BLAS limited to one thread
    meanwhile: one hand-off per thread and call, not per block (a hand-off costs ~0.1 ms, as much as a
    32k-element GELU block). Otherwise (CuPy, one core, one block, or a call made from inside a block)
    the blocks run in order in this thread. ``fn`` must only write its own slice. The first exception
    raised by ``fn`` propagates."""
    nblocks = -(-n // block) if n > 0 else 0
    w = 1 if nblocks < 2 or not on_cpu(xp) or getattr(_inside, "block", False) else min(workers(), nblocks)
    if w > 1 and nblocks % w:  # as many blocks per thread: 64 in blocks of 27 would give one thread 27, one 37
        nblocks += w - nblocks % w
        block = -(-n // nblocks)
    slices = [slice(i, min(i + block, n)) for i in range(0, n, block)]
    if w < 2:
        for j in slices:
            fn(j)
        return
    runs = [slices[len(slices) * r // w: len(slices) * (r + 1) // w] for r in range(w)]
    with _state["controller"].limit(limits=1, user_api="blas"):
        futures = [_state["pool"].submit(_run, fn, run) for run in runs[1:]]
        try:
            _run(fn, runs[0])
        finally:
            for f in futures:  # wait for every run before BLAS threads come back; .result() re-raises
                f.result()


_inside = threading.local()  # set while a run executes: a nested run_blocks runs serially, never waits on the pool


def _run(fn, run):
    outer = getattr(_inside, "block", False)
    _inside.block = True
    try:
        for j in run:
            fn(j)
    finally:
        _inside.block = outer
