"""Conv2d 3x3 forward + backward: minidiff (channels-last, im2col from a strided view) vs PyTorch.

Two shapes: 32 -> 32 channels at 28x28 and 64 -> 64 at 16x16, batch 64, float32, 2 threads. minidiff's
Conv2d takes NHWC; PyTorch is timed in its default NCHW layout and in channels_last. The GEMM fraction
counts the three products of an im2col conv (forward, dW, dx: 3 x 2 N kkC O flops) against this
machine's float32 GEMM rate, measured in the same alternation (a 1024^3 product). Timed in alternation;
minima are least disturbed by other load on the machine.

    python benchmarks/bench_conv.py [--rounds 10]
"""
import argparse
import os

from _timing import interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402

from minidiff.nn import Conv2d  # noqa: E402

SHAPES = [(64, 28, 28, 32, 32), (64, 16, 16, 64, 64)]  # B, H, W, C, O


def bench(B, H, W, C, O, rounds, torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, H, W, C)).astype(np.float32)
    dy = rng.standard_normal((B, H, W, O)).astype(np.float32)
    conv = Conv2d(C, O, 3, seed=0)

    def md():
        conv(x)
        conv.backward(dy)

    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    fns = {"minidiff NHWC": md, "gemm1024": lambda: a @ a}
    if torch is not None:
        for name, fmt in (("torch NCHW", torch.contiguous_format), ("torch channels_last", torch.channels_last)):
            m = torch.nn.Conv2d(C, O, 3, padding=1).to(memory_format=fmt)
            tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt).requires_grad_()
            tdy = torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)

            def step(m=m, tx=tx, tdy=tdy):
                m(tx).backward(tdy)
            fns[name] = step
    res = interleaved(fns, rounds, 3)
    peak = 2 * 1024 ** 3 / (res.pop("gemm1024")[0] * 1e-3) / 1e9
    flops = 3 * 2 * B * H * W * 9 * C * O
    print(f"\nConv2d 3x3 {C}->{O}, {H}x{W}, batch {B}, forward + backward, float32, "
          f"{os.environ['OPENBLAS_NUM_THREADS']} threads")
    print(f"float32 GEMM rate (1024^3, same run): {peak:.0f} GFLOP/s; conv GEMM work {flops / 1e9:.2f} GFLOP")
    print_table(res, "torch NCHW", flops, peak, ref2="torch channels_last")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    torch = torch_or_none()  # PyTorch, 2 threads, if installed
    for shape in SHAPES:
        bench(*shape, args.rounds, torch)
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
