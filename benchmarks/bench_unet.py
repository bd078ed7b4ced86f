"""U-Net training step (forward, backward, Adam): minidiff's UNetDenoiser vs the same network in PyTorch.

Default: 1 x 16 x 16 images, batch 64, base 32, channel_mult (1, 2, 2), float32, 2 threads. The PyTorch
mirror has the same layers, widths and order (sigma features -> 2-layer MLP -> per-block projections;
ResBlocks with GroupNorm + SiLU, 1x1 skips, average-pool down, nearest up, concatenation skips); it
runs in NCHW and channels_last. Timed in alternation; minima are least disturbed by other load.

    python benchmarks/bench_unet.py [--size 16] [--batch 64] [--rounds 6]
"""
import argparse

from _timing import interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402

from minidiff.nn import Adam, UNetDenoiser  # noqa: E402


def torch_unet(torch, channels, base, mult, groups, emb_dim, freqs):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    B, C, S = args.batch, 1, args.size
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((B, C, S, S)).astype(np.float32)
    eps = rng.standard_normal((B, C, S, S)).astype(np.float32)
    sigma = np.exp(rng.uniform(np.log(1e-2), np.log(80.0), B)).astype(np.float32)
    x = x0 + sigma[:, None, None, None] * eps

    model = UNetDenoiser(C, base_channels=32, channel_mult=(1, 2, 2), seed=0)
    opt = Adam(model.parameters(), lr=1e-4)

    def md_step():
        eps_hat = model(x, sigma)
        opt.zero_grad()
        d = eps_hat - eps
        d *= 2.0 / d.size
        model.backward(d)
        opt.step()

    fns = {"minidiff": md_step}
    torch = torch_or_none()  # PyTorch, 2 threads, if installed
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
    res = interleaved(fns, args.rounds, 2)
    print(f"U-Net training step: {C}x{S}x{S}, batch {B}, base 32, mult (1, 2, 2), "
          f"{model.num_parameters()} params, float32, 2 threads")
    print_table(res, "torch NCHW")


if __name__ == "__main__":
    main()
