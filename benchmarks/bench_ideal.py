"""Benchmark the ideal denoiser (minidiff.ideal) against this machine's float32 GEMM peak
and, if installed, a PyTorch matmul + softmax version.

    python benchmarks/bench_ideal.py            # N = 60000 cases, 1000 queries, float32
    python benchmarks/bench_ideal.py --quick    # smaller N, for a smoke run
    MINIDIFF_BACKEND=cupy python benchmarks/bench_ideal.py   # on the GPU, with the speed-up over the CPU

GFLOP/s counts 4 N D B flops (2 N D B for the distance GEMM, 2 N D B for sum_i w_i x_i).
Machines are noisy: medians of several rounds, compare as ratios inside one run.
"""
import argparse
import statistics
import time

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


def gemm_peak(xp=np, n=2048, rounds=7):
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((n, n), dtype=np.float32), xp=xp)  # explicit host -> device
    b = backend.asarray(rng.standard_normal((n, n), dtype=np.float32), xp=xp)
    a @ b  # warm up
    return 2 * n**3 / median_time(lambda: a @ b, rounds, xp) / 1e9


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
    print(f"{'N':>6} {'D':>4} {'sigma':>6} {'minidiff ms':>12} {'GF/s':>6} {'of peak':>8} {other:>9} {'ratio':>6}")
    for n, d, sigma in cases:
        K = rng.standard_normal((n, d), dtype=np.float32)
        x = (K[:B] + sigma * rng.standard_normal((B, d), dtype=np.float32)).astype(np.float32)
        Kd, xd = backend.asarray(K, xp=xp), backend.asarray(x, xp=xp)  # explicit host -> device, once
        den = IdealDenoiser(Kd)
        den(xd, sigma)  # warm up
        t = median_time(lambda: den(xd, sigma), args.rounds, xp)
        gf = 4 * n * d * B / t / 1e9
        line = f"{n:>6} {d:>4} {sigma:>6} {t * 1e3:>12.1f} {gf:>6.0f} {gf / peak:>8.0%}"
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
