"""GPU (CuPy) vs CPU (NumPy) on minidiff's hot paths, timed in alternation in one run.

Cases: an MLPDenoiser training step (4 x 256 SiLU, batch 1024: forward, backward, Adam), a
UNetDenoiser training step (1 x 16 x 16 images, batch 64, the README's 572k-parameter net), DDIM
sampling with that MLP (4096 points, 20 steps), and the ideal denoiser (N = 60000 points of D = 784,
1000 queries). The same code runs on both backends; every GPU time is taken between
``cupy.cuda.Device().synchronize()`` calls, so the queued kernels are inside the interval. Prints
min and median ms per call, the GPU/CPU ratio of minima (< 1: the GPU is faster), and both
machines' float32 GEMM rates.

    MINIDIFF_BACKEND=cupy python benchmarks/bench_gpu.py [--rounds 5]
    ... --smoke    tiny sizes, one round: checks the script (the test suite runs it under the strict
                   CuPy stand-in, docs/backends.md §5); its times mean nothing
"""
import argparse
import statistics
import sys
import time

from _timing import gemm_gflops  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402  (benchmarks run on the host; numpy is fine here)

from minidiff import backend  # noqa: E402
from minidiff.ideal import IdealDenoiser  # noqa: E402
from minidiff.nn import Adam, MLPDenoiser, UNetDenoiser  # noqa: E402
from minidiff.samplers import sample  # noqa: E402
from minidiff.schedules import Schedule  # noqa: E402

SIZES = {
    "full": dict(mlp_batch=1024, hidden=(256, 256, 256, 256), unet_batch=64, unet_res=16, unet_base=32,
                 unet_mult=(1, 2), unet_groups=8, n_sample=4096, sample_steps=20, ideal_n=60000,
                 ideal_d=784, ideal_q=1000),
    "smoke": dict(mlp_batch=16, hidden=(8, 8), unet_batch=2, unet_res=8, unet_base=8, unet_mult=(1, 2),
                  unet_groups=4, n_sample=8, sample_steps=3, ideal_n=50, ideal_d=4, ideal_q=3),
}


def synchronize(xp):
    """Wait for the device's queue to drain (no-op on NumPy, which computes synchronously)."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def training_step(model, x, sigma, eps):
    """One eps-loss step: forward, d mean((eps_hat - eps)^2), backward, Adam."""
    opt = Adam(model.parameters(), lr=1e-4)

    def step():
        eps_hat = model(x, sigma)
        opt.zero_grad()
        d = eps_hat - eps
        d *= 2.0 / d.size
        model.backward(d)
        opt.step()
    return step


def build_cases(xp, s):
    """{case: zero-argument function} with every array made on ``xp`` once, here."""
    rng = np.random.default_rng(0)
    put = lambda a: backend.asarray(np.asarray(a, dtype=np.float32), xp=xp)  # noqa: E731  host -> xp, once
    cases = {}
    with backend.use_backend(xp.__name__):  # models initialise their parameters on xp
        B = s["mlp_batch"]
        x0, eps = put(rng.standard_normal((B, 2))), put(rng.standard_normal((B, 2)))
        sigma = put(np.exp(rng.uniform(np.log(1e-2), np.log(80.0), B)))
        mlp = MLPDenoiser(2, hidden=s["hidden"], seed=0)
        cases["MLP training step"] = training_step(mlp, x0 + sigma[:, None] * eps, sigma, eps)

        Bu, r = s["unet_batch"], s["unet_res"]
        img, eps_i = put(rng.standard_normal((Bu, 1, r, r))), put(rng.standard_normal((Bu, 1, r, r)))
        sig_i = put(np.exp(rng.uniform(np.log(1e-2), np.log(80.0), Bu)))
        unet = UNetDenoiser(1, base_channels=s["unet_base"], channel_mult=s["unet_mult"], groups=s["unet_groups"],
                            seed=0)
        cases["U-Net training step"] = training_step(unet, img + sig_i[:, None, None, None] * eps_i, sig_i, eps_i)

        sigmas = Schedule.log_linear(0.01, 80.0, 1000).sampling_sigmas(s["sample_steps"])
        x_T = put(80.0 * rng.standard_normal((s["n_sample"], 2)))
        cases["DDIM sampling (MLP)"] = lambda: sample(mlp, sigmas, x_T, method="ddim")

        data = put(rng.standard_normal((s["ideal_n"], s["ideal_d"])))
        q = put(rng.standard_normal((s["ideal_q"], s["ideal_d"])))
        den = IdealDenoiser(data)
        cases["ideal denoiser"] = lambda: den(q, 1.0)
    return cases


def interleaved_xp(fns, rounds):
    """{name: (min ms, median ms)}: each (name, backend) pair timed in alternation, synchronised."""
    for (fn, xp) in fns.values():
        fn()  # warm-up (CuPy compiles its kernels on first use)
        synchronize(xp)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, xp) in fns.items():
            synchronize(xp)
            t = time.perf_counter()
            fn()
            synchronize(xp)
            times[name].append((time.perf_counter() - t) * 1e3)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


def gpu_gemm_gflops(cp, n=4096, rounds=5):
    a = cp.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    a @ a
    synchronize(cp)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        a @ a
        synchronize(cp)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script, not to time")
    args = ap.parse_args(argv)
    if not backend.cupy_available():
        print("bench_gpu needs CuPy and a visible CUDA GPU (pip install -e '.[gpu]')", file=sys.stderr)
        return 2
    s = SIZES["smoke" if args.smoke else "full"]
    with backend.use_backend("cupy") as cp:
        return report(cp, s, 1 if args.smoke else args.rounds)


def report(cp, s, rounds):
    cpu, gpu = build_cases(np, s), build_cases(cp, s)
    fns = {}
    for name in cpu:
        fns[(name, "cpu")] = (cpu[name], np)
        fns[(name, "gpu")] = (gpu[name], cp)
    res = interleaved_xp(fns, rounds)
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    small = s is SIZES["smoke"]
    print(f"GPU: {name}; CPU float32 GEMM {gemm_gflops(n=256 if small else 1024):.0f} GFLOP/s, "
          f"GPU float32 GEMM {gpu_gemm_gflops(cp, n=64 if small else 4096):.0f} GFLOP/s")
    print(f"{'case':<24}{'CPU min ms':>11}{'GPU min ms':>11}{'GPU median':>11}{'GPU/CPU':>9}")
    for case in cpu:
        (c, _), (g, gm) = res[(case, "cpu")], res[(case, "gpu")]
        print(f"{case:<24}{c:>11.2f}{g:>11.2f}{gm:>11.2f}{g / c:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
