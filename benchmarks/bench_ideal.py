"""Benchmark the ideal denoiser (minidiff.ideal) against this machine's float32 GEMM peak
and, if installed, a PyTorch matmul + softmax version.

    python benchmarks/bench_ideal.py            # N = 60000 cases, 1000 queries, float32
    python benchmarks/bench_ideal.py --quick    # smaller N, for a smoke run
    MINIDIFF_BACKEND=cupy python benchmarks/bench_ideal.py   # on the GPU, with the speed-up over the CPU

GFLOP/s counts 4 N D B flops (2 N D B for the distance GEMM, 2 N D B for sum_i w_i x_i).
"GEMMs/all" is the time of the denoiser's two GEMMs alone (same chunks, no softmax) over the denoiser's
time, timed in alternation (minima): 1.0 would mean the softmax costs nothing.
Machines are noisy: compare as ratios inside one run.
"""
import argparse
import os
import statistics
import time

import _timing  # noqa: F401  (benchmarks/_timing.py) first: 2 BLAS threads and OpenBLAS's short spin, before NumPy
import numpy as np

from minidiff import backend
from minidiff.ideal import IdealDenoiser


def _sync(xp):
    """Wait for queued GPU work (CuPy launches asynchronously); nothing to wait for on NumPy."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def median_time(fn, rounds, xp=np):
    ts = []
    for _ in range(rounds):
        _sync(xp)
        t = time.perf_counter()
        fn()
        _sync(xp)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def alternated(fns, rounds, xp=np):
    """Minimum time of each function, the functions timed in alternation (load hits them alike), each
    after a pause of ``_timing.PAUSE_S`` so that the previous library's spinning threads are asleep
    (docs/performance.md §8)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            time.sleep(_timing.PAUSE_S)
            best[i] = min(best[i], median_time(fn, 1, xp))
    return best


def gemm_peak(xp=np, n=2048, rounds=7):
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((n, n), dtype=np.float32), xp=xp)  # explicit host -> device
    b = backend.asarray(rng.standard_normal((n, n), dtype=np.float32), xp=xp)
    a @ b  # warm up
    return 2 * n**3 / median_time(lambda: a @ b, rounds, xp) / 1e9


def gemms_only(den, x):
    """The denoiser's two GEMMs alone, chunk by chunk as it streams the set: logits = x K_c^T and
    acc += w K_c (same shapes, no softmax); the floor on the denoiser's time."""
    xp = backend.get_xp(x)
    q = xp.ascontiguousarray(x.reshape(x.shape[0], -1))
    data, C = den.data, den.chunk_size

    def run():
        acc = xp.zeros(q.shape, dtype=q.dtype)
        for start in range(0, den.n, C):
            Kc = data[start:start + C]
            w = q @ Kc.T  # (B, D) @ (D, C)
            acc += w @ Kc  # (B, C) @ (C, D)
        return acc
    return run


def torch_ideal(K, x, sigma):
    import torch

    Kt, xt = torch.from_numpy(K), torch.from_numpy(x)
    half_sq = 0.5 * (Kt * Kt).sum(1)

    def run():
        with torch.no_grad():
            logits = (xt @ Kt.T - half_sq) / sigma**2  # (B, N)
            w = torch.softmax(logits, dim=1)
            return (xt - w @ Kt) / sigma
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--cases", type=int, default=4, help="run the first CASES cases (1: N, d = 60000, 784 only)")
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(2)
        have_torch = True
    except ImportError:
        have_torch = False
    xp = backend.get_xp()  # MINIDIFF_BACKEND decides: numpy (CPU) or cupy (GPU)
    on_gpu = xp is not np
    peak = gemm_peak(xp)
    print(f"backend {backend.get_backend()}; float32 GEMM 2048^3: {peak:.0f} GFLOP/s (this device, median)")
    N = 6000 if args.quick else 60000
    cases = [(N, 784, 3.0), (N, 64, 1.0), (N, 2, 0.05), (N // 6, 784, 3.0)]
    rng = np.random.default_rng(1)
    B = args.batch
    other = "cpu ms" if on_gpu else "torch ms"
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"{'N':>6} {'D':>4} {'sigma':>6} {'minidiff ms':>12} {'GF/s':>6} {'of peak':>8} {'GEMMs ms':>9} "
          f"{'GEMMs/all':>9} {other:>9} {'ratio':>6}")
    for n, d, sigma in cases[:args.cases]:
        K = rng.standard_normal((n, d), dtype=np.float32)
        x = (K[:B] + sigma * rng.standard_normal((B, d), dtype=np.float32)).astype(np.float32)
        Kd, xd = backend.asarray(K, xp=xp), backend.asarray(x, xp=xp)  # explicit host -> device, once
        den = IdealDenoiser(Kd)
        den(xd, sigma)  # warm up
        g = gemms_only(den, xd)
        t, tg = alternated([lambda: den(xd, sigma), g], args.rounds, xp)  # the denoiser, its GEMMs alone
        gf = 4 * n * d * B / t / 1e9
        line = (f"{n:>6} {d:>4} {sigma:>6} {t * 1e3:>12.1f} {gf:>6.0f} {gf / peak:>8.0%} {tg * 1e3:>9.1f} "
                f"{tg / t:>9.2f}")
        if on_gpu:  # the same computation on the host: the GPU speed-up
            den_cpu = IdealDenoiser(K)
            tc = median_time(lambda: den_cpu(x, sigma), 1)
            err = np.abs(backend.to_numpy(den(xd, sigma)) - den_cpu(x, sigma)).max()
            line += f" {tc * 1e3:>9.0f} {t / tc:>6.3f}  (GPU speed-up {tc / t:.0f}x, max |diff| {err:.1e})"
        elif have_torch:
            run = torch_ideal(K, x, sigma)
            run()
            tt = median_time(run, args.rounds)
            err = np.abs(run().numpy() - den(x, sigma)).max()
            line += f" {tt * 1e3:>9.0f} {t / tt:>6.2f}  (max |diff| {err:.1e})"
        print(line)

if __name__ == "__main__":
    main()
