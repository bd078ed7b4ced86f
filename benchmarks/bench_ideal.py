"""Benchmark the ideal denoiser (minidiff.ideal) against this machine's float32 GEMM peak
and, if installed, a PyTorch matmul + softmax version.

    python benchmarks/bench_ideal.py            # N = 60000 cases, 1000 queries, float32
    python benchmarks/bench_ideal.py --quick    # smaller N, for a smoke run

GFLOP/s counts 4 N D B flops (2 N D B for the distance GEMM, 2 N D B for sum_i w_i x_i).
Machines are noisy: medians of several rounds, compare as ratios inside one run.
"""
import argparse
import statistics
import time

import numpy as np

from minidiff.ideal import IdealDenoiser


def median_time(fn, rounds):
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def gemm_peak(n=2048, rounds=7):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up
    return 2 * n**3 / median_time(lambda: a @ b, rounds) / 1e9


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
    peak = gemm_peak()
    print(f"float32 GEMM 2048^3: {peak:.0f} GFLOP/s (this machine, median)")
    N = 6000 if args.quick else 60000
    cases = [(N, 784, 3.0), (N, 64, 1.0), (N, 2, 0.05), (N // 6, 784, 3.0)]
    rng = np.random.default_rng(1)
    B = args.batch
    print(f"{'N':>6} {'D':>4} {'sigma':>6} {'minidiff ms':>12} {'GF/s':>6} {'of peak':>8} {'torch ms':>9} {'ratio':>6}")
    for n, d, sigma in cases:
        K = rng.standard_normal((n, d), dtype=np.float32)
        x = (K[:B] + sigma * rng.standard_normal((B, d), dtype=np.float32)).astype(np.float32)
        den = IdealDenoiser(K)
        den(x, sigma)  # warm up
        t = median_time(lambda: den(x, sigma), args.rounds)
        gf = 4 * n * d * B / t / 1e9
        line = f"{n:>6} {d:>4} {sigma:>6} {t * 1e3:>12.0f} {gf:>6.0f} {gf / peak:>8.0%}"
        if have_torch:
            run = torch_ideal(K, x, sigma)
            run()
            tt = median_time(run, args.rounds)
            err = np.abs(run().numpy() - den(x, sigma)).max()
            line += f" {tt * 1e3:>9.0f} {t / tt:>6.2f}  (max |diff| {err:.1e})"
        print(line)


if __name__ == "__main__":
    main()
