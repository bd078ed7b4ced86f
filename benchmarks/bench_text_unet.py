"""Text-conditioned U-Net training step: minidiff's TextConditionedDenoiser vs the same network in PyTorch.

The network is the shipped ``text-glyphs`` architecture (its stored config): a 2-block text encoder of
width 64 over the glyph vocabulary, and a U-Net (base 32, channel_mult (1, 2, 2)) on 1 x 24 x 24 images
with pre-LN transformer blocks (self-attention, cross-attention to the text, GELU MLP) after the
ResBlocks at the 12x12 and 6x6 maps, down, middle and up, plus the pooled text embedding added to the
noise embedding. One step = forward, MSE backward (into the text encoder), Adam, batch 32 of captions.

The PyTorch mirror (``torch_text_unet``) has the same layers, widths and order, built on the U-Net
mirror of ``bench_unet.py`` with ``F.scaled_dot_product_attention`` (boolean key-padding mask); the
parameter counts are checked equal. Weights are independent (a timing comparison). Timed in
alternation, with the float32 GEMM rate measured in the same run.

    python benchmarks/bench_text_unet.py [--batch 32] [--rounds 6]
"""
import argparse
import os

from _timing import gemm_gflops, interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)
from bench_unet import torch_resblock  # noqa: E402

import numpy as np  # noqa: E402

from minidiff.nn import Adam, load  # noqa: E402


def torch_text_unet(torch, cfg, vocab, max_length, freqs):
    nn, F = torch.nn, torch.nn.functional
    G, E, D, H = 8, 4 * cfg["base_channels"], cfg["text_dim"], cfg["num_heads"]

    class Attention(nn.Module):
        def __init__(self, dim, kv_dim):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(d, dim, bias=False) for d in (dim, kv_dim, kv_dim))
            self.out = nn.Linear(dim, dim)

        def forward(self, x, c, mask):
            B, L, dim = x.shape
            heads = [t.view(B, t.shape[1], H, dim // H).transpose(1, 2) for t in (self.q(x), self.k(c), self.v(c))]
            o = F.scaled_dot_product_attention(*heads, attn_mask=None if mask is None else mask[:, None, None, :])
            return self.out(o.transpose(1, 2).reshape(B, L, dim))

    class Block(nn.Module):  # pre-LN: self-attention, optional cross-attention, GELU MLP
        def __init__(self, dim, ctx_dim):
            super().__init__()
            self.n1, self.a1 = nn.LayerNorm(dim), Attention(dim, dim)
            self.cross = ctx_dim is not None
            if self.cross:
                self.n2, self.a2 = nn.LayerNorm(dim), Attention(dim, ctx_dim)
            self.n3, self.f1, self.f2 = nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

        def forward(self, x, mask=None, c=None, c_mask=None):
            y = self.n1(x)
            x = x + self.a1(y, y, mask)
            if self.cross:
                x = x + self.a2(self.n2(x), c, c_mask)
            return x + self.f2(F.gelu(self.f1(self.n3(x)), approximate="tanh"))

    Res = torch_resblock(torch, G, E)  # the ResBlock mirror of bench_unet.py

    base = cfg["base_channels"]
    widths = [base * m for m in cfg["channel_mult"]]
    L = len(widths)
    levels = [l for l in range(L) if 2 ** l in cfg["attention_resolutions"]]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, D), nn.Parameter(torch.randn(max_length, D))
            self.text = nn.ModuleList([Block(D, None) for _ in range(cfg["text_depth"])])
            self.text_norm = nn.LayerNorm(D)
            self.emb1, self.emb2 = nn.Linear(2 * len(freqs), E), nn.Linear(E, E)
            self.ctx_proj = nn.Linear(D, E)
            self.conv_in = nn.Conv2d(1, base, 3, padding=1)
            self.down = nn.ModuleList([Res(([base] + widths)[l], widths[l]) for l in range(L)])
            self.down_attn = nn.ModuleDict({str(l): Block(widths[l], D) for l in levels})
            self.mid = Res(widths[-1], widths[-1])
            self.mid_attn = Block(widths[-1], D) if L - 1 in levels else None
            self.up = nn.ModuleList([Res((widths + widths[-1:])[l + 1] + widths[l], widths[l]) for l in range(L)])
            self.up_attn = nn.ModuleDict({str(l): Block(widths[l], D) for l in levels})
            self.gn_out, self.conv_out = nn.GroupNorm(G, widths[0]), nn.Conv2d(widths[0], 1, 3, padding=1)
            self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32))

        def attend(self, block, h, c, m):
            B, C, Hh, W = h.shape
            seq = h.flatten(2).transpose(1, 2)  # (B, HW, C)
            return block(seq, None, c, m).transpose(1, 2).reshape(B, C, Hh, W)

        def forward(self, x, sigma, ids):
            m = ids != 0
            c = self.tok(ids) + self.pos[: ids.shape[1]]
            for blk in self.text:
                c = blk(c, m)
            c = self.text_norm(c)
            wu = torch.log(sigma)[:, None] * self.freqs
            e = self.emb2(F.silu(self.emb1(torch.cat([torch.sin(wu), torch.cos(wu)], 1))))
            w = m.to(x.dtype)[:, :, None]
            e = F.silu(e + self.ctx_proj((c * w / w.sum(1, keepdim=True)).sum(1)))
            h = self.conv_in(x / torch.sqrt(1 + sigma ** 2)[:, None, None, None])
            skips = []
            for l in range(L):
                h = self.down[l](h, e)
                if l in levels:
                    h = self.attend(self.down_attn[str(l)], h, c, m)
                skips.append(h)
                if l < L - 1:
                    h = F.avg_pool2d(h, 2)
            h = self.mid(h, e)
            if self.mid_attn is not None:
                h = self.attend(self.mid_attn, h, c, m)
            for l in reversed(range(L)):
                h = self.up[l](torch.cat([h, skips[l]], 1), e)
                if l in levels:
                    h = self.attend(self.up_attn[str(l)], h, c, m)
                if l > 0:
                    h = F.interpolate(h, scale_factor=2, mode="nearest")
            return self.conv_out(F.silu(self.gn_out(h)))

    return Net()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    from minidiff.captioned import CaptionedGlyphs

    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    ck = load("text-glyphs")
    model, cfg = ck.model, ck.config
    B = args.batch
    rng = np.random.default_rng(0)
    x0, captions = CaptionedGlyphs().sample(B, rng=np.random.default_rng(1), return_captions=True)
    ids = model.encode(captions)
    x0 = x0.astype(np.float32)
    eps = rng.standard_normal(x0.shape).astype(np.float32)
    sigma = np.exp(rng.uniform(np.log(1e-2), np.log(80.0), B)).astype(np.float32)
    x = x0 + sigma[:, None, None, None] * eps
    opt = Adam(model.parameters(), lr=1e-4)

    def md_step():
        d = model(x, sigma, ids) - eps
        opt.zero_grad()
        d *= 2.0 / d.size
        model.backward(d)
        opt.step()

    fns = {"minidiff": md_step}
    torch = torch_or_none(threads=int(os.environ["OPENBLAS_NUM_THREADS"]))  # the same thread count as NumPy's BLAS
    if torch is not None:
        tok = model.tokenizer
        net = torch_text_unet(torch, cfg, tok.vocab_size, tok.max_length, model.denoiser.sigma_emb._freqs)
        n_torch = sum(p.numel() for p in net.parameters())
        assert n_torch == model.num_parameters(), (n_torch, model.num_parameters())
        topt = torch.optim.Adam(net.parameters(), lr=1e-4)
        tx, te, ts = torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(sigma)
        tids = torch.from_numpy(np.asarray(ids, dtype=np.int64))

        def torch_step():
            loss = ((net(tx, ts, tids) - te) ** 2).mean()
            topt.zero_grad()
            loss.backward()
            topt.step()
        fns["torch"] = torch_step
    res = interleaved(fns, args.rounds, 1)
    peak = gemm_gflops()
    print(f"\ntext-conditioned U-Net training step (the text-glyphs network, {model.num_parameters()} parameters): "
          f"1x24x24, batch {B}, float32, {os.environ['OPENBLAS_NUM_THREADS']} threads; "
          f"float32 GEMM rate (1024^3, same run) {peak:.0f} GFLOP/s")
    print_table(res, "torch")
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
