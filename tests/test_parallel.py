"""The CPU thread pool of minidiff._parallel, and GELU's cache-sized blocks: every block once, results
identical to the serial loop, errors propagate, nested calls run in their caller's thread, BLAS gets its
threads back."""
import contextlib
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minidiff import _parallel
from minidiff.nn import MultiHeadAttention
from minidiff.nn.layers import GELU

pytestmark = pytest.mark.usefixtures("numpy_backend")  # the pool serves NumPy only; CuPy runs serially


@contextlib.contextmanager
def workers(n):
    """Force the pool's size (the machine's BLAS thread count decides it otherwise)."""
    _parallel.workers()  # initialise the controller
    saved = dict(_parallel._state)
    _parallel._state.update(workers=n, pool=ThreadPoolExecutor(n) if n > 1 else None)
    try:
        yield
    finally:
        _parallel._state.update(saved)


@pytest.fixture
def use_workers():
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(workers(n))


def blas_threads():
    return [i["num_threads"] for i in _parallel._state["controller"].info() if i["user_api"] == "blas"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), block=st.integers(1, 40), w=st.integers(1, 4))
def test_every_index_is_visited_once(n, block, w):
    seen, lock = [], threading.Lock()

    def fn(j):
        assert j.stop - j.start <= block and 0 <= j.start < j.stop <= n
        with lock:
            seen.extend(range(j.start, j.stop))

    with workers(w):
        _parallel.run_blocks(np, fn, n, block)
    assert sorted(seen) == list(range(n))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), block=st.integers(1, 300), w=st.integers(2, 4))
@example(n=64, block=27, w=2)
def test_runs_get_equal_shares(n, block, w):
    """The blocks are evened out before they are dealt into one run per thread: no run holds more than
    one block's worth of indices above another's, and no block is longer than asked (64 in blocks of 27
    would otherwise split 27 / 37; now 32 / 32)."""
    runs, lock, run = [], threading.Lock(), _parallel._run

    def recording_run(fn, slices):
        with lock:
            runs.append([(j.start, j.stop) for j in slices])
        run(fn, slices)

    _parallel._run = recording_run
    try:
        with workers(w):
            _parallel.run_blocks(np, lambda j: None, n, block)
    finally:
        _parallel._run = run
    if -(-n // block) < 2:
        assert runs == []  # one block: run in the caller, no hand-off
        return
    sizes = [sum(b - a for a, b in r) for r in runs]
    longest = max(b - a for r in runs for a, b in r)
    assert sum(sizes) == n and longest <= block
    assert max(sizes) - min(sizes) <= longest, (sizes, longest)
    if (n, block, w) == (64, 27, 2):
        assert sorted(sizes) == [32, 32]


def test_blocks_run_on_several_threads_with_one_blas_thread_and_blas_gets_its_threads_back(use_workers):
    use_workers(2)
    before = blas_threads()
    names, inside = set(), []
    barrier = threading.Barrier(2, timeout=10)  # both runs must be in flight at once

    def fn(j):
        names.add(threading.current_thread().name)
        inside.append(blas_threads())
        if j.start in (0, 5):
            barrier.wait()

    _parallel.run_blocks(np, fn, 10, 1)
    assert len(names) == 2
    assert all(all(t == 1 for t in ts) for ts in inside)
    assert blas_threads() == before


@pytest.mark.parametrize("where", [0, 9])  # the caller's run, a pool thread's run
def test_an_error_in_a_block_propagates_and_blas_is_restored(use_workers, where):
    use_workers(2)
    before = blas_threads()

    def fn(j):
        if j.start == where:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        _parallel.run_blocks(np, fn, 10, 1)
    assert blas_threads() == before


def test_a_nested_call_runs_in_its_callers_thread(use_workers):
    """A block that calls run_blocks again (a layer inside a layer) must not hand work to the pool:
    the cores are already busy with the outer blocks."""
    use_workers(2)
    out = np.zeros((8, 6))
    where = {}

    def inner_of(r):
        def fn(j):
            out[r, j] += 1
            where.setdefault(r, set()).add(threading.current_thread().name)

        return fn

    def outer(j):
        for r in range(j.start, j.stop):
            where.setdefault(r, set()).add(threading.current_thread().name)
            _parallel.run_blocks(np, inner_of(r), 6, 2)

    _parallel.run_blocks(np, outer, 8, 1)
    np.testing.assert_array_equal(out, 1.0)
    assert all(len(names) == 1 for names in where.values()), where  # each row stayed on one thread
    assert len(set.union(*where.values())) == 2  # and the outer blocks did use both threads


@pytest.mark.parametrize("masked", [False, True])
def test_attention_in_parallel_equals_serial_bit_for_bit(use_workers, masked):
    """Each block does the same float32 operations whichever thread runs it, and single-threaded
    OpenBLAS computes a GEMM with the same summation order as multi-threaded (which splits rows and
    columns, not the inner dimension): results must be identical, not just close."""
    rng = np.random.default_rng(0)
    m = MultiHeadAttention(32, 4, seed=0)
    x = rng.standard_normal((16, 100, 32)).astype(np.float32)  # 16 samples of 4 heads of 100 x 100: 6 blocks
    g = rng.standard_normal(x.shape).astype(np.float32)
    mask = rng.random((16, 100)) < 0.7 if masked else None
    if masked:
        mask[:, 0] = True
    runs = []
    for w in (1, 2, 3):
        use_workers(w)
        m.zero_grad()
        y = m(x, mask=mask)
        dx = m.backward(g)
        runs.append([y, m.attention.copy(), dx] + [p.grad.copy() for _, p in m.named_parameters()])
    assert MultiHeadAttention._chunk(np, 4 * 100 * 100) < 8  # more than one block, so threads were used
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_gelu_in_blocks_equals_one_pass_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(1)
    x = (3 * rng.standard_normal((5, 300, 1000))).astype(np.float32)  # 1.5M elements: 12 blocks
    g = rng.standard_normal(x.shape).astype(np.float32)
    x_t = x.transpose(0, 2, 1)  # a non-contiguous input is handled too
    runs = []
    for block in (GELU._block, 1 << 40):
        monkeypatch.setattr(GELU, "_block", block)
        act = GELU()
        y, dx = act(x), act.backward(g)
        act_t = GELU()
        y_t, dx_t = act_t(x_t), act_t.backward(g.transpose(0, 2, 1))
        runs.append((y, dx, y_t, dx_t))
    assert x.size > 2 * (1 << 17)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    y, dx, y_t, dx_t = runs[0]
    np.testing.assert_array_equal(y_t, y.transpose(0, 2, 1))
    np.testing.assert_array_equal(dx_t, dx.transpose(0, 2, 1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_pool_instead_of_waiting_on_the_parents():
    """A child forked after the parent used the pool inherits a pool object with no threads behind it."""
    with workers(2):
        _parallel.run_blocks(np, lambda j: None, 10, 1)  # the parent's pool exists and has threads
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_child_runs_blocks)
        child.start()
        child.join(timeout=60)
        alive = child.is_alive()
        if alive:
            child.kill()
        assert not alive, "the forked child waited on the parent's pool"
        assert child.exitcode == 0


def _child_runs_blocks():
    out = np.zeros(10)

    def fn(j):
        out[j] += 1

    if _parallel._state:  # the parent's pool (its threads did not come along) must have been forgotten
        os._exit(2)
    _parallel.workers()  # the child's own pool, forced to 2 threads as on an idle 2-core machine
    _parallel._state.update(workers=2, pool=ThreadPoolExecutor(2))
    _parallel.run_blocks(np, fn, 10, 1)
    os._exit(0 if (out == 1).all() else 1)
