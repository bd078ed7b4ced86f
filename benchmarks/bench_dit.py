"""DiT training step, minidiff vs the same network in PyTorch (CPU), and latent vs pixel space.

Part 1: one training step (forward, parameter gradients and dx, by backward of a fixed upstream gradient)
of :class:`minidiff.nn.DiTDenoiser` against a functional PyTorch replica holding the same weights (the
replica's agreement is checked first), timed in alternation. Part 2: the same DiT on 1x28x28 pixels
(patch 2, 196 tokens) and on the 4x7x7 latent of a 28x28 glyph (patch 1, 49 tokens): time per training
step and per sample (``steps`` denoiser calls per sample at batch B, plus one decoder call of a
:class:`minidiff.nn.Autoencoder` for the latent). Prints min and median ms, ratios, and the machine's
float32 GEMM rate.

    python benchmarks/bench_dit.py [--batch 64] [--dim 64] [--depth 4] [--heads 4] [--rounds 10] [--steps 30]
"""
import argparse
import math
import os

from _timing import gemm_gflops, interleaved, print_table, torch_or_none  # noqa: E402  (benchmarks/_timing.py)

import numpy as np  # noqa: E402  (benchmarks run on the host; numpy is fine here)

from minidiff.nn import Autoencoder, DiTDenoiser  # noqa: E402


def torch_replica(torch, model):
    """A functional PyTorch DiT with ``model``'s weights (leaf tensors with requires_grad)."""
    F = torch.nn.functional
    P = {n: torch.from_numpy(p.data.copy()).requires_grad_(True) for n, p in model.named_parameters()}
    sig = model.sigma_emb
    K = sig.num_frequencies
    ratio = (sig.max_frequency / sig.min_frequency) ** (1.0 / (K - 1)) if K > 1 else 1.0
    w = torch.tensor([sig.min_frequency * ratio ** k for k in range(K)], dtype=torch.float32)
    pos = torch.from_numpy(model.pos)
    D, p, H = model.dim, model.patch_size, model.config["num_heads"]

    def lin(x, name, bias=True):
        y = x @ P[name + ".W"]
        return y + P[name + ".b"] if bias else y

    def ln(x, name):
        return F.layer_norm(x, (D,), P[name + ".gamma"], P[name + ".beta"], 1e-5)

    def forward(x, sigma):
        B, C, Hh, W = x.shape
        c_in = (1.0 / torch.sqrt(1.0 + sigma * sigma)).view(B, 1, 1, 1)
        wu = torch.log(sigma)[:, None] * w[None, :]
        e = lin(F.silu(lin(torch.cat([torch.sin(wu), torch.cos(wu)], 1), "emb1")), "emb2")
        c = F.silu(e)
        t = (x * c_in).reshape(B, C, Hh // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, p * p * C)
        h = lin(t, "patch_embed") + pos
        N = h.shape[1]
        for k in range(model.config["depth"]):
            pre = f"blocks.{k}."
            s1, a1, g1, s2, a2, g2 = lin(c, pre + "ada").view(B, 6, D).unbind(1)
            q_in = ln(h, pre + "norm1") * (1 + a1[:, None]) + s1[:, None]
            heads = [lin(q_in, pre + f"attn.to_{n}", bias=False).view(B, N, H, D // H).transpose(1, 2) for n in "qkv"]
            o = F.scaled_dot_product_attention(*heads).transpose(1, 2).reshape(B, N, D)
            h = h + g1[:, None] * lin(o, pre + "attn.to_out")
            m_in = ln(h, pre + "norm2") * (1 + a2[:, None]) + s2[:, None]
            h = h + g2[:, None] * lin(F.gelu(lin(m_in, pre + "mlp.fc1"), approximate="tanh"), pre + "mlp.fc2")
        shift, scale = lin(c, "ada_f").view(B, 2, D).unbind(1)
        out = lin(ln(h, "norm_f") * (1 + scale[:, None]) + shift[:, None], "out")
        return out.reshape(B, Hh // p, W // p, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, Hh, W)

    return forward, P


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30, help="sampler steps per sample (part 2)")
    args = ap.parse_args()
    B = args.batch
    rng = np.random.default_rng(0)
    threads = int(os.environ["OPENBLAS_NUM_THREADS"])  # 2 unless set: _timing.py's default
    peak = gemm_gflops()
    print(f"measured float32 GEMM peak (1024^3, best of rounds): {peak:.0f} GFLOP/s; {threads} thread(s)")

    # ------------------------------------------------------------------ part 1: vs PyTorch
    configs = {"latent 4x7x7, p=1": (4, 7, 1), "pixel 1x28x28, p=2": (1, 28, 2)}
    torch = torch_or_none(threads)
    models = {}
    for label, (C, S, p) in configs.items():
        model = DiTDenoiser(C, S, patch_size=p, dim=args.dim, depth=args.depth, num_heads=args.heads, seed=0)
        for q in model.parameters():  # random weights everywhere (a fresh DiT outputs 0: nothing to compare)
            q.data[...] = 0.3 * rng.standard_normal(q.data.shape) / math.sqrt(max(q.data.shape[0], 1))
        models[label] = model
        x = rng.standard_normal((B, C, S, S)).astype(np.float32)
        sigma = np.exp(rng.uniform(-3, 3, B)).astype(np.float32)
        g = rng.standard_normal(x.shape).astype(np.float32)

        def md_step(model=model, x=x, sigma=sigma, g=g):
            model(x, sigma)
            model.zero_grad()
            return model.backward(g)

        fns = {"minidiff": md_step}
        N, D = (S // p) ** 2, args.dim
        # GEMM work per step: per block 4 projections (2 B N D^2 each), QK^T and PV (2 B N^2 D each), MLP
        # (16 B N D^2), adaLN (12 B D^2); forward once, backward twice
        flops = 3 * args.depth * (8 * B * N * D * D + 4 * B * N * N * D + 16 * B * N * D * D)
        if torch is not None:
            fwd, P = torch_replica(torch, model)
            tx = torch.from_numpy(x).requires_grad_(True)
            ts, tg = torch.from_numpy(sigma), torch.from_numpy(g)

            def torch_step(fwd=fwd, P=P, tx=tx, ts=ts, tg=tg):
                tx.grad = None
                for t in P.values():
                    t.grad = None
                fwd(tx, ts).backward(tg)
                return tx.grad

            with torch.no_grad():
                y_t = fwd(torch.from_numpy(x), ts).numpy()
            y_m = model(x, sigma)
            dx_m, dx_t = md_step(), torch_step().numpy()
            err_y = float(np.abs(y_m - y_t).max() / np.abs(y_t).max())
            err_dx = float(np.abs(dx_m - dx_t).max() / np.abs(dx_t).max())
            err_w = max(float(np.abs(q.grad - P[n].grad.numpy()).max() / (np.abs(P[n].grad.numpy()).max() + 1e-30))
                        for n, q in model.named_parameters())
            print(f"\n{label}: agreement with PyTorch (max abs diff / max abs): y {err_y:.1e}, dx {err_dx:.1e}, "
                  f"worst parameter gradient {err_w:.1e}")
            fns["torch"] = torch_step
        res = interleaved(fns, args.rounds, 1)
        print(f"DiT training step, {label}: B {B}, {N} tokens, dim {D}, depth {args.depth}, {args.heads} heads, "
              f"{model.num_parameters()} parameters; GEMM work {flops / 1e9:.2f} GFLOP")
        print_table(res, "torch", flops, peak)

    # ------------------------------------------------------------------ part 2: latent vs pixel
    ae = Autoencoder(1, latent_channels=4, base_channels=8, channel_mult=(1, 2, 2), seed=0)
    per = {}
    for label, (C, S, p) in configs.items():
        model = models[label]
        x = rng.standard_normal((B, C, S, S)).astype(np.float32)
        sigma = np.full(B, 1.0, dtype=np.float32)
        g = rng.standard_normal(x.shape).astype(np.float32)

        def step(model=model, x=x, sigma=sigma, g=g):
            model(x, sigma)
            model.zero_grad()
            model.backward(g)

        per[label] = interleaved({"step": step, "call": lambda model=model, x=x, sigma=sigma: model(x, sigma)},
                                 args.rounds, 1)
    z = rng.standard_normal((B, 4, 7, 7)).astype(np.float32)
    dec = interleaved({"decode": lambda: ae.decode(z)}, args.rounds, 1)["decode"][0]
    lat, pix = per["latent 4x7x7, p=1"], per["pixel 1x28x28, p=2"]
    sample_lat = (args.steps * lat["call"][0] + dec) / B
    sample_pix = args.steps * pix["call"][0] / B
    print(f"\nlatent vs pixel, same DiT width/depth (min ms): training step pixel {pix['step'][0]:.1f}, latent "
          f"{lat['step'][0]:.1f} -> {pix['step'][0] / lat['step'][0]:.1f}x; per sample ({args.steps} steps"
          f" at batch {B}, + one decode of a {ae.num_parameters()}-parameter decoder, {dec / B:.3f} ms/sample): "
          f"pixel {sample_pix:.2f} ms, latent {sample_lat:.2f} ms -> {sample_pix / sample_lat:.1f}x")


if __name__ == "__main__":
    main()
