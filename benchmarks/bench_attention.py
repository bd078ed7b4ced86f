"""Self-attention forward + backward, minidiff vs PyTorch CPU (``scaled_dot_product_attention``).

Setup (issue #11): float32, B = 64, L = 64, dim = 128, 4 heads, 2 threads; the same four projections
(q, k, v without bias, out with bias) in both. PyTorch runs only if installed: its forward is
``Linear`` x3 -> reshape to heads -> ``F.scaled_dot_product_attention`` -> ``Linear``, and its backward
is autograd's. minidiff is :class:`minidiff.nn.MultiHeadAttention` with its hand-written backward. Both
accumulate parameter gradients and return dx. Prints min and median ms (timed in alternation), the ratio of
minima, and the fraction of this machine's measured float32 GEMM rate.

    python benchmarks/bench_attention.py [--batch 64] [--length 64] [--dim 128] [--heads 4] [--rounds 20]
"""
import argparse
import os

from _timing import gemm_gflops, interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402  (benchmarks run on the host; numpy is fine here)

from minidiff.nn import MultiHeadAttention  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    B, L, D, H = args.batch, args.length, args.dim, args.heads
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, L, D)).astype(np.float32)
    dy = rng.standard_normal((B, L, D)).astype(np.float32)

    attn = MultiHeadAttention(D, H, seed=0)

    def md_step():
        attn(x)
        return attn.backward(dy)

    # GEMM work: 4 projections 2BLD^2 each, QK^T and PV 2BL^2D each, forward; backward twice that
    flops = 3 * (4 * 2 * B * L * D * D + 2 * 2 * B * L * L * D)
    fns = {"minidiff": md_step}

    threads = int(os.environ["OPENBLAS_NUM_THREADS"])  # 2 unless set: _timing.py's default
    torch = torch_or_none(threads)  # PyTorch with as many threads as OpenBLAS, if installed
    if torch is not None:
        F = torch.nn.functional
        lin = {name: torch.nn.Linear(D, D, bias=(name == "out")) for name in ("q", "k", "v", "out")}
        with torch.no_grad():  # the same weights (torch stores W as (out, in))
            for name, mod in (("q", attn.to_q), ("k", attn.to_k), ("v", attn.to_v), ("out", attn.to_out)):
                lin[name].weight.copy_(torch.from_numpy(mod.W.data.T.copy()))
            lin["out"].bias.copy_(torch.from_numpy(attn.to_out.b.data))
        tx = torch.from_numpy(x).requires_grad_(True)
        tdy = torch.from_numpy(dy)

        def heads(t):
            return t.view(B, L, H, D // H).transpose(1, 2)  # (B, H, L, d)

        def torch_forward(inp):
            o = F.scaled_dot_product_attention(heads(lin["q"](inp)), heads(lin["k"](inp)), heads(lin["v"](inp)))
            return lin["out"](o.transpose(1, 2).reshape(B, L, D))

        def torch_step():
            tx.grad = None
            y = torch_forward(tx)
            y.backward(tdy)
            return tx.grad

        with torch.no_grad():  # check that the two compute the same function before timing them
            y_t = torch_forward(torch.from_numpy(x)).numpy()
        y_m = attn(x)
        dx_m, dx_t = md_step(), torch_step().numpy()
        err_y = float(np.abs(y_m - y_t).max() / np.abs(y_t).max())
        err_dx = float(np.abs(dx_m - dx_t).max() / np.abs(dx_t).max())
        print(f"agreement with PyTorch (float32, max abs diff / max abs): y {err_y:.1e}, dx {err_dx:.1e}")
        fns["torch sdpa"] = torch_step

    res = interleaved(fns, args.rounds, 5)
    peak = gemm_gflops()
    print(f"MultiHeadAttention self-attention forward + backward: B {B}, L {L}, dim {D}, {H} heads, "
          f"float32, {threads} thread(s)")
    print(f"measured float32 GEMM peak (1024^3, best of rounds): {peak:.0f} GFLOP/s; "
          f"step GEMM work {flops / 1e9:.2f} GFLOP")
    print_table(res, "torch sdpa", flops, peak)


if __name__ == "__main__":
    main()
