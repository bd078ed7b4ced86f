r"""The diffusion transformer, DiT (Peebles & Xie 2023), with hand-written backward passes.
See docs/latent.md §3.

The image is cut into ``p x p`` patches, each patch becomes a token, a stack of transformer blocks mixes
the tokens, and a final layer turns each token back into its patch of the noise estimate::

    tokens = patchify(x / sqrt(1 + sigma^2)) W_in + b_in + pos          (B, N, dim), N = HW / p^2
    c      = MLP(e(sigma)) [+ embed(y)]                                 (B, dim), the conditioning
    tokens = DiTBlock_k(tokens, c)                      k = 1..depth
    eps_hat = unpatchify(Linear(modulate(LN(tokens), shift(c), scale(c))))

``pos`` is the fixed 2-D sine-cosine position embedding (Vaswani et al. 2017, Sec. 3.5, one half of the
features for the row and one for the column, as in Peebles & Xie 2023, Sec. 3.1). The noise level and the
class reach every block through adaLN-Zero (Peebles & Xie 2023, Sec. 3.2): each block regresses from
``silu(c)`` a shift, a scale and a gate for each of its two residual branches,

    ``h = x + gate_1 * Attn(LN(x) * (1 + scale_1) + shift_1)``
    ``y = h + gate_2 * MLP(LN(h) * (1 + scale_2) + shift_2)``,

and the regressions are initialised to zero, so every block starts as the identity and (with the final
linear layer also zero) a freshly built DiT outputs exactly zero.
"""
from __future__ import annotations

import math

from .. import backend
from .._validate import MAX_SIZE, check_array, check_float_dtype, check_positive_int
from .attention import FeedForward, MultiHeadAttention
from .layers import (
    Embedding, LayerNorm, Linear, SigmaEmbedding, SiLU, _normalize_last, _sum_last, _sum_middle, _sum_rows,
    check_input,
)
from .models import _Conditioning, _sigma_inputs  # models.py imports this module at its end
from .module import Module

__all__ = ["DiTDenoiser", "DiTBlock", "AdaLayerNorm", "patchify", "unpatchify", "sincos_pos_embed_2d"]


# ----------------------------------------------------------------------------- patches and positions
def patchify(x, p: int):
    r"""``x (B, C, H, W) -> tokens (B, (H/p)(W/p), p p C)``: token ``(i, j)`` (row-major) holds the patch
    ``x[:, :, p i : p i + p, p j : p j + p]`` flattened in (u, v, c) order. A permutation of the entries, so
    its adjoint (the backward) is its inverse, :func:`unpatchify`."""
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"H and W must be divisible by patch_size={p}; got {H}x{W}")
    t = x.reshape(B, C, H // p, p, W // p, p).transpose(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
    return t.reshape(B, (H // p) * (W // p), p * p * C)  # copies: (B, N, p p C)


def unpatchify(t, p: int, C: int, H: int, W: int):
    r"""``tokens (B, N, p p C) -> x (B, C, H, W)``, the inverse of :func:`patchify`."""
    B = t.shape[0]
    x = t.reshape(B, H // p, W // p, p, p, C).transpose(0, 5, 1, 3, 2, 4)  # (B, C, H/p, p, W/p, p)
    return x.reshape(B, C, H, W)  # copies


def sincos_pos_embed_2d(dim: int, gh: int, gw: int, dtype="float32", xp=None):
    r"""Fixed 2-D position embedding (gh gw, dim): the first ``dim/2`` features encode the row ``i``, the
    last ``dim/2`` the column ``j``, each as ``[sin(pos w_k), cos(pos w_k)]`` with
    ``w_k = 10000^{-k/(dim/4)}``, ``k = 0..dim/4 - 1`` (Vaswani et al. 2017, Sec. 3.5, per axis).
    ``dim`` must be divisible by 4."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for the 2-D sin-cos embedding; got {dim}")
    xp = backend.get_xp() if xp is None else xp
    q = dim // 4
    w = 1.0 / 10000.0 ** (xp.arange(q, dtype=xp.float64) / q)  # (q,)
    i, j = xp.meshgrid(xp.arange(gh, dtype=xp.float64), xp.arange(gw, dtype=xp.float64), indexing="ij")
    parts = []
    for pos in (i.reshape(-1), j.reshape(-1)):  # (N,)
        a = pos[:, None] * w[None, :]  # (N, 1) * (1, q) -> (N, q)
        parts += [xp.sin(a), xp.cos(a)]
    return xp.concatenate(parts, axis=1).astype(dtype)  # (N, dim)


class AdaLayerNorm(LayerNorm):
    r"""Layer norm modulated per sample, the adaLN of DiT (Peebles & Xie 2023, Sec. 3.2); docs/latent.md §3.

    ``xhat = (x - mu) / sqrt(var + eps)`` over the last axis (Ba et al. 2016), then

        ``y = (gamma xhat + beta) (1 + scale) + shift``,   ``shift, scale (B, D)`` broadcast over the tokens,

    computed as ``y = xhat G + H`` with ``G = gamma (1 + scale)``, ``H = beta (1 + scale) + shift`` (B, D).
    ``forward(x (B, L, D), shift, scale) -> y``; ``backward(dy) -> (dx, dshift, dscale)``, with, per sample
    and summing over the tokens (``P = sum_L dy xhat``, ``S = sum_L dy``):

        ``dshift = S``,  ``dscale = gamma P + beta S``,  ``dgamma += sum_B (1 + scale) P``,
        ``dbeta += sum_B (1 + scale) S``,  ``dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps)``
        with ``g = dy G`` (the LayerNorm VJP, means over D).

    With ``shift = scale = 0`` it is :class:`~minidiff.nn.LayerNorm` (tested). Fusing the modulation into
    the norm halves the passes over the activations: a forward and backward at (64, 196, 64) took 2.6 ms
    against 4.9 for LayerNorm followed by a separate modulation (docs/performance.md §8).
    """

    def forward(self, x, shift, scale):
        x, shift, scale = self._check(x, shift, scale)
        one_plus = 1.0 + scale  # (B, D)
        G = self.gamma.data * one_plus  # (B, D)
        H = self.beta.data * one_plus
        H += shift
        xhat, inv_std = _normalize_last(x, self.eps)  # inv_std (B, L, 1)
        y = xhat * G[:, None, :]
        y += H[:, None, :]  # xhat G + H
        self._cache = (xhat, inv_std, one_plus, G)
        return y

    def backward(self, dy):
        xhat, inv_std, one_plus, G = self._cache
        xp = backend.get_xp(dy)
        D = dy.shape[-1]
        S = _sum_middle(dy)  # sum_L dy (B, D)
        t = dy * xhat
        P = _sum_middle(t)  # sum_L dy xhat (B, D)
        g = dy * G[:, None, :]  # the gradient w.r.t. xhat
        mean_g = _sum_last(g) * (1.0 / D)  # (B, L, 1)
        mean_gx = t @ G[:, :, None]  # sum_D g xhat = (dy xhat) @ G: (B, L, D) @ (B, D, 1) -> (B, L, 1)
        mean_gx *= 1.0 / D
        g -= mean_g
        xp.multiply(xhat, mean_gx, out=t)
        g -= t
        g *= inv_std  # dx
        dscale = self.gamma.data * P
        dscale += self.beta.data * S
        self.gamma.grad += _sum_rows(one_plus * P)[0]
        self.beta.grad += _sum_rows(one_plus * S)[0]
        return g, S, dscale

    def _check(self, x, shift, scale):
        x = check_array(x, "x", 3, finite=False, like=self.gamma.data, last=self.dim)
        shape = (x.shape[0], self.dim)
        shift = check_array(shift, "shift", 2, finite=False, like=self.gamma.data, shape=shape)
        scale = check_array(scale, "scale", 2, finite=False, like=self.gamma.data, shape=shape)
        return x, shift, scale


def _zero(linear):
    for p in linear.parameters():
        p.data[...] = 0.0
    return linear


# ----------------------------------------------------------------------------- the block
class DiTBlock(Module):
    r"""DiT block with adaLN-Zero (Peebles & Xie 2023, Sec. 3.2 and Fig. 3), optional cross-attention.

    With ``c_act = silu(c)`` (B, dim) and ``[s_1, a_1, g_1, s_2, a_2, g_2] = c_act W_mod + b_mod`` (shift,
    scale, gate per branch; ``W_mod = b_mod = 0`` at initialisation):

        ``n_1 = LN_1(x)``,  ``x_1 = x + g_1 * Attn(n_1 (1 + a_1) + s_1)``
        ``x_2 = x_1 + CrossAttn(LN_c(x_1), context)``     (only with ``context_dim``; its output projection
                                                          starts at zero, as in PixArt-alpha, Chen et al. 2023)
        ``n_2 = LN_2(x_2)``, ``y = x_2 + g_2 * MLP(n_2 (1 + a_2) + s_2)``

    Backward (``sum_L`` sums over the tokens): ``dg_2 = sum_L dy * MLP(.)``, ``dh_2 = MLP^T(g_2 dy)``,
    ``ds_2 = sum_L dh_2``, ``da_2 = sum_L dh_2 n_2``, ``dx_2 = dy + LN_2^T (dh_2 (1 + a_2))``; the same
    through the cross-attention and the first branch; ``dc_act = W_mod^T [ds_1, da_1, dg_1, ...]``. Each
    ``LN_k`` and its modulation are one :class:`AdaLayerNorm` (``norm1``, ``norm2``), which computes
    ``da`` without storing ``n`` (docs/latent.md §3).
    ``forward(x, c_act, context=None, context_mask=None)``; ``backward(dy) -> (dx, dc_act)``, or
    ``(dx, dc_act, dcontext)`` with a context.
    """

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: int = 4, context_dim=None, dtype="float32",
                 seed=None):
        self.dim = check_positive_int(dim, "dim", maximum=MAX_SIZE)
        rng = backend.default_rng(seed)
        self.norm1 = AdaLayerNorm(dim, dtype=dtype)
        self.attn = MultiHeadAttention(dim, num_heads, dtype=dtype, seed=rng)
        self.norm_c = self.cross = None
        if context_dim is not None:
            self.norm_c = LayerNorm(dim, dtype=dtype)
            self.cross = MultiHeadAttention(dim, num_heads, context_dim=context_dim, dtype=dtype, seed=rng)
            _zero(self.cross.to_out)
        self.norm2 = AdaLayerNorm(dim, dtype=dtype)
        self.mlp = FeedForward(dim, mlp_ratio * dim, dtype=dtype, seed=rng)
        self.ada = _zero(Linear(dim, 6 * dim, dtype=dtype, seed=rng))  # adaLN-Zero

    def forward(self, x, c_act, context=None, context_mask=None):
        if (context is None) != (self.cross is None):
            raise ValueError("context must be given exactly when the block has a cross-attention")
        s1, a1, g1, s2, a2, g2 = (m for m in self.ada(c_act).reshape(c_act.shape[0], 6, self.dim).transpose(1, 0, 2))
        o1 = self.attn(self.norm1(x, s1, a1))
        h = x + g1[:, None, :] * o1
        if self.cross is not None:
            h = h + self.cross(self.norm_c(h), context, mask=context_mask)
        o2 = self.mlp(self.norm2(h, s2, a2))
        self._cache = (o1, o2, g1, g2)
        return h + g2[:, None, :] * o2

    def backward(self, dy):
        xp = backend.get_xp(dy)
        o1, o2, g1, g2 = self._cache
        dg2 = _sum_middle(dy * o2)  # sum over the tokens: (B, L, D) -> (B, D)
        dh, ds2, da2 = self.norm2.backward(self.mlp.backward(dy * g2[:, None, :]))
        dh += dy
        dcontext = None
        if self.cross is not None:
            dq, dcontext = self.cross.backward(dh)
            dh += self.norm_c.backward(dq)
        dg1 = _sum_middle(dh * o1)
        dx, ds1, da1 = self.norm1.backward(self.attn.backward(dh * g1[:, None, :]))
        dx += dh
        dmod = xp.stack([ds1, da1, dg1, ds2, da2, dg2], axis=1).reshape(dy.shape[0], 6 * self.dim)  # (B, 6D)
        dc_act = self.ada.backward(dmod)
        return (dx, dc_act) if dcontext is None else (dx, dc_act, dcontext)


# ----------------------------------------------------------------------------- the denoiser
class DiTDenoiser(_Conditioning, Module):
    r"""Diffusion transformer noise predictor for images ``x (B, C, H, W)`` (Peebles & Xie 2023).

    Same calling convention as :class:`~minidiff.nn.UNetDenoiser`: ``model(x, sigma, y=None) -> eps_hat``,
    ``model.backward(g) -> dx``; with ``context_dim`` set, ``model(x, sigma, context=c, context_mask=m)``
    and ``backward`` returns ``(dx, dcontext)``. See the module docstring for the equations.

    Parameters
    ----------
    channels, image_size : C and H = W of the images (``image_size`` divisible by ``patch_size``).
    patch_size : side p of a patch (default 2); N = (image_size / p)^2 tokens of width ``dim``.
    dim : token width (divisible by 4 for the 2-D position embedding, and by ``num_heads``).
    depth : number of DiT blocks.
    num_heads : attention heads per block.
    mlp_ratio : MLP hidden width = mlp_ratio * dim.
    num_classes : None or K (labels 0..K-1, K = NULL for classifier-free guidance).
    context_dim : width of a text context for cross-attention (None: none).
    num_frequencies : of the :class:`~minidiff.nn.SigmaEmbedding`.
    dtype, seed : parameter dtype and initialisation seed.
    """

    def __init__(self, channels: int, image_size: int, patch_size: int = 2, dim: int = 64, depth: int = 4,
                 num_heads: int = 4, mlp_ratio: int = 4, num_classes=None, context_dim=None,
                 num_frequencies: int = 8, dtype="float32", seed=0):
        self.channels = check_positive_int(channels, "channels", maximum=MAX_SIZE)
        self.image_size = check_positive_int(image_size, "image_size", maximum=MAX_SIZE)
        self.patch_size = p = check_positive_int(patch_size, "patch_size", maximum=MAX_SIZE)
        if self.image_size % p:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        self.dim = check_positive_int(dim, "dim", maximum=MAX_SIZE)
        if dim % 4:
            raise ValueError(f"dim must be divisible by 4 (2-D sin-cos position embedding); got {dim}")
        depth = check_positive_int(depth, "depth", maximum=MAX_SIZE)
        num_heads = check_positive_int(num_heads, "num_heads", maximum=MAX_SIZE)
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        dt = check_float_dtype(dtype)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes", maximum=MAX_SIZE)
        self.context_dim = None if context_dim is None else check_positive_int(context_dim, "context_dim", maximum=MAX_SIZE)
        self.config = dict(channels=self.channels, image_size=self.image_size, patch_size=p, dim=dim, depth=depth,
                           num_heads=num_heads, mlp_ratio=int(mlp_ratio), num_classes=self.num_classes,
                           context_dim=self.context_dim, num_frequencies=int(num_frequencies), dtype=str(dt),
                           seed=seed if seed is None or isinstance(seed, int) else None)
        rng = backend.default_rng(seed)
        self.grid = self.image_size // p
        self.patch_embed = Linear(p * p * self.channels, dim, dtype=dt, seed=rng)
        self.pos = sincos_pos_embed_2d(dim, self.grid, self.grid, dtype=dt)  # fixed, not a Parameter
        self.sigma_emb = SigmaEmbedding(num_frequencies, dtype=dt)
        self.emb1 = Linear(self.sigma_emb.dim, dim, dtype=dt, seed=rng)
        self.emb_act = SiLU()
        self.emb2 = Linear(dim, dim, dtype=dt, seed=rng)
        self.class_emb = Embedding(self.num_classes + 1, dim, dtype=dt, seed=rng) if self.num_classes else None
        self.c_act = SiLU()
        self.blocks = [DiTBlock(dim, num_heads, mlp_ratio, self.context_dim, dtype=dt, seed=rng)
                       for _ in range(depth)]
        self.norm_f = AdaLayerNorm(dim, dtype=dt)
        self.ada_f = _zero(Linear(dim, 2 * dim, dtype=dt, seed=rng))
        self.out = _zero(Linear(dim, p * p * self.channels, dtype=dt, seed=rng))

    def forward(self, x, sigma, y=None, context=None, context_mask=None):
        check_input(x, "x", like=self.patch_embed.W.data, ndim=4)
        xp = backend.get_xp(x)
        B, C, H, W = x.shape
        if (C, H, W) != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"x must have shape (B, {self.channels}, {self.image_size}, {self.image_size}); "
                             f"got {tuple(x.shape)}")
        if (context is None) != (self.context_dim is None):
            raise ValueError(f"context must be given exactly when the model has a context_dim "
                             f"(context_dim={self.context_dim})")
        labels = self._labels(y, B, xp)  # None, or labels in 0..K (K = NULL; y=None means all NULL)
        sig, c_in = _sigma_inputs(sigma, x)
        e = self.emb2(self.emb_act(self.emb1(self.sigma_emb(sig))))  # (B, dim)
        if labels is not None:
            e += self.class_emb(labels)
        c_act = self.c_act(e)  # silu(c), shared by every adaLN regression
        h = self.patch_embed(patchify(x * c_in, self.patch_size)) + self.pos  # (B, N, dim)
        for block in self.blocks:
            h = block(h, c_act) if context is None else block(h, c_act, context, context_mask)
        shift, scale = (m for m in self.ada_f(c_act).reshape(B, 2, self.dim).transpose(1, 0, 2))
        out = self.out(self.norm_f(h, shift, scale))  # (B, N, p p C)
        self._cache = (c_in, labels is not None, context is not None)
        return unpatchify(out, self.patch_size, C, H, W)

    def backward(self, d_eps_hat):
        xp = backend.get_xp(d_eps_hat)
        c_in, conditional, has_context = self._cache
        B = d_eps_hat.shape[0]
        dh, dshift, dscale = self.norm_f.backward(self.out.backward(patchify(d_eps_hat, self.patch_size)))
        dc_act = self.ada_f.backward(xp.stack([dshift, dscale], axis=1).reshape(B, 2 * self.dim))
        dcontext = None
        for block in reversed(self.blocks):
            grads = block.backward(dh)
            dh, dc_act = grads[0], dc_act + grads[1]
            if has_context:
                dcontext = grads[2] if dcontext is None else dcontext + grads[2]
        de = self.c_act.backward(dc_act)
        if conditional:
            self.class_emb.backward(de)
        self.emb1.backward(self.emb_act.backward(self.emb2.backward(de)))
        dtokens = self.patch_embed.backward(dh)
        dx = unpatchify(dtokens, self.patch_size, self.channels, self.image_size, self.image_size) * c_in
        return dx if dcontext is None else (dx, dcontext)
