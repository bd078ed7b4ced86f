"""U-Net training step (forward, backward, Adam): minidiff's UNetDenoiser vs the same network in PyTorch.

Default: 1 x 16 x 16 and 1 x 28 x 28 images, batch 64, base 32, channel_mult (1, 2, 2), float32, 2 threads. The PyTorch
mirror has the same layers, widths and order (sigma features -> 2-layer MLP -> per-block projections;
ResBlocks with GroupNorm + SiLU, 1x1 skips, average-pool down, nearest up, concatenation skips); it
runs in NCHW and channels_last. Timed in alternation; minima are least disturbed by other load.

Then a per-layer profile of one minidiff step (GEMMs, copies, elementwise layers, Python overhead).

    python benchmarks/bench_unet.py [--size 16 28] [--batch 64] [--rounds 6] [--no-profile]
"""
import argparse
import os
import time
from collections import defaultdict

from _timing import interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402

from minidiff.nn import Adam, UNetDenoiser, layers  # noqa: E402


def torch_resblock(torch, groups, emb_dim):
    """The PyTorch mirror of minidiff's ResBlock, as a class ``Block(cin, cout)``; ``forward(x, e)``."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.gn1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.proj = nn.Linear(emb_dim, cout)
            self.gn2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, e):
            h = self.conv1(nn.functional.silu(self.gn1(x))) + self.proj(e)[:, :, None, None]
            return self.skip(x) + self.conv2(nn.functional.silu(self.gn2(h)))

    return Block


def torch_unet(torch, channels, base, mult, groups, emb_dim, freqs):
    nn = torch.nn
    Block = torch_resblock(torch, groups, emb_dim)
    widths = [base * m for m in mult]
    L = len(widths)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb1, self.emb2 = nn.Linear(2 * len(freqs), emb_dim), nn.Linear(emb_dim, emb_dim)
            self.conv_in = nn.Conv2d(channels, base, 3, padding=1)
            self.down = nn.ModuleList([Block(([base] + widths)[l], widths[l]) for l in range(L)])
            self.mid = Block(widths[-1], widths[-1])
            self.up = nn.ModuleList([Block((widths + widths[-1:])[l + 1] + widths[l], widths[l]) for l in range(L)])
            self.gn_out, self.conv_out = nn.GroupNorm(groups, widths[0]), nn.Conv2d(widths[0], channels, 3, padding=1)
            self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32))

        def forward(self, x, sigma):
            wu = torch.log(sigma)[:, None] * self.freqs
            e = self.emb2(nn.functional.silu(self.emb1(torch.cat([torch.sin(wu), torch.cos(wu)], 1))))
            e = nn.functional.silu(e)
            h = self.conv_in(x / torch.sqrt(1 + sigma ** 2)[:, None, None, None])
            skips = []
            for l in range(L):
                h = self.down[l](h, e)
                skips.append(h)
                if l < L - 1:
                    h = nn.functional.avg_pool2d(h, 2)
            h = self.mid(h, e)
            for l in reversed(range(L)):
                h = self.up[l](torch.cat([h, skips[l]], 1), e)
                if l > 0:
                    h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            return self.conv_out(nn.functional.silu(self.gn_out(h)))

    return Net()


def make_step(B, C, S, seed=0):
    """A minidiff U-Net training step (forward, MSE backward, Adam) on fixed random data."""
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((B, C, S, S)).astype(np.float32)
    eps = rng.standard_normal((B, C, S, S)).astype(np.float32)
    sigma = np.exp(rng.uniform(np.log(1e-2), np.log(80.0), B)).astype(np.float32)
    x = x0 + sigma[:, None, None, None] * eps
    model = UNetDenoiser(C, base_channels=32, channel_mult=(1, 2, 2), seed=0)
    opt = Adam(model.parameters(), lr=1e-4)

    def step():
        eps_hat = model(x, sigma)
        opt.zero_grad()
        d = eps_hat - eps
        d *= 2.0 / d.size
        model.backward(d)
        opt.step()
    return model, opt, (x, eps, sigma), step


def profile(B, C, S, steps=3):
    """Where one step's time goes, by layer kind, with each Conv2d split into its three GEMMs (re-timed
    alone on arrays of the same shapes) and the rest (im2col copy, padding, bias); Python/dispatch
    overhead estimated as the same step at batch 1 on 4x4 images (arrays too small to cost anything)."""
    model, opt, _, step = make_step(B, C, S)
    acc, stack, convs = defaultdict(float), [0.0], {}  # seconds per layer kind, timing stack, conv shapes

    def wrap(cls, meth):
        f = getattr(cls, meth)

        def timed(self, *a, **k):
            stack.append(0.0)
            t = time.perf_counter()
            r = f(self, *a, **k)
            dt = time.perf_counter() - t
            acc[cls.__name__ + "." + meth] += dt - stack.pop()  # exclusive of timed sub-layers
            stack[-1] += dt
            if cls is layers.Conv2d and meth == "forward":
                convs[id(self)] = (self._cols.shape[0], self.kernel_size, self.in_channels, self.out_channels)
            return r
        setattr(cls, meth, timed)
        return f

    classes = [layers.Conv2d, layers.GroupNorm, layers.SiLU, layers.Linear, layers.Upsample,
               layers.Downsample, layers.SigmaEmbedding, layers.ResBlock]
    saved = {(c, m): wrap(c, m) for c in classes for m in ("forward", "backward")}
    adam_step = opt.step

    def timed_adam():
        t = time.perf_counter()
        adam_step()
        acc["Adam.step"] += time.perf_counter() - t
    opt.step = timed_adam
    try:
        step()
        acc.clear()
        t0 = time.perf_counter()
        for _ in range(steps):
            stack[:] = [0.0]
            step()
        total = (time.perf_counter() - t0) / steps * 1e3
    finally:
        for (c, m), f in saved.items():
            setattr(c, m, f)
    rng = np.random.default_rng(0)
    gemm = 0.0
    for N, k, C_in, O in convs.values():  # the three GEMMs of each conv (stride 1), alone
        cols = rng.standard_normal((N, k * k * C_in)).astype(np.float32)
        W2 = rng.standard_normal((k * k * C_in, O)).astype(np.float32)
        dy = rng.standard_normal((N, O)).astype(np.float32)
        dcols = rng.standard_normal((N, k * k * O)).astype(np.float32)  # dy's patches (3x3), or dy (1x1)
        W_flip = rng.standard_normal((k * k * O, C_in)).astype(np.float32)
        ms = interleaved({"fwd": lambda: cols @ W2, "dW": lambda: cols.T @ dy, "dx": lambda: dcols @ W_flip}, 3, 1)
        gemm += sum(v[0] for v in ms.values())
    _, _, _, tiny = make_step(1, C, 4)
    t_tiny = min(interleaved({"tiny": tiny}, 5, 2)["tiny"])
    ms = {k: v / steps * 1e3 for k, v in acc.items()}
    conv = ms.pop("Conv2d.forward") + ms.pop("Conv2d.backward")
    rows = [("Conv2d: 3 GEMMs each (re-timed alone)", gemm), ("Conv2d: im2col copies, padding, bias", conv - gemm)]
    for kind in ("GroupNorm", "SiLU", "Linear", "Upsample", "Downsample", "ResBlock", "SigmaEmbedding"):
        rows.append((f"{kind} (fwd + bwd)" + (": adds, embedding sum" if kind == "ResBlock" else ""),
                     ms.pop(kind + ".forward", 0.0) + ms.pop(kind + ".backward", 0.0)))
    rows.append(("Adam step", ms.pop("Adam.step")))
    rows.append(("model glue: concat, slices, NCHW<->NHWC", total - sum(v for _, v in rows)))
    print(f"\nprofile of one step, {C}x{S}x{S}, batch {B} (exclusive times, mean of {steps} steps): {total:.1f} ms")
    for name, v in rows:
        print(f"  {name:<44}{v:>9.1f} ms {v / total:>6.1%}")
    print(f"  {'Python/dispatch overhead (same step, B=1, 4x4)':<44}{t_tiny:>9.1f} ms {t_tiny / total:>6.1%}"
          "  (spread over the rows above)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs="+", default=[16, 28])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    torch = torch_or_none()  # PyTorch, 2 threads, if installed
    for S in args.size:
        compare(args.batch, 1, S, args.rounds, torch)
        if not args.no_profile:
            profile(args.batch, 1, S)
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


def compare(B, C, S, rounds, torch):
    model, _, (x, eps, sigma), md_step = make_step(B, C, S)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    fns = {"minidiff": md_step, "gemm1024": lambda: a @ a}
    if torch is not None:
        freqs = model.sigma_emb._freqs
        for name, fmt in (("torch NCHW", torch.contiguous_format), ("torch channels_last", torch.channels_last)):
            net = torch_unet(torch, C, 32, (1, 2, 2), 8, 128, freqs).to(memory_format=fmt)
            topt = torch.optim.Adam(net.parameters(), lr=1e-4)
            tx = torch.from_numpy(x).contiguous(memory_format=fmt)
            te, ts = torch.from_numpy(eps).contiguous(memory_format=fmt), torch.from_numpy(sigma)

            def step(net=net, topt=topt, tx=tx, te=te, ts=ts):
                loss = ((net(tx, ts) - te) ** 2).mean()
                topt.zero_grad()
                loss.backward()
                topt.step()
            fns[name] = step
            n_torch = sum(p.numel() for p in net.parameters())
            assert n_torch == model.num_parameters(), (n_torch, model.num_parameters())
    res = interleaved(fns, rounds, 2)
    peak = 2 * 1024 ** 3 / (res.pop("gemm1024")[0] * 1e-3) / 1e9
    print(f"\nU-Net training step: {C}x{S}x{S}, batch {B}, base 32, mult (1, 2, 2), "
          f"{model.num_parameters()} params, float32, {os.environ['OPENBLAS_NUM_THREADS']} threads; "
          f"float32 GEMM rate (1024^3, same run) {peak:.0f} GFLOP/s")
    print_table(res, "torch NCHW", ref2="torch channels_last")


if __name__ == "__main__":
    main()
