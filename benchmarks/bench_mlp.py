"""One training step (forward, backward, Adam) of MLPDenoiser, minidiff vs PyTorch CPU.

Setup (docs/performance.md §5): widths 4x256, SiLU, batch 1024, 2-D points, float32, 2 threads. PyTorch runs only
if installed; the network is the same (input [x / sqrt(1 + sigma^2), 16 sigma features] -> 4x256 -> 2).
Prints min and median ms (timed in alternation), the ratio of minima, and the fraction of this machine's measured float32 GEMM rate.

    python benchmarks/bench_mlp.py [--batch 1024] [--rounds 7]
"""
import argparse

from _timing import gemm_gflops, interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402  (benchmarks run on the host; numpy is fine here)

from minidiff.nn import Adam, MLPDenoiser  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    B, hidden, dim = args.batch, (256, 256, 256, 256), 2
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((B, dim)).astype(np.float32)
    eps = rng.standard_normal((B, dim)).astype(np.float32)
    sigma = np.exp(rng.uniform(np.log(1e-2), np.log(80.0), B)).astype(np.float32)
    x = x0 + sigma[:, None] * eps

    model = MLPDenoiser(dim, hidden=hidden, activation="silu", seed=0)
    opt = Adam(model.parameters(), lr=1e-4)

    def md_step():
        eps_hat = model(x, sigma)
        opt.zero_grad()
        d = eps_hat - eps
        d *= 2.0 / d.size  # d mean((eps_hat - eps)^2) / d eps_hat
        model.backward(d)
        opt.step()

    widths = [dim + 16] + list(hidden) + [dim]
    flops = sum(6 * B * a * b for a, b in zip(widths[:-1], widths[1:]))  # fwd 2BAB + bwd 4BAB
    fns = {"minidiff": md_step}

    torch = torch_or_none()  # PyTorch, 2 threads, if installed
    if torch is not None:
        layers = []
        for a, b in zip(widths[:-2], widths[1:-1]):
            layers += [torch.nn.Linear(a, b), torch.nn.SiLU()]
        net = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-2], widths[-1]))
        freqs = torch.tensor(np.geomspace(0.25, 8.0, 8), dtype=torch.float32)
        tx, te, ts = torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(sigma)

        def make_torch_step(fused):
            topt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=fused)

            def torch_step():
                wu = torch.log(ts)[:, None] * freqs
                h = torch.cat([tx / torch.sqrt(1 + ts ** 2)[:, None], torch.sin(wu), torch.cos(wu)], 1)
                loss = ((net(h) - te) ** 2).mean()
                topt.zero_grad()
                loss.backward()
                topt.step()
            return torch_step

        fns["torch"] = make_torch_step(False)
        fns["torch fused Adam"] = make_torch_step(True)

    res = interleaved(fns, args.rounds, 5)
    peak = gemm_gflops()
    print(f"MLPDenoiser training step: widths {hidden}, SiLU, batch {B}, float32, 2 threads")
    print(f"measured float32 GEMM peak (1024^3, best of rounds): {peak:.0f} GFLOP/s; "
          f"step GEMM work {flops / 1e9:.2f} GFLOP")
    print_table(res, "torch", flops, peak)

if __name__ == "__main__":
    main()
